import Foundation
import Privacy

/// What the coordinator asks each client of a round to do: train a LoRA adapter of this shape with
/// DP-SGD under these parameters. The client checks it against its own policy and ledger before it
/// accepts; the audit record keeps it.
public struct TrainingPlan: Codable, Sendable, Equatable {
    /// DP-SGD steps (each on a Poisson sample of the client's records, or of its users).
    public var steps: Int
    /// AdamW learning rate.
    public var learningRate: Double
    /// Poisson sampling rate q: each record (each user, at privacy unit user) joins each step's batch
    /// with this probability.
    public var samplingRate: Double
    /// Noise multiplier σ (noise std is σ·C); 0 means no differential privacy.
    public var noiseMultiplier: Double
    /// Per-example clipping norm C.
    public var clipNorm: Double
    /// The δ at which ε is reported.
    public var delta: Double
    /// Records are cut to this many tokens.
    public var maxLength: Int
    /// LoRA rank r.
    public var rank: Int
    /// LoRA alpha (scaling alpha / r).
    public var alpha: Double
    /// The adapted projections (q_proj, k_proj, ...).
    public var targets: [String]
    /// Whom ε protects, which is what each step samples and clips as one: a record or a user (JSON
    /// `privacy_unit`, `record` when absent, as in plans written before it existed).
    public var privacyUnit: PrivacyUnit
    /// Noise multiplier z of each client's held-out metrics release (`HeldOutRelease`): the discrete
    /// Gaussian's σ is z times the release's L2 sensitivity. Charged with the training, as one more
    /// Gaussian mechanism (q = 1, one step). JSON `metrics_noise_multiplier`, default 20.
    public var metricsNoiseMultiplier: Double
    /// L: each held-out record's mean token loss is clipped to [0, L] nats before it is summed and
    /// noised. JSON `metrics_loss_clip`, default 6.
    public var metricsLossClip: Double
    /// Whether the round asks for the held-out loss release (`HeldOutRelease`): when false its clients neither score
    /// their held-out records for it, nor release, nor are charged for it. JSON `heldout_release`, true when absent
    /// (and written only when false, so plans and audit records of earlier builds encode the same); the coordinator's
    /// `heldout_interval` sets it false in the rounds it skips.
    public var asksHeldOutRelease: Bool
    /// Where the noise is added (JSON `noise_placement`, `local` when absent): by each client to its own
    /// DP-SGD steps, or shared out over the cohort under secure aggregation, each round then being one
    /// DP-SGD step over the union of the cohort's data (`DistributedRound`).
    public var noisePlacement: NoisePlacement
    /// Distributed only: the fixed denominator the coordinator divides the noised sum by, the expected
    /// number of units in one step's sum over the cohort (q × the cohort's units), public and data-independent
    /// (JSON `expected_batch`).
    public var expectedBatch: Double?
    /// Distributed only: the bound K on the clipped vectors one step's sum holds over the cohort, from which
    /// the fixed-point scale is chosen so that the modular sum wraps with probability at most 10⁻⁹ (JSON
    /// `max_contributions`; `ModularWrap`).
    public var maxContributions: Int?
    /// Client-level only (privacy unit `client`, DP-FedAvg): q, each registered client's probability of being
    /// sampled into a round by the coordinator (JSON `client_sampling_rate`). `sampling_rate` stays the local
    /// record sampling rate of the client's (non-private) local steps; `clip_norm` is S, the clip of a client's
    /// whole round update; `noise_multiplier` is z, the noise N(0, z²S²) on the sum. The coordinator's alone:
    /// the invitation does not carry it (a client charges its participation without amplification, SECURITY.md).
    public var clientSamplingRate: Double?
    /// How many held-out privacy units with a labelled record (`condition`) each client scores per round for its
    /// condition accuracy release (`ConditionAccuracyRelease`): the bound on a round's generation time; 0 asks for no
    /// accuracy release. JSON `accuracy_records`, default `defaultAccuracyRecords`.
    public var accuracyRecords: Int
    /// Noise multiplier z of the condition accuracy release: its discrete Gaussian's σ is z·√3 records. Charged with
    /// the training, as one more Gaussian mechanism (q = 1, one step), by clients that release it. JSON
    /// `accuracy_noise_multiplier`, default `defaultAccuracyNoiseMultiplier`.
    public var accuracyNoiseMultiplier: Double
    /// Client-level with adaptive clipping only (Andrew et al. 2021, `ClientLevelDP.AdaptiveClipping`): σ_b, the noise
    /// on the cohort's count of unclipped updates. Its presence asks each sampled client to append the bit
    /// b = 1[‖Δ‖ ≤ S] as one more coordinate of its masked vector; `clip_norm` is then this round's S, which the
    /// coordinator moves from round to round. Written by the coordinator into each invitation from its policy's
    /// `adaptive_clipping` (JSON `count_noise_multiplier`, absent otherwise).
    public var countNoiseMultiplier: Double?

    /// Whether the plan's noise is shared out over the cohort (distributed DP).
    public var isDistributed: Bool { noisePlacement == .distributed }
    /// Whether the plan is client-level DP-FedAvg (privacy unit `client`): local steps without noise, the whole
    /// update clipped to S, the sum noised by the cohort's shares.
    public var isClientLevel: Bool { privacyUnit == .client }

    /// Default z of the metrics release: a small share of ε. It adds at most 4% to the ε of 1 to 10
    /// rounds of the plans in SECURITY.md's table (0.2% after the demo's 3 rounds; dp_accounting's RDP at
    /// δ 1e-5, SECURITY.md, "What a client sends"); the price is noise: σ = 34.6 records on the count.
    public static let defaultMetricsNoiseMultiplier = 20.0
    /// Default L of the metrics release, in nats: above the per-record mean losses of the demo's notes (about 3.5).
    public static let defaultMetricsLossClip = 6.0
    /// Default bound on the units scored for condition accuracy per round: about 2 s of generation each on the demo's
    /// model (one thread), so 10 keep a round's cost near 20 s, and cover half of a demo client's 20 held-out notes.
    public static let defaultAccuracyRecords = 10
    /// Default z of the condition accuracy release (σ = 8.7 records per client and coordinate): SECURITY.md, "The
    /// held-out metrics release", has what it adds to ε and what the figure's standard error is at this z.
    public static let defaultAccuracyNoiseMultiplier = 5.0

    public init(steps: Int, learningRate: Double, samplingRate: Double, noiseMultiplier: Double, clipNorm: Double,
                delta: Double, maxLength: Int, rank: Int, alpha: Double, targets: [String],
                privacyUnit: PrivacyUnit = .record,
                metricsNoiseMultiplier: Double = TrainingPlan.defaultMetricsNoiseMultiplier,
                metricsLossClip: Double = TrainingPlan.defaultMetricsLossClip, noisePlacement: NoisePlacement = .local,
                expectedBatch: Double? = nil, maxContributions: Int? = nil, clientSamplingRate: Double? = nil,
                accuracyRecords: Int = TrainingPlan.defaultAccuracyRecords,
                accuracyNoiseMultiplier: Double = TrainingPlan.defaultAccuracyNoiseMultiplier,
                asksHeldOutRelease: Bool = true) {
        self.asksHeldOutRelease = asksHeldOutRelease
        self.steps = steps
        self.learningRate = learningRate
        self.samplingRate = samplingRate
        self.noiseMultiplier = noiseMultiplier
        self.clipNorm = clipNorm
        self.delta = delta
        self.maxLength = maxLength
        self.rank = rank
        self.alpha = alpha
        self.targets = targets
        self.privacyUnit = privacyUnit
        self.metricsNoiseMultiplier = metricsNoiseMultiplier
        self.metricsLossClip = metricsLossClip
        self.noisePlacement = noisePlacement
        self.expectedBatch = expectedBatch
        self.maxContributions = maxContributions
        self.clientSamplingRate = clientSamplingRate
        self.accuracyRecords = accuracyRecords
        self.accuracyNoiseMultiplier = accuracyNoiseMultiplier
    }

    /// A client-level round's plan: this one with the round's S and adaptive clipping's σ_b (nil: none), as the
    /// invitation carries it and the audit record keeps it.
    public func clientLevelRound(clipNorm: Double, countNoiseMultiplier: Double?) -> TrainingPlan {
        var round = self
        round.clipNorm = clipNorm
        round.countNoiseMultiplier = countNoiseMultiplier
        return round
    }

    /// Whether the plan trains with differential privacy.
    public var isPrivate: Bool { noiseMultiplier > 0 }

    enum CodingKeys: String, CodingKey {
        case steps, rank, alpha, targets, delta
        case learningRate = "learning_rate"
        case samplingRate = "sampling_rate"
        case noiseMultiplier = "noise_multiplier"
        case clipNorm = "clip_norm"
        case maxLength = "max_length"
        case privacyUnit = "privacy_unit"
        case metricsNoiseMultiplier = "metrics_noise_multiplier"
        case metricsLossClip = "metrics_loss_clip"
        case noisePlacement = "noise_placement"
        case expectedBatch = "expected_batch"
        case maxContributions = "max_contributions"
        case clientSamplingRate = "client_sampling_rate"
        case accuracyRecords = "accuracy_records"
        case accuracyNoiseMultiplier = "accuracy_noise_multiplier"
        case asksHeldOutRelease = "heldout_release"
        case countNoiseMultiplier = "count_noise_multiplier"
    }

    /// The privacy-unit spellings this build reads in a plan: `record`, `user` and `client` (client-level
    /// DP-FedAvg, `ClientLevelDP`).
    public static func privacyUnit(named name: String) throws -> PrivacyUnit {
        if let unit = PrivacyUnit(rawValue: name) { return unit }
        throw FederationError.configuration(path: "plan", field: "privacy_unit", "must be record, user or client, got '\(name)'")
    }

    /// Every field required but `privacy_unit` (`record` when absent) and the metrics release's
    /// (their defaults when absent): plans written before them (configurations, audit records) still read.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        steps = try container.decode(Int.self, forKey: .steps)
        learningRate = try container.decode(Double.self, forKey: .learningRate)
        samplingRate = try container.decode(Double.self, forKey: .samplingRate)
        noiseMultiplier = try container.decode(Double.self, forKey: .noiseMultiplier)
        clipNorm = try container.decode(Double.self, forKey: .clipNorm)
        delta = try container.decode(Double.self, forKey: .delta)
        maxLength = try container.decode(Int.self, forKey: .maxLength)
        rank = try container.decode(Int.self, forKey: .rank)
        alpha = try container.decode(Double.self, forKey: .alpha)
        targets = try container.decode([String].self, forKey: .targets)
        privacyUnit = try container.decodeIfPresent(String.self, forKey: .privacyUnit).map(Self.privacyUnit(named:)) ?? .record
        noisePlacement = try container.decodeIfPresent(NoisePlacement.self, forKey: .noisePlacement) ?? .local
        expectedBatch = try container.decodeIfPresent(Double.self, forKey: .expectedBatch)
        maxContributions = try container.decodeIfPresent(Int.self, forKey: .maxContributions)
        clientSamplingRate = try container.decodeIfPresent(Double.self, forKey: .clientSamplingRate)
        metricsNoiseMultiplier = try container.decodeIfPresent(Double.self, forKey: .metricsNoiseMultiplier)
            ?? Self.defaultMetricsNoiseMultiplier
        metricsLossClip = try container.decodeIfPresent(Double.self, forKey: .metricsLossClip) ?? Self.defaultMetricsLossClip
        accuracyRecords = try container.decodeIfPresent(Int.self, forKey: .accuracyRecords) ?? Self.defaultAccuracyRecords
        accuracyNoiseMultiplier = try container.decodeIfPresent(Double.self, forKey: .accuracyNoiseMultiplier)
            ?? Self.defaultAccuracyNoiseMultiplier
        asksHeldOutRelease = try container.decodeIfPresent(Bool.self, forKey: .asksHeldOutRelease) ?? true
        countNoiseMultiplier = try container.decodeIfPresent(Double.self, forKey: .countNoiseMultiplier)
    }

    /// Every field; a local plan's as before distributed DP existed (no `noise_placement`), so records and
    /// configurations written by earlier builds encode the same.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(steps, forKey: .steps)
        try c.encode(learningRate, forKey: .learningRate)
        try c.encode(samplingRate, forKey: .samplingRate)
        try c.encode(noiseMultiplier, forKey: .noiseMultiplier)
        try c.encode(clipNorm, forKey: .clipNorm)
        try c.encode(delta, forKey: .delta)
        try c.encode(maxLength, forKey: .maxLength)
        try c.encode(rank, forKey: .rank)
        try c.encode(alpha, forKey: .alpha)
        try c.encode(targets, forKey: .targets)
        try c.encode(privacyUnit, forKey: .privacyUnit)
        try c.encode(metricsNoiseMultiplier, forKey: .metricsNoiseMultiplier)
        try c.encode(metricsLossClip, forKey: .metricsLossClip)
        if noisePlacement != .local { try c.encode(noisePlacement, forKey: .noisePlacement) }
        try c.encodeIfPresent(expectedBatch, forKey: .expectedBatch)
        try c.encodeIfPresent(maxContributions, forKey: .maxContributions)
        try c.encodeIfPresent(clientSamplingRate, forKey: .clientSamplingRate)
        try c.encode(accuracyRecords, forKey: .accuracyRecords)
        try c.encode(accuracyNoiseMultiplier, forKey: .accuracyNoiseMultiplier)
        if !asksHeldOutRelease { try c.encode(false, forKey: .asksHeldOutRelease) }
        try c.encodeIfPresent(countNoiseMultiplier, forKey: .countNoiseMultiplier)
    }

    /// The plan's fields in range, or an error naming the first that is not.
    public func validate() throws {
        func check(_ ok: Bool, _ field: String, _ reason: String) throws {
            if !ok { throw FederationError.configuration(path: "plan", field: field, reason) }
        }
        try check(steps >= 1 && steps <= 1_000_000, "steps", "must be 1...1000000, got \(steps)")
        try check(learningRate.isFinite && learningRate > 0, "learning_rate", "must be positive, got \(learningRate)")
        try check(samplingRate > 0 && samplingRate <= 1, "sampling_rate", "must be in (0, 1], got \(samplingRate)")
        try check(noiseMultiplier.isFinite && noiseMultiplier >= 0, "noise_multiplier", "must be ≥ 0, got \(noiseMultiplier)")
        try check(clipNorm.isFinite && clipNorm > 0, "clip_norm", "must be positive, got \(clipNorm)")
        try check(delta > 0 && delta < 1, "delta", "must be in (0, 1), got \(delta)")
        try check(maxLength >= 2 && maxLength <= 1 << 16, "max_length", "must be 2...65536, got \(maxLength)")
        try check(rank >= 1 && rank <= 1024, "rank", "must be 1...1024, got \(rank)")
        try check(alpha.isFinite && alpha > 0, "alpha", "must be positive, got \(alpha)")
        try check(metricsNoiseMultiplier.isFinite && metricsNoiseMultiplier >= 0.1 && metricsNoiseMultiplier <= 1000,
                  "metrics_noise_multiplier", "must be in [0.1, 1000], got \(metricsNoiseMultiplier)")
        try check(metricsLossClip.isFinite && metricsLossClip > 0 && metricsLossClip <= 1000, "metrics_loss_clip",
                  "must be in (0, 1000] nats, got \(metricsLossClip)")
        try check((0...ConditionAccuracyRelease.maximumRecords).contains(accuracyRecords), "accuracy_records",
                  "must be 0...\(ConditionAccuracyRelease.maximumRecords), got \(accuracyRecords)")
        try check(accuracyNoiseMultiplier.isFinite && accuracyNoiseMultiplier >= 0.1 && accuracyNoiseMultiplier <= 1000,
                  "accuracy_noise_multiplier", "must be in [0.1, 1000], got \(accuracyNoiseMultiplier)")
        try validatePlacement(check)
        let known: Set<String> = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        try check(!targets.isEmpty && targets.allSatisfy(known.contains), "targets",
                  "must be a non-empty subset of \(known.sorted().joined(separator: ",")), got \(targets)")
    }

    /// Distributed noise: a private plan of one step per round (the step is taken at the global adapter),
    /// with its fixed denominator and contributions bound; a local plan has neither.
    private func validatePlacement(_ check: (Bool, String, String) throws -> Void) throws {
        guard !isClientLevel else { return try validateClientLevel(check) }
        try check(clientSamplingRate == nil, "client_sampling_rate", "applies to privacy_unit client only")
        try check(countNoiseMultiplier == nil, "count_noise_multiplier", "applies to privacy_unit client with adaptive clipping only")
        guard isDistributed else {
            try check(expectedBatch == nil, "expected_batch", "applies to noise_placement distributed only")
            try check(maxContributions == nil, "max_contributions", "applies to noise_placement distributed only")
            return
        }
        try check(isPrivate, "noise_multiplier", "must be positive with noise_placement distributed (the noise is the point)")
        try check(steps == 1, "steps", "must be 1 with noise_placement distributed: each round is one DP-SGD step over the "
                  + "cohort's data at the global adapter, got \(steps)")
        guard let expectedBatch else {
            return try check(false, "expected_batch", "is required with noise_placement distributed: the fixed denominator, "
                             + "the expected units in one step over the cohort (q × their number)")
        }
        try check(expectedBatch.isFinite && expectedBatch > 0 && expectedBatch <= 1e9, "expected_batch",
                  "must be in (0, 1e9], got \(expectedBatch)")
        guard let maxContributions else {
            return try check(false, "max_contributions", "is required with noise_placement distributed: the most clipped "
                             + "vectors one step's sum holds over the cohort, for the wrap bound")
        }
        try check(maxContributions >= 1 && maxContributions <= 1 << 24, "max_contributions",
                  "must be 1...16777216, got \(maxContributions)")
    }

    /// Client-level DP-FedAvg: what the plan itself holds of `ClientLevelDP.checkPlan` (distributed noise, S, z;
    /// q when given), by field. The coordinator's whole check, secure aggregation and q required, is
    /// `RoundPolicy.validate`'s; an invitation carries no q. The fixed denominator is q·N, the coordinator's
    /// (N: its registered clients), and the wrap bound's K the cohort: neither field applies.
    private func validateClientLevel(_ check: (Bool, String, String) throws -> Void) throws {
        do {
            try ClientLevelDP.checkPlan(secureAggregation: true, noisePlacement: noisePlacement, clipNorm: clipNorm,
                                        samplingRate: clientSamplingRate ?? 1, noiseMultiplier: noiseMultiplier)
        } catch let error as ClientLevelDP.PlanError {
            try check(false, error.field == "sampling_rate" ? "client_sampling_rate" : error.field, error.reason)
        }
        try check(expectedBatch == nil, "expected_batch", "does not apply to privacy_unit client: the fixed denominator is "
                  + "q·N, which the coordinator computes from client_sampling_rate and its registered clients")
        try check(maxContributions == nil, "max_contributions", "does not apply to privacy_unit client: each sampled client "
                  + "contributes one clipped update, so the wrap bound's K is the cohort")
        if let countNoiseMultiplier {
            do {
                _ = try ClientLevelDP.AdaptiveClipping.updateNoiseMultiplier(noiseMultiplier: noiseMultiplier,
                                                                             countNoiseMultiplier: countNoiseMultiplier)
            } catch {
                try check(false, "count_noise_multiplier", "must be finite and above noise_multiplier / 2 = \(noiseMultiplier / 2), got "
                          + "\(countNoiseMultiplier)")
            }
        }
    }
}

/// A client's reason for declining a round, or a coordinator's for dropping it.
public struct ClientReason: Codable, Sendable, Equatable {
    public var client: String
    public var reason: String
    public init(client: String, reason: String) {
        self.client = client
        self.reason = reason
    }
}

/// One participant's figures for a round, as it reported them. Every field is public, from the plan or
/// the client's ledger, or released by an accounted mechanism (SECURITY.md, "What a client sends";
/// `ClientMessageFieldTests` walks them): the held-out losses and record count only as a noised
/// `HeldOutRelease`, charged to the client's ledger with the round's training. No timing, no exact
/// count, no training loss.
public struct ClientRoundMetrics: Codable, Sendable, Equatable {
    public var client: String
    /// The client's cumulative ε after this round, at `delta`, from its own ledger: a function of the
    /// mechanisms it was charged for (the plans it accepted and its own runs), never of its records.
    public var epsilon: Double
    public var delta: Double
    /// The client's own budget: the most ε it will ever spend (its ledger's ε_max at `delta`).
    public var epsilonBudget: Double
    /// The held-out losses before and after, and the record count, as released with discrete Gaussian
    /// noise. Nil in a round whose plan asked for none (`TrainingPlan.asksHeldOutRelease`, the coordinator's
    /// `heldout_interval`), and in audit records written before releases existed (see `clearFigures`).
    public var heldOut: HeldOutRelease?
    /// Exposure of the client's secret canaries on the global adapter it received, measured before
    /// training (nil when the client plants none): post-processing of the DP-trained global adapter
    /// and the client's own random secrets. JSON `canary_exposure`.
    public var canaryExposure: CanaryExposureSummary?
    /// The figures clients sent in clear before issue 13 (exact counts, losses, timings). Read from old
    /// audit records so that they still verify and render, marked as such; never sent or written now.
    public var clearFigures: ClearClientFigures?
    /// A distributed-DP round: the trust the client assumed and this round's ε both ways (nil in a local
    /// round). JSON `trust`.
    public var trust: DistributedTrustFigures?
    /// The held-out condition accuracy before and after, as released with discrete Gaussian noise (nil when the
    /// client's held-out records carry no condition, the plan asked for none, and in older records). JSON
    /// `condition_accuracy`.
    public var conditionAccuracy: ConditionAccuracyRelease?

    public init(client: String, epsilon: Double, delta: Double, epsilonBudget: Double, heldOut: HeldOutRelease?,
                canaryExposure: CanaryExposureSummary? = nil, trust: DistributedTrustFigures? = nil,
                conditionAccuracy: ConditionAccuracyRelease? = nil) {
        self.client = client
        self.epsilon = epsilon
        self.delta = delta
        self.epsilonBudget = epsilonBudget
        self.heldOut = heldOut
        self.canaryExposure = canaryExposure
        self.clearFigures = nil
        self.trust = trust
        self.conditionAccuracy = conditionAccuracy
    }

    /// An old record's metrics: the figures its client sent in clear (what decoding such a record
    /// gives; reports and tests of old logs build them this way). Never sent.
    public init(client: String, epsilon: Double, delta: Double, epsilonBudget: Double, clearFigures: ClearClientFigures,
                canaryExposure: CanaryExposureSummary? = nil) {
        self.client = client
        self.epsilon = epsilon
        self.delta = delta
        self.epsilonBudget = epsilonBudget
        self.heldOut = nil
        self.canaryExposure = canaryExposure
        self.clearFigures = clearFigures
    }

    enum CodingKeys: String, CodingKey {
        case client, epsilon, delta
        case heldOut = "held_out"
        case canaryExposure = "canary_exposure"
        case epsilonBudget = "epsilon_budget"
        case trust
        case conditionAccuracy = "condition_accuracy"
    }

    enum ClearKeys: String, CodingKey {
        case examples, seconds
        case evalLossBefore = "eval_loss_before"
        case evalLossAfter = "eval_loss_after"
        case evalTokens = "eval_tokens"
        case trainLoss = "train_loss"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        client = try c.decode(String.self, forKey: .client)
        epsilon = try c.decode(Double.self, forKey: .epsilon)
        delta = try c.decode(Double.self, forKey: .delta)
        epsilonBudget = try c.decode(Double.self, forKey: .epsilonBudget)
        canaryExposure = try c.decodeIfPresent(CanaryExposureSummary.self, forKey: .canaryExposure)
        heldOut = try c.decodeIfPresent(HeldOutRelease.self, forKey: .heldOut)
        trust = try c.decodeIfPresent(DistributedTrustFigures.self, forKey: .trust)
        conditionAccuracy = try c.decodeIfPresent(ConditionAccuracyRelease.self, forKey: .conditionAccuracy)
        let old = try decoder.container(keyedBy: ClearKeys.self)
        if heldOut == nil && !old.allKeys.isEmpty {
            // A record of the first format: its clear figures, all of which it must have. (A later record without a
            // release has none of them: its round asked for no held-out release.)
            clearFigures = ClearClientFigures(
                examples: try old.decode(Int.self, forKey: .examples),
                evalLossBefore: try old.decode(Double.self, forKey: .evalLossBefore),
                evalLossAfter: try old.decode(Double.self, forKey: .evalLossAfter),
                evalTokens: try old.decode(Int.self, forKey: .evalTokens),
                trainLoss: try old.decode(Double.self, forKey: .trainLoss),
                seconds: try old.decode(Double.self, forKey: .seconds))
        } else {
            clearFigures = nil
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(client, forKey: .client)
        try c.encode(epsilon, forKey: .epsilon)
        try c.encode(delta, forKey: .delta)
        try c.encode(epsilonBudget, forKey: .epsilonBudget)
        try c.encodeIfPresent(heldOut, forKey: .heldOut)
        try c.encodeIfPresent(canaryExposure, forKey: .canaryExposure)
        try c.encodeIfPresent(trust, forKey: .trust)
        try c.encodeIfPresent(conditionAccuracy, forKey: .conditionAccuracy)
        if let clearFigures {  // an old record re-encoded (tests, `audit --json`): as it was written
            var old = encoder.container(keyedBy: ClearKeys.self)
            try old.encode(clearFigures.examples, forKey: .examples)
            try old.encode(clearFigures.evalLossBefore, forKey: .evalLossBefore)
            try old.encode(clearFigures.evalLossAfter, forKey: .evalLossAfter)
            try old.encode(clearFigures.evalTokens, forKey: .evalTokens)
            try old.encode(clearFigures.trainLoss, forKey: .trainLoss)
            try old.encode(clearFigures.seconds, forKey: .seconds)
        }
    }
}

/// A client's trust in a distributed-DP round (`NoiseTrust`) and the ε of that round under it and trusting no
/// one, at the plan's δ: functions of the plan, the secure round's cohort and threshold and the client's policy,
/// never of its records. The client charges its ledger the first; `ClientRoundMetrics.epsilon` is the ledger's
/// cumulative ε under that assumption.
public struct DistributedTrustFigures: Codable, Sendable, Equatable {
    /// h: the honest clients the client assumes in its cohort, itself included (its policy's `assume_honest`,
    /// at most the cohort).
    public var assumeHonest: Int
    /// This round's ε under the assumption, and if the client trusted no one (local DP of its own share).
    public var roundEpsilon: Double
    public var roundEpsilonTrustingNoOne: Double
    /// The client's cumulative ε had it trusted no one in any round (its ledger composed at each distributed
    /// round's own share, `PrivacyLedger.epsilonTrustingNoOne`), at the plan's δ; +∞ once the ledger holds a
    /// run without privacy. nil before the client charged (and in audit records from before protocol 5).
    public var epsilonTrustingNoOne: Double?

    public init(assumeHonest: Int, roundEpsilon: Double, roundEpsilonTrustingNoOne: Double, epsilonTrustingNoOne: Double? = nil) {
        self.assumeHonest = assumeHonest
        self.roundEpsilon = roundEpsilon
        self.roundEpsilonTrustingNoOne = roundEpsilonTrustingNoOne
        self.epsilonTrustingNoOne = epsilonTrustingNoOne
    }

    /// Why the figures cannot be a client's (field and value), or nil when they can.
    public var problem: String? {
        guard assumeHonest >= 1, assumeHonest <= SecureRoundSetup.maximumCohort else { return "assume_honest \(assumeHonest)" }
        guard roundEpsilon.isFinite, roundEpsilon >= 0 else { return "round_epsilon \(roundEpsilon)" }
        guard roundEpsilonTrustingNoOne.isFinite, roundEpsilonTrustingNoOne >= roundEpsilon * (1 - 1e-9) else {
            return "round_epsilon_trusting_no_one \(roundEpsilonTrustingNoOne) (below the assumed \(roundEpsilon))"
        }
        // Finite: a distributed round is only ever charged to a ledger without a run lacking privacy.
        if let cumulative = epsilonTrustingNoOne, !(cumulative.isFinite && cumulative >= roundEpsilonTrustingNoOne * (1 - 1e-9)) {
            return "epsilon_trusting_no_one \(cumulative) (below this round's \(roundEpsilonTrustingNoOne) trusting no one)"
        }
        return nil
    }

    enum CodingKeys: String, CodingKey {
        case assumeHonest = "assume_honest"
        case roundEpsilon = "round_epsilon"
        case roundEpsilonTrustingNoOne = "round_epsilon_trusting_no_one"
        case epsilonTrustingNoOne = "epsilon_trusting_no_one"
    }
}

/// What a client sent in clear before issue 13, as audit records of that time hold it.
public struct ClearClientFigures: Sendable, Equatable {
    public var examples: Int
    public var evalLossBefore: Double
    public var evalLossAfter: Double
    public var evalTokens: Int
    public var trainLoss: Double
    public var seconds: Double

    public init(examples: Int, evalLossBefore: Double, evalLossAfter: Double, evalTokens: Int, trainLoss: Double,
                seconds: Double) {
        self.examples = examples
        self.evalLossBefore = evalLossBefore
        self.evalLossAfter = evalLossAfter
        self.evalTokens = evalTokens
        self.trainLoss = trainLoss
        self.seconds = seconds
    }
}

/// A client's held-out figures of one round, released with the discrete Gaussian mechanism (Canonne,
/// Kamath, Steinke 2020) on a fixed-point grid of `gridScale` units.
///
/// Each held-out record r contributes the integer vector
/// `(⌊S·min(max(ℓ_before(r), 0), L)/L⌉, ⌊S·min(max(ℓ_after(r), 0), L)/L⌉, S)`, with ℓ its mean token
/// loss (nats) under the global adapter and under the adapter the client trained, S = `gridScale`,
/// L = `lossClip` (records without a scored token contribute nothing). The client sums the vectors over
/// its held-out split and adds independent N_Z(0, σ²) noise to each coordinate with
/// σ = z·√3·S, z = `noiseMultiplier`. Adding or removing one record moves the sum by at most
/// √3·S in L2, so the release is (1/(2z²))-zCDP, the RDP curve α/(2z²) of the Gaussian mechanism with
/// noise multiplier z (CKS 2020, Theorem 4 and its multivariate form, Theorem 14); the client charges
/// it to its ledger as `MechanismSteps(samplingRate: 1, noiseMultiplier: z, steps: 1)` in the same
/// charge as the round's training. The "after" loss is scored with the DP-trained adapter: the
/// composition is adaptive, and a training record moves no coordinate given that adapter.
public struct HeldOutRelease: Codable, Sendable, Equatable {
    /// S: grid units per record in the count, and per L nats in a loss.
    public static let gridScale: Int64 = 1 << 10
    /// The noised sums, in grid units.
    public var lossBefore: Int64
    public var lossAfter: Int64
    public var count: Int64
    /// L and z of the release (the plan's `metrics_loss_clip` and `metrics_noise_multiplier`).
    public var lossClip: Double
    public var noiseMultiplier: Double

    public init(lossBefore: Int64, lossAfter: Int64, count: Int64, lossClip: Double, noiseMultiplier: Double) {
        self.lossBefore = lossBefore
        self.lossAfter = lossAfter
        self.count = count
        self.lossClip = lossClip
        self.noiseMultiplier = noiseMultiplier
    }

    /// σ of each coordinate's noise, in grid units: z·√3·S.
    public var sigma: Double { Self.sigma(noiseMultiplier: noiseMultiplier) }

    /// σ of a release with noise multiplier z, in grid units.
    public static func sigma(noiseMultiplier: Double) -> Double { noiseMultiplier * 3.0.squareRoot() * Double(gridScale) }

    /// The released record count (noised; may be ≤ 0 when the split is small against σ).
    public var records: Double { Double(count) / Double(Self.gridScale) }

    /// Why the figures cannot be a release (field and value), or nil when they can.
    public var problem: String? {
        guard lossClip.isFinite, lossClip > 0, lossClip <= 1000 else { return "loss_clip \(lossClip)" }
        guard noiseMultiplier.isFinite, noiseMultiplier >= 0.1, noiseMultiplier <= 1000 else {
            return "noise_multiplier \(noiseMultiplier)"
        }
        let limit = Int64(1) << 60
        for (name, value) in [("loss_before", lossBefore), ("loss_after", lossAfter), ("count", count)]
            where !(-limit...limit).contains(value) {
            return "\(name) \(value) outside ±2^60"
        }
        return nil
    }

    enum CodingKeys: String, CodingKey {
        case count
        case lossBefore = "loss_before"
        case lossAfter = "loss_after"
        case lossClip = "loss_clip"
        case noiseMultiplier = "noise_multiplier"
    }
}

/// Post-processing of released held-out figures, summed over any set of clients: the mean per-record
/// loss before and after, clamped to [0, L], and its standard error from the noise alone (delta method:
/// σ_total·√(1 + m²)/C in units of L, with m the mean in units of L, C the released count). Uses only
/// released numbers and public parameters, so it costs no privacy.
public struct ReleasedLoss: Sendable, Equatable {
    public var before: Double?
    public var after: Double?
    /// Standard error of either mean, in nats (nil when the released count is not positive).
    public var standardError: Double?
    /// The released record count, summed.
    public var records: Double

    /// Nil when `releases` is empty or their L differ.
    public init?(_ releases: [HeldOutRelease]) {
        guard let first = releases.first, releases.allSatisfy({ $0.lossClip == first.lossClip }) else { return nil }
        let l = first.lossClip
        let count = releases.reduce(0.0) { $0 + Double($1.count) }
        let variance = releases.reduce(0.0) { $0 + $1.sigma * $1.sigma }
        records = count / Double(HeldOutRelease.gridScale)
        guard count > 0 else {
            before = nil
            after = nil
            standardError = nil
            return
        }
        func mean(_ sum: Double) -> Double { min(max(l * sum / count, 0), l) }
        before = mean(releases.reduce(0.0) { $0 + Double($1.lossBefore) })
        after = mean(releases.reduce(0.0) { $0 + Double($1.lossAfter) })
        let m = max(before ?? 0, after ?? 0) / l
        standardError = l * variance.squareRoot() * (1 + m * m).squareRoot() / count
    }
}

/// What a client reports of its canaries' exposure in one round (Carlini et al. 2019): a summary over
/// its canaries, never the secrets. Exposure is log2 |R| − log2 rank in bits; chance is about 1.44 bits
/// (the mean of log2 |R| − log2 rank over a uniform rank), the largest possible log2 |R|.
public struct CanaryExposureSummary: Codable, Sendable, Equatable {
    /// Canaries measured (each planted `repetitions` times).
    public var canaries: Int
    public var repetitions: Int
    /// Mean and largest exposure over the canaries, in bits.
    public var meanBits: Double
    public var maxBits: Double
    /// |R|, the number of candidate secrets (10^digits).
    public var spaceSize: Int
    /// Whether every candidate was scored (exact) or a uniform sample (estimated).
    public var exact: Bool
    /// Candidates scored besides each secret (|R| − 1 when exact).
    public var candidatesScored: Int
    /// Seconds the measurement took: for the client's own log only. Never sent (the wire carries no
    /// timing), so nil in what the coordinator receives; old audit records may hold it.
    public var seconds: Double?

    /// Most canaries a summary may count (the wire decoder's bound).
    public static let maximumCanaries = 100_000
    /// The most digits a canary's secret may have (FineTuning's `CanarySet.maximumDigits`; a test keeps them equal).
    public static let maximumDigits = 18

    /// |R| for secrets of `digits` decimal digits: 10^digits.
    public static func spaceSize(digits: Int) -> Int {
        precondition((0...maximumDigits).contains(digits), "digits must be in 0...\(maximumDigits), got \(digits)")
        return (0..<digits).reduce(1) { value, _ in value * 10 }
    }

    public init(canaries: Int, repetitions: Int, meanBits: Double, maxBits: Double, spaceSize: Int, exact: Bool,
                candidatesScored: Int, seconds: Double? = nil) {
        self.canaries = canaries
        self.repetitions = repetitions
        self.meanBits = meanBits
        self.maxBits = maxBits
        self.spaceSize = spaceSize
        self.exact = exact
        self.candidatesScored = candidatesScored
        self.seconds = seconds
    }

    /// Why the figures cannot be a measurement's (field and value), or nil when they can.
    public var problem: String? {
        guard (1...Self.maximumCanaries).contains(canaries) else { return "canaries \(canaries)" }
        guard (1...1_000_000).contains(repetitions) else { return "repetitions \(repetitions)" }
        let powers = (1...CanaryExposureSummary.maximumDigits).map { CanaryExposureSummary.spaceSize(digits: $0) }
        guard powers.contains(spaceSize) else { return "space_size \(spaceSize) is not 10^d for d in 1...\(CanaryExposureSummary.maximumDigits)" }
        guard canaries <= spaceSize / 2 else { return "canaries \(canaries) for a space of \(spaceSize)" }
        guard (1...(spaceSize - 1)).contains(candidatesScored), !exact || candidatesScored == spaceSize - 1 else {
            return "candidates_scored \(candidatesScored) (exact \(exact), space \(spaceSize))"
        }
        // Exposure lies in [0, log2 |R|]; a little slack for rounding.
        let top = log2(Double(spaceSize)) + 1e-9
        for (name, value) in [("mean_bits", meanBits), ("max_bits", maxBits)] where !(value.isFinite && value >= 0 && value <= top) {
            return "\(name) \(value) outside 0...log2 \(spaceSize)"
        }
        guard meanBits <= maxBits + 1e-9 else { return "mean_bits \(meanBits) above max_bits \(maxBits)" }
        if let seconds, !(seconds.isFinite && seconds >= 0) { return "seconds \(seconds)" }
        return nil
    }

    enum CodingKeys: String, CodingKey {
        case canaries, repetitions, exact, seconds
        case meanBits = "mean_bits"
        case maxBits = "max_bits"
        case spaceSize = "space_size"
        case candidatesScored = "candidates_scored"
    }
}

