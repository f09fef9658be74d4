import Foundation
import SecureCrypto

/// Gaussian noise for DP-SGD, drawn from the operating system's CSPRNG through `SecureRandom`.
///
/// Method: the Box–Muller transform in Double. Each pair of uniforms (u₁, u₂) from
/// `SecureRandom.fillUnitDoubles` (53 random bits each, in the open interval (0, 1)) gives two
/// independent standard normals r·cos(2πu₂) and r·sin(2πu₂) with r = √(−2 ln u₁); they are scaled by
/// the standard deviation and rounded to Float only at the end. No seeded or fast PRNG is involved.
///
/// Floating-point caveats (these are properties of every floating-point Gaussian sampler, including
/// the ones in Opacus and TensorFlow Privacy; the accountants assume the ideal real-valued Gaussian):
/// - Mironov 2012 ("On Significance of the Least Significant Bits for Differential Privacy", CCS)
///   showed that floating-point Laplace noise breaks DP: the set of doubles that x + noise can
///   produce depends on x, so the low-order bits of a single output can reveal which neighbouring
///   input produced it. The same argument applies to this sampler and to the Float rounding of
///   gradient + noise. Exact alternatives exist (Mironov's snapping mechanism; the discrete Gaussian
///   of Canonne, Kamath and Steinke 2020) but are not used here. In DP-SGD the noisy sum is never
///   released: it passes through the optimiser, many further steps and (in federation) aggregation
///   and quantisation, which removes the practical attack surface but not the formal gap.
/// - The smallest u₁ is 2⁻⁵⁴, so r ≤ √(108 ln 2) ≈ 8.65: the output is truncated at about 8.65σ,
///   and the far tail is a comb of isolated values rather than a density. The exact Gaussian puts
///   about 5·10⁻¹⁸ of its mass beyond 8.65σ. For DP this means that a neighbour's shift by the
///   sensitivity C (noise σC) can reach outputs the other input cannot produce, with probability of
///   order 2φ(8.65)·‖shift‖₁/(σC) ≤ 4.4·10⁻¹⁷·√d/σ per step — below 10⁻¹³ for a million coordinates at σ = 1 — which
///   would add to δ; at that size it is far below any δ a budget uses, but it is not zero.
/// - Rounding to Float adds a relative error of at most 2⁻²⁴ per value, negligible statistically.
public enum GaussianNoise {
    /// Uniforms drawn per chunk (two per output pair); the scratch buffer is zeroed after use.
    static let chunkSize = 8192

    /// Fills `out` with independent N(0, standardDeviation²) samples.
    /// - Parameter standardDeviation: σ·C for DP-SGD; must be finite and ≥ 0 (a programming error
    ///   otherwise). Zero gives zeros.
    public static func fill(_ out: UnsafeMutableBufferPointer<Float>, standardDeviation: Double) {
        precondition(standardDeviation.isFinite && standardDeviation >= 0,
                     "Gaussian noise standard deviation must be finite and >= 0, got \(standardDeviation)")
        guard let base = out.baseAddress, out.count > 0 else { return }
        if standardDeviation == 0 {
            out.initialize(repeating: 0)
            return
        }
        let uniforms = UnsafeMutableBufferPointer<Double>.allocate(capacity: chunkSize)
        defer {
            uniforms.initialize(repeating: 0)  // the uniforms determine the noise; do not leave them behind
            uniforms.deallocate()
        }
        let twoPi = 2 * Double.pi
        var index = 0
        while index < out.count {
            let remaining = out.count - index
            let pairs = min(chunkSize / 2, (remaining + 1) / 2)
            let chunk = UnsafeMutableBufferPointer(rebasing: uniforms[0..<(2 * pairs)])
            SecureRandom.fillUnitDoubles(chunk)
            for pair in 0..<pairs {
                let radius = (-2 * log(chunk[2 * pair])).squareRoot() * standardDeviation
                let angle = twoPi * chunk[2 * pair + 1]
                base[index] = Float(radius * cos(angle))
                if index + 1 < out.count { base[index + 1] = Float(radius * sin(angle)) }
                index += 2
            }
        }
    }

    /// Convenience: `count` samples in a new array.
    public static func samples(count: Int, standardDeviation: Double) -> [Float] {
        precondition(count >= 0, "sample count must be >= 0")
        var values = [Float](repeating: 0, count: count)
        values.withUnsafeMutableBufferPointer { fill($0, standardDeviation: standardDeviation) }
        return values
    }
}
