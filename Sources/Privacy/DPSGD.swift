import Foundation
import SecureCrypto

/// One DP-SGD step's aggregation (Abadi et al. 2016): each example's gradient over all trainable
/// tensors is clipped to L2 norm C and summed; `privatized` adds N(0, σ²C²) per coordinate (from
/// libsodium, see `GaussianNoise`) and divides by the expected batch size q·N, the estimator the
/// accountants' Poisson-sampling analysis assumes (the actual, random batch size would leak).
public struct DPSGDStep {
    public let clipNorm: Double
    public let noiseMultiplier: Double
    public private(set) var sum: [Float]
    /// Examples added so far, and how many of them were clipped (norm above C).
    public private(set) var examples = 0
    public private(set) var clipped = 0

    public init(parameterCount: Int, clipNorm: Double, noiseMultiplier: Double) {
        precondition(clipNorm > 0 && clipNorm.isFinite, "clip norm must be positive and finite")
        precondition(noiseMultiplier > 0 && noiseMultiplier.isFinite, "noise multiplier must be positive and finite")
        self.clipNorm = clipNorm
        self.noiseMultiplier = noiseMultiplier
        sum = [Float](repeating: 0, count: parameterCount)
    }

    /// Clips one example's gradient to norm C and adds it; returns its norm before clipping, or nil
    /// (and adds nothing) when the gradient is not finite.
    @discardableResult
    public mutating func add(_ gradient: UnsafeBufferPointer<Float>) -> Double? {
        precondition(gradient.count == sum.count, "gradient has \(gradient.count) values, expected \(sum.count)")
        var squared = 0.0
        for g in gradient { squared += Double(g) * Double(g) }
        let norm = squared.squareRoot()
        guard norm.isFinite else { return nil }
        let factor = Float(min(1, clipNorm / max(norm, .leastNormalMagnitude)))
        if norm > clipNorm { clipped += 1 }
        sum.withUnsafeMutableBufferPointer { s in
            for i in 0..<s.count { s[i] += factor * gradient[i] }
        }
        examples += 1
        return norm
    }

    /// (Σ clipped gradients + N(0, σ²C²)) / expectedBatchSize.
    public func privatized(expectedBatchSize: Double) -> [Float] {
        precondition(expectedBatchSize > 0, "expected batch size must be positive")
        var noise = [Float](repeating: 0, count: sum.count)
        noise.withUnsafeMutableBufferPointer { GaussianNoise.fill($0, standardDeviation: noiseMultiplier * clipNorm) }
        let divisor = Float(expectedBatchSize)
        return (0..<sum.count).map { (sum[$0] + noise[$0]) / divisor }
    }

    /// Poisson sampling: each of `count` records independently with probability `rate`, from libsodium's
    /// generator (the sampling is part of the privacy mechanism, so it must not be predictable).
    public static func poissonSample(count: Int, rate: Double) -> [Int] {
        precondition(rate >= 0 && rate <= 1, "sampling rate must be in [0, 1]")
        let uniforms = SecureRandom.unitDoubles(count: count)
        return uniforms.indices.filter { uniforms[$0] < rate }
    }

    /// `size` of `count` indices drawn uniformly without replacement (all of them, in order, when
    /// `count <= size`), from libsodium's generator: the records a sampled user contributes to one step
    /// when the user has more than the public cap (a partial Fisher–Yates shuffle, Knuth vol. 2 §3.4.2).
    public static func uniformSubset(count: Int, size: Int) -> [Int] {
        precondition(count >= 0 && size >= 0, "count and size must not be negative")
        guard count > size else { return Array(0..<count) }
        precondition(count <= Int(UInt32.max), "at most 2^32 - 1 indices")
        var indices = Array(0..<count)
        for i in 0..<size {
            let j = i + Int(SecureRandom.uniform(UInt32(count - i)))
            indices.swapAt(i, j)
        }
        return indices[0..<size].sorted()
    }
}
