import Foundation

/// Wrap analysis for summing noised integer vectors modulo 2^b (secure aggregation's fixed point:
/// `FixedPointEncoding` sums words modulo 2^32 and reads the sum as a signed 32-bit integer, so b = 32).
///
/// The decoded sum is right exactly when every coordinate of the true integer sum lies in
/// [−2^(b−1), 2^(b−1) − 1]. A coordinate is the sum of K clipped, rounded contributions, each at most
/// ⌈c·2^f⌉ in magnitude (a vector of L2 norm ≤ c has every coordinate ≤ c; randomized rounding goes to an
/// adjacent integer), plus n independent shares N_Z(0, σ²). The discrete Gaussian is σ²-sub-Gaussian,
/// E[e^(λX)] ≤ e^(λ²σ²/2) (Canonne, Kamath, Steinke 2020), so the noise sum is nσ²-sub-Gaussian and
/// Chernoff gives P[noise ≥ a] ≤ exp(−a²/(2nσ²)). With a = 2^(b−1) − K⌈c·2^f⌉ > 0 and a union over both
/// tails and d coordinates:
///     P[any coordinate wraps] ≤ 2d·exp(−a²/(2nσ²))   (1 when a ≤ 0).
/// This is KLS 2021's modular-clipping concern (arXiv:2102.06387, Section 4 and Theorem 34) in a rigorous
/// form: their code chooses the scale heuristically (k standard deviations after a random rotation), this
/// bound assumes no rotation and no cancellation between clients, so it errs towards wrapping.
///
/// Privacy: the released value mod 2^b is a post-processing of the integer sum, so a wrap by itself costs
/// no privacy. But any reaction to one that a party can observe (an aborted round, a clipped-value count,
/// a retry) is a data-dependent event; the mechanism with the reaction differs from the one without only on
/// an event of probability at most p, so it is (ε, δ + p)-DP. The accountant's δ for a run is therefore
/// δ + (rounds × p), the per-round bound added once per round (union bound); `accountedDelta` says so.
public enum ModularWrap {
    /// The bound above on the probability that any of d coordinates wraps, for contributions of scaled
    /// clip c̃ = c·2^f (grid units) and n shares of σ (grid units).
    /// - Throws: `PrivacyParameterError` for b outside 2...64, c̃ or σ not finite and positive, d, K or n < 1.
    public static func probability(modulusBits: Int, scaledClip: Double, dimension: Int, contributions: Int, shares: Int,
                                   shareSigma: Double) throws -> Double {
        guard (2...64).contains(modulusBits) else {
            throw PrivacyParameterError(name: "modulus bits", value: Double(modulusBits), expected: "in 2...64")
        }
        guard scaledClip.isFinite, scaledClip > 0, shareSigma.isFinite, shareSigma > 0 else {
            throw PrivacyParameterError(name: "scaled clip or share sigma", value: min(scaledClip, shareSigma),
                                        expected: "finite and > 0")
        }
        guard dimension >= 1, contributions >= 1, shares >= 1 else {
            throw PrivacyParameterError(name: "dimension, contributions or shares", value: Double(min(dimension, contributions, shares)),
                                        expected: ">= 1")
        }
        let half = Double(sign: .plus, exponent: modulusBits - 1, significand: 1)
        let gap = half - Double(contributions) * scaledClip.rounded(.up)
        guard gap > 0 else { return 1 }
        let exponent = -gap * gap / (2 * Double(shares) * shareSigma * shareSigma)
        return min(1, exp(log(2 * Double(dimension)) + exponent))
    }

    /// The largest number of fractional bits f in −62...62 (scale 2^f, the finest grid, least rounding
    /// inflation) at which `probability` is at most `target`, with `shareSigma(f)` each share's σ in grid units
    /// at that scale. Every f returned has been checked; throws when none in the range fits.
    public static func fractionalBits(modulusBits: Int, clipNorm: Double, dimension: Int, contributions: Int, shares: Int,
                                      target: Double, shareSigma: (Int) throws -> Double) throws -> Int {
        guard target.isFinite, target > 0, target < 1 else {
            throw PrivacyParameterError(name: "wrap probability target", value: target, expected: "in (0, 1)")
        }
        guard clipNorm.isFinite, clipNorm > 0 else {
            throw PrivacyParameterError(name: "clip norm", value: clipNorm, expected: "finite and > 0")
        }
        for bits in stride(from: 62, through: -62, by: -1) {
            let scaledClip = clipNorm * Double(sign: .plus, exponent: bits, significand: 1)
            let p = try probability(modulusBits: modulusBits, scaledClip: scaledClip, dimension: dimension,
                                    contributions: contributions, shares: shares, shareSigma: try shareSigma(bits))
            if p <= target { return bits }
        }
        throw PrivacyParameterError(name: "wrap probability target", value: target,
                                    expected: "reachable: no scale 2^f, f in -62...62, keeps \(contributions) contributions of clip "
                                        + "\(clipNorm) and \(shares) noise shares inside \(modulusBits) bits")
    }

    /// For distributed DP-SGD with total noise multiplier z over the rounded sensitivity, shared by a
    /// threshold of t: each share's σ at scale 2^f is z·Δ₂(f)/√t, Δ₂ from conditional rounding with β.
    public static func fractionalBits(modulusBits: Int, clipNorm: Double, dimension: Int, contributions: Int, cohort: Int,
                                      threshold: Int, noiseMultiplier: Double, beta: Double, target: Double) throws -> Int {
        guard noiseMultiplier.isFinite, noiseMultiplier > 0, (1...max(1, cohort)).contains(threshold) else {
            throw PrivacyParameterError(name: "noise multiplier or threshold", value: noiseMultiplier,
                                        expected: "noise multiplier finite and > 0, threshold in 1...cohort")
        }
        return try fractionalBits(modulusBits: modulusBits, clipNorm: clipNorm, dimension: dimension, contributions: contributions,
                                  shares: cohort, target: target) { bits in
            let scaledClip = clipNorm * Double(sign: .plus, exponent: bits, significand: 1)
            let l2 = try RoundedSensitivity.conditionalRounding(scaledClip: scaledClip, dimension: dimension, beta: beta).l2
            return noiseMultiplier * l2 / Double(threshold).squareRoot()
        }
    }

    /// The δ to report for `rounds` rounds each with wrap probability at most p: δ + rounds·p (see above).
    public static func accountedDelta(delta: Double, wrapProbability p: Double, rounds: Int) -> Double {
        min(1, delta + Double(max(0, rounds)) * p)
    }
}
