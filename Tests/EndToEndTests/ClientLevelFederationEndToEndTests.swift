import Foundation
import Privacy
import TestSupport
import Wire
import XCTest

/// Issue 17 through real processes over mutual TLS on the tiny fixture model: a client-level (DP-FedAvg) federation of
/// three registered clients sampled at q = 1 (so that every round runs), each training its local steps without noise,
/// clipping its whole update to S and masking it with its noise share; the coordinator divides the sum by q·N, persists
/// its accountant, and records the unit and the federation's ε in every audit record; each ledger is charged its
/// participations at its own unit.
final class ClientLevelFederationEndToEndTests: XCTestCase {
    func testTwoClientLevelRoundsCommitWithTheFederationsEpsilonRecorded() throws {
        let plan = TrainingPlan(steps: 3, learningRate: 0.01, samplingRate: 0.25, noiseMultiplier: 1.0, clipNorm: 0.05,
                                delta: 1e-5, maxLength: 64, rank: 2, alpha: 4, targets: ["q_proj", "v_proj"], privacyUnit: .client,
                                noisePlacement: .distributed, clientSamplingRate: 1)
        let names = ["client-a", "client-b", "client-c"]
        let federation = try TinyFederation.make(clients: names.map { ($0, 30, 100) }, minClients: 3, secureAggregation: true,
                                                 plan: plan, clientEpsilonBudget: 100)
        defer { federation.stopAll() }
        try federation.start(names)
        let rounds = try federation.runRounds(2)
        XCTAssertEqual(rounds.map { $0["status"] as? String }, ["committed", "committed"], federation.serveLog)
        XCTAssertTrue(federation.serveLog.contains("round 1: decoded the noised sum of 3 clipped updates over the fixed denominator "
                                                   + "q·N = 3"), federation.serveLog)
        XCTAssertTrue(federation.serveLog.contains("sampled 3 of 3 registered clients, 3 connected"), federation.serveLog)
        let audit = try federation.audit()
        XCTAssertEqual(audit.status, 0)
        let records = audit.json["records"] as? [[String: Any]] ?? []
        XCTAssertEqual(records.count, 2)
        XCTAssertEqual(Set(records.compactMap { $0["adapter_sha256"] as? String }).count, 2, "the global adapter moved each round")
        var epsilons: [Double] = []
        for (index, record) in records.enumerated() {
            XCTAssertEqual((record["plan"] as? [String: Any])?["privacy_unit"] as? String, "client")
            let level = try XCTUnwrap(record["client_level"] as? [String: Any], "\(record)")
            XCTAssertEqual(level["unit"] as? String, "client")
            XCTAssertEqual(level["population"] as? Int, 3)
            XCTAssertEqual(level["sampled"] as? Int, 3)
            XCTAssertEqual(level["expected_cohort"] as? Double, 3)
            XCTAssertEqual(level["rounds_charged"] as? Int, index + 1)
            epsilons.append(try XCTUnwrap(level["epsilon"] as? Double))
        }
        XCTAssertLessThan(epsilons[0], epsilons[1], "the federation's ε grows with the rounds")
        let state = federation.paths.clientLevelAccountant
        XCTAssertTrue(FileManager.default.fileExists(atPath: state.path), "the accountant is persisted")
        // Each ledger (unit record) holds both rounds' charges, each the round's mechanism and its metrics release.
        for name in names {
            let budget = try federation.budget(name)
            let purposes = (budget["entries"] as? [[String: Any]] ?? []).compactMap { $0["purpose"] as? String }
            XCTAssertEqual(purposes.filter { $0.contains("client-level DP per client") }.count, 4, "\(name): \(purposes)")
        }
    }

    /// Adaptive clipping (Andrew et al. 2021) through real processes: the same federation with `adaptive_clipping`
    /// (γ 0.5, η 0.2, σ_b 2). Each invitation carries S and σ_b, each client masks the count coordinate too (the setup's
    /// vector is one word longer, or the round would fail to unmask), and the coordinator logs b̄ and the next S; the
    /// second round's record has as S what the first set, each committed record keeps b̄, the next S and z_Δ
    /// (above z = 1: (1 − 1/16)^−½ = 1.033 within the grid's hair) and a count noise of at least σ_b.
    func testAdaptiveClippingMovesSAcrossRoundsThroughRealProcesses() throws {
        let plan = TrainingPlan(steps: 3, learningRate: 0.01, samplingRate: 0.25, noiseMultiplier: 1.0, clipNorm: 0.05,
                                delta: 1e-5, maxLength: 64, rank: 2, alpha: 4, targets: ["q_proj", "v_proj"], privacyUnit: .client,
                                noisePlacement: .distributed, clientSamplingRate: 1)
        let names = ["client-a", "client-b", "client-c"]
        let federation = try TinyFederation.make(
            clients: names.map { ($0, 30, 100) }, minClients: 3, secureAggregation: true, plan: plan, clientEpsilonBudget: 100,
            adaptiveClipping: try ClientLevelDP.AdaptiveClipping(targetQuantile: 0.5, learningRate: 0.2, countNoiseMultiplier: 2))
        defer { federation.stopAll() }
        try federation.start(names)
        let rounds = try federation.runRounds(2)
        XCTAssertEqual(rounds.map { $0["status"] as? String }, ["committed", "committed"], federation.serveLog)
        XCTAssertTrue(federation.serveLog.contains("round 1: adaptive clipping: noised unclipped fraction"), federation.serveLog)
        let records = try federation.audit().json["records"] as? [[String: Any]] ?? []
        XCTAssertEqual(records.count, 2)
        let levels = try records.map { try XCTUnwrap($0["client_level"] as? [String: Any], "\($0)") }
        let adaptive = try levels.map { try XCTUnwrap($0["adaptive_clipping"] as? [String: Any], "\($0)") }
        XCTAssertEqual(levels[0]["clip_norm"] as? Double, 0.05, "the first round clips to the plan's S")
        let next = try XCTUnwrap(adaptive[0]["next_clip_norm"] as? Double)
        XCTAssertEqual(try XCTUnwrap(levels[1]["clip_norm"] as? Double), next, accuracy: 1e-15, "the second round's S is the first's next")
        XCTAssertEqual(((records[1]["plan"] as? [String: Any])?["clip_norm"] as? Double) ?? 0, next, accuracy: 1e-15)
        XCTAssertEqual((records[1]["plan"] as? [String: Any])?["count_noise_multiplier"] as? Double, 2)
        for a in adaptive {
            let fraction = try XCTUnwrap(a["unclipped_fraction"] as? Double)
            XCTAssertTrue((0...1).contains(fraction))
            XCTAssertEqual(try XCTUnwrap(a["update_noise_multiplier"] as? Double), 1 / (1 - 1 / 16.0).squareRoot(), accuracy: 1e-3)
            XCTAssertGreaterThanOrEqual(try XCTUnwrap(a["count_noise"] as? Double), 2)
        }
        XCTAssertNotEqual(next, 0.05, "S moved (b̄ is never exactly γ)")
    }

    /// `train` and `budget` refuse `--privacy-unit client` by name before any work: a ledger and a local run count ε per
    /// record or user. (Without the refusal `budget` fails later with the budget's own error, which does not name the flag.)
    func testLocalCommandsRefuseTheClientUnit() throws {
        let directory = try Fixtures.temporaryDirectory("client-unit")
        defer { try? FileManager.default.removeItem(at: directory) }
        let budget = try Executables.run(Executables.client, ["budget", "--state", directory.appendingPathComponent("me").path,
                                                              "--set-epsilon", "5", "--delta", "1e-5", "--privacy-unit", "client"])
        XCTAssertNotEqual(budget.status, 0)
        XCTAssertTrue(budget.stderr.contains("--privacy-unit client is a federation's plan unit"), budget.stderr)
        let train = try Executables.run(Executables.client, ["train", "--model", Fixtures.url("tiny-llama").path, "--data", "/dev/null",
                                                             "--privacy-unit", "client", "--out", directory.appendingPathComponent("out").path])
        XCTAssertNotEqual(train.status, 0)
        XCTAssertTrue(train.stderr.contains("--privacy-unit client is a federation's plan unit"), train.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory.appendingPathComponent("out").path))
    }
}
