import Foundation
import Privacy
import Wire

/// The privacy of a coordinator's training plan before any round runs (`rounds plan`, `rounds start
/// --dry-run`): ε of one round and after each of N rounds for a client in every round, by the RDP
/// accountant at the plan's δ (one round is `steps` compositions of the Poisson-subsampled Gaussian
/// at the plan's q and σ; N rounds are N×steps, as `conclave-client privacy epsilon --steps` counts
/// them), and for each enrolled client what the coordinator can say of its decision.
public struct PlanPreview: Encodable, Sendable, Equatable {
    /// What the coordinator knows of one enrolled client's decision.
    public struct Client: Encodable, Sendable, Equatable {
        public var id: String
        /// The client's policy when the coordinator knows it; clients keep their policies to themselves,
        /// so today this is always nil and `wouldDecline` is nil (unknown), never guessed.
        public var policy: ClientPolicy?
        /// Whether the client would decline every round of the plan on its policy; nil when unknown.
        public var wouldDecline: Bool?
        /// The policy's objection, or why nothing can be said.
        public var reason: String

        enum CodingKeys: String, CodingKey {
            case id, policy, reason
            case wouldDecline = "would_decline"
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(id, forKey: .id)
            try container.encode(policy, forKey: .policy)
            try container.encode(wouldDecline, forKey: .wouldDecline)
            try container.encode(reason, forKey: .reason)
        }
    }

    /// ε after a number of rounds.
    public struct Round: Encodable, Sendable, Equatable {
        public var round: Int
        public var epsilon: Double
    }

    /// How a round's updates become the next adapter, and what bounds one client's part in it.
    public struct Aggregation: Encodable, Sendable, Equatable {
        /// "fedavg" or "fedadam".
        public var strategy: String
        public var secureAggregation: Bool
        /// "mean", "trimmed_mean" or "median" (`UpdateAggregator`).
        public var aggregator: String
        /// β of "trimmed_mean"; nil otherwise.
        public var trimFraction: Double?
        /// B: the bound each value of a masked update is clipped to by its client (`update_clip`).
        public var updateClip: Double
        /// Plain rounds: the L2 clip the coordinator applies to each update when configured; nil when it
        /// is the default B·√P (P the adapter's parameter count, known once `serve` reads the model) or
        /// the round is secure.
        public var updateNormClip: Double?

        enum CodingKeys: String, CodingKey {
            case strategy, aggregator
            case secureAggregation = "secure_aggregation", trimFraction = "trim_fraction"
            case updateClip = "update_clip", updateNormClip = "update_norm_clip"
        }

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(strategy, forKey: .strategy)
            try container.encode(secureAggregation, forKey: .secureAggregation)
            try container.encode(aggregator, forKey: .aggregator)
            try container.encode(trimFraction, forKey: .trimFraction)
            try container.encode(updateClip, forKey: .updateClip)
            try container.encode(updateNormClip, forKey: .updateNormClip)
        }

        /// One line for a terminal.
        public var text: String {
            if secureAggregation {
                return String(format: "aggregation: %@ of the mean of masked updates (secure aggregation); each client "
                              + "clips every value to ±%g before masking, which the coordinator cannot check", strategy, updateClip)
            }
            let rule = aggregator == UpdateAggregator.trimmedMean.rawValue
                ? String(format: "trimmed mean (β %g)", trimFraction ?? RoundPolicy.defaultTrimFraction)
                : aggregator
            let clip = updateNormClip.map { String(format: "%g", $0) }
                ?? String(format: "%g·√P (P the adapter's parameter count)", updateClip)
            return "aggregation: \(strategy) of the \(rule) of plain updates, each clipped by the coordinator to L2 norm \(clip)"
        }
    }

    public var samplingRate: Double
    public var noiseMultiplier: Double
    public var stepsPerRound: Int
    public var delta: Double
    public var accountant: String { AccountantKind.rdp.rawValue }
    /// ε of one round alone; nil for a plan without differential privacy (σ = 0: ε is unbounded).
    public var roundEpsilon: Double?
    /// ε after rounds 1...N for a client that takes part in all of them; empty without privacy.
    public var rounds: [Round]
    public var clients: [Client]
    /// The policy's aggregation; nil for a preview of a plan alone.
    public var aggregation: Aggregation?
    /// Where the plan's noise is added. With `distributed` the ε above is the least a client is charged: that
    /// of the whole noise σ = z·Δ₂ (every share honest), whose ledger mechanism's noise multiplier 1/√(2ρ) is at
    /// most z (`DistributedDiscreteGaussianSteps.ledgerMechanism`); each client is charged more under its own
    /// `assume_honest`, which only it knows. JSON `noise_placement`, written for distributed plans only.
    public var noisePlacement: NoisePlacement = .local
    /// Whether the plan is client-level (DP-FedAvg): then `samplingRate` is the client sampling rate q, one round is
    /// one Poisson-subsampled Gaussian at (q, z) over clients, and the ε figures are the federation's client-level
    /// ε, which every client is charged for every round, sampled or not (`ClientLevelDP`). JSON `privacy_unit`
    /// "client", written for client-level plans only.
    public var clientLevel = false
    /// The policy's adaptive clipping (client-level only), with the update's noise multiplier z_Δ it implies (the
    /// continuous figure; the grid's is at most a hair below it). JSON `adaptive_clipping`.
    public var adaptiveClipping: AdaptiveClippingPreview?

    /// Adaptive clipping as the preview shows it.
    public struct AdaptiveClippingPreview: Codable, Sendable, Equatable {
        public var initialClipNorm: Double
        public var targetQuantile: Double
        public var learningRate: Double
        public var countNoiseMultiplier: Double
        public var updateNoiseMultiplier: Double

        enum CodingKeys: String, CodingKey {
            case initialClipNorm = "initial_clip_norm"
            case targetQuantile = "target_quantile"
            case learningRate = "learning_rate"
            case countNoiseMultiplier = "count_noise_multiplier"
            case updateNoiseMultiplier = "update_noise_multiplier"
        }
    }

    /// Why a client's decision is unknown when the coordinator has no policy for it.
    public static let unknownPolicy = "the coordinator does not know this client's policy (it stays on the client); "
        + "preview there with 'conclave-client privacy plan'"

    /// The preview of `count` rounds of `plan` for the `enrolled` client ids, with the policies known for
    /// some of them (judged by `ClientPolicy.objection`, as the client itself does at an invitation).
    /// - Throws: `PrivacyParameterError` for a plan the accountant cannot take.
    /// - Parameter accuracyReleases: how many condition accuracy releases the first r rounds ask for (default: one a
    ///   round when the plan asks for any; `RoundPolicy.accuracyReleases` under an `accuracy_interval`).
    /// - Parameter heldOutReleases: how many held-out loss releases the first r rounds ask for (default: one a round
    ///   when the plan asks for it; `RoundPolicy.heldOutReleases` under a `heldout_interval`).
    public init(plan: TrainingPlan, count: Int, enrolled: [String], knownPolicies: [String: ClientPolicy] = [:],
                accuracyReleases: ((Int) -> Int)? = nil, heldOutReleases: ((Int) -> Int)? = nil) throws {
        samplingRate = plan.samplingRate
        noiseMultiplier = plan.noiseMultiplier
        stepsPerRound = plan.steps
        delta = plan.delta
        noisePlacement = plan.noisePlacement
        if plan.isClientLevel, let q = plan.clientSamplingRate {
            clientLevel = true
            samplingRate = q
            stepsPerRound = 1
            let round = ClientLevelDP.Round(samplingRate: q, noiseMultiplier: plan.noiseMultiplier)
            rounds = try (1...max(1, count)).map { count in
                Round(round: count, epsilon: try ClientLevelDP.epsilon(rounds: Array(repeating: round, count: count), delta: plan.delta,
                                                                       accountant: .rdp).epsilon)
            }
            roundEpsilon = rounds[0].epsilon
        } else if plan.isPrivate {
            func accuracy(_ rounds: Int) -> [MechanismSteps] {
                let releases = accuracyReleases?(rounds) ?? (plan.accuracyRecords > 0 ? rounds : 0)
                return releases > 0 ? [MetricsRelease.accuracyMechanism(plan: plan, rounds: releases)] : []
            }
            func heldOut(_ rounds: Int) -> [MechanismSteps] {
                let releases = heldOutReleases?(rounds) ?? (plan.asksHeldOutRelease ? rounds : 0)
                return releases > 0 ? [MetricsRelease.mechanism(plan: plan, rounds: releases)] : []
            }
            rounds = try (1...max(1, count)).map { round in
                Round(round: round, epsilon: try PrivacyAccounting.epsilon(
                    // Each round charges its training and, in the rounds that ask for them, its held-out metrics
                    // release (issue 13) and the condition accuracy release of a client whose held-out records carry
                    // conditions (the preview counts it: the most a client is charged; one without conditions spends less).
                    steps: [.dpsgd(samplingRate: plan.samplingRate, noiseMultiplier: plan.noiseMultiplier,
                                   steps: plan.steps * round)]
                        + heldOut(round) + accuracy(round),
                    delta: plan.delta, accountant: .rdp))
            }
            roundEpsilon = rounds[0].epsilon
        } else {
            roundEpsilon = nil
            rounds = []
        }
        clients = enrolled.map { id in
            guard let policy = knownPolicies[id] else {
                return Client(id: id, policy: nil, wouldDecline: nil, reason: Self.unknownPolicy)
            }
            let objection = policy.objection(to: plan)
            return Client(id: id, policy: policy, wouldDecline: objection != nil, reason: objection ?? "the policy accepts the plan")
        }
    }

    /// The preview of `count` rounds of `policy`'s plan, with its aggregation.
    public init(policy: RoundPolicy, count: Int, enrolled: [String], knownPolicies: [String: ClientPolicy] = [:]) throws {
        try self.init(plan: policy.plan, count: count, enrolled: enrolled, knownPolicies: knownPolicies,
                      accuracyReleases: policy.accuracyReleases(inRounds:), heldOutReleases: policy.heldOutReleases(inRounds:))
        aggregation = Aggregation(strategy: policy.aggregation.rawValue, secureAggregation: policy.secureAggregation,
                                  aggregator: policy.aggregator.rawValue,
                                  trimFraction: policy.aggregator == .trimmedMean
                                      ? policy.trimFraction ?? RoundPolicy.defaultTrimFraction : nil,
                                  updateClip: policy.updateClip ?? SecureUpdate.defaultClip(plan: policy.plan),
                                  updateNormClip: policy.secureAggregation ? nil : policy.updateNormClip)
        if policy.plan.isClientLevel, let adaptive = policy.adaptiveClipping {
            adaptiveClipping = AdaptiveClippingPreview(
                initialClipNorm: policy.plan.clipNorm, targetQuantile: adaptive.targetQuantile, learningRate: adaptive.learningRate,
                countNoiseMultiplier: adaptive.countNoiseMultiplier,
                updateNoiseMultiplier: try ClientLevelDP.AdaptiveClipping.updateNoiseMultiplier(
                    noiseMultiplier: policy.plan.noiseMultiplier, countNoiseMultiplier: adaptive.countNoiseMultiplier))
        }
    }

    enum CodingKeys: String, CodingKey {
        case accountant, delta, rounds, clients, aggregation
        case samplingRate = "sampling_rate", noiseMultiplier = "noise_multiplier", stepsPerRound = "steps_per_round"
        case roundEpsilon = "round_epsilon", totalEpsilon = "total_epsilon"
        case noisePlacement = "noise_placement"
        case privacyUnit = "privacy_unit"
        case adaptiveClipping = "adaptive_clipping"
    }

    /// ε after all N rounds; nil without privacy.
    public var totalEpsilon: Double? { rounds.last?.epsilon }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(accountant, forKey: .accountant)
        try container.encode(delta, forKey: .delta)
        try container.encode(samplingRate, forKey: .samplingRate)
        try container.encode(noiseMultiplier, forKey: .noiseMultiplier)
        try container.encode(stepsPerRound, forKey: .stepsPerRound)
        try container.encode(roundEpsilon, forKey: .roundEpsilon)
        try container.encode(totalEpsilon, forKey: .totalEpsilon)
        try container.encode(rounds, forKey: .rounds)
        try container.encode(clients, forKey: .clients)
        if let aggregation { try container.encode(aggregation, forKey: .aggregation) }
        if noisePlacement != .local { try container.encode(noisePlacement, forKey: .noisePlacement) }
        if clientLevel { try container.encode(PrivacyUnit.client, forKey: .privacyUnit) }
        try container.encodeIfPresent(adaptiveClipping, forKey: .adaptiveClipping)
    }

    /// The preview as lines for a terminal.
    public var text: String {
        var lines = [String(format: "plan: %d steps a round at q %g, σ %g, δ %g (RDP accountant)", stepsPerRound,
                            samplingRate, noiseMultiplier, delta)]
        if let roundEpsilon, let totalEpsilon {
            lines.append(String(format: "ε per round %.6f; after %d round%@ %.6f (a client in every round)", roundEpsilon,
                                rounds.count, rounds.count == 1 ? "" : "s", totalEpsilon))
            if rounds.count > 1 {
                lines += rounds.map { String(format: "  after round %d  ε %.6f", $0.round, $0.epsilon) }
            }
        } else {
            lines.append("the plan has no differential privacy (noise multiplier 0): ε is unbounded")
        }
        if clientLevel {
            lines[0] = String(format: "plan: client-level DP-FedAvg, one round a Poisson sample of the registered clients at q %g, "
                              + "z %g, δ %g (RDP accountant)", samplingRate, noiseMultiplier, delta)
            lines.append("privacy unit client: the ε above is the federation's client-level ε, charged for every round to every "
                         + "client, sampled or not; each sampled client's own ledger is charged its participation without "
                         + "amplification under its assume_honest (SECURITY.md, Clients)")
            if let adaptive = adaptiveClipping {
                lines.append(String(format: "adaptive clipping: S starts at %g and moves by exp(−%g(b̄ − %g)) a round towards the "
                                    + "%g quantile of the sampled clients' update norms, b̄ their noised unclipped fraction (count "
                                    + "noise σ_b %g); the update's noise is z_Δ %.4f, so that the two together are the z %g the ε "
                                    + "above composes", adaptive.initialClipNorm, adaptive.learningRate, adaptive.targetQuantile,
                                    adaptive.targetQuantile, adaptive.countNoiseMultiplier, adaptive.updateNoiseMultiplier,
                                    noiseMultiplier))
            }
        } else if noisePlacement == .distributed {
            lines.append("noise placement distributed: each round is one DP-SGD step over the cohort's data, each client adding a "
                         + "share of the noise; the ε above is the least a client is charged (every share honest); each is charged "
                         + "more under its own assume_honest (default 1: its own share alone); see 'conclave-client privacy plan "
                         + "--distributed'")
        }
        if let aggregation { lines.append(aggregation.text) }
        if clients.isEmpty { lines.append("no enrolled clients") }
        for client in clients {
            let verdict = client.wouldDecline.map { $0 ? "would decline" : "would accept" } ?? "decision unknown"
            lines.append("  \(client.id): \(verdict): \(client.reason)")
        }
        return lines.joined(separator: "\n")
    }
}
