import FederationHarness
import FederationProtocol
import Foundation
import ModelFormats
import Privacy
import SecureAggregation
import TestSupport
import Wire
import XCTest

/// Issue 17: client-level DP-FedAvg end to end in memory (the real engine, agents, ledgers and secure rounds): the
/// coordinator charges its accountant and Poisson-samples the registered clients, each sampled client clips its whole
/// update to S and masks it with its noise share, and the coordinator divides the noised sum by q·N.
final class ClientLevelFederationTests: XCTestCase {
    /// d = 4,096 coordinates (as DistributedFederationTests), enough for the variance check.
    static let model = DistributedFederationTests.model
    static let plan = TrainingPlan(steps: 5, learningRate: 0.01, samplingRate: 0.1, noiseMultiplier: 1.0, clipNorm: 0.5,
                                   delta: 1e-5, maxLength: 64, rank: 2, alpha: 4,
                                   targets: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                                   privacyUnit: .client, noisePlacement: .distributed, clientSamplingRate: 0.5)
    let t0 = Date(timeIntervalSince1970: 1_700_000_000)

    static func policy(plan: TrainingPlan = ClientLevelFederationTests.plan, budget: Double? = 20) -> RoundPolicy {
        RoundPolicy(minClients: 2, maxClients: 2, fraction: 0.1, aggregation: .fedavg, secureAggregation: true,
                    inviteTimeout: 30, roundTimeout: 120, waitForClients: 60, plan: plan, clientEpsilonBudget: budget)
    }

    func zeroGlobal() throws -> AdapterTensors {
        try AdapterLayout(configuration: Self.model, plan: Self.plan).shapes.mapValues { [Float](repeating: 0, count: $0.reduce(1, *)) }
    }

    /// A client whose whole update is `value` in every coordinate (norm value·64 over d = 4,096).
    func client(_ name: String, value: Float, maxEpsilon: Double = 100) throws -> InMemoryFederation.ClientSpec {
        let policy = ClientPolicy(maxEpsilon: maxEpsilon, delta: 1e-5, maxStepsPerRound: 10, privacyUnit: .user, assumeHonest: 1)
        return InMemoryFederation.ClientSpec(name: name, policy: policy, examples: 50,
                                             directory: try Fixtures.temporaryDirectory("client-level-\(name)")) { _, global, _ in
            global.mapValues { [Float](repeating: value, count: $0.count) }
        }
    }

    // MARK: The plan, by field

    func field(_ policy: RoundPolicy) -> String? {
        do {
            try policy.validate(path: "c.json")
            return nil
        } catch let FederationError.configuration(_, field, _) {
            return field
        } catch {
            return "\(error)"
        }
    }

    /// Each refusal names its field; seen failing (nil, the policy passing) with `validateClientLevel`'s call removed
    /// from `RoundPolicy.validate`.
    func testAClientLevelPolicyIsCheckedByField() {
        XCTAssertNil(field(Self.policy()))
        var policy = Self.policy()
        policy.secureAggregation = false
        XCTAssertEqual(field(policy), "secure_aggregation")
        var plan = Self.plan
        plan.clientSamplingRate = nil
        XCTAssertEqual(field(Self.policy(plan: plan)), "plan.client_sampling_rate")
        plan = Self.plan
        plan.noisePlacement = .local
        XCTAssertEqual(field(Self.policy(plan: plan)), "plan.noise_placement")
        plan = Self.plan
        plan.noiseMultiplier = 0
        XCTAssertEqual(field(Self.policy(plan: plan)), "plan.noise_multiplier")
        XCTAssertEqual(field(Self.policy(budget: nil)), "client_epsilon_budget")
        XCTAssertEqual(field(Self.policy(budget: -1)), "client_epsilon_budget")
        var recordLevel = Self.plan
        recordLevel.privacyUnit = .record
        recordLevel.noisePlacement = .local
        recordLevel.clientSamplingRate = nil
        XCTAssertEqual(field(Self.policy(plan: recordLevel)), "client_epsilon_budget", "the budget belongs to client-level plans")
    }

    /// `rounds plan` of a client-level plan previews the federation's client-level ε (the accountant's, at q and z over
    /// rounds), not a DP-SGD figure of the local steps. Seen failing (the local steps' ε at 0.1, 5 steps, z 1) before
    /// `PlanPreview` had its client-level branch.
    func testThePreviewOfAClientLevelPlanIsTheFederationsEpsilon() throws {
        let preview = try PlanPreview(policy: Self.policy(), count: 3, enrolled: ["a"])
        let round = ClientLevelDP.Round(samplingRate: 0.5, noiseMultiplier: 1)
        for count in 1...3 {
            let expected = try ClientLevelDP.epsilon(rounds: Array(repeating: round, count: count), delta: 1e-5, accountant: .rdp)
            XCTAssertEqual(preview.rounds[count - 1].epsilon, expected.epsilon, accuracy: 1e-12)
        }
        XCTAssertEqual(preview.samplingRate, 0.5)
        XCTAssertTrue(preview.text.contains("client-level DP-FedAvg"), preview.text)
        XCTAssertTrue(String(decoding: try JSONEncoder().encode(preview), as: UTF8.self).contains("\"privacy_unit\":\"client\""))
        let local = try PrivacyAccounting.epsilon(steps: [.dpsgd(samplingRate: 0.1, noiseMultiplier: 1, steps: 5)], delta: 1e-5,
                                                  accountant: .rdp)
        XCTAssertNotEqual(preview.roundEpsilon ?? 0, local, accuracy: 1e-3, "control: not the local steps' DP-SGD ε")
    }

    // MARK: The coordinator's sampling

    /// The coordinator's Poisson sample (libsodium) over many draws: the count of sampled clients is within 5 standard
    /// deviations of the binomial's mean q·N·draws. Control: the same count tested at another rate (q + 0.02) falls
    /// outside its own bounds, so the check can fail.
    func testTheEnginesSampleHasTheBinomialRate() {
        let population = (0..<500).map { "client-\($0)" }
        let draws = 400, q = 0.1
        var total = 0
        for _ in 0..<draws { total += RoundEngine.poissonSample(population, samplingRate: q).count }
        func within(_ rate: Double) -> Bool {
            let n = Double(population.count * draws)
            return abs(Double(total) - n * rate) <= 5 * (n * rate * (1 - rate)).squareRoot()
        }
        XCTAssertTrue(within(q), "\(total) sampled in \(draws) draws of 500 at q \(q)")
        XCTAssertFalse(within(q + 0.02), "control: a wrong rate is outside the bounds")
        let first = RoundEngine.poissonSample(population, samplingRate: q)
        XCTAssertNotEqual(first, RoundEngine.poissonSample(population, samplingRate: q), "not a fixed draw")
    }

    /// Every registered client counts in N, connected or not; a sampled client that is not connected is not invited;
    /// a round whose connected sample is below max(2, min_clients) is skipped, and charged all the same.
    func testARoundWithTooFewSampledIsSkippedAndCharged() throws {
        let federation = try InMemoryFederation(
            policy: Self.policy(), model: Self.model, global: try zeroGlobal(),
            clients: [client("a", value: 0.001), client("b", value: 0.001), client("c", value: 0.001)], now: t0,
            sampleClients: { clients, _ in clients.filter { $0 == "a" } })
        try federation.startRounds(1)
        let outcome = try XCTUnwrap(federation.finished.first?.outcome)
        XCTAssertFalse(outcome.isCommitted)
        XCTAssertTrue(outcome.abortReason?.hasPrefix("skipped") == true, "\(outcome.abortReason ?? "")")
        let facts = try XCTUnwrap(outcome.clientLevel)
        XCTAssertEqual(facts.population, 3)
        XCTAssertEqual(facts.sampled, 1)
        XCTAssertEqual(facts.roundsCharged, 1, "charged before the sample")
        XCTAssertEqual(federation.engine.federationAccountant?.rounds.count, 1)
        let expected = try ClientLevelDP.epsilon(rounds: [.init(samplingRate: 0.5, noiseMultiplier: 1)], delta: 1e-5, accountant: .rdp)
        XCTAssertEqual(facts.epsilon, expected.epsilon, accuracy: 1e-12)
        XCTAssertTrue(federation.clients.values.allSatisfy { !$0.sent.contains(.accept) }, "nobody was invited")
    }

    /// The accountant refuses, before anyone is sampled, the round that would pass the federation's budget: with
    /// a budget between ε(1 round) and ε(2 rounds), the second round is refused and nothing is charged for it.
    func testTheFederationsBudgetRefusesARoundBeforeSampling() throws {
        let one = try ClientLevelDP.epsilon(rounds: [.init(samplingRate: 0.5, noiseMultiplier: 1)], delta: 1e-5, accountant: .rdp).epsilon
        let two = try ClientLevelDP.epsilon(rounds: Array(repeating: .init(samplingRate: 0.5, noiseMultiplier: 1), count: 2),
                                            delta: 1e-5, accountant: .rdp).epsilon
        let sampledCalls = Counter()
        let federation = try InMemoryFederation(
            policy: Self.policy(budget: (one + two) / 2), model: Self.model, global: try zeroGlobal(),
            clients: [client("a", value: 0.001), client("b", value: 0.001)], now: t0,
            sampleClients: { _, _ in sampledCalls.increment(); return [] })
        try federation.startRounds(3)
        XCTAssertEqual(federation.finished.count, 1, "the first round ran (skipped); the second and third were refused")
        XCTAssertEqual(federation.engine.federationAccountant?.rounds.count, 1)
        XCTAssertEqual(sampledCalls.value, 1, "no sample drawn for a refused round")
        XCTAssertTrue(federation.coordinatorLog.contains { $0.contains("refused before sampling") }, "\(federation.coordinatorLog)")
        XCTAssertEqual(federation.engine.queued, 0)
    }

    // MARK: End to end

    /// Four sampled clients of N = 4 at q = 0.5 (the sample injected): two updates under S and two over it, at z 0.1 so
    /// that the signal stands out of the noise. The global adapter moves by (Σ clip(Δ_k) + noise)/(q·N): its mean over
    /// d equals Σ clip(Δ_k)/(q·N) within 5 standard errors, and the residual's standard deviation is the noise the four
    /// survivors carry on the sum, z·S·√(4/t) (t = 3 of 4; the grid's rounding slack √d·2^−f is far below 1%), within
    /// 5%. Controls: dividing by the survivors (4) instead of q·N (2), or summing the updates unclipped, is outside the
    /// tolerance. Each client was charged the round's mechanism at q = 1 at its ledger's unit (user). Seen failing
    /// with the coordinator's denominator set to the survivors (`RoundAggregation.updates`).
    func testClippedUpdatesSumWithNoiseOverTheFixedDenominator() throws {
        let values: [String: Float] = ["a": 0.001, "b": 0.002, "c": 0.05, "d": 0.1]  // norms 0.064, 0.128, 3.2, 6.4 vs S 0.5
        var plan = Self.plan
        plan.noiseMultiplier = 0.1
        let federation = try InMemoryFederation(
            policy: Self.policy(plan: plan, budget: 1e6), model: Self.model, global: try zeroGlobal(),
            clients: try values.keys.sorted().map { try client($0, value: values[$0]!, maxEpsilon: 1e5) }, now: t0,
            sampleClients: { clients, _ in clients })
        try federation.startRounds(1)
        let outcome = try XCTUnwrap(federation.finished.first?.outcome)
        XCTAssertTrue(outcome.isCommitted, "\(federation.coordinatorLog)")
        let facts = try XCTUnwrap(outcome.clientLevel)
        XCTAssertEqual(facts.expectedCohort, 2)
        let secure = try XCTUnwrap(outcome.secure)
        XCTAssertEqual(secure.survivors.count, 4)
        let d = 4096.0
        // A constant update c has norm |c|·64; clipped to S = 0.5 it is sign(c)·0.5/64 per coordinate.
        func clipped(_ c: Float) -> Double { Double(c) * min(1, 0.5 / (abs(Double(c)) * d.squareRoot())) }
        let clippedSum = values.values.map(clipped).reduce(0, +)
        let unclippedSum = values.values.map(Double.init).reduce(0, +)
        let moved = federation.global.keys.sorted().flatMap { federation.global[$0]! }.map(Double.init)
        XCTAssertEqual(moved.count, 4096)
        let parameters = try SecureUpdate.clientLevelParameters(plan: plan, setup: secure.setup, assumeHonest: 1)
        XCTAssertEqual(secure.setup.threshold, 3)
        let noiseSD = parameters.shareSigma * Double(secure.survivors.count).squareRoot() / parameters.scale  // on the sum
        let mean = moved.reduce(0, +) / d
        let tolerance = 5 * noiseSD / facts.expectedCohort / d.squareRoot()
        XCTAssertEqual(mean, clippedSum / facts.expectedCohort, accuracy: tolerance, "noise on the sum \(noiseSD)")
        XCTAssertGreaterThan(abs(mean - clippedSum / 4), tolerance, "control: the survivors' count as denominator")
        XCTAssertGreaterThan(abs(mean - unclippedSum / facts.expectedCohort), tolerance, "control: unclipped updates")
        let residuals = moved.map { ($0 - clippedSum / facts.expectedCohort) * facts.expectedCohort }
        let sd = (residuals.map { $0 * $0 }.reduce(0, +) / d).squareRoot()
        let expectedSD = plan.noiseMultiplier * plan.clipNorm * (4.0 / 3.0).squareRoot()
        XCTAssertEqual(sd, expectedSD, accuracy: 0.05 * expectedSD, "the noise's scale on the sum (shares: \(noiseSD))")
        XCTAssertEqual(noiseSD, expectedSD, accuracy: 0.01 * expectedSD, "the shares' σ·√s over the scale")
        for name in values.keys {
            let client = try XCTUnwrap(federation.clients[name])
            let ledger = try client.ledger()
            XCTAssertEqual(ledger.budget.unit, .user, "charged at its ledger's unit")
            XCTAssertTrue(ledger.entries.allSatisfy { $0.unit == .user }, name)
            XCTAssertTrue(ledger.entries.contains { $0.mechanism == parameters.ledgerMechanism },
                          "\(name): the round's mechanism at q = 1 (no amplification): \(ledger.entries.map(\.mechanism))")
            XCTAssertEqual(parameters.ledgerMechanism.samplingRate, 1)
        }
    }
}

extension ClientLevelFederationTests {
    /// The range check on a client-level round's unmasked sum: the honest round's sum passes (the log names its norm
    /// within the bound); the same sum with one client's unclipped update of 1 per coordinate added on the grid
    /// (norm 64, against S = 0.5; the bound is about K·S + the noise's z·S·√d = 1.5 + 32 and a tail) is refused by
    /// name and nothing is decoded into an update. An excess under the bound goes undetected (0.05 per coordinate,
    /// norm 3.2, passed when tried): the check catches gross cheating and wraps, not a client within the noise.
    func testAnUnclippedUpdateInTheSumIsRefusedByTheRangeCheck() throws {
        let federation = try InMemoryFederation(
            policy: Self.policy(), model: Self.model, global: try zeroGlobal(),
            clients: [client("a", value: 0.001), client("b", value: 0.001), client("c", value: 0.001)], now: t0,
            sampleClients: { clients, _ in clients })
        try federation.startRounds(1)
        let finished = try XCTUnwrap(federation.finished.first)
        XCTAssertTrue(finished.verdict.isCommitted, finished.verdict.reason)
        XCTAssertTrue(federation.coordinatorLog.contains { $0.contains("(range check: L2 norm") }, "\(federation.coordinatorLog)")
        var outcome = finished.outcome
        var secure = try XCTUnwrap(outcome.secure)
        let scale = try SecureUpdate.clientLevelParameters(plan: Self.plan, setup: secure.setup, assumeHonest: 1).scale
        let cheat = UInt32(truncatingIfNeeded: Int64(scale.rounded()))
        for index in secure.sum.indices.dropLast() { secure.sum[index] &+= cheat }
        outcome.secure = secure
        XCTAssertThrowsError(try RoundAggregation.updates(of: outcome, policy: Self.policy(), global: try zeroGlobal(),
                                                          layout: federation.layout)) {
            XCTAssertTrue("\($0)".contains("range check: the noised sum's L2 norm"), "\($0)")
        }
    }
}

/// A count the sampler closure bumps (the closure must be Sendable).
final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    var value: Int { lock.withLock { count } }
    func increment() { lock.withLock { count += 1 } }
}

extension ClientLevelFederationTests {
    static func adaptivePolicy(plan: TrainingPlan, countNoise: Double) throws -> RoundPolicy {
        var policy = Self.policy(plan: plan, budget: 1e6)
        policy.adaptiveClipping = try ClientLevelDP.AdaptiveClipping(targetQuantile: 0.5, learningRate: 0.2, countNoiseMultiplier: countNoise)
        return policy
    }

    /// Adaptive clipping end to end (Andrew et al. 2021): four clients of N = 4 sampled at q = 0.5, every update under
    /// S (norm 0.064 against 0.5), z 0.1 and σ_b 0.1, so b̄ = clamp(Σ(b − ½)/(q·N) + ½) = clamp(1.5 + noise of 0.05) = 1
    /// and each round S moves by exp(−0.2·(1 − 0.5)): 0.5, 0.4524, 0.4094 in three rounds, each round's invitation
    /// carrying the S the last one set and σ_b, each client's masked vector one word longer (the count), its ledger
    /// charged the round's mechanism with the count in it (d + 1 coordinates). Then a round with two of four updates
    /// over S reads b̄ within 5 standard errors (0.25) of ½. Seen failing with the engine's `setClientClipNorm` call
    /// removed from the harness (S stayed 0.5).
    func testAdaptiveClippingMovesSTowardsTheQuantile() throws {
        var plan = Self.plan
        plan.noiseMultiplier = 0.1
        let policy = try Self.adaptivePolicy(plan: plan, countNoise: 0.1)
        XCTAssertNil(field(policy))
        let federation = try InMemoryFederation(
            policy: policy, model: Self.model, global: try zeroGlobal(),
            clients: try ["a", "b", "c", "d"].map { try client($0, value: 0.001, maxEpsilon: 1e5) }, now: t0,
            sampleClients: { clients, _ in clients })
        try federation.startRounds(3)
        XCTAssertEqual(federation.finished.count, 3)
        var expected = 0.5
        for finished in federation.finished {
            XCTAssertTrue(finished.verdict.isCommitted, "\(finished.verdict) \(federation.coordinatorLog)")
            let facts = try XCTUnwrap(finished.outcome.clientLevel)
            XCTAssertEqual(facts.clipNorm, expected, accuracy: 1e-12, "round \(finished.outcome.round)")
            let secure = try XCTUnwrap(finished.outcome.secure)
            XCTAssertEqual(Int(secure.setup.vectorLength), 4096 + 2, "the update, the count and the participation word")
            let step = try XCTUnwrap(finished.adaptiveStep)
            XCTAssertEqual(step.clipNorm, expected, accuracy: 1e-12)
            XCTAssertEqual(step.unclippedFraction, 1)
            expected *= exp(-0.2 * 0.5)
            XCTAssertEqual(step.nextClipNorm, expected, accuracy: 1e-12)
            XCTAssertEqual(step.updateNoiseMultiplier, 1 / (100 - 25.0).squareRoot(), accuracy: 1e-3)
            let roundPlan = policy.plan(round: finished.outcome.round, clientLevel: facts)
            XCTAssertEqual(roundPlan.countNoiseMultiplier, 0.1)
            let parameters = try SecureUpdate.clientLevelParameters(plan: roundPlan, setup: secure.setup, assumeHonest: 1)
            XCTAssertEqual(parameters.preview.assumed.dimension, 4096 + 1)
            for name in ["a", "b", "c", "d"] {
                let ledger = try XCTUnwrap(federation.clients[name]).ledger()
                XCTAssertTrue(ledger.entries.contains { $0.mechanism == parameters.ledgerMechanism }, "\(name): the count is accounted")
            }
        }
        XCTAssertEqual(federation.engine.clientClipNorm, expected, accuracy: 1e-12)

        let mixed = try InMemoryFederation(
            policy: policy, model: Self.model, global: try zeroGlobal(),
            clients: try ["a": Float(0.001), "b": 0.002, "c": 0.05, "d": 0.1].sorted { $0.key < $1.key }
                .map { try client($0.key, value: $0.value, maxEpsilon: 1e5) }, now: t0,
            sampleClients: { clients, _ in clients })
        try mixed.startRounds(1)
        let step = try XCTUnwrap(mixed.finished.first?.adaptiveStep, "\(mixed.coordinatorLog)")
        XCTAssertEqual(step.unclippedFraction, 0.5, accuracy: 5 * step.countNoise / 2)
        XCTAssertLessThan(step.countNoise, 0.11)
    }

    /// A plan of the wrong shape is refused by field: adaptive clipping on a record-level plan, a σ_b at or below z/2
    /// (`adaptive_clipping.count_noise_multiplier`), a γ outside (0, 1), and `count_noise_multiplier` written into the
    /// plan itself (the coordinator writes it into each invitation).
    func testAdaptiveClippingIsCheckedByField() throws {
        XCTAssertNil(field(try Self.adaptivePolicy(plan: Self.plan, countNoise: 2)))
        var policy = try Self.adaptivePolicy(plan: Self.plan, countNoise: 2)
        policy.adaptiveClipping?.countNoiseMultiplier = 0.5
        XCTAssertEqual(field(policy), "adaptive_clipping.count_noise_multiplier")
        policy = try Self.adaptivePolicy(plan: Self.plan, countNoise: 2)
        policy.adaptiveClipping?.targetQuantile = 1.5
        XCTAssertEqual(field(policy), "adaptive_clipping.target_quantile")
        policy = try Self.adaptivePolicy(plan: Self.plan, countNoise: 2)
        policy.plan.countNoiseMultiplier = 2
        XCTAssertEqual(field(policy), "plan.count_noise_multiplier")
        var recordLevel = Self.plan
        recordLevel.privacyUnit = .record
        recordLevel.noisePlacement = .local
        recordLevel.clientSamplingRate = nil
        var record = Self.policy(plan: recordLevel, budget: nil)
        record.adaptiveClipping = try ClientLevelDP.AdaptiveClipping(targetQuantile: 0.5, learningRate: 0.2, countNoiseMultiplier: 2)
        XCTAssertEqual(field(record), "adaptive_clipping")
    }
}
