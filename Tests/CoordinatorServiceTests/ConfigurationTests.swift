import Audit
import ClientService
import CoordinatorService
import FederationProtocol
import Foundation
import Privacy
import SystemIO
import TestSupport
import Wire
import XCTest

/// Every example configuration under Config/ parses, and bad files get errors naming file and field.
final class ConfigurationTests: XCTestCase {
    let config = Fixtures.repositoryRoot.appendingPathComponent("Config")

    func testExampleCoordinatorConfigurationParses() throws {
        let c = try CoordinatorConfiguration.load(config.appendingPathComponent("coordinator.json"))
        XCTAssertTrue(c.model.hasSuffix("/models/SmolLM2-135M-Instruct.Q4_1.gguf"), "relative to the file: \(c.model)")
        XCTAssertEqual(c.rounds.minClients, 2)
        XCTAssertEqual(c.rounds.plan.targets, ["q_proj", "k_proj", "v_proj", "o_proj"])
        XCTAssertEqual(c.rounds.plan.privacyUnit, .record)
        XCTAssertEqual(c.serverLearningRate, 0.01)
        XCTAssertTrue(c.rounds.secureAggregation)
    }

    /// Issue 17: the distributed-DP examples: one step a round over 8 clients' notes (expected batch 80 at q 0.01 of
    /// 1,000 each), and a client assuming 4 of its cohort honest; an assume_honest of 0 is refused naming the field.
    func testExampleDistributedConfigurationsParse() throws {
        let c = try CoordinatorConfiguration.load(config.appendingPathComponent("coordinator-distributed.json"))
        XCTAssertTrue(c.rounds.plan.isDistributed)
        XCTAssertEqual(c.rounds.plan.steps, 1)
        XCTAssertEqual(c.rounds.plan.expectedBatch, 80)
        XCTAssertEqual(c.rounds.plan.maxContributions, 256)
        XCTAssertNoThrow(try c.rounds.validate(path: "coordinator-distributed.json"))
        let client = try ClientConfiguration.load(config.appendingPathComponent("client-distributed.json"))
        XCTAssertEqual(client.policy.assumeHonest, 4)
        XCTAssertNil(client.policy.objection(to: c.rounds.plan, secureAggregation: true))
        XCTAssertEqual(try ClientConfiguration.load(config.appendingPathComponent("client.json")).policy.assumeHonest, 1,
                       "trusting no one by default")
        let directory = try Fixtures.temporaryDirectory("config-distributed")
        let url = directory.appendingPathComponent("c.json")
        let text = try String(contentsOf: config.appendingPathComponent("client-distributed.json"), encoding: .utf8)
        try Data(text.replacingOccurrences(of: "\"assume_honest\": 4", with: "\"assume_honest\": 0").utf8).write(to: url)
        XCTAssertThrowsError(try ClientConfiguration.load(url)) { XCTAssertTrue("\($0)".contains("assume_honest"), "\($0)") }
    }

    /// Issue 17: the client-level example (DP-FedAvg: q 0.1 of the registered clients, S 0.05, z 1, the federation's
    /// ε budget 8) validates, the example client's policy (unit record) takes part, and the example without its budget is refused
    /// naming the field.
    func testExampleClientLevelConfigurationParses() throws {
        let c = try CoordinatorConfiguration.load(config.appendingPathComponent("coordinator-client-level.json"))
        XCTAssertTrue(c.rounds.plan.isClientLevel)
        XCTAssertEqual(c.rounds.plan.clientSamplingRate, 0.1)
        XCTAssertEqual(c.rounds.clientEpsilonBudget, 8)
        XCTAssertNoThrow(try c.rounds.validate(path: "coordinator-client-level.json"))
        let client = try ClientConfiguration.load(config.appendingPathComponent("client.json"))
        XCTAssertNil(client.policy.objection(to: c.rounds.plan, secureAggregation: true))
        let directory = try Fixtures.temporaryDirectory("config-client-level")
        let url = directory.appendingPathComponent("c.json")
        let text = try String(contentsOf: config.appendingPathComponent("coordinator-client-level.json"), encoding: .utf8)
        try Data(text.replacingOccurrences(of: "\"client_epsilon_budget\": 8,", with: "").utf8).write(to: url)
        XCTAssertThrowsError(try CoordinatorConfiguration.load(url).rounds.validate(path: url.path)) {
            XCTAssertTrue("\($0)".contains("client_epsilon_budget"), "\($0)")
        }
        // Adaptive clipping (Andrew et al. 2021): the example's parameters, and a σ_b at or below z/2 refused by field.
        XCTAssertEqual(c.rounds.adaptiveClipping,
                       try ClientLevelDP.AdaptiveClipping(targetQuantile: 0.5, learningRate: 0.2, countNoiseMultiplier: 5))
        try Data(text.replacingOccurrences(of: "\"count_noise_multiplier\": 5", with: "\"count_noise_multiplier\": 0.4").utf8).write(to: url)
        XCTAssertThrowsError(try CoordinatorConfiguration.load(url).rounds.validate(path: url.path)) {
            XCTAssertTrue("\($0)".contains("adaptive_clipping.count_noise_multiplier"), "\($0)")
        }
    }

    func testSecureAggregationIsOnUnlessTurnedOff() throws {
        let directory = try Fixtures.temporaryDirectory("config-secure")
        let url = directory.appendingPathComponent("c.json")
        let plan = #""plan": {"steps": 1, "learning_rate": 0.1, "sampling_rate": 0.1, "noise_multiplier": 1, "clip_norm": 1, "delta": 1e-5, "max_length": 8, "rank": 1, "alpha": 1, "targets": ["q_proj"]}"#
        try Data(#"{"model": "m", "rounds": {"min_clients": 2, "max_clients": 3, "fraction": 1, "aggregation": "fedavg", "invite_timeout": 1, "round_timeout": 1, "wait_for_clients": 1, \#(plan)}}"#.utf8).write(to: url)
        XCTAssertTrue(try CoordinatorConfiguration.load(url).rounds.secureAggregation, "on when the field is absent")
        try Data(#"{"model": "m", "rounds": {"min_clients": 2, "max_clients": 3, "fraction": 1, "aggregation": "fedavg", "secure_aggregation": false, "invite_timeout": 1, "round_timeout": 1, "wait_for_clients": 1, \#(plan)}}"#.utf8).write(to: url)
        XCTAssertFalse(try CoordinatorConfiguration.load(url).rounds.secureAggregation)
    }

    func testExampleClientConfigurationParses() throws {
        let c = try ClientConfiguration.load(config.appendingPathComponent("client.json"))
        XCTAssertEqual(c.policy, ClientPolicy(maxEpsilon: 8, delta: 1e-5, maxStepsPerRound: 100, requirePrivacy: true,
                                           privacyUnit: .record))
        XCTAssertEqual(c.data, "/var/lib/conclave/notes.jsonl")
        XCTAssertEqual(c.threads, 2)
    }

    func testExampleClientConfigurationWithCanariesParses() throws {
        let c = try ClientConfiguration.load(config.appendingPathComponent("client-canaries.json"))
        XCTAssertEqual(c.canaries, CanaryConfiguration(count: 5, digits: 3, repetitions: 4, phrase: "My account number is"))
        XCTAssertNil(try ClientConfiguration.load(config.appendingPathComponent("client.json")).canaries)
    }

    func testBadFilesNameTheField() throws {
        let directory = try Fixtures.temporaryDirectory("config")
        func load(_ text: String) -> String {
            let url = directory.appendingPathComponent("c.json")
            try? Data(text.utf8).write(to: url)
            do {
                _ = try ClientConfiguration.load(url)
                return "loaded"
            } catch { return "\(error)" }
        }
        let path = directory.appendingPathComponent("c.json").path
        XCTAssertEqual(load(#"{"model": "m", "data": "d", "eval_data": "e"}"#), "\(path): field 'policy': is missing")
        XCTAssertEqual(load(#"{"model": "m", "data": "d", "eval_data": "e", "policy": {"max_epsilon": "8", "delta": 1e-5, "max_steps_per_round": 3}}"#),
                       "\(path): field 'policy.max_epsilon': expected Double")
        XCTAssertEqual(load(#"{"model": "m", "data": "d", "eval_data": "e", "policy": {"max_epsilon": -1, "delta": 1e-5, "max_steps_per_round": 3}}"#),
                       "\(path): field 'policy.max_epsilon': must be positive, got -1.0")
        XCTAssertTrue(load("{nope").contains("not valid JSON"))
        XCTAssertTrue(load(String(repeating: " ", count: 2 << 20)).contains("at most 1 MiB"))
        let coordinator = directory.appendingPathComponent("k.json")
        try Data(#"{"model": "m", "rounds": {"min_clients": 0, "max_clients": 1, "fraction": 1, "aggregation": "fedavg", "secure_aggregation": false, "invite_timeout": 1, "round_timeout": 1, "wait_for_clients": 1, "plan": {"steps": 1, "learning_rate": 0.1, "sampling_rate": 0.1, "noise_multiplier": 1, "clip_norm": 1, "delta": 1e-5, "max_length": 8, "rank": 1, "alpha": 1, "targets": ["q_proj"]}}}"#.utf8).write(to: coordinator)
        XCTAssertThrowsError(try CoordinatorConfiguration.load(coordinator)) { error in
            XCTAssertEqual("\(error)", "\(coordinator.path): field 'min_clients': must be at least 1, got 0")
        }
        let unknown = try String(contentsOf: coordinator, encoding: .utf8)
            .replacingOccurrences(of: #""min_clients": 0"#, with: #""min_clients": 1"#)
            .replacingOccurrences(of: #""aggregation": "fedavg""#, with: #""aggregation": "fedsgd""#)
        try Data(unknown.utf8).write(to: coordinator)
        XCTAssertThrowsError(try CoordinatorConfiguration.load(coordinator)) { error in
            XCTAssertEqual("\(error)", "\(coordinator.path): field 'rounds.aggregation': must be fedavg or fedadam, got 'fedsgd'")
        }
    }

    /// The plain-mode example with a robust aggregator parses; `trimmed_mean` and `median` need the
    /// individual updates, which secure aggregation hides, so a secure configuration asking for them
    /// is refused by name, also when `serve --secure-aggregation on` turns a plain file secure.
    func testRobustAggregatorParsesAndIsRefusedWithSecureAggregation() throws {
        let example = try CoordinatorConfiguration.load(config.appendingPathComponent("coordinator-plain-robust.json"))
        XCTAssertFalse(example.rounds.secureAggregation)
        XCTAssertEqual(example.rounds.aggregator, .trimmedMean)
        XCTAssertEqual(example.rounds.trimFraction, 0.2)
        XCTAssertNil(example.rounds.updateNormClip, "the default clip B·√P")
        XCTAssertEqual(try CoordinatorConfiguration.load(config.appendingPathComponent("coordinator.json")).rounds.aggregator,
                       .mean, "the mean when the field is absent")

        let directory = try Fixtures.temporaryDirectory("config-robust")
        let url = directory.appendingPathComponent("c.json")
        let plan = #""plan": {"steps": 1, "learning_rate": 0.1, "sampling_rate": 0.1, "noise_multiplier": 1, "clip_norm": 1, "delta": 1e-5, "max_length": 8, "rank": 1, "alpha": 1, "targets": ["q_proj"]}"#
        func load(_ fields: String, secureAggregation: Bool? = nil) -> String {
            try? Data(#"{"model": "m", "rounds": {"min_clients": 2, "max_clients": 3, "fraction": 1, "aggregation": "fedavg", "invite_timeout": 1, "round_timeout": 1, "wait_for_clients": 1, \#(fields), \#(plan)}}"#.utf8)
                .write(to: url)
            do {
                let rounds = try CoordinatorConfiguration.load(url, secureAggregation: secureAggregation).rounds
                return "loaded \(rounds.aggregator.rawValue) secure \(rounds.secureAggregation)"
            } catch { return "\(error)" }
        }
        let refusal = "field 'aggregator': 'median' needs each client's update, which secure aggregation hides from the coordinator"
        XCTAssertEqual(load(#""secure_aggregation": false, "aggregator": "median""#), "loaded median secure false")
        XCTAssertTrue(load(#""secure_aggregation": true, "aggregator": "median""#).hasPrefix("\(url.path): \(refusal)"))
        XCTAssertTrue(load(#""aggregator": "median""#).contains(refusal), "secure by default, so refused")
        XCTAssertTrue(load(#""secure_aggregation": false, "aggregator": "median""#, secureAggregation: true).contains(refusal),
                      "serve --secure-aggregation on is checked too")
        XCTAssertEqual(load(#""secure_aggregation": true, "aggregator": "median""#, secureAggregation: false),
                       "loaded median secure false", "serve --secure-aggregation off before the check")
        XCTAssertEqual(load(#""secure_aggregation": true, "aggregator": "mean""#), "loaded mean secure true", "control")
        XCTAssertTrue(load(#""secure_aggregation": true, "update_norm_clip": 2"#)
            .contains("field 'update_norm_clip': is the coordinator's clip of plain updates, which it cannot apply to masked ones"))
        XCTAssertEqual(load(#""secure_aggregation": false, "aggregator": "trimmed_mean", "trim_fraction": 0.5"#),
                       "\(url.path): field 'trim_fraction': must be in (0, 0.5) (the updates left must be a majority), got 0.5")
        XCTAssertEqual(load(#""secure_aggregation": false, "aggregator": "median", "trim_fraction": 0.1"#),
                       "\(url.path): field 'trim_fraction': applies to \"aggregator\": \"trimmed_mean\" only; remove it or set the aggregator")
        XCTAssertEqual(load(#""secure_aggregation": false, "update_norm_clip": -1"#),
                       "\(url.path): field 'update_norm_clip': must be a positive number, got -1.0")
        XCTAssertEqual(load(#""secure_aggregation": false, "aggregator": "krum""#),
                       "\(url.path): field 'rounds.aggregator': must be mean, trimmed_mean, median, got 'krum'")
    }

    /// The round policy of a configuration written to `url` with `fields` (a schedule's) before a plan whose
    /// `accuracy_records` is 7.
    func scheduledPolicy(_ fields: String, at url: URL) throws -> RoundPolicy {
        let plan = #""plan": {"steps": 1, "learning_rate": 0.1, "sampling_rate": 0.1, "noise_multiplier": 1, "clip_norm": 1, "delta": 1e-5, "max_length": 8, "rank": 1, "alpha": 1, "targets": ["q_proj"], "accuracy_records": 7}"#
        try Data(#"{"model": "m", "rounds": {"min_clients": 2, "max_clients": 3, "fraction": 1, "aggregation": "fedavg", "invite_timeout": 1, "round_timeout": 1, "wait_for_clients": 1, \#(fields)\#(plan)}}"#.utf8)
            .write(to: url)
        return try CoordinatorConfiguration.load(url).rounds
    }

    /// `accuracy_interval` k: round 1 and every k-th after it keep the plan's condition accuracy release, the others'
    /// invitations ask for none; absent, every round; below 1 refused by name.
    func testAccuracyIntervalParsesAndScheduledRoundsKeepTheRelease() throws {
        let url = try Fixtures.temporaryDirectory("config-accuracy").appendingPathComponent("c.json")
        func load(_ fields: String) throws -> RoundPolicy { try scheduledPolicy(fields, at: url) }
        let every = try load("")
        XCTAssertNil(every.accuracyInterval)
        XCTAssertEqual((1...4).map { every.plan(round: $0).accuracyRecords }, [7, 7, 7, 7])
        XCTAssertEqual(every.accuracyReleases(inRounds: 4), 4)
        let scheduled = try load(#""accuracy_interval": 5, "#)
        XCTAssertEqual((1...11).map { scheduled.plan(round: $0).accuracyRecords }, [7, 0, 0, 0, 0, 7, 0, 0, 0, 0, 7])
        XCTAssertEqual((1...6).map { scheduled.accuracyReleases(inRounds: $0) }, [1, 1, 1, 1, 1, 2])
        XCTAssertEqual(scheduled.plan(round: 2).accuracyNoiseMultiplier, scheduled.plan.accuracyNoiseMultiplier)
        XCTAssertEqual(try load(#""accuracy_interval": 1, "#).plan(round: 2).accuracyRecords, 7, "1: every round")
        XCTAssertThrowsError(try load(#""accuracy_interval": 0, "#)) { error in
            XCTAssertEqual("\(error)", "\(url.path): field 'accuracy_interval': must be at least 1 (1: every round), got 0")
        }
    }

    /// `heldout_interval` k: round 1 and every k-th after it ask for the held-out loss release, the others' invitations
    /// carry `heldout_release` false (and keep everything else, the accuracy schedule included); absent, every round;
    /// below 1 refused by name with `accuracy_interval`'s words.
    func testHeldOutIntervalParsesAndScheduledRoundsKeepTheRelease() throws {
        let url = try Fixtures.temporaryDirectory("config-heldout").appendingPathComponent("c.json")
        func load(_ fields: String) throws -> RoundPolicy { try scheduledPolicy(fields, at: url) }
        let every = try load("")
        XCTAssertNil(every.heldOutInterval)
        XCTAssertEqual((1...4).map { every.plan(round: $0).asksHeldOutRelease }, [true, true, true, true])
        XCTAssertEqual(every.heldOutReleases(inRounds: 4), 4)
        let scheduled = try load(#""heldout_interval": 5, "accuracy_interval": 2, "#)
        XCTAssertEqual(scheduled.heldOutInterval, 5)
        XCTAssertEqual((1...11).map { scheduled.plan(round: $0).asksHeldOutRelease },
                       [true, false, false, false, false, true, false, false, false, false, true])
        XCTAssertEqual((1...6).map { scheduled.heldOutReleases(inRounds: $0) }, [1, 1, 1, 1, 1, 2])
        XCTAssertEqual((1...4).map { scheduled.plan(round: $0).accuracyRecords }, [7, 0, 7, 0], "the schedules are independent")
        var skipped = scheduled.plan(round: 2)
        skipped.asksHeldOutRelease = true
        skipped.accuracyRecords = 7
        XCTAssertEqual(skipped, scheduled.plan, "a skipped round's plan differs in the two releases only")
        XCTAssertTrue(try load(#""heldout_interval": 1, "#).plan(round: 2).asksHeldOutRelease, "1: every round")
        XCTAssertThrowsError(try load(#""heldout_interval": 0, "#)) { error in
            XCTAssertEqual("\(error)", "\(url.path): field 'heldout_interval': must be at least 1 (1: every round), got 0")
        }
        XCTAssertThrowsError(try load(#""heldout_interval": -3, "#)) { error in
            XCTAssertEqual("\(error)", "\(url.path): field 'heldout_interval': must be at least 1 (1: every round), got -3")
        }
    }
}
