import Foundation

extension DistributedRound {
    /// The largest L2 norm, in grid units, that the decoded sum of `survivors` clients following the plan
    /// reaches except with probability at most `failureProbability` (a range check on the unmasked sum).
    ///
    /// The sum is Σ rounded clipped sums + Σ noise shares. Signal: at most K = `contributions` clipped vectors
    /// of norm ≤ c̃ = C·2^f in the cohort's step (the bound the wrap analysis already relies on,
    /// `ModularWrap`), each client's rounding moving its sum by less than √d: ‖signal‖₂ ≤ K·c̃ + s·√d. Noise:
    /// each coordinate is a sum of s independent N_Z(0, σ_share²), each σ_share-sub-Gaussian (Canonne, Kamath,
    /// Steinke 2020), so (√s·σ_share)-sub-Gaussian; for such X, E[e^(λX²)] ≤ (1 − 2λσ²)^(−1/2) (average
    /// e^(√(2λ)·g·X) over a standard normal g), the chi-square's moment generating function, so Laurent and
    /// Massart's (2000, Lemma 1) tail holds: P[‖noise‖₂² ≥ sσ_share²(d + 2√(dx) + 2x)] ≤ e^(−x), x = ln(1/p).
    /// The bound is the sum of the two (triangle inequality).
    ///
    /// A sum above it means a client sent values outside its clip (or more contributions than K), or the sum
    /// wrapped; a client that stays under it is not detected (that needs range proofs, which secure
    /// aggregation here does not have). The check reads only the released sum: post-processing, no privacy cost.
    /// - Throws: `PrivacyParameterError` for s < 1, K < 1, a clip norm not finite and positive, or p outside (0, 1).
    public func sumNormBound(survivors: Int, contributions: Int, clipNorm: Double, failureProbability: Double) throws -> Double {
        guard survivors >= 1, contributions >= 1 else {
            throw PrivacyParameterError(name: "survivors or contributions", value: Double(min(survivors, contributions)), expected: ">= 1")
        }
        guard clipNorm.isFinite, clipNorm > 0 else {
            throw PrivacyParameterError(name: "clip norm", value: clipNorm, expected: "finite and > 0")
        }
        guard failureProbability > 0, failureProbability < 1 else {
            throw PrivacyParameterError(name: "failure probability", value: failureProbability, expected: "in (0, 1)")
        }
        let d = Double(preview.assumed.dimension), s = Double(survivors), x = -log(failureProbability)
        // Each contribution's rounded update is within c̃ + √d_update, and its count coordinate (if any) ±h.
        let count = Double(preview.countHalfWidth ?? 0)
        let signal = Double(contributions) * (clipNorm * scale + count) + s * Double(preview.updateDimension).squareRoot()
        let noise = (s * shareSigma * shareSigma * (d + 2 * (d * x).squareRoot() + 2 * x)).squareRoot()
        return signal + noise
    }
}
