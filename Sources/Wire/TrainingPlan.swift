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

    public init(steps: Int, learningRate: Double, samplingRate: Double, noiseMultiplier: Double, clipNorm: Double,
                delta: Double, maxLength: Int, rank: Int, alpha: Double, targets: [String],
                privacyUnit: PrivacyUnit = .record) {
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
    }

    /// Every field required but `privacy_unit`, which defaults to `record`.
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
        privacyUnit = try container.decodeIfPresent(PrivacyUnit.self, forKey: .privacyUnit) ?? .record
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
        let known: Set<String> = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        try check(!targets.isEmpty && targets.allSatisfy(known.contains), "targets",
                  "must be a non-empty subset of \(known.sorted().joined(separator: ",")), got \(targets)")
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

/// One participant's figures for a round, as it reported them.
public struct ClientRoundMetrics: Codable, Sendable, Equatable {
    public var client: String
    /// Records in the client's training split (FedAvg's weight).
    public var examples: Int
    /// Held-out loss of the incoming global adapter, and of the adapter the client trained.
    public var evalLossBefore: Double
    public var evalLossAfter: Double
    /// Held-out tokens scored (the weight of the losses).
    public var evalTokens: Int
    /// The client's cumulative ε after this round, at `delta`, from its own ledger.
    public var epsilon: Double
    public var delta: Double
    /// The client's own budget: the most ε it will ever spend (its ledger's ε_max at `delta`).
    public var epsilonBudget: Double
    /// Mean training loss over the round's steps.
    public var trainLoss: Double
    /// Seconds the client spent training and evaluating.
    public var seconds: Double
    /// Exposure of the client's secret canaries on the global adapter it received, measured before
    /// training (nil when the client plants none). JSON `canary_exposure`.
    public var canaryExposure: CanaryExposureSummary?

    public init(client: String, examples: Int, evalLossBefore: Double, evalLossAfter: Double, evalTokens: Int,
                epsilon: Double, delta: Double, epsilonBudget: Double, trainLoss: Double, seconds: Double,
                canaryExposure: CanaryExposureSummary? = nil) {
        self.client = client
        self.examples = examples
        self.evalLossBefore = evalLossBefore
        self.evalLossAfter = evalLossAfter
        self.evalTokens = evalTokens
        self.epsilon = epsilon
        self.delta = delta
        self.epsilonBudget = epsilonBudget
        self.trainLoss = trainLoss
        self.seconds = seconds
        self.canaryExposure = canaryExposure
    }

    enum CodingKeys: String, CodingKey {
        case client, examples, epsilon, delta, seconds
        case canaryExposure = "canary_exposure"
        case evalLossBefore = "eval_loss_before"
        case evalLossAfter = "eval_loss_after"
        case evalTokens = "eval_tokens"
        case epsilonBudget = "epsilon_budget"
        case trainLoss = "train_loss"
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
    /// Seconds the measurement took.
    public var seconds: Double

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
                candidatesScored: Int, seconds: Double) {
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
        guard seconds.isFinite, seconds >= 0 else { return "seconds \(seconds)" }
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

