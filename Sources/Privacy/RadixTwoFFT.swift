import Foundation

/// In-place iterative radix-2 complex FFT over Double (Cooley–Tukey, decimation in time), used to
/// compose privacy loss distributions. The naive `discreteFourierTransform` beside it is the
/// reference the tests compare against.
struct RadixTwoFFT {
    /// Transform length, a power of two.
    let count: Int
    private let cosines: [Double]  // cos(2πk/n), k < n/2
    private let sines: [Double]    // sin(2πk/n), k < n/2

    init(count: Int) {
        precondition(count > 0 && count & (count - 1) == 0, "FFT length \(count) is not a power of two")
        self.count = count
        let half = max(count / 2, 1)
        cosines = (0..<half).map { cos(2 * Double.pi * Double($0) / Double(count)) }
        sines = (0..<half).map { sin(2 * Double.pi * Double($0) / Double(count)) }
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
                            let tableStride = n / (2 * half)
                            var start = 0
                            while start < n {
                                for k in 0..<half {
                                    let wr = cosTable[k * tableStride], wi = sign * sinTable[k * tableStride]
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
