import XCTest
@testable import Privacy

final class GaussianNoiseTests: XCTestCase {
    /// One million samples at σ = 2.5: mean, variance, excess kurtosis, lag-one correlation and the
    /// mass beyond 3σ all within five standard errors of the normal law's values. A uniform or
    /// Laplace sampler fails the kurtosis (−1.2, +3), a mis-scaled one the variance, a Box–Muller that
    /// reuses an angle the correlation.
    func testMomentsMatchTheNormalLaw() {
        let n = 1_000_000, sigma = 2.5
        let values = GaussianNoise.samples(count: n, standardDeviation: sigma).map(Double.init)
        let count = Double(n)
        let mean = values.reduce(0, +) / count
        var m2 = 0.0, m4 = 0.0, lagProduct = 0.0, beyondThree = 0
        for (i, x) in values.enumerated() {
            let d = x - mean
            m2 += d * d; m4 += d * d * d * d
            if i > 0 { lagProduct += d * (values[i - 1] - mean) }
            if abs(x) > 3 * sigma { beyondThree += 1 }
        }
        m2 /= count; m4 /= count
        let variance = m2, excessKurtosis = m4 / (m2 * m2) - 3, lagCorrelation = lagProduct / (count - 1) / m2
        print("Gaussian noise: mean \(mean), variance \(variance) (expect \(sigma * sigma)), excess kurtosis \(excessKurtosis), lag-1 correlation \(lagCorrelation), beyond 3σ \(beyondThree)")
        XCTAssertEqual(mean, 0, accuracy: 5 * sigma / count.squareRoot())
        XCTAssertEqual(variance / (sigma * sigma), 1, accuracy: 5 * (2 / count).squareRoot())
        XCTAssertEqual(excessKurtosis, 0, accuracy: 5 * (24 / count).squareRoot())
        XCTAssertEqual(lagCorrelation, 0, accuracy: 5 / count.squareRoot())
        let expectedBeyond = count * 0.0026997960632601866  // 2Φ(−3)
        XCTAssertEqual(Double(beyondThree), expectedBeyond, accuracy: 5 * expectedBeyond.squareRoot())
        XCTAssertLessThanOrEqual(values.map(abs).max() ?? 0, 8.66 * sigma, "Box–Muller from 53-bit uniforms cannot exceed 8.65σ")
    }

    /// Every element is written, for odd and even lengths and across chunk boundaries; two fills differ.
    func testFillsEveryElementFreshly() {
        for count in [1, 2, 3, GaussianNoise.chunkSize / 2 + 1, GaussianNoise.chunkSize * 2 + 3] {
            var values = [Float](repeating: .nan, count: count)
            values.withUnsafeMutableBufferPointer { GaussianNoise.fill($0, standardDeviation: 1) }
            XCTAssertFalse(values.contains { $0.isNaN || !$0.isFinite }, "count \(count)")
            // Float has 24-bit significands, so a few birthday collisions among thousands of draws are
            // expected; a stuck or short-period source would repeat far more.
            XCTAssertGreaterThanOrEqual(Double(Set(values).count), Double(count) * 0.999, "count \(count): repeated values")
        }
        XCTAssertNotEqual(GaussianNoise.samples(count: 16, standardDeviation: 1), GaussianNoise.samples(count: 16, standardDeviation: 1))
        XCTAssertEqual(GaussianNoise.samples(count: 5, standardDeviation: 0), [0, 0, 0, 0, 0])
    }

    /// A one-million-element fill (a LoRA gradient's size) for scale; reported, not asserted.
    func testMillionElementFillTime() {
        var values = [Float](repeating: 0, count: 1_000_000)
        let start = Date()
        values.withUnsafeMutableBufferPointer { GaussianNoise.fill($0, standardDeviation: 1) }
        print("Gaussian noise: 1M floats in \(Date().timeIntervalSince(start) * 1000) ms")
    }
}
