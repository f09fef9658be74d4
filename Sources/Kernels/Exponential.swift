import CKernels

/// A vectorised single-precision exponential for the softmax, cross-entropy and SiLU kernels.
///
/// Method (Cody & Waite 1980 range reduction, as in Cephes' `expf`): x = n·ln 2 + r with n = round(x/ln 2)
/// and |r| ≤ ln 2 / 2, ln 2 split into a 9-bit head (so n·head is exact) and a tail; exp(r) by its Taylor
/// polynomial of degree 7 (truncation error r⁸/8! ≤ 5.2e-9 relative on that interval), evaluated by Horner;
/// then 2ⁿ is put into the exponent bits. Only plain multiplies and adds are used, so the same code runs on
/// the baseline x86-64 (SSE2) and on every other CPU.
///
/// Accuracy: relative error at most 2.5e-7 (about 2 ulp) against `exp` in Double for x in
/// [−87.33, 88.37] (checked by `ExponentialTests` over a dense sweep). Below −87.33 the result is 0 (the true
/// value is under 1.2e-38, a subnormal), above 88.37 it is +∞ (the true value is within 1.4 of
/// `Float.greatestFiniteMagnitude` there); NaN gives NaN.
public enum Exponential {
    /// Largest input with a finite result here: n = round(x/ln 2) stays ≤ 127.
    public static let upperLimit: Float = 88.37626
    /// Smallest input with a nonzero result here: 2ⁿ stays a normal number.
    public static let lowerLimit: Float = -87.33654

    /// eˣ lane by lane; see the type's documentation for the method and its error.
    @inline(__always)
    public static func exp(_ x: SIMD16<Float>) -> SIMD16<Float> {
        typealias F = SIMD16<Float>
        let clamped = x.replacing(with: F(repeating: lowerLimit), where: x .< lowerLimit)
            .replacing(with: F(repeating: upperLimit), where: x .> upperLimit)
        // Adding 1.5·2²³ rounds x/ln 2 to the nearest integer n and leaves n in the low mantissa bits.
        let magic = F(repeating: 12_582_912)
        let shifted = clamped * F(repeating: 1.442_695_04) + magic
        let n = shifted - magic
        var r = clamped - n * F(repeating: 0.693_359_375)
        r = r - n * F(repeating: -2.121_944_4e-4)
        var p = F(repeating: 1 / 5040)
        p = p * r + F(repeating: 1 / 720)
        p = p * r + F(repeating: 1 / 120)
        p = p * r + F(repeating: 1 / 24)
        p = p * r + F(repeating: 1 / 6)
        p = p * r + F(repeating: 0.5)
        p = p * r + F(repeating: 1)
        p = p * r + F(repeating: 1)
        // 2ⁿ: the biased exponent n + 127 shifted into place (n is in [−126, 127] after clamping).
        let magicBits = SIMD16<UInt32>(repeating: 0x4B40_0000)
        let exponent = (unsafeBitCast(shifted, to: SIMD16<UInt32>.self) &- magicBits &+ 127) &<< 23
        var result = p * unsafeBitCast(exponent, to: F.self)
        result.replace(with: 0, where: x .< lowerLimit)
        result.replace(with: .infinity, where: x .> upperLimit)
        result.replace(with: x, where: x .!= x)
        return result
    }

    /// eˣ for one value through the vector path (same error bound), for tails and tests.
    @inline(__always)
    public static func exp(_ x: Float) -> Float { exp(SIMD16<Float>(repeating: x))[0] }

    /// x[i] = e^(x[i] − shift) in place over n elements; returns Σ of the results accumulated in Double
    /// (every 1,024 elements a float partial sum is added to it, so long rows keep full precision).
    @discardableResult
    public static func exponentiate(_ x: UnsafeMutablePointer<Float>, _ n: Int, shift: Float) -> Double {
        sumOfExponentials(x, n, shift: shift, storingInto: x)
    }

    /// Σ e^(x[i] − shift) over n elements, accumulated as `exponentiate` does, without writing them.
    public static func sumOfExponentials(_ x: UnsafePointer<Float>, _ n: Int, shift: Float) -> Double {
        sumOfExponentials(x, n, shift: shift, storingInto: nil)
    }

    /// On the avx512vnni tier `ck_exponentiate_avx512`: the same lanes bit for bit, on one zmm instead of four
    /// SSE registers (the baseline this module is compiled for); elsewhere `genericSumOfExponentials`.
    @inline(__always)
    private static func sumOfExponentials(_ x: UnsafePointer<Float>, _ n: Int, shift: Float,
                                          storingInto out: UnsafeMutablePointer<Float>?) -> Double {
        if KernelBackend.selected == .avx512vnni { return ck_exponentiate_avx512(x, out, n, shift) }
        return genericSumOfExponentials(x, n, shift: shift, storingInto: out)
    }

    /// `exponentiate` (or `sumOfExponentials` with no `out`) in portable Swift SIMD: the reference.
    static func genericSumOfExponentials(_ x: UnsafePointer<Float>, _ n: Int, shift: Float,
                                         storingInto out: UnsafeMutablePointer<Float>?) -> Double {
        let raw = UnsafeRawPointer(x)
        let s = SIMD16<Float>(repeating: shift)
        var total = 0.0, partial = SIMD16<Float>(), i = 0, sinceFlush = 0
        while i + 16 <= n {
            let e = exp(raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self) - s)
            if let out { UnsafeMutableRawPointer(out).storeBytes(of: e, toByteOffset: 4 * i, as: SIMD16<Float>.self) }
            partial += e
            i += 16
            sinceFlush += 1
            if sinceFlush == 64 {
                total += Double(partial.sum())
                partial = SIMD16<Float>()
                sinceFlush = 0
            }
        }
        total += Double(partial.sum())
        if i < n {
            var tail = SIMD16<Float>(repeating: -.infinity)
            for j in i..<n { tail[j - i] = x[j] - shift }
            let e = exp(tail)
            if let out { for j in i..<n { out[j] = e[j - i] } }
            total += Double(e.sum())
        }
        return total
    }

    /// The largest of x[0..<n] (−∞ for n = 0; NaN entries are skipped), and the first index holding it.
    public static func maximum(_ x: UnsafePointer<Float>, _ n: Int) -> (value: Float, index: Int) {
        let value = largest(x, n)
        var index = 0
        for j in 0..<n where x[j] == value {
            index = j
            break
        }
        return (value, index)
    }

    /// The largest of x[0..<n] (−∞ for n = 0; NaN entries are skipped): softmax's shift, without `maximum`'s
    /// search for its index. On the avx512vnni and avx2 tiers `ck_maximum_avx512` and `ck_maximum_avx2` (a maximum is
    /// exact, so the same value).
    public static func largest(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        if KernelBackend.selected == .avx512vnni { return ck_maximum_avx512(x, n) }
        if KernelBackend.selected == .avx2 { return ck_maximum_avx2(x, n) }
        return genericLargest(x, n)
    }

    /// `largest` in portable Swift SIMD: the reference.
    static func genericLargest(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        let raw = UnsafeRawPointer(x)
        var best = SIMD16<Float>(repeating: -.infinity), i = 0
        while i + 16 <= n {
            let v = raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self)
            best.replace(with: v, where: v .> best)
            i += 16
        }
        var value = best.max()
        for j in i..<n where x[j] > value { value = x[j] }
        return value
    }
}
