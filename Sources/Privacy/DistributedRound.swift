import Foundation
import SecureCrypto

/// Where a round's DP noise is added: by each client to its own update (`local`, DP-SGD on its own data),
/// or shared out over the cohort in the integer domain of secure aggregation (`distributed`, Kairouz, Liu,
/// Steinke 2021, arXiv:2102.06387), so that only the unmasked sum carries the full noise.
public enum NoisePlacement: String, Codable, Sendable, CaseIterable {
    case local
    case distributed
}

/// One round of distributed DP-SGD over secure aggregation, as the client, the coordinator and the audit
/// all compute it from public values (the plan, the secure round's cohort and threshold, the adapter's size):
/// one DP-SGD step over the union of the cohort's units, each client adding its share of the noise.
///
/// - Scale: f is `ModularWrap`'s finest for the plan's contributions bound K (wrap probability at most
///   `DistributedPlanPreview.wrapTarget`), lowered until each share's σ is one the discrete Gaussian sampler
///   draws (≤ 2^24 grid units). Coarser only lowers the wrap probability.
/// - Rounding: each client rounds its clipped sum once, without bias (`roundedSum`, Δ₂ = c̃ + √d).
/// - Shares: σ_share = z·Δ₂/√t, so any t survivors carry σ² = (z·Δ₂)² (`NoiseTrust`); the ε a client charges
///   counts only the k = max(1, h − (n − t)) honest shares its assumption h guarantees.
/// - A wrap of the modular sum costs no privacy here: the coordinator only post-processes the sum modulo 2^32
///   (it decodes and steps; nothing it does reacts to a wrap differently from any other value), so the wrap
///   probability is a utility figure, shown in the audit, and not taken from δ.
public struct DistributedRound: Sendable {
    /// The parameters and the steps to account, under the assumption and trusting no one (one step).
    public let preview: DistributedPlanPreview

    /// - Parameters: the plan's q, z, clip c and contributions bound K; the adapter's d; the secure round's
    ///   cohort n and threshold t; the client's `assume_honest` h (clamped to n: no more can be honest); adaptive
    ///   clipping's σ_b (client-level only: each contribution then carries the count coordinate, see
    ///   `DistributedPlanPreview`), nil without it.
    /// - Throws: `PrivacyParameterError` for a parameter out of range or when no scale fits.
    public init(samplingRate: Double, noiseMultiplier: Double, clipNorm: Double, dimension: Int, cohort: Int, threshold: Int,
                assumeHonest: Int, contributions: Int, countNoiseMultiplier: Double? = nil) throws {
        let trust = try NoiseTrust(cohort: cohort, threshold: threshold, assumeHonest: min(max(assumeHonest, 1), max(cohort, 1)))
        var bits = try ModularWrap.fractionalBits(
            modulusBits: DistributedPlanPreview.modulusBits, clipNorm: clipNorm, dimension: dimension, contributions: contributions,
            cohort: cohort, threshold: threshold,
            noiseMultiplier: DistributedPlanPreview.wrapNoiseMultiplier(noiseMultiplier, countNoiseMultiplier: countNoiseMultiplier),
            beta: 0, target: DistributedPlanPreview.wrapTarget)
        func preview(_ bits: Int) throws -> DistributedPlanPreview {
            try DistributedPlanPreview(samplingRate: samplingRate, noiseMultiplier: noiseMultiplier, stepsPerRound: 1,
                                       clipNorm: clipNorm, dimension: dimension, trust: trust, contributions: contributions,
                                       fractionalBits: bits, roundingBeta: 0, countNoiseMultiplier: countNoiseMultiplier)
        }
        var candidate = try preview(bits)
        // Coarser while a share's σ is beyond the sampler, or the count coordinate (wider than c̃ when σ_b is near z/2)
        // takes the wrap probability past its target.
        while (candidate.shareSigma > DiscreteGaussian.sigmaRange.upperBound || candidate.wrapProbability > DistributedPlanPreview.wrapTarget)
                && bits > -62 {
            bits -= 1
            candidate = try preview(bits)
        }
        guard DiscreteGaussian.sigmaRange.contains(candidate.shareSigma) else {
            throw PrivacyParameterError(name: "share sigma", value: candidate.shareSigma,
                                        expected: "in [1/64, 2^24] grid units on some scale 2^f")
        }
        self.preview = candidate
    }

    public var trust: NoiseTrust { preview.trust }
    /// f: the grid is 2^−f.
    public var fractionalBits: Int { preview.fractionalBits }
    /// 2^f.
    public var scale: Double { Double(sign: .plus, exponent: fractionalBits, significand: 1) }
    /// σ of each client's share, in grid units.
    public var shareSigma: Double { preview.shareSigma }
    /// The noise multiplier the sum carries with `survivors` shares in it: z·√(s/t) (z at s = t).
    public func survivingNoiseMultiplier(survivors: Int) -> Double {
        shareSigma * Double(survivors).squareRoot() / preview.sensitivity.l2
    }

    /// What the client charges its ledger before the step: the assumed steps as a discrete-Gaussian
    /// mechanism whose RDP is never below KLS 2021's bound (`DistributedDiscreteGaussianSteps.ledgerMechanism`).
    public var ledgerMechanism: MechanismSteps { preview.assumed.ledgerMechanism }
    /// The same for the client's own share alone (trusting no one): kept beside the charge, never charged.
    public var ledgerMechanismTrustingNoOne: MechanismSteps { preview.trustingNoOne.ledgerMechanism }

    /// This round's ε at δ under the assumption and trusting no one, with `survivors` in the sum (nil: t).
    public func epsilons(delta: Double, survivors: Int? = nil) throws -> (assumed: Double, trustingNoOne: Double) {
        try trust.epsilons(samplingRate: preview.assumed.samplingRate, totalSigma: shareSigma * Double(trust.threshold).squareRoot(),
                           dimension: preview.assumed.dimension, sensitivity: preview.sensitivity, steps: 1, delta: delta,
                           survivors: survivors)
    }

    /// The client's integer vector: each coordinate of 2^f·`clippedSum` rounded up with probability its
    /// fractional part (unbiased, libsodium), plus an independent N_Z(0, σ_share²) (libsodium). Reduced
    /// modulo 2^32 by whoever masks it.
    /// - Throws: `PrivacyParameterError` for a vector of the wrong length or a value not finite or beyond
    ///   2^52 grid units (a sum no clip of the plan produces).
    /// - Parameter unclipped: adaptive clipping's bit b = 1[‖Δ‖ ≤ S], appended as +h (b = 1) or −h (b = 0) before
    ///   the noise; required exactly when the round has the count coordinate.
    /// - Throws: also `PrivacyParameterError` when the bit is missing or not asked for.
    public func noisedShare(clippedSum: [Double], unclipped: Bool? = nil) throws -> [Int64] {
        var integers = try rounded(clippedSum, uniforms: SecureRandom.unitDoubles(count: clippedSum.count))
        switch (preview.countHalfWidth, unclipped) {
        case (nil, nil): break
        case let (h?, bit?): integers.append(bit ? h : -h)
        default:
            throw PrivacyParameterError(name: "adaptive clipping bit", value: unclipped == nil ? 0 : 1,
                                        expected: preview.countHalfWidth == nil ? "none: the round has no count coordinate"
                                            : "one: the round's vectors carry the count coordinate")
        }
        try DiscreteGaussian.add(to: &integers, sigma: shareSigma)
        return integers
    }

    /// 2^f·`clippedSum` rounded coordinate by coordinate: up where the uniform is below the fractional part.
    func rounded(_ clippedSum: [Double], uniforms: [Double]) throws -> [Int64] {
        guard clippedSum.count == preview.updateDimension, uniforms.count == clippedSum.count else {
            throw PrivacyParameterError(name: "clipped sum length", value: Double(clippedSum.count),
                                        expected: "\(preview.updateDimension), the adapter's parameter count")
        }
        var integers = [Int64](repeating: 0, count: clippedSum.count)
        let scale = self.scale
        for (index, value) in clippedSum.enumerated() {
            let scaled = value * scale
            guard scaled.isFinite, abs(scaled) < 0x1p52 else {
                throw PrivacyParameterError(name: "clipped sum value \(index)", value: value, expected: "finite, below 2^52 grid units")
            }
            let floor = scaled.rounded(.down)
            integers[index] = Int64(uniforms[index] < scaled - floor ? floor + 1 : floor)
        }
        return integers
    }
}
