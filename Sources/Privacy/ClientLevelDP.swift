import Foundation

/// Client-level DP-FedAvg (McMahan, Ramage, Talwar, Zhang, ICLR 2018, "Learning Differentially Private
/// Recurrent Language Models"): each round the coordinator Poisson-samples every client independently at
/// rate q, each sampled client clips its whole round update to L2 norm S, and noise of standard deviation
/// z·S is added to the sum. Adjacency is add/remove one client (all its data), so each round is one
/// application of the Poisson-subsampled Gaussian at (q, z): the accountants of this module apply as they
/// are, with the client as the unit.
///
/// Which rounds count: every round that sampled from the population, for every client, whether or not it
/// was picked. The privacy comes from the secrecy of the sampling; charging a client only for the rounds it
/// took part in would reveal and under-count it. `epsilon(rounds:...)` composes the whole schedule.
public enum ClientLevelDP {
    /// One round of the schedule: its client sampling rate and noise multiplier.
    public struct Round: Codable, Sendable, Hashable {
        /// q: each client's probability of being sampled.
        public var samplingRate: Double
        /// z: the noise standard deviation on the sum, over the clip norm S.
        public var noiseMultiplier: Double

        public init(samplingRate: Double, noiseMultiplier: Double) {
            self.samplingRate = samplingRate
            self.noiseMultiplier = noiseMultiplier
        }
    }

    /// The schedule as mechanisms: runs of equal rounds become one `MechanismSteps` each (Gaussian noise).
    public static func mechanisms(_ rounds: [Round]) -> [MechanismSteps] {
        var out: [MechanismSteps] = []
        for round in rounds {
            if let last = out.last, last.samplingRate == round.samplingRate, last.noiseMultiplier == round.noiseMultiplier {
                out[out.count - 1].steps += 1
            } else {
                out.append(MechanismSteps(samplingRate: round.samplingRate, noiseMultiplier: round.noiseMultiplier, steps: 1))
            }
        }
        return out
    }

    /// ε at δ of the schedule with the chosen accountant (an upper bound, see `PrivacyAccounting.estimate`).
    /// - Throws: `PrivacyParameterError` for a rate, noise multiplier or δ out of range.
    public static func epsilon(rounds: [Round], delta: Double, accountant: AccountantKind) throws -> PrivacyEstimate {
        try PrivacyAccounting.estimate(steps: mechanisms(rounds), delta: delta, accountant: accountant)
    }

    /// The fixed-denominator estimator f = Σ_{k sampled} w_k·Δ_k / (q·W) of McMahan et al. 2018 (their
    /// estimator f̃_f), W = Σ_k w_k over the whole population, weights w_k ∈ (0, w_max], updates clipped to
    /// S. Its denominator does not depend on who was sampled, so adding or removing one client moves it by
    /// at most w_max·S/(q·W) (their Lemma 1 with weights capped): that is its L2 sensitivity, and noise
    /// z·S·w_max on the weighted sum is noise z × sensitivity on the estimate (a data-independent division:
    /// post-processing). A denominator counted from the sampled clients would depend on the data and need
    /// its own analysis (their f̃_c); Conclave uses the fixed one.
    public struct FixedDenominatorEstimator: Codable, Sendable, Hashable {
        /// S: each client's update is clipped to this L2 norm.
        public let clipNorm: Double
        /// q: the client sampling rate.
        public let samplingRate: Double
        /// W: the population's total weight (the number of clients for unit weights).
        public let totalWeight: Double
        /// w_max: the largest weight a client may have (1 for unit weights).
        public let maximumWeight: Double

        /// - Throws: `PrivacyParameterError` unless S, q, W, w_max are finite and positive, q ≤ 1, w_max ≤ W.
        public init(clipNorm: Double, samplingRate: Double, totalWeight: Double, maximumWeight: Double = 1) throws {
            for (name, value) in [("clip norm", clipNorm), ("sampling rate", samplingRate), ("total weight", totalWeight),
                                  ("maximum weight", maximumWeight)] where !(value.isFinite && value > 0) {
                throw PrivacyParameterError(name: name, value: value, expected: "finite and > 0")
            }
            guard samplingRate <= 1, maximumWeight <= totalWeight else {
                throw PrivacyParameterError(name: "sampling rate or maximum weight", value: max(samplingRate, maximumWeight),
                                            expected: "q <= 1 and the maximum weight at most the total weight")
            }
            self.clipNorm = clipNorm
            self.samplingRate = samplingRate
            self.totalWeight = totalWeight
            self.maximumWeight = maximumWeight
        }

        /// The estimate's L2 sensitivity under add/remove one client: w_max·S/(q·W).
        public var sensitivity: Double { maximumWeight * clipNorm / (samplingRate * totalWeight) }
        /// The noise standard deviation on the weighted sum for noise multiplier z: z·w_max·S.
        public func sumNoiseStandardDeviation(noiseMultiplier z: Double) -> Double { z * maximumWeight * clipNorm }
        /// The same noise on the estimate: z × sensitivity.
        public func estimateNoiseStandardDeviation(noiseMultiplier z: Double) -> Double { z * sensitivity }
        /// The estimate from a weighted sum (noised or not): sum / (q·W).
        public func estimate(fromWeightedSum sum: Double) -> Double { sum / (samplingRate * totalWeight) }
    }
}
