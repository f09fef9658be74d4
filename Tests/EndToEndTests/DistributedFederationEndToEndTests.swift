import Foundation
import TestSupport
import Wire
import XCTest

/// Issue 17 through real processes over mutual TLS on the tiny fixture model: a distributed-DP federation of
/// three clients (each one DP-SGD step over the cohort per round, its share of the noise masked with its
/// clipped sum), whose global adapter moves each round, whose audit records keep the unit, the noise that
/// survived and each client's trust with both ε, and whose ledgers were charged what the clients report.
final class DistributedFederationEndToEndTests: XCTestCase {
    func testTwoDistributedRoundsMoveTheAdapterAndRecordTrustAndBothEpsilons() throws {
        // 30 records each at q = 0.25: 22.5 expected units per step over the cohort, at most 64 summed.
        let plan = TrainingPlan(steps: 1, learningRate: 0.05, samplingRate: 0.25, noiseMultiplier: 1.0, clipNorm: 1.0,
                                delta: 1e-5, maxLength: 64, rank: 2, alpha: 4, targets: ["q_proj", "v_proj"],
                                noisePlacement: .distributed, expectedBatch: 22.5, maxContributions: 64)
        let names = ["client-a", "client-b", "client-c"]
        let federation = try TinyFederation.make(clients: names.map { ($0, 30, 50) }, minClients: 3, secureAggregation: true,
                                                 plan: plan, assumeHonest: 2)
        defer { federation.stopAll() }
        try federation.start(names)
        let rounds = try federation.runRounds(2)
        XCTAssertEqual(rounds.map { $0["status"] as? String }, ["committed", "committed"], federation.serveLog)
        XCTAssertTrue(federation.serveLog.contains("round 1: decoded the noised gradient sum of 3 clients over the fixed "
                                                   + "denominator 22.5"), federation.serveLog)
        let audit = try federation.audit()
        XCTAssertEqual(audit.status, 0)
        let records = audit.json["records"] as? [[String: Any]] ?? []
        XCTAssertEqual(records.count, 2)
        let hashes = records.compactMap { $0["adapter_sha256"] as? String }
        XCTAssertEqual(Set(hashes).count, 2, "the global adapter moved in each round")
        for record in records {
            let noise = try XCTUnwrap(record["distributed"] as? [String: Any], "\(record)")
            XCTAssertEqual(noise["unit"] as? String, "record")
            XCTAssertEqual(noise["cohort"] as? Int, 3)
            XCTAssertEqual(noise["survivors"] as? Int, 3)
            let threshold = try XCTUnwrap(noise["threshold"] as? Int)
            let survived = try XCTUnwrap(noise["surviving_noise_multiplier"] as? Double)
            XCTAssertEqual(survived, (3.0 / Double(threshold)).squareRoot(), accuracy: 1e-9, "z·√(s/t) with z = 1")
            XCTAssertLessThanOrEqual(try XCTUnwrap(noise["wrap_probability"] as? Double), 1e-9)
            let clients = record["clients"] as? [[String: Any]] ?? []
            XCTAssertEqual(clients.count, 3)
            for client in clients {
                let trust = try XCTUnwrap(client["trust"] as? [String: Any], "\(client)")
                XCTAssertEqual(trust["assume_honest"] as? Int, 2)
                let assumed = try XCTUnwrap(trust["round_epsilon"] as? Double)
                let alone = try XCTUnwrap(trust["round_epsilon_trusting_no_one"] as? Double)
                XCTAssertLessThanOrEqual(assumed, alone)
                XCTAssertGreaterThan(assumed, 0)
            }
        }
        // Each ledger holds the charges of both rounds, its entries naming the trust and both ε, and its
        // cumulative ε is the one the client reported in the last record.
        for name in names {
            let budget = try federation.budget(name)
            let entries = budget["entries"] as? [[String: Any]] ?? []
            let purposes = entries.compactMap { $0["purpose"] as? String }
            XCTAssertEqual(purposes.filter { $0.contains("distributed DP per record: assume_honest 2 of a cohort of 3") }.count, 4,
                           "two rounds, each a step and its metrics release: \(purposes)")
            let reported = (records.last?["clients"] as? [[String: Any]])?.first { $0["client"] as? String == name }?["epsilon"] as? Double
            XCTAssertEqual(entries.last?["cumulative_epsilon"] as? Double ?? -1, try XCTUnwrap(reported), accuracy: 1e-9)
        }
        let report = try Executables.run(Executables.coordinator, ["report", "--state", federation.coordinator.path,
                                                                    "--out", federation.root.appendingPathComponent("report.html").path])
        XCTAssertEqual(report.status, 0, report.stderr)
        let html = try String(contentsOf: federation.root.appendingPathComponent("report.html"), encoding: .utf8)
        XCTAssertTrue(html.contains("id=\"distributed-table\""))
        XCTAssertTrue(html.contains("data-field=\"epsilon-trusting-no-one\""))
    }
}
