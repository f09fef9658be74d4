import Dispatch
import Foundation
import SecureCrypto

/// Exact samples of the discrete Gaussian N_Z(0, σ²): P[X = x] ∝ exp(−x²/(2σ²)) for every integer x
/// (Canonne, Kamath, Steinke 2020, "The Discrete Gaussian for Differential Privacy", NeurIPS;
/// arXiv:2004.00010). The noise of every DP mechanism in Conclave (DP-SGD on its fixed-point grid,
/// released metrics); it replaces the Box–Muller sampler in doubles that Jin et al. (IEEE S&P 2022)
/// attacked in other libraries.
///
/// Method: CKS 2020 Algorithm 3 (rejection from the discrete Laplace of scale t = ⌊σ⌋ + 1, accepted with
/// probability exp(−(|Y| − σ²/t)²/(2σ²))), over Algorithm 2 (discrete Laplace) and Algorithm 1
/// (Bernoulli(exp(−γ)) for rational γ). Every probability is a ratio of integers and every coin is an
/// exact comparison of uniform random bits from libsodium with that ratio's binary expansion: no
/// floating point touches a draw, so the output law is exactly N_Z(0, σ̂²) (below).
///
/// σ̂: σ² is rounded *up* to a rational A/B with a 32-bit significand (B a power of two), so
/// σ ≤ σ̂ ≤ σ·(1 + 2⁻³²): never less noise than asked. σ must lie in [1/64, 2²⁴]; outside it (or not
/// finite) the call throws. In that range every intermediate fits 128-bit integers, checked; the only
/// path that cannot be computed (a discrete Laplace draw beyond about 2¹⁵·σ, probability below
/// e^(−30000)) throws `DiscreteGaussianError.arithmeticRange` instead of returning a value.
public enum DiscreteGaussian {
    /// The smallest and largest σ accepted.
    public static let sigmaRange: ClosedRange<Double> = 0x1p-6...0x1p24

    /// `count` independent draws of N_Z(0, σ²), from libsodium's generator. Large counts are drawn on all
    /// cores, each chunk from its own libsodium stream (independent streams give independent draws).
    /// - Throws: `PrivacyParameterError` for σ outside `sigmaRange` or a negative count.
    public static func samples(count: Int, sigma: Double) throws -> [Int64] {
        guard count >= 0 else {
            throw PrivacyParameterError(name: "discrete Gaussian sample count", value: Double(count), expected: ">= 0")
        }
        let parameters = try Parameters(sigma: sigma)
        let chunks = max(1, min(ProcessInfo.processInfo.activeProcessorCount, count / parallelChunk))
        var out = [Int64](repeating: 0, count: count)
        let failures = out.withUnsafeMutableBufferPointer { buffer -> [Error?] in
            nonisolated(unsafe) let output = buffer
            var errors = [Error?](repeating: nil, count: chunks)
            errors.withUnsafeMutableBufferPointer { errorBuffer in
                nonisolated(unsafe) let failures = errorBuffer
                DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
                    let range = (count * chunk / chunks)..<(count * (chunk + 1) / chunks)
                    var bits = RandomBits(source: SodiumWordStream())
                    defer { bits.erase() }
                    do {
                        for i in range { output[i] = try bits.discreteGaussian(parameters) }
                    } catch {
                        failures[chunk] = error
                    }
                }
            }
            return errors
        }
        if let failure = failures.compactMap({ $0 }).first { throw failure }
        return out
    }

    /// Draws per thread below which a call stays on one core.
    static let parallelChunk = 65_536

    /// Adds an independent draw of N_Z(0, σ²) to every value (libsodium's generator).
    /// - Throws: `PrivacyParameterError` for σ outside `sigmaRange`; `DiscreteGaussianError.sumOverflow`
    ///   (values left unchanged) when a noised value would leave the Int64 range.
    public static func add(to values: inout [Int64], sigma: Double) throws {
        let noise = try samples(count: values.count, sigma: sigma)
        var noised = values
        for i in noised.indices {
            let (sum, overflow) = noised[i].addingReportingOverflow(noise[i])
            guard !overflow else { throw DiscreteGaussianError.sumOverflow(index: i, value: values[i], noise: noise[i]) }
            noised[i] = sum
        }
        values = noised
    }

    /// The seam tests use to inject a deterministic source; production paths use `SodiumWordStream`.
    static func samples<Source: RandomWordSource>(count: Int, sigma: Double, source: inout Source) throws -> [Int64] {
        let parameters = try Parameters(sigma: sigma)
        var bits = RandomBits(source: source)
        defer { bits.erase(); source = bits.source }
        var out = [Int64](repeating: 0, count: count)
        for i in 0..<count { out[i] = try bits.discreteGaussian(parameters) }
        return out
    }

    /// σ̂² = numerator / denominator ≥ σ², the variance parameter the draws follow exactly.
    /// - Throws: `PrivacyParameterError` for σ outside `sigmaRange`.
    public static func sigmaSquared(for sigma: Double) throws -> (numerator: UInt64, denominator: UInt64) {
        let p = try Parameters(sigma: sigma)
        return (p.numerator, p.denominator)
    }

    /// The sampler's constants for one σ: σ̂² = A/B in lowest terms, t = ⌊σ̂⌋ + 1 and the acceptance
    /// denominator 2·A·B·t² (CKS Algorithm 3: γ = (|Y|·B·t − A)² / (2·A·B·t²)).
    struct Parameters {
        let numerator: UInt64
        let denominator: UInt64
        let laplaceScale: UInt64
        let acceptanceDenominator: UInt128

        init(sigma: Double) throws {
            guard sigma.isFinite, DiscreteGaussian.sigmaRange.contains(sigma) else {
                throw PrivacyParameterError(name: "discrete Gaussian sigma", value: sigma,
                                            expected: "finite and in [1/64, 2^24] = [0.015625, 16777216]")
            }
            // σ = m·2^e exactly (σ ≥ 1/64 is a normal double); σ² = m²·2^(2e), rounded up to a·2^E with a ≤ 2^32.
            let m = UInt128(sigma.significandBitPattern | (1 << 52))
            let e = Int(sigma.exponent) - 52
            let square = m * m
            let length = 128 - square.leadingZeroBitCount
            let shift = length - 32
            var a = shift > 0 ? (square + (UInt128(1) << shift) - 1) >> shift : square << -shift
            var exponent = shift + 2 * e
            while a & 1 == 0, exponent < 0 { a >>= 1; exponent += 1 }
            let (numerator, denominator): (UInt128, UInt128) = exponent >= 0 ? (a << exponent, 1) : (a, UInt128(1) << -exponent)
            self.numerator = UInt64(numerator)
            self.denominator = UInt64(denominator)
            // t = ⌊√(A/B)⌋ + 1: the largest k with k²·B ≤ A, found from a floating estimate and corrected exactly.
            var k = UInt128((Double(numerator) / Double(denominator)).squareRoot())
            while k * k * denominator > numerator { k -= 1 }
            while (k + 1) * (k + 1) * denominator <= numerator { k += 1 }
            laplaceScale = UInt64(k + 1)
            let t = UInt128(laplaceScale)
            acceptanceDenominator = 2 * numerator * denominator * t * t
        }
    }
}

/// A discrete Gaussian draw that could not be made or added.
public enum DiscreteGaussianError: Error, CustomStringConvertible, Sendable, Equatable {
    /// Adding the noise to `values[index]` would leave the Int64 range; nothing was changed.
    case sumOverflow(index: Int, value: Int64, noise: Int64)
    /// A discrete Laplace proposal beyond the 128-bit arithmetic (probability below e^(−30000) per draw).
    case arithmeticRange

    public var description: String {
        switch self {
        case let .sumOverflow(index, value, noise):
            return "value \(value) at index \(index) plus discrete Gaussian noise \(noise) leaves the Int64 range; use a coarser grid"
        case .arithmeticRange:
            return "a discrete Gaussian proposal exceeded 128-bit arithmetic (an event of probability below e^-30000); draw again"
        }
    }
}

/// 64-bit words of randomness for the samplers.
protocol RandomWordSource {
    mutating func next() -> UInt64
}

/// libsodium's `randombytes_buf`, read in blocks of 4 KiB; each block is zeroed once used.
struct SodiumWordStream: RandomWordSource {
    private var block = [UInt64](repeating: 0, count: 512)
    private var position = 512

    mutating func next() -> UInt64 {
        if position == block.count {
            block.withUnsafeMutableBytes { SecureRandom.fill($0) }
            position = 0
        }
        defer { block[position] = 0; position += 1 }
        return block[position]
    }
}

/// Random bits consumed a few at a time, and the exact coins of CKS 2020 built on them.
struct RandomBits<Source: RandomWordSource> {
    var source: Source
    private var word: UInt64 = 0
    private var available = 0

    init(source: Source) { self.source = source }

    /// Forgets the unused bits (they would determine the next draws).
    mutating func erase() { word = 0; available = 0 }

    /// One uniform bit.
    @inline(__always)
    mutating func bit() -> UInt64 {
        if available == 0 { word = source.next(); available = 64 }
        let b = word & 1
        word >>= 1
        available -= 1
        return b
    }

    /// k uniform bits, 1 ≤ k ≤ 64.
    mutating func bits(_ k: Int) -> UInt64 {
        if k <= available {
            let value = k == 64 ? word : word & ((1 << UInt64(k)) - 1)
            word = k == 64 ? 0 : word >> UInt64(k)
            available -= k
            return value
        }
        let low = word, lowCount = available
        let fresh = source.next()
        let needed = k - lowCount
        let high = needed == 64 ? fresh : fresh & ((1 << UInt64(needed)) - 1)
        word = needed == 64 ? 0 : fresh >> UInt64(needed)
        available = 64 - needed
        return lowCount == 0 ? high : low | (high << UInt64(lowCount))
    }

    /// A uniform integer in 0..<n (n ≥ 1): ⌈log₂ n⌉ bits, rejected when ≥ n (fewer than two tries on average).
    mutating func uniform(below n: UInt64) -> UInt64 {
        if n == 1 { return 0 }
        let k = 64 - (n - 1).leadingZeroBitCount
        while true {
            let value = bits(k)
            if value < n { return value }
        }
    }

    /// Bernoulli(p/q) for 0 ≤ p ≤ q, 0 < q < 2^(bit width − 1): compares a uniform U = 0.b₁b₂… in [0, 1),
    /// generated bit by bit, with p/q's binary expansion (long division), and answers U < p/q at the first
    /// differing bit. Exact, and two bits on average.
    @inline(__always)
    mutating func bernoulli<Integer: FixedWidthInteger & UnsignedInteger>(_ p: Integer, over q: Integer) -> Bool {
        if p >= q { return true }
        var remainder = p
        while true {
            remainder <<= 1
            let target: UInt64
            if remainder >= q { remainder -= q; target = 1 } else { target = 0 }
            let drawn = bit()
            if drawn != target { return drawn < target }
            if remainder == 0 { return false }  // p/q's expansion ended: U ≥ p/q from here on
        }
    }

    /// Bernoulli(exp(−p/q)) for p ≤ q (CKS 2020 Algorithm 1, γ ∈ [0, 1]): K = 1; while
    /// Bernoulli(γ/K) { K += 1 }; true when K is odd. Bernoulli(γ/K) is drawn as Bernoulli(1/K) and then
    /// Bernoulli(γ) (independent coins, so the conjunction has mean γ/K), which keeps every ratio in range.
    @inline(__always)
    mutating func bernoulliExpMinusFraction<Integer: FixedWidthInteger & UnsignedInteger>(_ p: Integer, over q: Integer) -> Bool {
        var k: UInt64 = 1
        while bernoulli(1, over: k) && bernoulli(p, over: q) { k += 1 }
        return k & 1 == 1
    }

    /// Bernoulli(exp(−1)).
    mutating func bernoulliExpMinusOne() -> Bool {
        var k: UInt64 = 2  // K = 1 always continues: Bernoulli(1/1)
        while bernoulli(1, over: k) { k += 1 }
        return k & 1 == 1
    }

    /// Bernoulli(exp(−p/q)) for any p ≥ 0 (CKS 2020 Algorithm 1): ⌊γ⌋ coins of Bernoulli(exp(−1)),
    /// stopping at the first false, then Bernoulli(exp(−(γ − ⌊γ⌋))).
    mutating func bernoulliExpMinus(_ p: UInt128, over q: UInt128) -> Bool {
        if p <= q { return bernoulliExpMinusFraction(p, over: q) }
        let (whole, fraction) = p.quotientAndRemainder(dividingBy: q)
        var remaining = whole
        while remaining > 0 {
            guard bernoulliExpMinusOne() else { return false }
            remaining -= 1
        }
        return bernoulliExpMinusFraction(fraction, over: q)
    }

    /// The discrete Laplace law P[Y = y] ∝ exp(−|y|/t), t ≥ 1 (CKS 2020 Algorithm 2 with s = 1).
    mutating func discreteLaplace(scale t: UInt64) throws -> Int64 {
        while true {
            let u = uniform(below: t)
            guard bernoulliExpMinusFraction(u, over: t) else { continue }
            var v: UInt64 = 0
            while bernoulliExpMinusOne() { v += 1 }
            let (tv, overflowMultiply) = t.multipliedReportingOverflow(by: v)
            let (x, overflowAdd) = u.addingReportingOverflow(tv)
            guard !overflowMultiply, !overflowAdd, x < UInt64(1) << 62 else { throw DiscreteGaussianError.arithmeticRange }
            let negative = bit() == 1
            if negative && x == 0 { continue }
            return negative ? -Int64(x) : Int64(x)
        }
    }

    /// One draw of N_Z(0, A/B) (CKS 2020 Algorithm 3): Y from the discrete Laplace of scale t, accepted
    /// with probability exp(−(|Y| − σ²/t)²/(2σ²)) = exp(−(|Y|·B·t − A)² / (2·A·B·t²)).
    mutating func discreteGaussian(_ parameters: DiscreteGaussian.Parameters) throws -> Int64 {
        let a = UInt128(parameters.numerator), bt = UInt128(parameters.denominator) * UInt128(parameters.laplaceScale)
        while true {
            let y = try discreteLaplace(scale: parameters.laplaceScale)
            let scaled = UInt128(y.magnitude) * bt
            let distance = scaled >= a ? scaled - a : a - scaled
            guard distance < UInt128(1) << 63 else { throw DiscreteGaussianError.arithmeticRange }
            if bernoulliExpMinus(distance * distance, over: parameters.acceptanceDenominator) { return y }
        }
    }
}
