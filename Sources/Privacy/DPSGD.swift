import Foundation
import SecureCrypto

/// DP-SGD's fixed-point grid: clipped gradients become integers at the scale 2^f (the power-of-two grid
/// secure aggregation also uses, `FixedPointEncoding`), are summed exactly in Int64, and are noised with
/// the discrete Gaussian (Canonne, Kamath, Steinke 2020), whose privacy the accountants cover; the noisy
/// integer sum is the release, and decoding it to floats is post-processing.
///
/// Sensitivity: a gradient clipped to L2 norm C and rounded to the nearest integer coordinate by
/// coordinate has norm at most C·2^f + √d/2 (each of d coordinates moves by at most 1/2, triangle
/// inequality; the bound Kairouz, Liu, Steinke 2021, "The Distributed Discrete Gaussian Mechanism for
/// Federated Learning with Secure Aggregation", ICML, give for deterministic rounding), so adding or removing one example moves the integer sum by at most
/// Δ = ⌈C·2^f + √d/2⌉ + 1 in L2 (the + 1 absorbs the floating-point error of clipping; every example's
/// integer norm is checked against Δ exactly anyway). f is the smallest with Δ ≤ 1.01·C·2^f: rounding
/// inflates the sensitivity by at most 1%.
///
/// Noise: σ_int = σ·Δ, rounded up, so the effective noise multiplier σ_int/Δ is never below the plan's σ,
/// and the ledger is charged with the plan's σ and `MechanismNoise.discreteGaussian` (the preview and the
/// charge agree). In the decoded domain the noise's standard deviation is σ·C·(Δ/(C·2^f)) ≤ 1.01·σ·C.
///
/// Overflow: each coordinate of a rounded example is at most Δ in magnitude, so the sum of
/// `maximumExamples` = ⌊2^62/Δ⌋ examples stays below 2^62 and the noise (below 2^62, see
/// `DiscreteGaussian`) cannot wrap it; a step refuses the example after that.
public struct DPSGDGrid: Sendable, Equatable {
    /// The largest Δ / (C·2^f) a chosen grid may have.
    public static let maximumSensitivityInflation = 1.01

    /// d: coordinates of one gradient.
    public let parameterCount: Int
    /// C: each example's gradient is clipped to this L2 norm.
    public let clipNorm: Double
    /// σ: the plan's noise multiplier, the one charged.
    public let noiseMultiplier: Double
    /// f: values are scaled by 2^f before rounding (the grid step is 2^−f).
    public let fractionalBits: Int
    /// Δ: the L2 bound on one example's rounded integer gradient.
    public let sensitivity: Int64
    /// σ_int ≥ σ·Δ: the discrete Gaussian's σ on the integer grid.
    public let noiseSigma: Double
    /// The most examples one step may sum without any risk of Int64 overflow.
    public let maximumExamples: Int

    /// 2^f.
    public var scale: Double { Double(sign: .plus, exponent: fractionalBits, significand: 1) }
    /// Δ / (C·2^f): how much rounding inflates the sensitivity (≤ 1.01 for a chosen grid).
    public var sensitivityInflation: Double { Double(sensitivity) / (clipNorm * scale) }
    /// σ_int / Δ ≥ σ: the noise multiplier the integer mechanism has.
    public var effectiveNoiseMultiplier: Double { noiseSigma / Double(sensitivity) }

    /// The coarsest power-of-two grid whose rounding inflates the sensitivity by at most 1%.
    /// - Throws: `PrivacyParameterError` for d < 1, C or σ not finite and positive, or when σ·Δ exceeds the
    ///   discrete Gaussian's range (naming the largest σ this parameter count allows).
    public init(parameterCount: Int, clipNorm: Double, noiseMultiplier: Double) throws {
        try Self.validate(parameterCount: parameterCount, clipNorm: clipNorm, noiseMultiplier: noiseMultiplier)
        let halfRoot = Double(parameterCount).squareRoot() / 2
        // A first guess below the answer (C·2^f < 100·(√d/2 + 1) there), then up to the smallest f that fits.
        var bits = Int((log2(100) + log2(halfRoot + 2) - log2(clipNorm)).rounded(.down)) - 1
        while Self.sensitivity(parameterCount: parameterCount, clipNorm: clipNorm, fractionalBits: bits)
                > Self.maximumSensitivityInflation * clipNorm * Double(sign: .plus, exponent: bits, significand: 1) {
            bits += 1
        }
        try self.init(parameterCount: parameterCount, clipNorm: clipNorm, noiseMultiplier: noiseMultiplier, fractionalBits: bits)
    }

    /// A grid with a stated scale 2^f (tests use it to reach the overflow bound).
    init(parameterCount: Int, clipNorm: Double, noiseMultiplier: Double, fractionalBits: Int) throws {
        try Self.validate(parameterCount: parameterCount, clipNorm: clipNorm, noiseMultiplier: noiseMultiplier)
        let delta = Self.sensitivity(parameterCount: parameterCount, clipNorm: clipNorm, fractionalBits: fractionalBits)
        guard delta.isFinite, delta <= 0x1p53 else {
            throw PrivacyParameterError(name: "fixed-point scale 2^f", value: Double(fractionalBits),
                                        expected: "an integer sensitivity of at most 2^53 for clip norm \(clipNorm)")
        }
        let sigma = (noiseMultiplier * delta).nextUp
        guard DiscreteGaussian.sigmaRange.contains(sigma) else {
            throw PrivacyParameterError(name: "noise multiplier", value: noiseMultiplier,
                                        expected: "in [\(DiscreteGaussian.sigmaRange.lowerBound / delta), "
                                            + "\(DiscreteGaussian.sigmaRange.upperBound / delta)] for \(parameterCount) parameters "
                                            + "(the discrete Gaussian's σ·Δ, Δ = \(Int64(delta)), must lie in [1/64, 2^24])")
        }
        self.parameterCount = parameterCount
        self.clipNorm = clipNorm
        self.noiseMultiplier = noiseMultiplier
        self.fractionalBits = fractionalBits
        sensitivity = Int64(delta)
        noiseSigma = sigma
        maximumExamples = Int((Int64(1) << 62) / Int64(delta))
    }

    /// Δ = ⌈C·2^f + √d/2⌉ + 1, as a Double (an integer).
    static func sensitivity(parameterCount: Int, clipNorm: Double, fractionalBits: Int) -> Double {
        (clipNorm * Double(sign: .plus, exponent: fractionalBits, significand: 1)
            + Double(parameterCount).squareRoot() / 2).rounded(.up) + 1
    }

    private static func validate(parameterCount: Int, clipNorm: Double, noiseMultiplier: Double) throws {
        guard parameterCount >= 1 else {
            throw PrivacyParameterError(name: "parameter count", value: Double(parameterCount), expected: ">= 1")
        }
        guard clipNorm.isFinite, clipNorm > 0 else {
            throw PrivacyParameterError(name: "clip norm", value: clipNorm, expected: "finite and > 0")
        }
        guard noiseMultiplier.isFinite, noiseMultiplier > 0 else {
            throw PrivacyParameterError(name: "noise multiplier", value: noiseMultiplier, expected: "finite and > 0")
        }
    }
}

/// A DP-SGD step's aggregation that cannot go on.
public enum DPSGDError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The step already holds `DPSGDGrid.maximumExamples`: one more could overflow the Int64 sum.
    case tooManyExamples(limit: Int)
    /// A rounded example's integer norm exceeded Δ (a defect: the rounding bound says it cannot).
    case sensitivityExceeded(sensitivity: Int64)

    public var description: String {
        switch self {
        case let .tooManyExamples(limit):
            return "a DP-SGD step sums at most \(limit) examples on its grid (Int64 overflow bound); lower the sampling rate"
        case let .sensitivityExceeded(sensitivity):
            return "a rounded gradient's norm exceeds the sensitivity bound \(sensitivity) (a defect; nothing was added)"
        }
    }
}

/// One DP-SGD step's aggregation (Abadi et al. 2016) on a `DPSGDGrid`: each example's gradient over all
/// trainable tensors is clipped to L2 norm C, scaled by 2^f, rounded to integers and summed in Int64;
/// `privatized` adds discrete Gaussian noise of σ_int per coordinate (libsodium bits, exact) and decodes
/// the noisy sum divided by the expected batch size q·N, the estimator the accountants' Poisson-sampling
/// analysis assumes (the actual, random batch size would leak).
public struct DPSGDStep {
    public let grid: DPSGDGrid
    /// The integer sum of the rounded, clipped gradients.
    public private(set) var sum: [Int64]
    /// Examples added so far, and how many of them were clipped (norm above C).
    public private(set) var examples = 0
    public private(set) var clipped = 0
    /// Scratch: the last example's rounded, clipped values (reused so each `add` allocates nothing).
    private var rounded: [Int64] = []

    public init(grid: DPSGDGrid) {
        self.grid = grid
        sum = [Int64](repeating: 0, count: grid.parameterCount)
    }

    /// A step on the grid `DPSGDGrid(parameterCount:clipNorm:noiseMultiplier:)` chooses.
    /// - Throws: `PrivacyParameterError` as that initialiser does.
    public init(parameterCount: Int, clipNorm: Double, noiseMultiplier: Double) throws {
        self.init(grid: try DPSGDGrid(parameterCount: parameterCount, clipNorm: clipNorm, noiseMultiplier: noiseMultiplier))
    }

    /// The un-noised sum decoded to real values (sum / 2^f), for tests and diagnostics; never released.
    public var decodedSum: [Double] { sum.map { Double($0) / grid.scale } }

    /// Clips one example's gradient to norm C, rounds it onto the grid and adds it; returns its norm
    /// before clipping, or nil (and adds nothing) when the gradient is not finite.
    /// - Throws: `DPSGDError` when the step is full (overflow bound) or a rounded norm exceeds Δ; nothing is added.
    @discardableResult
    public mutating func add(_ gradient: UnsafeBufferPointer<Float>) throws -> Double? {
        precondition(gradient.count == sum.count, "gradient has \(gradient.count) values, expected \(sum.count)")
        var squared = 0.0
        for g in gradient { squared += Double(g) * Double(g) }
        let norm = squared.squareRoot()
        guard norm.isFinite else { return nil }
        guard examples < grid.maximumExamples else { throw DPSGDError.tooManyExamples(limit: grid.maximumExamples) }
        let factor = min(1, grid.clipNorm / max(norm, .leastNormalMagnitude)) * grid.scale
        // Two passes: the exact integer norm is checked before anything is added.
        // In 128 bits: Δ ≤ 2^53, so Δ² and the running sum (stopped once above Δ²) stay below 2^107.
        // Each value is rounded once, into `rounded`, and exactly those integers are checked and added.
        // |q| ≤ C·2^f ≤ Δ ≤ 2^53 after clipping, so each fits an Int64 before the check bounds their norm.
        let bound = Int128(grid.sensitivity) * Int128(grid.sensitivity)
        if rounded.count != gradient.count { rounded = [Int64](repeating: 0, count: gradient.count) }
        try rounded.withUnsafeMutableBufferPointer { q in
            var integerSquared: Int128 = 0
            for i in 0..<q.count {
                q[i] = Int64((Double(gradient[i]) * factor).rounded(.toNearestOrAwayFromZero))
                integerSquared += Int128(q[i]) * Int128(q[i])
                if integerSquared > bound { throw DPSGDError.sensitivityExceeded(sensitivity: grid.sensitivity) }
            }
        }
        sum.withUnsafeMutableBufferPointer { s in
            rounded.withUnsafeBufferPointer { q in
                for i in 0..<s.count { s[i] += q[i] }
            }
        }
        if norm > grid.clipNorm { clipped += 1 }
        examples += 1
        return norm
    }

    /// The noisy integer sum: Σ rounded clipped gradients + N_Z(0, σ_int²) per coordinate. The release.
    /// - Throws: `DiscreteGaussianError` (never expected within `maximumExamples`).
    public func noisySum() throws -> [Int64] {
        var noisy = sum
        try DiscreteGaussian.add(to: &noisy, sigma: grid.noiseSigma)
        return noisy
    }

    /// The noisy sum decoded: (Σ + noise) / 2^f / expectedBatchSize, rounded once to Float.
    public func privatized(expectedBatchSize: Double) throws -> [Float] {
        precondition(expectedBatchSize > 0, "expected batch size must be positive")
        let divisor = grid.scale * expectedBatchSize
        return try noisySum().map { Float(Double($0) / divisor) }
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

extension MechanismSteps {
    /// DP-SGD as Conclave runs it (`DPSGDStep`): Poisson sampling at q, the discrete Gaussian on the
    /// `DPSGDGrid`, charged at the plan's σ (never above the grid's effective σ_int/Δ). Every preview and
    /// every charge of a DP-SGD run builds its mechanism here, so the two always agree.
    public static func dpsgd(samplingRate: Double, noiseMultiplier: Double, steps: Int) -> MechanismSteps {
        MechanismSteps(samplingRate: samplingRate, noiseMultiplier: noiseMultiplier, steps: steps, noise: .discreteGaussian)
    }
}
