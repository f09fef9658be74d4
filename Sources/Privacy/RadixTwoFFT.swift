import Foundation

/// In-place iterative radix-2 complex FFT over Double (Cooley–Tukey, decimation in time), used to
/// compose privacy loss distributions. The naive `discreteFourierTransform` beside it is the
/// reference the tests compare against.
struct RadixTwoFFT {
    /// Transform length, a power of two.
    let count: Int
    // Twiddles stage by stage, contiguous so the butterflies read them in order: the stage whose
    // butterflies span 2m points uses entries m − 1 ..< 2m − 1, holding cos and sin of πk/m, k < m.
    private let cosines: [Double]
    private let sines: [Double]

    init(count: Int) {
        precondition(count > 0 && count & (count - 1) == 0, "FFT length \(count) is not a power of two")
        self.count = count
        var cosines = [Double](), sines = [Double]()
        cosines.reserveCapacity(count); sines.reserveCapacity(count)
        var half = 1
        while half < count {
            for k in 0..<half {
                // Angles from the full-length table index, so every stage shares the same values.
                let angle = 2 * Double.pi * Double(k * (count / (2 * half))) / Double(count)
                cosines.append(cos(angle)); sines.append(sin(angle))
            }
            half *= 2
        }
        self.cosines = cosines
        self.sines = sines
    }

    /// Forward transform X_k = Σ x_j e^(−2πi jk/n), or with `inverse` the inverse including 1/n.
    func transform(real: inout [Double], imaginary: inout [Double], inverse: Bool) {
        precondition(real.count == count && imaginary.count == count, "FFT buffers must hold \(count) values")
        let n = count
        real.withUnsafeMutableBufferPointer { re in
            imaginary.withUnsafeMutableBufferPointer { im in
                cosines.withUnsafeBufferPointer { cosTable in
                    sines.withUnsafeBufferPointer { sinTable in
                        // Bit-reversal permutation.
                        var j = 0
                        for i in 1..<max(n, 1) {
                            var bit = n >> 1
                            while j & bit != 0 { j ^= bit; bit >>= 1 }
                            j |= bit
                            if i < j { re.swapAt(i, j); im.swapAt(i, j) }
                        }
                        let sign: Double = inverse ? 1 : -1
                        var half = 1
                        while half < n {
                            let stage = half - 1
                            var start = 0
                            while start < n {
                                for k in 0..<half {
                                    let wr = cosTable[stage + k], wi = sign * sinTable[stage + k]
                                    let a = start + k, b = a + half
                                    let tr = wr * re[b] - wi * im[b]
                                    let ti = wr * im[b] + wi * re[b]
                                    re[b] = re[a] - tr; im[b] = im[a] - ti
                                    re[a] += tr; im[a] += ti
                                }
                                start += 2 * half
                            }
                            half *= 2
                        }
                        if inverse {
                            let scale = 1 / Double(n)
                            for i in 0..<n { re[i] *= scale; im[i] *= scale }
                        }
                    }
                }
            }
        }
    }

    /// The O(n²) definition, the reference for tests.
    static func discreteFourierTransform(real: [Double], imaginary: [Double], inverse: Bool) -> (real: [Double], imaginary: [Double]) {
        let n = real.count
        let sign: Double = inverse ? 1 : -1
        var outReal = [Double](repeating: 0, count: n), outImaginary = [Double](repeating: 0, count: n)
        for k in 0..<n {
            for j in 0..<n {
                let angle = sign * 2 * Double.pi * Double((j * k) % n) / Double(n)
                outReal[k] += real[j] * cos(angle) - imaginary[j] * sin(angle)
                outImaginary[k] += real[j] * sin(angle) + imaginary[j] * cos(angle)
            }
            if inverse { outReal[k] /= Double(n); outImaginary[k] /= Double(n) }
        }
        return (outReal, outImaginary)
    }
}
