import Foundation

/// Whose noise a client may count on in a round of distributed DP over secure aggregation, and the ε that
/// follows: the client's own assumption (`assumeHonest`) and the case of trusting no one.
///
/// Shares. Each of the n clients of the cohort adds N_Z(0, σ²/t) to its integer vector, t being secure
/// aggregation's threshold: the sum is unmasked only when at least t clients survive, and any t shares
/// together carry variance σ², the plan's total.
///
/// Reasoning (Kairouz, Liu, Steinke 2021, arXiv:2102.06387, Section 1 "distributed DP" and their dropout
/// analysis, where ε is recomputed with n reduced to the clients whose noise is in the sum):
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
