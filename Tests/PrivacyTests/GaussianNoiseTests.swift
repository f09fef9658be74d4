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

    /// A one-million-element fill (a LoRA gradient's size) follows N(0, σ²) as a whole: its
    /// Kolmogorov–Smirnov distance sup|Fₙ − Φ| stays under the critical value for α = 10⁻⁶. The moments
    /// above check four numbers; this checks the shape everywhere. (Its time is measured by
    /// `conclave-bench-noise`, not here.)
    func testMillionElementFillPassesKolmogorovSmirnov() {
        let n = 1_000_000, sigma = 1.5
        var values = [Float](repeating: .nan, count: n)
        values.withUnsafeMutableBufferPointer { GaussianNoise.fill($0, standardDeviation: sigma) }
        let distance = Self.kolmogorovSmirnovDistance(values.map(Double.init), sigma: sigma)
        XCTAssertLessThan(distance, Self.kolmogorovSmirnovCritical(n), "KS distance of a 1M fill from N(0, \(sigma)²)")
    }

    /// Positive controls for the test above, at its size and threshold (0.0027): the statistic rejects a
    /// Laplace and a uniform law of the same variance, our sampler with a scale 5% off, and with a shift of
    /// 0.02σ (their true distances from the normal law: 0.062, 0.057, 0.012 and 0.008).
    func testKolmogorovSmirnovRejectsOtherLaws() {
        let n = 1_000_000, sigma = 1.5
        let critical = Self.kolmogorovSmirnovCritical(n)
        var generator = SystemRandomNumberGenerator()
        let laplace = (0..<n).map { _ -> Double in
            let u = Double.random(in: 0..<1, using: &generator) - 0.5
            return (u < 0 ? 1 : -1) * sigma / 2.0.squareRoot() * log(max(1 - 2 * abs(u), .leastNormalMagnitude))
        }
        let uniform = (0..<n).map { _ in Double.random(in: -1...1, using: &generator) * sigma * 3.0.squareRoot() }
        let scaled = GaussianNoise.samples(count: n, standardDeviation: sigma * 1.05).map(Double.init)
        let shifted = GaussianNoise.samples(count: n, standardDeviation: sigma).map { Double($0) + 0.02 * sigma }
        for (name, sample) in [("Laplace", laplace), ("uniform", uniform), ("scale 1.05", scaled), ("shift 0.02σ", shifted)] {
            XCTAssertGreaterThan(Self.kolmogorovSmirnovDistance(sample, sigma: sigma), critical, "\(name) passed as N(0, σ²)")
        }
    }

    /// √n·D exceeds c with probability about 2e^(−2c²) under the null (Kolmogorov's limit law): c = 2.693
    /// gives α = 10⁻⁶, so the test fails by chance about once in a million runs.
    static func kolmogorovSmirnovCritical(_ n: Int) -> Double { 2.693 / Double(n).squareRoot() }

    /// sup over x of |Fₙ(x) − Φ(x/σ)|, the empirical distribution function's distance from N(0, σ²).
    static func kolmogorovSmirnovDistance(_ sample: [Double], sigma: Double) -> Double {
        let sorted = sample.sorted()
        let n = Double(sorted.count)
        var distance = 0.0
        for (i, x) in sorted.enumerated() {
            let cdf = 0.5 * erfc(-x / (sigma * 2.0.squareRoot()))
            distance = max(distance, cdf - Double(i) / n, Double(i + 1) / n - cdf)
        }
        return distance
    }
}
