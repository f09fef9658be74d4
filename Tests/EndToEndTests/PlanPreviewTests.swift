import FederationProtocol
import Foundation
import Privacy
import TestSupport
import Wire
import XCTest

/// Previewing a plan's privacy before it runs, as processes: `conclave-client privacy plan` against the
/// client's own policy and ledger, `conclave-coordinator rounds plan` and `rounds start --dry-run`.
/// Their figures are N×steps compositions of the training plus N metrics releases, at least `privacy epsilon`'s.
final class PlanPreviewTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws { directory = try Fixtures.temporaryDirectory("plan-preview") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    func client(_ arguments: [String]) throws -> Executables.Result { try Executables.run(Executables.client, arguments) }
    func coordinator(_ arguments: [String]) throws -> Executables.Result { try Executables.run(Executables.coordinator, arguments) }

    /// `privacy epsilon --json`'s ε for `steps` steps at q 0.05, σ 0.9, δ 1e-5.
    func accountantEpsilon(steps: Int) throws -> Double {
        let result = try client(["privacy", "epsilon", "--sampling-rate", "0.05", "--noise-multiplier", "0.9",
                                 "--steps", "\(steps)", "--delta", "1e-5", "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        return try XCTUnwrap(result.json()["epsilon"] as? Double)
    }

    /// ε after `rounds` rounds of 30 steps at q 0.05, σ 0.9, δ 1e-5, each with its held-out metrics
    /// release at the default z (issue 13: a round charges both, so its preview counts both). The
    /// release can only add: the figure is at least `privacy epsilon`'s for the training alone.
    /// - Parameter accuracy: with the condition accuracy release at the default z (the coordinator's preview counts it
    ///   for a plan that asks for one; a client's `privacy plan` does not know its held-out records and leaves it out).
    func roundsEpsilon(_ rounds: Int, accuracy: Bool = false) throws -> Double {
        let epsilon = try PrivacyAccounting.epsilon(
            steps: [.dpsgd(samplingRate: 0.05, noiseMultiplier: 0.9, steps: 30 * rounds),
                    MetricsRelease.mechanism(noiseMultiplier: TrainingPlan.defaultMetricsNoiseMultiplier, rounds: rounds)]
                + (accuracy ? [MetricsRelease.mechanism(noiseMultiplier: TrainingPlan.defaultAccuracyNoiseMultiplier, rounds: rounds)] : []),
            delta: 1e-5, accountant: .rdp)
        XCTAssertGreaterThan(epsilon, try accountantEpsilon(steps: 30 * rounds), "the release adds to the training's ε")
        return epsilon
    }

    /// A client's configuration (a budget of 10 at δ 1e-5) and an empty state directory named `state`.
    func clientSetup(state name: String) throws -> (config: URL, state: URL) {
        let config = directory.appendingPathComponent("client.json")
        try #"{"model": "m.gguf", "data": "d.jsonl", "eval_data": "e.jsonl", "policy": {"max_epsilon": 10, "delta": 1e-5, "max_steps_per_round": 100}}"#
            .write(to: config, atomically: true, encoding: .utf8)
        let state = directory.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
        return (config, state)
    }

    func testClientPlanAgreesWithPrivacyEpsilonAndFindsTheFirstRefusedRound() throws {
        let (config, state) = try clientSetup(state: "me")
        let arguments = ["privacy", "plan", "--config", config.path, "--state", state.path, "--rounds", "8",
                         "--sampling-rate", "0.05", "--noise-multiplier", "0.9", "--steps", "30", "--delta", "1e-5"]
        let result = try client(arguments + ["--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let json = try result.json()
        XCTAssertEqual(Set(json.keys), ["rounds", "first_refused_round", "round_epsilon", "spent_epsilon", "budget_epsilon",
                                        "ceiling_epsilon", "delta", "accountant", "policy_objection"])
        XCTAssertEqual(json["budget_epsilon"] as? Double, 10, "no ledger yet: the budget join would create")
        XCTAssertEqual(json["spent_epsilon"] as? Double, 0)
        XCTAssertTrue(json["policy_objection"] is NSNull)
        XCTAssertEqual(json["round_epsilon"] as! Double, try roundsEpsilon(1), accuracy: 1e-9)
        let rounds = try XCTUnwrap(json["rounds"] as? [[String: Any]])
        XCTAssertEqual(rounds.count, 8)
        let first = try XCTUnwrap(json["first_refused_round"] as? Int, "\(json)")
        // Round k charged is k×30 compositions; the first refused one is the first past 10 (discrete-Gaussian
        // accounting: round 1 alone is about 7.8).
        for k in 1...first {
            let epsilon = try roundsEpsilon(k)
            XCTAssertEqual(rounds[k - 1]["epsilon"] as! Double, epsilon, accuracy: 1e-9, "round \(k)")
            XCTAssertEqual(rounds[k - 1]["refused"] as? Bool, epsilon > 10, "round \(k)")
        }
        XCTAssertGreaterThan(first, 1)
        XCTAssertTrue(rounds[first...].allSatisfy { $0["refused"] as? Bool == true })
        XCTAssertFalse(FileManager.default.fileExists(atPath: state.appendingPathComponent("privacy-ledger.json").path),
                       "a preview writes nothing")

        let text = try client(arguments)
        XCTAssertEqual(text.status, 0, text.stderr)
        XCTAssertTrue(text.stdout.contains("round \(first) is the first this client's budget would refuse"), text.stdout)

        // A plan the policy objects to (δ larger than the policy's) is declined whatever the ledger says.
        let objected = try client(arguments.map { $0 == "1e-5" ? "1e-4" : $0 } + ["--json"]).json()
        XCTAssertTrue((objected["policy_objection"] as? String)?.contains("δ") == true, "\(objected)")

        // A policy that counts users previews plans at its own unit (q per user), not as record plans it would decline.
        try #"{"model": "m.gguf", "data": "d.jsonl", "eval_data": "e.jsonl", "policy": {"max_epsilon": 4, "delta": 1e-5, "max_steps_per_round": 100, "privacy_unit": "user"}}"#
            .write(to: config, atomically: true, encoding: .utf8)
        let users = try client(arguments + ["--json"]).json()
        XCTAssertTrue(users["policy_objection"] is NSNull, "\(users)")
        XCTAssertEqual(users["round_epsilon"] as! Double, json["round_epsilon"] as! Double)

        // A client whose held-out records carry conditions charges the condition accuracy release too.
        let labelled = try client(arguments + ["--accuracy-noise-multiplier", "5", "--json"]).json()
        XCTAssertEqual(labelled["round_epsilon"] as! Double, try roundsEpsilon(1, accuracy: true), accuracy: 1e-9)
        XCTAssertGreaterThan(labelled["round_epsilon"] as! Double, (json["round_epsilon"] as! Double) + 1e-3)
    }

    /// `--heldout-interval` and `--accuracy-interval`: each round counts only the releases the coordinator's schedules
    /// ask for (rounds 1, 1 + k, …), as the ledger is charged (`HeldOutIntervalFederationTests` has the ledger's side);
    /// without them every round counts both.
    func testClientPlanCountsOnlyTheScheduledReleases() throws {
        let (config, state) = try clientSetup(state: "scheduled")
        let arguments = ["privacy", "plan", "--config", config.path, "--state", state.path, "--rounds", "6",
                         "--sampling-rate", "0.05", "--noise-multiplier", "2", "--steps", "10", "--delta", "1e-5",
                         "--metrics-noise-multiplier", "4", "--accuracy-noise-multiplier", "5", "--json"]
        func expected(_ round: Int, heldOut: Int, accuracy: Int) throws -> Double {
            try PrivacyAccounting.epsilon(steps: [.dpsgd(samplingRate: 0.05, noiseMultiplier: 2, steps: 10 * round),
                                                  MetricsRelease.mechanism(noiseMultiplier: 4, rounds: (round + heldOut - 1) / heldOut),
                                                  MetricsRelease.mechanism(noiseMultiplier: 5, rounds: (round + accuracy - 1) / accuracy)],
                                          delta: 1e-5, accountant: .rdp)
        }
        let scheduled = try client(arguments + ["--heldout-interval", "5", "--accuracy-interval", "2"])
        XCTAssertEqual(scheduled.status, 0, scheduled.stderr)
        let every = try client(arguments)
        XCTAssertEqual(every.status, 0, every.stderr)
        for (result, heldOut, accuracy) in [(scheduled, 5, 2), (every, 1, 1)] {
            let json = try result.json()
            XCTAssertTrue(json["first_refused_round"] is NSNull, "\(json)")
            XCTAssertEqual(json["round_epsilon"] as! Double, try expected(1, heldOut: 1, accuracy: 1), accuracy: 1e-9,
                           "round 1 asks for both")
            let rounds = try XCTUnwrap(json["rounds"] as? [[String: Any]])
            for k in 1...6 {
                XCTAssertEqual(rounds[k - 1]["epsilon"] as! Double, try expected(k, heldOut: heldOut, accuracy: accuracy),
                               accuracy: 1e-9, "round \(k), intervals \(heldOut) and \(accuracy)")
            }
        }
        let last = { (result: Executables.Result) throws -> Double in
            try XCTUnwrap((try result.json()["rounds"] as? [[String: Any]])?.last?["epsilon"] as? Double)
        }
        XCTAssertLessThan(try last(scheduled), try last(every) - 1e-3, "the skipped releases cost nothing")
    }

    func testCoordinatorPlanAndDryRunShowTheAccountantsFiguresAndUnknownPolicies() throws {
        let state = directory.appendingPathComponent("coord").path
        XCTAssertEqual(try coordinator(["init", "--state", state, "--name", "Plan Test", "--host", "127.0.0.1"]).status, 0)
        let clientState = directory.appendingPathComponent("clinic").path
        XCTAssertEqual(try client(["init", "--state", clientState, "--name", "clinic-1"]).status, 0)
        let enrolled = try coordinator(["enroll", "--state", state, "--csr", clientState + "/client.csr",
                                        "--out", directory.appendingPathComponent("clinic-1.pem").path])
        XCTAssertEqual(enrolled.status, 0, enrolled.stderr)
        let plan = #"{"steps": 30, "learning_rate": 0.002, "sampling_rate": 0.05, "noise_multiplier": 0.9, "clip_norm": 1, "delta": 1e-5, "max_length": 64, "rank": 4, "alpha": 8, "targets": ["q_proj"]}"#
        let config = directory.appendingPathComponent("coordinator.json")
        try #"{"model": "m.gguf", "rounds": {"min_clients": 1, "max_clients": 4, "fraction": 1, "aggregation": "fedavg", "invite_timeout": 60, "round_timeout": 600, "wait_for_clients": 60, "plan": \#(plan)}}"#
            .write(to: config, atomically: true, encoding: .utf8)

        let result = try coordinator(["rounds", "plan", "--state", state, "--config", config.path, "--count", "3", "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let json = try result.json()
        XCTAssertEqual(Set(json.keys), ["accountant", "delta", "sampling_rate", "noise_multiplier", "steps_per_round",
                                        "round_epsilon", "total_epsilon", "rounds", "clients", "aggregation"])
        // Secure by default: the mean of masked updates, each value clipped by its client to ±B = 8·steps·η.
        let aggregation = try XCTUnwrap(json["aggregation"] as? [String: Any])
        XCTAssertEqual(aggregation["strategy"] as? String, "fedavg")
        XCTAssertEqual(aggregation["secure_aggregation"] as? Bool, true)
        XCTAssertEqual(aggregation["aggregator"] as? String, "mean")
        XCTAssertEqual(try XCTUnwrap(aggregation["update_clip"] as? Double), 8 * 30 * 0.002, accuracy: 1e-12)
        XCTAssertTrue(aggregation["trim_fraction"] is NSNull && aggregation["update_norm_clip"] is NSNull, "\(aggregation)")
        let rounds = try XCTUnwrap(json["rounds"] as? [[String: Any]])
        XCTAssertEqual(rounds.count, 3)
        for k in 1...3 {
            XCTAssertEqual(rounds[k - 1]["epsilon"] as! Double, try roundsEpsilon(k, accuracy: true), accuracy: 1e-9)
            XCTAssertGreaterThan(rounds[k - 1]["epsilon"] as! Double, try roundsEpsilon(k) + 1e-3, "the accuracy release costs ε")
        }
        XCTAssertEqual(json["total_epsilon"] as! Double, rounds[2]["epsilon"] as! Double)
        // The coordinator knows no client's policy: it says so instead of guessing.
        let clients = try XCTUnwrap(json["clients"] as? [[String: Any]])
        XCTAssertEqual(clients.map { $0["id"] as? String }, ["clinic-1"])
        XCTAssertTrue(clients[0]["would_decline"] is NSNull && clients[0]["policy"] is NSNull, "\(clients)")
        XCTAssertTrue((clients[0]["reason"] as? String)?.contains("does not know this client's policy") == true)

        // `rounds start --dry-run` is the same preview, and starts nothing (no coordinator runs here).
        let dry = try coordinator(["rounds", "start", "--state", state, "--dry-run", "--config", config.path, "--json"])
        XCTAssertEqual(dry.status, 0, dry.stderr)
        let one = try coordinator(["rounds", "plan", "--state", state, "--config", config.path, "--json"])
        XCTAssertEqual(dry.stdout, one.stdout)
        // A plain round with a robust aggregator and the coordinator's own clip: the text says so.
        try #"{"model": "m.gguf", "rounds": {"min_clients": 1, "max_clients": 4, "fraction": 1, "aggregation": "fedavg", "secure_aggregation": false, "aggregator": "trimmed_mean", "update_norm_clip": 2.5, "invite_timeout": 60, "round_timeout": 600, "wait_for_clients": 60, "plan": \#(plan)}}"#
            .write(to: config, atomically: true, encoding: .utf8)
        let robust = try coordinator(["rounds", "plan", "--state", state, "--config", config.path])
        XCTAssertEqual(robust.status, 0, robust.stderr)
        XCTAssertTrue(robust.stdout.contains("\naggregation: fedavg of the trimmed mean (β 0.2) of plain updates, each clipped by "
                                             + "the coordinator to L2 norm 2.5\n"), robust.stdout)
        let missing = try coordinator(["rounds", "start", "--state", state, "--dry-run"])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.contains("--dry-run needs --config"), missing.stderr)
    }
}

/// `privacy plan --distributed` (issue 17, a preview): the ε under the client's assumption and trusting no one,
/// the same figures the Privacy module's `DistributedPlanPreview` gives (checked against the authors' code and
/// dp_accounting in PrivacyTests), and the round charged at the assumption's ledger stand-in.
final class DistributedPlanPreviewTests: XCTestCase {
    func testDistributedPreviewPrintsBothEpsilonsAndChargesTheAssumption() throws {
        let directory = try Fixtures.temporaryDirectory("plan-preview-distributed")
        defer { try? FileManager.default.removeItem(at: directory) }
        let config = directory.appendingPathComponent("client.json")
        try #"{"model": "m.gguf", "data": "d.jsonl", "eval_data": "e.jsonl", "policy": {"max_epsilon": 10, "delta": 1e-5, "max_steps_per_round": 100}}"#
            .write(to: config, atomically: true, encoding: .utf8)
        let state = directory.appendingPathComponent("me")
        try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
        let arguments = ["privacy", "plan", "--config", config.path, "--state", state.path, "--rounds", "5",
                         "--sampling-rate", "0.05", "--noise-multiplier", "1.5", "--steps", "1", "--delta", "1e-5",
                         "--distributed", "--cohort", "8", "--threshold", "6", "--assume-honest", "8", "--dimension", "65536",
                         "--contributions", "8"]
        let result = try Executables.run(Executables.client, arguments + ["--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let json = try result.json()
        let distributed = try XCTUnwrap(json["distributed"] as? [String: Any], "\(json)")
        let trust = try NoiseTrust(cohort: 8, threshold: 6, assumeHonest: 8)
        let preview = try DistributedPlanPreview(samplingRate: 0.05, noiseMultiplier: 1.5, stepsPerRound: 1, clipNorm: 1, dimension: 65536,
                                                 trust: trust, contributions: 8, fractionalBits: nil)
        let expected = try preview.epsilons(rounds: 5, delta: 1e-5)
        XCTAssertEqual(distributed["relied_shares"] as? Int, 6)
        XCTAssertEqual(distributed["fractional_bits"] as? Int, preview.fractionalBits)
        XCTAssertEqual(try XCTUnwrap(distributed["epsilon_assumed"] as? Double), expected.assumed, accuracy: 1e-12)
        XCTAssertEqual(try XCTUnwrap(distributed["epsilon_trusting_no_one"] as? Double), expected.trustingNoOne, accuracy: 1e-12)
        XCTAssertLessThan(expected.assumed, expected.trustingNoOne)
        let charged = try PrivacyAccounting.epsilon(steps: [preview.assumed.ledgerMechanism,
                                                            MetricsRelease.mechanism(noiseMultiplier: TrainingPlan.defaultMetricsNoiseMultiplier)],
                                                    delta: 1e-5, accountant: .rdp)
        XCTAssertEqual(try XCTUnwrap(json["round_epsilon"] as? Double), charged, accuracy: 1e-12)

        let text = try Executables.run(Executables.client, arguments)
        XCTAssertEqual(text.status, 0, text.stderr)
        XCTAssertTrue(text.stdout.contains("trusting no one (local DP)"), text.stdout)
        // Without --distributed the new options are refused, naming them.
        let refused = try Executables.run(Executables.client, Array(arguments.prefix(16)) + ["--cohort", "8"])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("need --distributed"), refused.stderr)
        // --contributions has no default: a record-level sum holds more vectors than the cohort, and a K too
        // small would understate the wrap probability taken from δ.
        let noContributions = try Executables.run(Executables.client, Array(arguments.dropLast(2)))
        XCTAssertNotEqual(noContributions.status, 0)
        XCTAssertTrue(noContributions.stderr.contains("--contributions"), noContributions.stderr)
    }
}
