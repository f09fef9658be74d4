import Foundation

/// Whose noise a client may count on in a round of distributed DP over secure aggregation, and the ε that
/// follows: the client's own assumption (`assumeHonest`) and the case of trusting no one.
///
/// Shares. Each of the n clients of the cohort adds N_Z(0, σ²/t) to its integer vector, t being secure
/// aggregation's threshold: the sum is unmasked only when at least t clients survive, and any t shares
/// together carry variance σ², the plan's total.
///
/// Reasoning (the distributed DP of Kairouz, Liu, Steinke 2021, arXiv:2102.06387; their code's dropout study,
/// google-research/federated distributed_dp/plot_client_dropout.py, likewise recomputes ε with n reduced to the
/// clients whose noise is in the sum):
/// - Only honest clients' shares protect. The adversary (the coordinator with the dishonest clients) knows
///   their inputs and their noise; subtracting them from the released sum is post-processing, so the
///   privacy of client i is that of (its vector + the honest shares that are in the sum).
/// - Only survivors' shares are in the sum. Up to n − s clients drop out (s ≥ t survivors); in the worst
///   case every dropout is one of the other honest clients. Client i assumes at least h honest clients in
///   its cohort, itself included, so at least k = max(1, h − (n − s)) honest shares are in the sum: its own
///   (if it did not survive, its data is not in the sum either) and h − 1 − (n − s) others. Before a round
///   s = t, the fewest the protocol accepts; afterwards the audit may use the actual survivors.
/// - k independent shares of σ²/t are a sum of discrete Gaussians, not a discrete Gaussian of kσ²/t: its
///   privacy is KLS 2021 Theorem 1 / Proposition 14 with n = k (`DistributedDiscreteGaussianSteps`).
/// - h = 1, trusting no one: k = 1, the client's own share. The coordinator together with all other
///   clients could unmask its upload, so this is local DP: one discrete Gaussian of variance σ²/t (Canonne,
///   Kamath, Steinke 2020; τ = 0). Record- or user-level Poisson sampling still amplifies it: the client
///   draws its own sample in secret.
/// Every ε here assumes the fewest honest shares the assumption allows, so it errs high.
public struct NoiseTrust: Codable, Sendable, Hashable {
    /// n: clients invited to the round, each adding one share.
    public let cohort: Int
    /// t: the fewest survivors secure aggregation unmasks a sum for; each share has variance σ²/t.
    public let threshold: Int
    /// h: how many of the cohort the client assumes honest, itself included (1...n).
    public let assumeHonest: Int

    /// - Throws: `PrivacyParameterError` unless 1 ≤ t ≤ n and 1 ≤ h ≤ n.
    public init(cohort: Int, threshold: Int, assumeHonest: Int) throws {
        guard cohort >= 1 else {
            throw PrivacyParameterError(name: "cohort", value: Double(cohort), expected: ">= 1")
        }
        guard (1...cohort).contains(threshold) else {
            throw PrivacyParameterError(name: "threshold", value: Double(threshold), expected: "in 1...\(cohort) (the cohort)")
        }
        guard (1...cohort).contains(assumeHonest) else {
            throw PrivacyParameterError(name: "assume_honest", value: Double(assumeHonest),
                                        expected: "in 1...\(cohort): at least 1 (the client itself), at most the cohort")
        }
        self.cohort = cohort
        self.threshold = threshold
        self.assumeHonest = assumeHonest
    }

    private enum CodingKeys: String, CodingKey { case cohort, threshold, assumeHonest }

    /// Decodes through the checks of `init(cohort:threshold:assumeHonest:)`: a stored or received trust is
    /// validated like a constructed one.
    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        try self.init(cohort: try container.decode(Int.self, forKey: .cohort), threshold: try container.decode(Int.self, forKey: .threshold),
                      assumeHonest: try container.decode(Int.self, forKey: .assumeHonest))
    }

    /// The same cohort and threshold, trusting no one but itself (h = 1): local DP.
    public var trustingNoOne: NoiseTrust {
        NoiseTrust(validatedCohort: cohort, threshold: threshold, assumeHonest: 1)
    }

    private init(validatedCohort cohort: Int, threshold: Int, assumeHonest: Int) {
        self.cohort = cohort
        self.threshold = threshold
        self.assumeHonest = assumeHonest
    }

    /// k = max(1, h − (n − s)): the honest shares certainly in a sum of s survivors (s = t when nil).
    /// - Throws: `PrivacyParameterError` for s outside t...n.
    public func reliedShares(survivors: Int? = nil) throws -> Int {
        let s = survivors ?? threshold
        guard (threshold...cohort).contains(s) else {
            throw PrivacyParameterError(name: "survivors", value: Double(s), expected: "in \(threshold)...\(cohort) (threshold to cohort)")
        }
        return max(1, assumeHonest - (cohort - s))
    }

    /// Each client's share of the total variance σ²: σ²/t.
    public func shareVariance(totalVariance: Double) -> Double { totalVariance / Double(threshold) }

    /// The variance the client can rely on: k·σ²/t.
    public func reliedVariance(totalVariance: Double, survivors: Int? = nil) throws -> Double {
        Double(try reliedShares(survivors: survivors)) * shareVariance(totalVariance: totalVariance)
    }

    /// The steps to account under this assumption: k shares of σ/√t each (σ the total, in grid units).
    public func steps(samplingRate: Double, totalSigma: Double, dimension: Int, sensitivity: RoundedSensitivity, steps: Int,
                      survivors: Int? = nil) throws -> DistributedDiscreteGaussianSteps {
        let mechanism = DistributedDiscreteGaussianSteps(
            samplingRate: samplingRate, shares: try reliedShares(survivors: survivors),
            shareSigma: shareVariance(totalVariance: totalSigma * totalSigma).squareRoot(), dimension: dimension,
            sensitivity: sensitivity, steps: steps)
        try mechanism.validate()
        return mechanism
    }

    /// ε at δ under this assumption and trusting no one, for `steps` steps of the plan.
    public func epsilons(samplingRate: Double, totalSigma: Double, dimension: Int, sensitivity: RoundedSensitivity, steps: Int,
                         delta: Double, survivors: Int? = nil) throws -> (assumed: Double, trustingNoOne: Double) {
        let assumed = try self.steps(samplingRate: samplingRate, totalSigma: totalSigma, dimension: dimension,
                                     sensitivity: sensitivity, steps: steps, survivors: survivors)
        let alone = try trustingNoOne.steps(samplingRate: samplingRate, totalSigma: totalSigma, dimension: dimension,
                                            sensitivity: sensitivity, steps: steps, survivors: survivors)
        return (try DistributedDiscreteGaussianAccountant.epsilon([assumed], delta: delta).epsilon,
                try DistributedDiscreteGaussianAccountant.epsilon([alone], delta: delta).epsilon)
    }
}

/// What a distributed-DP plan would cost a client, for `privacy plan --distributed`: the grid scale (chosen
/// by `ModularWrap` for secure aggregation's 32-bit words unless given), the rounded sensitivity, each share's
/// σ, and the steps to account under the client's assumption and trusting no one.
public struct DistributedPlanPreview: Sendable {
    /// Secure aggregation's words (`FixedPointEncoding`): sums modulo 2^32.
    public static let modulusBits = 32
    /// Conditional rounding's β, the value KLS 2021 use in their experiments.
    public static let roundingBeta = exp(-0.5)
    /// The per-step wrap probability the scale is chosen for.
    public static let wrapTarget = 1e-9

    public let trust: NoiseTrust
    /// f: the grid is 2^−f.
    public let fractionalBits: Int
    /// The bound on the probability that one step's sum wraps (added to δ once per step).
    public let wrapProbability: Double
    public let sensitivity: RoundedSensitivity
    /// Each client's share σ in grid units: z·Δ₂/√t.
    public let shareSigma: Double
    /// One round (T steps) under the assumption, and trusting no one.
    public let assumed: DistributedDiscreteGaussianSteps
    public let trustingNoOne: DistributedDiscreteGaussianSteps
    /// d: the clipped values of one contribution (the adapter's parameters).
    public let updateDimension: Int
    /// The update's own rounded sensitivity (Δ₂ = c̃ + √d at β = 0); `sensitivity` adds the count coordinate's h.
    public let updateSensitivity: RoundedSensitivity
    /// Adaptive clipping only (`ClientLevelDP.AdaptiveClipping`): h, the half-width in grid units of the count
    /// coordinate appended to every contribution (±h for an unclipped or clipped update); nil without it.
    public let countHalfWidth: Int64?

    /// - Parameters: q, the total noise multiplier z (noise σ over the rounded sensitivity Δ₂), T steps per
    ///   round, clip norm c, dimension d, the trust, `contributions` (clipped vectors in one step's sum, for
    ///   the wrap bound), f (nil: the finest scale meeting `wrapTarget`) and the rounding's β (0: the sum is
    ///   rounded once, Δ₂ = c̃ + √d as `RoundedSensitivity.roundedSum`, what a federation's clients do), and
    ///   adaptive clipping's σ_b (nil: none), which appends the count coordinate: d + 1 coordinates of L2 sensitivity
    ///   √(Δ₂² + h²) and L1 Δ₁ + h, every one noised at z times that, wrapping at ⌈max(c̃, h)⌉ per contribution.
    /// - Throws: `PrivacyParameterError` for any parameter out of range or when no scale meets the target.
    public init(samplingRate: Double, noiseMultiplier: Double, stepsPerRound: Int, clipNorm: Double, dimension: Int,
                trust: NoiseTrust, contributions: Int, fractionalBits: Int?,
                roundingBeta: Double = DistributedPlanPreview.roundingBeta, countNoiseMultiplier: Double? = nil) throws {
        let bits = try fractionalBits ?? ModularWrap.fractionalBits(
            modulusBits: Self.modulusBits, clipNorm: clipNorm, dimension: dimension, contributions: contributions,
            cohort: trust.cohort, threshold: trust.threshold,
            noiseMultiplier: Self.wrapNoiseMultiplier(noiseMultiplier, countNoiseMultiplier: countNoiseMultiplier), beta: roundingBeta,
            target: Self.wrapTarget)
        let scaledClip = clipNorm * Double(sign: .plus, exponent: bits, significand: 1)
        updateSensitivity = try RoundedSensitivity.conditionalRounding(scaledClip: scaledClip, dimension: dimension, beta: roundingBeta)
        updateDimension = dimension
        var coordinates = dimension, magnitude = scaledClip
        if let countNoiseMultiplier {
            let h = try ClientLevelDP.AdaptiveClipping.countHalfWidth(noiseMultiplier: noiseMultiplier, countNoiseMultiplier: countNoiseMultiplier,
                                                                      updateSensitivity: updateSensitivity.l2)
            let l2 = updateSensitivity.l2
            sensitivity = try RoundedSensitivity(l2: (l2 * l2 + Double(h) * Double(h)).squareRoot(), l1: updateSensitivity.l1 + Double(h))
            coordinates += 1
            magnitude = max(scaledClip, Double(h))
            countHalfWidth = h
        } else {
            sensitivity = updateSensitivity
            countHalfWidth = nil
        }
        shareSigma = noiseMultiplier * sensitivity.l2 / Double(trust.threshold).squareRoot()
        wrapProbability = try ModularWrap.probability(modulusBits: Self.modulusBits, scaledClip: magnitude, dimension: coordinates,
                                                      contributions: contributions, shares: trust.cohort, shareSigma: shareSigma)
        let total = noiseMultiplier * sensitivity.l2
        assumed = try trust.steps(samplingRate: samplingRate, totalSigma: total, dimension: coordinates, sensitivity: sensitivity,
                                  steps: stepsPerRound)
        trustingNoOne = try trust.trustingNoOne.steps(samplingRate: samplingRate, totalSigma: total, dimension: coordinates,
                                                      sensitivity: sensitivity, steps: stepsPerRound)
        self.trust = trust
        self.fractionalBits = bits
    }

    /// The noise multiplier the wrap analysis sizes the update's noise with: z, or with adaptive clipping's count z_Δ,
    /// which bounds the update's σ/Δ₂ from above (`AdaptiveClipping.countHalfWidth`).
    /// - Throws: `PrivacyParameterError` for σ_b at or below z/2.
    static func wrapNoiseMultiplier(_ z: Double, countNoiseMultiplier: Double?) throws -> Double {
        guard let countNoiseMultiplier else { return z }
        return try ClientLevelDP.AdaptiveClipping.updateNoiseMultiplier(noiseMultiplier: z, countNoiseMultiplier: countNoiseMultiplier)
    }

    /// Adaptive clipping only: the update's noise multiplier σ/Δ₂ and the count's noise in bit units σ/(2h), σ the
    /// noise the threshold's shares carry on every coordinate (nil without the count).
    public var adaptiveNoise: (update: Double, count: Double)? {
        guard let countHalfWidth else { return nil }
        let total = shareSigma * Double(trust.threshold).squareRoot()
        return (total / updateSensitivity.l2, total / (2 * Double(countHalfWidth)))
    }

    /// The δ left to the accountant when the plan's δ covers `rounds` rounds' wrap probability too:
    /// δ − rounds·T·p. Throws when that is not positive.
    public func accountantDelta(planDelta delta: Double, rounds: Int) throws -> Double {
        let left = delta - Double(rounds) * Double(assumed.steps) * wrapProbability
        guard left > 0 else {
            throw PrivacyParameterError(name: "delta", value: delta, expected: "above the wrap probability \(wrapProbability) "
                                        + "× \(rounds) rounds × \(assumed.steps) steps; use a coarser --fractional-bits")
        }
        return left
    }

    /// ε of `rounds` rounds at the plan's δ (less the wrap probability) under the assumption and trusting no one.
    public func epsilons(rounds: Int, delta: Double) throws -> (assumed: Double, trustingNoOne: Double) {
        let accountantDelta = try accountantDelta(planDelta: delta, rounds: rounds)
        func repeated(_ steps: DistributedDiscreteGaussianSteps) -> DistributedDiscreteGaussianSteps {
            var all = steps
            all.steps *= rounds
            return all
        }
        return (try DistributedDiscreteGaussianAccountant.epsilon([repeated(assumed)], delta: accountantDelta).epsilon,
                try DistributedDiscreteGaussianAccountant.epsilon([repeated(trustingNoOne)], delta: accountantDelta).epsilon)
    }
}
