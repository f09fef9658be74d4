import FederationHarness
import FederationProtocol
import Foundation
import ModelFormats
import Privacy
import SecureAggregation
import TestSupport
import Wire
import XCTest

/// Issue 17: distributed DP over secure aggregation, end to end in memory (the real engine, agents, ledgers
/// and secure rounds): each round one DP-SGD step over the cohort, each client adding its share of discrete
/// Gaussian noise to its clipped gradient sum, the coordinator decoding the noised sum over the fixed denominator.
final class DistributedFederationTests: XCTestCase {
    /// 4 layers of every projection at rank 2: d = 4,096 coordinates, enough for the variance checks below.
    static let model = LlamaConfiguration(vocabSize: 64, hiddenSize: 32, intermediateSize: 64, numHiddenLayers: 4,
                                          numAttentionHeads: 4, numKeyValueHeads: 2, maxPositionEmbeddings: 128)
    static let plan = TrainingPlan(steps: 1, learningRate: 0.05, samplingRate: 0.05, noiseMultiplier: 1.0, clipNorm: 1.0,
                                   delta: 1e-5, maxLength: 64, rank: 2, alpha: 4,
                                   targets: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                                   noisePlacement: .distributed, expectedBatch: 6, maxContributions: 32)
    let t0 = Date(timeIntervalSince1970: 1_700_000_000)

    func roundPolicy(clients: Int, plan: TrainingPlan = DistributedFederationTests.plan) -> RoundPolicy {
        RoundPolicy(minClients: 2, maxClients: clients, fraction: 1, aggregation: .fedavg, secureAggregation: true,
                    inviteTimeout: 30, roundTimeout: 120, waitForClients: 60, plan: plan)
    }

    func zeroGlobal() throws -> AdapterTensors {
        try AdapterLayout(configuration: Self.model, plan: Self.plan).shapes.mapValues { [Float](repeating: 0, count: $0.reduce(1, *)) }
    }

    /// A client whose clipped gradient sum is `value` in every coordinate.
    func client(_ name: String, assumeHonest: Int, maxEpsilon: Double = 50, value: Float,
                fault: InMemoryFederation.ClientFault? = nil) throws -> InMemoryFederation.ClientSpec {
        let policy = ClientPolicy(maxEpsilon: maxEpsilon, delta: 1e-5, maxStepsPerRound: 10, assumeHonest: assumeHonest)
        return InMemoryFederation.ClientSpec(name: name, policy: policy, examples: 120,
                                             directory: try Fixtures.temporaryDirectory("distributed-\(name)"), fault: fault) { _, global, _ in
            global.mapValues { [Float](repeating: value, count: $0.count) }
        }
    }

    /// The unmasked sum's value words as signed integers (the participation word left out).
    func noiseIntegers(_ outcome: RoundOutcome) throws -> [Double] {
        let sum = try XCTUnwrap(outcome.secure?.sum)
        return sum.dropLast().map { Double(Int32(bitPattern: $0)) }
    }

    /// Three clients, each with a clipped sum of 0.2 per coordinate: the round commits, the global adapter
    /// moves by −η·(0.6 + noise)/6 in every coordinate, whose mean over d is −η·0.6/6 within 5 standard errors
    /// of the noise (z·Δ₂/2^f per coordinate); each client kept the new adapter, sent its trust (h clamped to
    /// the cohort, 3), and was charged exactly the ε its metrics report. Control: FedAvg of the plain mean
    /// (what a local-noise round would decode) is a different adapter.
    func testADistributedRoundTakesOneNoisedStepAndTheGlobalAdapterMoves() throws {
        let start = try zeroGlobal()
        let federation = try InMemoryFederation(
            policy: roundPolicy(clients: 3), model: Self.model, global: start,
            clients: [client("a", assumeHonest: 5, value: 0.2), client("b", assumeHonest: 5, value: 0.2),
                      client("c", assumeHonest: 5, value: 0.2)], now: t0)
        try federation.startRounds(1)
        let outcome = try XCTUnwrap(federation.finished.first?.outcome)
        XCTAssertTrue(outcome.isCommitted, "\(federation.coordinatorLog)")
        let setup = try XCTUnwrap(outcome.secure?.setup)
        let parameters = try SecureUpdate.distributedParameters(plan: Self.plan, setup: setup, assumeHonest: 1)
        let values = federation.global.keys.sorted().flatMap { federation.global[$0]! }
        XCTAssertEqual(values.count, 4096)
        XCTAssertTrue(values.allSatisfy { $0 != 0 }, "every coordinate moved")
        // ĝ·6 = −Δ·6/η: the clients' 0.6 plus the noise in gradient units.
        let estimates = values.map { -Double($0) * 6 / Self.plan.learningRate }
        let mean = estimates.reduce(0, +) / Double(estimates.count)
        let noiseSD = parameters.shareSigma * Double(setup.threshold).squareRoot() / parameters.scale
        XCTAssertEqual(mean, 0.6, accuracy: 5 * noiseSD / 64, "noise per coordinate \(noiseSD)")
        XCTAssertGreaterThan(abs(mean - 0.0), 5 * noiseSD / 64, "control: a zero step is outside the tolerance")
        for name in ["a", "b", "c"] {
            let kept = try XCTUnwrap(federation.clients[name]?.globalAdapter)
            XCTAssertEqual(kept, federation.global, "\(name) keeps the committed adapter")
        }
        for metrics in outcome.participantMetrics {
            let trust = try XCTUnwrap(metrics.trust, metrics.client)
            XCTAssertEqual(trust.assumeHonest, 3, "h is clamped to the cohort")
            XCTAssertLessThan(trust.roundEpsilon, trust.roundEpsilonTrustingNoOne)
            let ledger = try federation.clients[metrics.client]!.ledger()
            XCTAssertEqual(ledger.entries.last?.cumulativeEpsilon ?? -1, metrics.epsilon, accuracy: 1e-12)
            // The ledger's entry names the unit, the trust and both ε of the round.
            let purpose = try XCTUnwrap(ledger.entries.first?.purpose)
            XCTAssertTrue(purpose.contains("distributed DP per record: assume_honest 3 of a cohort of 3"), purpose)
            XCTAssertTrue(purpose.contains(String(format: "this round ε %.4f under it, %.4f trusting no one", trust.roundEpsilon,
                                                  trust.roundEpsilonTrustingNoOne)), purpose)
        }
    }

    /// Two rounds; a and b assume the whole cohort honest, w trusts no one. Each sends its cumulative ε trusting
    /// no one: for a and b the composition, computed here directly, of both rounds' charges at a single share
    /// (`DistributedRound` with h = 1: KLS 2021's local case) and their releases, above the ε they were charged;
    /// for w exactly its charged ε (its assumption is that case). The ledger keeps the figure across a reopen.
    func testEachClientSendsItsCumulativeEpsilonTrustingNoOne() throws {
        let federation = try InMemoryFederation(
            policy: roundPolicy(clients: 3), model: Self.model, global: try zeroGlobal(),
            clients: [client("a", assumeHonest: 3, value: 0.1), client("b", assumeHonest: 3, value: 0.1),
                      client("w", assumeHonest: 1, value: 0.1)], now: t0)
        try federation.startRounds(2)
        try federation.advance(by: 400)
        XCTAssertEqual(federation.finished.count, 2, "\(federation.coordinatorLog)")
        let last = try XCTUnwrap(federation.finished.last?.outcome)
        XCTAssertTrue(last.isCommitted, "\(federation.coordinatorLog)")
        let setup = try XCTUnwrap(last.secure?.setup)
        let alone = try SecureUpdate.distributedParameters(plan: Self.plan, setup: setup, assumeHonest: 1).ledgerMechanism
        let release = MetricsRelease.mechanism(plan: Self.plan)
        let direct = try PrivacyAccounting.epsilon(steps: [alone, release, alone, release], delta: Self.plan.delta, accountant: .rdp)
        XCTAssertEqual(last.participantMetrics.count, 3)
        for metrics in last.participantMetrics {
            let cumulative = try XCTUnwrap(metrics.trust?.epsilonTrustingNoOne, metrics.client)
            if metrics.client == "w" {
                XCTAssertEqual(cumulative, metrics.epsilon, accuracy: 1e-12, "trusting no one is w's own assumption")
            } else {
                XCTAssertEqual(cumulative, direct, accuracy: 1e-9 * direct, metrics.client)
                XCTAssertGreaterThan(cumulative, metrics.epsilon * 1.05, "control: the assumption's ε is well below it")
            }
            let reopened = try federation.clients[metrics.client]!.ledger()
            XCTAssertEqual(try reopened.epsilonTrustingNoOne, cumulative, accuracy: 1e-12, metrics.client)
            XCTAssertEqual(reopened.entries.compactMap(\.noiseMultiplierTrustingNoOne).count, 2, "one per round's training charge")
        }
    }

    /// The range check on the unmasked sum: a client whose "clipped sum" is 50 in every coordinate (norm 3,200·C,
    /// far over the plan's K·C = 32·C) makes the round abort by name, the global adapter unchanged; the same
    /// cohort all honest commits, the log naming its norm within the bound (the control).
    func testASumNoClippedCohortReachesAbortsTheRound() throws {
        for cheat in [false, true] {
            let start = try zeroGlobal()
            let federation = try InMemoryFederation(
                policy: roundPolicy(clients: 3), model: Self.model, global: start,
                clients: [client("a", assumeHonest: 1, value: 0.1), client("b", assumeHonest: 1, value: 0.1),
                          client("c", assumeHonest: 1, value: cheat ? 50 : 0.1)], now: t0)
            try federation.startRounds(1)
            let finished = try XCTUnwrap(federation.finished.first)
            XCTAssertTrue(finished.outcome.isCommitted, "the engine unmasked the sum: \(federation.coordinatorLog)")
            if cheat {
                XCTAssertFalse(finished.verdict.isCommitted)
                XCTAssertTrue(finished.verdict.reason.contains("range check: the noised sum's L2 norm"), finished.verdict.reason)
                XCTAssertTrue(federation.global == start, "nothing applied")
            } else {
                XCTAssertTrue(finished.verdict.isCommitted, finished.verdict.reason)
                XCTAssertTrue(federation.coordinatorLog.contains { $0.contains("(range check: L2 norm") }, "\(federation.coordinatorLog)")
                XCTAssertTrue(federation.global != start, "the step was applied")
            }
        }
    }

    /// Four clients, threshold 3, one dies before its masked input: the sum of the three survivors carries
    /// t·σ_share² = (z·Δ₂)², the plan's full noise (their clipped sums are 0, so the sum is noise only): the
    /// sample variance of its 4,096 integers is within 5 standard errors (√(2/N), 11%) of it. Controls: shares
    /// sized for the cohort (σ²/n: 3/4 of it) or one survivor fewer (2/3) would be outside.
    func testDropoutsUpToTheThresholdKeepTheFullNoise() throws {
        let federation = try InMemoryFederation(
            policy: roundPolicy(clients: 4), model: Self.model, global: try zeroGlobal(),
            clients: [client("a", assumeHonest: 1, value: 0), client("b", assumeHonest: 1, value: 0),
                      client("c", assumeHonest: 1, value: 0),
                      client("d", assumeHonest: 1, value: 0, fault: .dies(receiving: .secureShareBundle))], now: t0)
        try federation.startRounds(1)
        try federation.advance(by: 200)
        let outcome = try XCTUnwrap(federation.finished.first?.outcome)
        XCTAssertTrue(outcome.isCommitted, "\(federation.coordinatorLog)")
        let setup = try XCTUnwrap(outcome.secure?.setup)
        XCTAssertEqual(setup.threshold, 3)
        XCTAssertEqual(outcome.secure?.survivors, ["a", "b", "c"], "the dropout leaves exactly the threshold")
        let parameters = try SecureUpdate.distributedParameters(plan: Self.plan, setup: setup, assumeHonest: 1)
        XCTAssertEqual(parameters.survivingNoiseMultiplier(survivors: 3), Self.plan.noiseMultiplier, accuracy: 1e-12)
        let noise = try noiseIntegers(outcome)
        let full = pow(Self.plan.noiseMultiplier * parameters.preview.sensitivity.l2, 2)
        let variance = noise.reduce(0) { $0 + $1 * $1 } / Double(noise.count)
        let tolerance = 5 * (2 / Double(noise.count)).squareRoot()
        XCTAssertEqual(variance / full, 1, accuracy: tolerance)
        for control in [3.0 / 4, 2.0 / 3] { XCTAssertGreaterThan(abs(control - 1), tolerance, "control \(control)") }
    }

    /// A client that trusts no one (h = 1) is charged its own share's local DP; with a budget between that and
    /// the ε of trusting the whole cohort of four (h = 4: three honest shares in a sum of three), it declines
    /// with `distributed_trust` before anything is charged, while the others take part and the round commits.
    func testAClientTrustingTooFewDeclinesWithItsCode() throws {
        let setupLike = try DistributedRound(samplingRate: Self.plan.samplingRate, noiseMultiplier: 1, clipNorm: 1, dimension: 4096,
                                             cohort: 4, threshold: 3, assumeHonest: 4, contributions: 32)
        let wary = try DistributedRound(samplingRate: Self.plan.samplingRate, noiseMultiplier: 1, clipNorm: 1, dimension: 4096,
                                        cohort: 4, threshold: 3, assumeHonest: 1, contributions: 32)
        let release = MetricsRelease.mechanism(plan: Self.plan)
        let trusting = try PrivacyAccounting.epsilon(steps: [setupLike.ledgerMechanism, release], delta: 1e-5, accountant: .rdp)
        let alone = try PrivacyAccounting.epsilon(steps: [wary.ledgerMechanism, release], delta: 1e-5, accountant: .rdp)
        XCTAssertLessThan(trusting * 1.05, alone, "the assumption must separate the two charges for this test")
        let budget = (trusting * alone).squareRoot()
        let federation = try InMemoryFederation(
            policy: roundPolicy(clients: 4), model: Self.model, global: try zeroGlobal(),
            clients: [client("a", assumeHonest: 4, maxEpsilon: budget, value: 0.1), client("b", assumeHonest: 4, maxEpsilon: budget, value: 0.1),
                      client("c", assumeHonest: 4, maxEpsilon: budget, value: 0.1), client("w", assumeHonest: 1, maxEpsilon: budget, value: 0.1)],
            now: t0)
        try federation.startRounds(1)
        try federation.advance(by: 200)
        let outcome = try XCTUnwrap(federation.finished.first?.outcome)
        XCTAssertTrue(outcome.isCommitted, "\(federation.coordinatorLog)")
        XCTAssertEqual(outcome.declines.map(\.client), ["w"])
        XCTAssertTrue(outcome.declines.first?.reason.contains("distributed_trust") ?? false, "\(outcome.declines)")
        XCTAssertEqual(try federation.clients["w"]!.ledger().entries.count, 0, "nothing charged to the client that declined")
        XCTAssertEqual(federation.clients["w"]!.sent, [.decline])
        for name in ["a", "b", "c"] { XCTAssertFalse(try federation.clients[name]!.ledger().entries.isEmpty, name) }
    }

    /// The plan's mode is refused by name where it cannot hold: without secure aggregation (coordinator and
    /// client), with more than one step, without its denominator or contributions bound; at privacy unit client
    /// (ClientLevelFederationTests) a denominator is refused; a local plan with distributed fields is refused too.
    func testThePlanModeIsRefusedByNameWhereUnsupported() throws {
        var plain = roundPolicy(clients: 3)
        plain.secureAggregation = false
        XCTAssertThrowsError(try plain.validate(path: "coordinator.json")) { error in
            XCTAssertTrue("\(error)".contains("plan.noise_placement"), "\(error)")
        }
        XCTAssertNoThrow(try roundPolicy(clients: 3).validate(path: "coordinator.json"))
        let policy = ClientPolicy(maxEpsilon: 10, delta: 1e-5, maxStepsPerRound: 10, assumeHonest: 2)
        XCTAssertNotNil(policy.objection(to: Self.plan, secureAggregation: false))
        XCTAssertNil(policy.objection(to: Self.plan, secureAggregation: true))
        for (field, change) in [("steps", { (p: inout TrainingPlan) in p.steps = 3 }),
                                ("expected_batch", { (p: inout TrainingPlan) in p.expectedBatch = nil }),
                                ("max_contributions", { (p: inout TrainingPlan) in p.maxContributions = 0 }),
                                ("expected_batch", { (p: inout TrainingPlan) in p.noisePlacement = .local; p.maxContributions = nil })] {
            var plan = Self.plan
            change(&plan)
            XCTAssertThrowsError(try plan.validate(), field) { error in
                guard case let FederationError.configuration(_, named, _) = error else { return XCTFail("\(error)") }
                XCTAssertEqual(named, field)
            }
        }
        var json = String(decoding: try JSONEncoder().encode(Self.plan), as: UTF8.self)
        XCTAssertTrue(json.contains("\"noise_placement\":\"distributed\""))
        XCTAssertEqual(try JSONDecoder().decode(TrainingPlan.self, from: Data(json.utf8)), Self.plan)
        // Issue 17's client-level plans read; this distributed plan's fixed denominator does not apply to one.
        json = json.replacingOccurrences(of: "\"privacy_unit\":\"record\"", with: "\"privacy_unit\":\"client\"")
        XCTAssertThrowsError(try JSONDecoder().decode(TrainingPlan.self, from: Data(json.utf8)).validate()) { error in
            guard case let FederationError.configuration(_, named, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(named, "expected_batch")
        }
        let local = InMemoryFederationTests.plan
        XCTAssertFalse(String(decoding: try JSONEncoder().encode(local), as: UTF8.self).contains("noise_placement"),
                       "a local plan encodes as before")
    }

    /// The coordinator's preview of a distributed plan says that its ε is the least a client is charged, and it
    /// is: a client trusting the whole cohort (h = n, every share in the sum) is charged at least it by its
    /// ledger, one trusting no one more (control). A local plan's preview has no such line or field.
    func testThePreviewOfADistributedPlanIsTheLeastAClientIsCharged() throws {
        let preview = try PlanPreview(policy: roundPolicy(clients: 3), count: 1, enrolled: ["a"])
        XCTAssertTrue(preview.text.contains("noise placement distributed"), preview.text)
        XCTAssertTrue(String(decoding: try JSONEncoder().encode(preview), as: UTF8.self).contains("\"noise_placement\":\"distributed\""))
        let release = MetricsRelease.mechanism(plan: Self.plan)
        func charged(_ h: Int) throws -> Double {
            let round = try DistributedRound(samplingRate: Self.plan.samplingRate, noiseMultiplier: 1, clipNorm: 1, dimension: 4096,
                                             cohort: 3, threshold: 3, assumeHonest: h, contributions: 32)
            // A client whose held-out records carry conditions: the preview counts its accuracy release too.
            return try PrivacyAccounting.epsilon(steps: [round.ledgerMechanism, release, MetricsRelease.accuracyMechanism(plan: Self.plan)],
                                                 delta: 1e-5, accountant: .rdp)
        }
        let least = try XCTUnwrap(preview.roundEpsilon)
        XCTAssertGreaterThanOrEqual(try charged(3), least * (1 - 1e-12))
        XCTAssertGreaterThan(try charged(1), least * 1.05, "control: trusting no one costs more than the preview says")
        var local = roundPolicy(clients: 3, plan: InMemoryFederationTests.plan)
        local.secureAggregation = true
        let plain = try PlanPreview(policy: local, count: 1, enrolled: ["a"])
        XCTAssertFalse(plain.text.contains("noise placement"))
        XCTAssertFalse(String(decoding: try JSONEncoder().encode(plain), as: UTF8.self).contains("noise_placement"))
    }

    /// The invitation carries the mode on the wire (protocol 4): a distributed plan round-trips, and a frame
    /// whose plan says local but carries a denominator is refused naming the field.
    func testTheInvitationCarriesTheModeOnTheWire() throws {
        let invite = Invite(round: 7, plan: Self.plan, aggregation: "fedavg", secureAggregation: true,
                            adapterSHA256: String(repeating: "a", count: 64), deadlineSeconds: 60)
        let frame = try invite.frame()
        XCTAssertEqual(frame.version, 7, "protocol 4 brought the mode; 5 the metrics' cumulative ε trusting no one; 6 the "
                       + "held-out release's flag; 7 adaptive clipping's σ_b")
        XCTAssertEqual(try Invite(frame: frame), invite)
        var local = invite
        local.plan = InMemoryFederationTests.plan
        XCTAssertEqual(try Invite(frame: try local.frame()), local)
        var bytes = try local.frame().payload
        // expected_batch (8) and max_contributions (4) come before the accuracy release's bound and z (12), the held-out
        // flag (1) and σ_b (8): a local plan with a denominator of 6. (Until protocol 7 this test wrote into the accuracy
        // fields, whose refusal also names invite.plan; it now checks that the denominator's refusal is the one seen.)
        let start = bytes.count - 8 - 1 - 12 - 12
        XCTAssertEqual(Array(bytes[start..<(start + 8)]), [UInt8](repeating: 0, count: 8), "a local plan sends 0")
        bytes.replaceSubrange(start..<(start + 8), with: [0x40, 0x18, 0, 0, 0, 0, 0, 0])
        XCTAssertThrowsError(try Invite(frame: Frame(type: .invite, payload: bytes))) { error in
            XCTAssertTrue("\(error)".contains("expected_batch 6"), "\(error)")
        }
    }
}
