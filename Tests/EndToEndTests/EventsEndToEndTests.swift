import Foundation
import TestSupport
import XCTest

/// `serve --events FILE` and `join --events FILE` (issue 15, "watch a federation"): one JSON object a
/// line per round event, on each side, for monitoring tools. A tiny federation runs a round its
/// client declines by policy and then one it commits; both files hold the events in order, with
/// their rounds, appended across the client's two runs.
final class EventsEndToEndTests: XCTestCase {
    func testServeAndJoinWriteOneJSONLinePerRoundEvent() throws {
        let federation = try OperatorFederation(name: "events")
        defer { federation.stopAll() }
        let client = try federation.addClient("clinic-a")
        let serverEvents = federation.root.appendingPathComponent("serve-events.jsonl")
        let clientEvents = federation.root.appendingPathComponent("join-events.jsonl")
        try setPolicySteps(client, 1)  // the plan's 2 steps: round 1 is declined

        _ = try federation.start(Executables.coordinator, federation.serveArguments() + ["--events", serverEvents.path],
                                 error: FileHandle.nullDevice)
        try OperatorFederation.waitUntil("the coordinator answers", timeout: 30) { federation.status() != nil }
        try runRound(federation, client: client, events: clientEvents, expecting: "aborted")
        try setPolicySteps(client, 50)
        try runRound(federation, client: client, events: clientEvents, expecting: "committed")

        let server = try Self.events(serverEvents)
        XCTAssertEqual(server.map(\.summary),
                       ["round_started 1", "invited 1", "declined 1", "aborted 1",
                        "round_started 2", "invited 2", "accepted 2", "uploaded 2", "committed 2"], "\(server)")
        // The coordinator hears the code alone; the client's words stay in its own events and log (issue 13).
        XCTAssertNil(server[2].fields["reason"], "\(server[2])")
        XCTAssertEqual(server[2].fields["client"] as? String, "clinic-a")
        XCTAssertEqual(server[2].fields["code"] as? String, "policy")
        XCTAssertEqual(server[0].fields["cohort"] as? [String], ["clinic-a"])
        XCTAssertEqual(server[8].fields["participants"] as? [String], ["clinic-a"])
        XCTAssertEqual((server[8].fields["adapter_sha256"] as? String)?.count, 64)

        // A declined round may also be reported over to the client; everything else is exact.
        let joined = try Self.events(clientEvents)
        XCTAssertEqual(joined.map(\.summary).filter { $0 != "round_over 1" },
                       ["invited 1", "declined 1", "invited 2", "charged 2", "accepted 2", "uploaded 2", "committed 2"],
                       "\(joined)")
        let declined = try XCTUnwrap(joined.first { $0.fields["event"] as? String == "declined" })
        XCTAssertEqual(declined.fields["code"] as? String, "policy")
        XCTAssertTrue((declined.fields["reason"] as? String ?? "").hasPrefix("policy: the plan asks 2 steps"), "\(declined)")
        let charged = try XCTUnwrap(joined.first { $0.fields["event"] as? String == "charged" })
        XCTAssertGreaterThan(charged.fields["epsilon"] as? Double ?? 0, 0, "ε spent after the charge")
        XCTAssertEqual(charged.fields["delta"] as? Double, 1e-5)
    }

    /// A secure round of three clients: each client's masked upload is reported with the round's id
    /// on both sides, and the coordinator's invitations say the round is secure.
    func testASecureRoundReportsMaskedUploads() throws {
        let federation = try OperatorFederation(name: "secure-events")
        defer { federation.stopAll() }
        var configuration = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: federation.configurationFile))
                                            as? [String: Any])
        var rounds = try XCTUnwrap(configuration["rounds"] as? [String: Any])
        rounds["min_clients"] = 3
        rounds["max_clients"] = 3
        rounds["secure_aggregation"] = true
        configuration["rounds"] = rounds
        try JSONSerialization.data(withJSONObject: configuration).write(to: federation.configurationFile)
        let names = ["clinic-a", "clinic-b", "clinic-c"]
        let clients = try names.map { try federation.addClient($0) }
        let serverEvents = federation.root.appendingPathComponent("serve-events.jsonl")
        _ = try federation.start(Executables.coordinator, federation.serveArguments() + ["--events", serverEvents.path],
                                 error: FileHandle.nullDevice)
        try OperatorFederation.waitUntil("the coordinator answers", timeout: 30) { federation.status() != nil }
        let joiners = try clients.map { client in
            try federation.start(Executables.client, federation.joinArguments(client) + ["--rounds", "1", "--events",
                                                                                         client.appendingPathComponent("events.jsonl").path],
                                 error: FileHandle.nullDevice)
        }
        try OperatorFederation.waitUntil("the clients connect", timeout: 30) {
            (federation.status()?["connected"] as? [String]) == names
        }
        let result = try Executables.run(Executables.coordinator, ["rounds", "start", "--state", federation.coordinator.path,
                                                                    "--count", "1", "--wait", "--timeout", "120", "--json"])
        XCTAssertEqual((try result.json()["rounds"] as? [[String: Any]])?.first?["status"] as? String, "committed", result.stdout)
        for joiner in joiners { XCTAssertTrue(joiner.waitForExit(timeout: 60), "join --rounds 1 did not exit") }

        let server = try Self.events(serverEvents)
        XCTAssertEqual(server.first?.summary, "round_started 1")
        XCTAssertEqual(server.last?.summary, "committed 1")
        for event in ["invited", "accepted", "uploaded"] {
            let clientsSeen = server.filter { $0.summary == "\(event) 1" }.compactMap { $0.fields["client"] as? String }
            XCTAssertEqual(clientsSeen.sorted(), names, "\(event): \(server)")
        }
        XCTAssertTrue(server.filter { $0.summary == "uploaded 1" }.allSatisfy { $0.fields["secure"] as? Bool == true })
        XCTAssertTrue(server.filter { $0.summary == "invited 1" }.allSatisfy { $0.fields["secure"] as? Bool == true })
        for client in clients {
            let joined = try Self.events(client.appendingPathComponent("events.jsonl"))
            XCTAssertEqual(joined.map(\.summary), ["invited 1", "charged 1", "accepted 1", "uploaded 1", "committed 1"], "\(joined)")
            XCTAssertEqual(joined[3].fields["secure"] as? Bool, true)
        }
    }

    /// `join --rounds 1 --events FILE` until its one round ends, while `rounds start` runs a round.
    private func runRound(_ federation: OperatorFederation, client: URL, events: URL, expecting status: String) throws {
        let joiner = try federation.start(Executables.client, federation.joinArguments(client) + ["--rounds", "1", "--events", events.path],
                                          error: FileHandle.nullDevice)
        try OperatorFederation.waitUntil("the client connects", timeout: 30) {
            (federation.status()?["connected"] as? [String]) == ["clinic-a"]
        }
        let result = try Executables.run(Executables.coordinator, ["rounds", "start", "--state", federation.coordinator.path,
                                                                    "--count", "1", "--wait", "--timeout", "120", "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let round = (try result.json()["rounds"] as? [[String: Any]])?.first
        XCTAssertEqual(round?["status"] as? String, status, "\(result.stdout)")
        XCTAssertTrue(joiner.waitForExit(timeout: 60), "join --rounds 1 did not exit after its round")
        XCTAssertEqual(joiner.ending, "exit 0")
        try OperatorFederation.waitUntil("the coordinator sees the client leave", timeout: 30) {
            (federation.status()?["connected"] as? [String]) == []
        }
    }

    private func setPolicySteps(_ client: URL, _ steps: Int) throws {
        let file = client.appendingPathComponent("config.json")
        var config = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: file)) as? [String: Any])
        config["policy"] = ["max_epsilon": 50, "delta": 1e-5, "max_steps_per_round": steps]
        try JSONSerialization.data(withJSONObject: config).write(to: file)
    }

    /// Each line of `file` as a JSON object, with "event round" for comparing sequences.
    private static func events(_ file: URL) throws -> [(summary: String, fields: [String: Any])] {
        let text = try String(contentsOf: file, encoding: .utf8)
        XCTAssertTrue(text.hasSuffix("\n"), "every event ends its line")
        return try text.split(separator: "\n").map { line in
            let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], String(line))
            XCTAssertNotNil(object["time"] as? String, String(line))
            let round = (object["round"] as? NSNumber).map { "\($0)" } ?? "-"
            return ("\(object["event"] as? String ?? "?") \(round)", object)
        }
    }
}
