import ClientService
import FederationDemo
import Foundation
import XCTest

/// A federation of real processes in which one client plants secret canaries: it reports their
/// exposure every round and nobody else does; the secrets stay in its 0600 file and appear in no log
/// of the coordinator's, in no audit record, and not in the client's own log either.
final class CanaryFederationTests: XCTestCase {
    func testOneClientReportsCanaryExposureAndItsSecretsStayHome() throws {
        try checkCanaryFederation(secureAggregation: false)
    }

    /// The same with secure aggregation: the exposure travels with the masked update's metrics.
    func testCanaryExposureUnderSecureAggregation() throws {
        try checkCanaryFederation(secureAggregation: true)
    }

    private func checkCanaryFederation(secureAggregation: Bool) throws {
        // 6-digit secrets: |R| = 10^6 is estimated from sampled candidates, and a secret's digits are
        // too long to turn up by chance in the logs' hex hashes.
        let federation = try TinyFederation.make(clients: [("client-a", 30, 50), ("client-b", 30, 50)], minClients: 2, steps: 3,
                                                 secureAggregation: secureAggregation,
                                                 canaries: ["client-a": CanaryConfiguration(count: 3, digits: 6, repetitions: 4)])
        defer { federation.stopAll() }
        try federation.start(["client-a", "client-b"])
        let rounds = try federation.runRounds(2)
        XCTAssertEqual(rounds.map { $0["status"] as? String }, ["committed", "committed"], federation.serveLog)

        let audit = try federation.audit()
        XCTAssertEqual(audit.json["verified"] as? Bool, true)
        let records = audit.json["records"] as? [[String: Any]] ?? []
        XCTAssertEqual(records.count, 2)
        for record in records { try checkOnlyClientAReportsExposure(record, secureAggregation: secureAggregation) }
        XCTAssertTrue(federation.log("client-a/join.log").contains("round 2: canary exposure on the global adapter"))
        XCTAssertFalse(federation.log("client-b/join.log").contains("canary"))

        // The secrets: only in client-a's state, mode 0600.
        let file = federation.directory(of: "client-a").appendingPathComponent("canaries.json")
        let attributes = try FileManager.default.attributesOfItem(atPath: file.path)
        XCTAssertEqual((attributes[.posixPermissions] as? NSNumber)?.intValue, 0o600)
        let stored = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: file)) as? [String: Any])
        let secrets = try XCTUnwrap(stored["canaries"] as? [[Int]])
        XCTAssertEqual(secrets.count, 3)

        // The report shows the exposure table.
        let report = federation.root.appendingPathComponent("report.html")
        try TinyFederation.check(Executables.run(Executables.coordinator,
            ["report", "--state", federation.coordinator.path, "--out", report.path]))
        let html = try String(contentsOf: report, encoding: .utf8)
        XCTAssertTrue(html.contains("id=\"exposure-table\""))
        XCTAssertTrue(html.contains("data-client=\"client-a\""))
        try checkSecretsAppearNowhere(secrets, federation: federation, report: html)
    }

    /// One round's audit record: client-a, and only it, reports the exposure of its 3 canaries.
    private func checkOnlyClientAReportsExposure(_ record: [String: Any], secureAggregation: Bool) throws {
        XCTAssertEqual(record["secure_aggregation"] as? Bool, secureAggregation)
        let clients = record["clients"] as? [[String: Any]] ?? []
        let reporting = clients.filter { $0["canary_exposure"] != nil }.compactMap { $0["client"] as? String }
        XCTAssertEqual(reporting, ["client-a"], "\(clients)")
        let a = try XCTUnwrap(clients.first { $0["client"] as? String == "client-a" })
        // No exact record count travels (issue 13): the held-out figures are a noised release.
        XCTAssertNil(a["examples"])
        XCTAssertNotNil(a["held_out"] as? [String: Any])
        let exposure = try XCTUnwrap(a["canary_exposure"] as? [String: Any])
        XCTAssertNil(exposure["seconds"], "the measurement's timing stays in the client's log")
        XCTAssertEqual(exposure["canaries"] as? Int, 3)
        XCTAssertEqual(exposure["repetitions"] as? Int, 4)
        XCTAssertEqual(exposure["space_size"] as? Int, 1_000_000)
        XCTAssertEqual(exposure["exact"] as? Bool, false)
        let scored = try XCTUnwrap(exposure["candidates_scored"] as? Int)
        XCTAssertTrue((499...500).contains(scored), "\(scored)")
        let mean = try XCTUnwrap(exposure["mean_bits"] as? Double), maximum = try XCTUnwrap(exposure["max_bits"] as? Double)
        // At most log2 |R|, reached when a canary ranks first; Foundation's JSON parser on Linux may
        // read that figure back one ulp high, hence the margin.
        XCTAssertTrue(mean >= 0 && mean <= maximum && maximum <= log2(1e6) + 1e-9, "\(exposure)")
    }

    /// No form of any secret (digits spaced, run together, or as a JSON array) in the audit log, the
    /// coordinator's log, `audit --json`, the report, or client-a's own log.
    private func checkSecretsAppearNowhere(_ secrets: [[Int]], federation: LocalFederation, report html: String) throws {
        let places = [
            ("the audit log", try String(contentsOf: federation.paths.auditLog, encoding: .utf8)),
            ("the coordinator's log", federation.serveLog),
            ("audit --json", try Executables.run(Executables.coordinator, ["audit", "--state", federation.coordinator.path,
                                                                           "--json"]).stdout),
            ("the report", html),
            ("client-a's log", federation.log("client-a/join.log")),
        ]
        for secret in secrets {
            let forms = [secret.map(String.init).joined(separator: " "), secret.map(String.init).joined(),
                         "[" + secret.map(String.init).joined(separator: ",") + "]"]
            for (place, text) in places {
                for form in forms { XCTAssertFalse(text.contains(form), "a canary secret (\(form)) appears in \(place)") }
            }
        }
    }
}
