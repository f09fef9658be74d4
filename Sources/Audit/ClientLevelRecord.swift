import Foundation

/// A client-level DP-FedAvg round as the audit log keeps it (issue 17): the unit, the coordinator's Poisson sample
/// of its registered clients, the fixed denominator, and the federation's client-level ε after the round's charge.
/// Every client-level round has one, committed, aborted or skipped: each was charged before its sample was drawn.
public struct ClientLevelRecord: Codable, Sendable, Equatable {
    /// Whom ε protects: "client" (one client with all its data).
    public var unit: String
    /// N: the registered clients sampled from; how many the sample drew; q.
    public var population: Int
    public var sampled: Int
    public var samplingRate: Double
    /// z and S: the sum carries N(0, z²S²) (at the threshold's survivors); each update clipped to S (this round's S:
    /// the plan's, or adaptive clipping's).
    public var noiseMultiplier: Double
    public var clipNorm: Double
    /// q·N, the denominator the noised sum was divided by (not the number of survivors).
    public var expectedCohort: Double
    /// The federation's client-level ε after this round, at δ, and its budget; the rounds charged so far.
    public var epsilon: Double
    public var delta: Double
    public var epsilonBudget: Double
    public var roundsCharged: Int
    /// Adaptive clipping, when the policy has it: its parameters, and for a committed round where it moved S.
    public var adaptiveClipping: AdaptiveClippingRecord?

    public init(population: Int, sampled: Int, samplingRate: Double, noiseMultiplier: Double, clipNorm: Double, expectedCohort: Double,
                epsilon: Double, delta: Double, epsilonBudget: Double, roundsCharged: Int) {
        unit = "client"
        self.population = population
        self.sampled = sampled
        self.samplingRate = samplingRate
        self.noiseMultiplier = noiseMultiplier
        self.clipNorm = clipNorm
        self.expectedCohort = expectedCohort
        self.epsilon = epsilon
        self.delta = delta
        self.epsilonBudget = epsilonBudget
        self.roundsCharged = roundsCharged
    }

    enum CodingKeys: String, CodingKey {
        case unit, population, sampled, epsilon, delta
        case samplingRate = "sampling_rate"
        case noiseMultiplier = "noise_multiplier"
        case clipNorm = "clip_norm"
        case expectedCohort = "expected_cohort"
        case epsilonBudget = "epsilon_budget"
        case roundsCharged = "rounds_charged"
        case adaptiveClipping = "adaptive_clipping"
    }
}

/// Adaptive clipping in a client-level round's record (Andrew et al. 2021): γ, η_C and σ_b as configured; for a committed
/// round, the noised unclipped fraction b̄ its sum released, the S it sets for the next round, and the noise the
/// threshold's shares carried on the update (z_Δ, over the update's sensitivity) and on the count (in bits). The
/// federation's ε is that of the plan's z, which these two make up: z⁻² = z_Δ⁻² + (2σ_b)⁻².
public struct AdaptiveClippingRecord: Codable, Sendable, Equatable {
    public var targetQuantile: Double
    public var learningRate: Double
    public var countNoiseMultiplier: Double
    public var unclippedFraction: Double?
    public var nextClipNorm: Double?
    public var updateNoiseMultiplier: Double?
    public var countNoise: Double?

    public init(targetQuantile: Double, learningRate: Double, countNoiseMultiplier: Double, unclippedFraction: Double? = nil,
                nextClipNorm: Double? = nil, updateNoiseMultiplier: Double? = nil, countNoise: Double? = nil) {
        self.targetQuantile = targetQuantile
        self.learningRate = learningRate
        self.countNoiseMultiplier = countNoiseMultiplier
        self.unclippedFraction = unclippedFraction
        self.nextClipNorm = nextClipNorm
        self.updateNoiseMultiplier = updateNoiseMultiplier
        self.countNoise = countNoise
    }

    enum CodingKeys: String, CodingKey {
        case targetQuantile = "target_quantile"
        case learningRate = "learning_rate"
        case countNoiseMultiplier = "count_noise_multiplier"
        case unclippedFraction = "unclipped_fraction"
        case nextClipNorm = "next_clip_norm"
        case updateNoiseMultiplier = "update_noise_multiplier"
        case countNoise = "count_noise"
    }
}
