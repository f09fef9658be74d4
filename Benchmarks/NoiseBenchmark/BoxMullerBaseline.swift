import Foundation
import SecureCrypto

/// The Gaussian sampler Conclave used for DP-SGD before the discrete Gaussian: Box–Muller in doubles from
/// libsodium's uniforms, rounded to Float. Kept here only as this benchmark's speed baseline; it protects
/// nothing (floating-point Gaussian noise is what Jin et al., IEEE S&P 2022, attacked) and no
/// library uses it.
enum BoxMullerBaseline {
    static func fill(_ out: UnsafeMutableBufferPointer<Float>, standardDeviation: Double) {
        guard let base = out.baseAddress, out.count > 0 else { return }
        let chunkSize = 8192
        var uniforms = [Double](repeating: 0, count: chunkSize)
        var index = 0
        while index < out.count {
            let pairs = min(chunkSize / 2, (out.count - index + 1) / 2)
            uniforms.withUnsafeMutableBufferPointer { SecureRandom.fillUnitDoubles(UnsafeMutableBufferPointer(rebasing: $0[0..<(2 * pairs)])) }
            for pair in 0..<pairs {
                let radius = (-2 * log(uniforms[2 * pair])).squareRoot() * standardDeviation
                let angle = 2 * Double.pi * uniforms[2 * pair + 1]
                base[index] = Float(radius * cos(angle))
                if index + 1 < out.count { base[index + 1] = Float(radius * sin(angle)) }
                index += 2
            }
        }
    }
}
