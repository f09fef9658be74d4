import Foundation
import XCTest
@testable import Privacy

/// The discrete Gaussian sampler against its law, computed independently of the sampler: the closed-form
/// pmf P[X = x] = exp(−x²/(2σ²)) / Σ_z exp(−z²/(2σ²)) (Canonne, Kamath, Steinke 2020, Definition 1),
/// normalised by summing over |z| ≤ 60σ + 10 (the mass beyond is below e^(−1800)), itself checked
/// against an mpmath reference (`testExactLawMatchesTheMpmathReference`).
final class DiscreteGaussianTests: XCTestCase {
    /// The exact law of N_Z(0, σ²) on |x| ≤ 60σ + 10, with its variance and fourth moment.
    struct ExactLaw {
        let sigma: Double
        let radius: Int
        let pmf: [Double]  // pmf[x + radius]
        let variance: Double
        let fourthMoment: Double

        init(sigma: Double) {
            self.sigma = sigma
            radius = Int(60 * sigma) + 10
            var weights: [Double] = []
            for x in -radius...radius { weights.append(exp(-Double(x) * Double(x) / (2 * sigma * sigma))) }
            let total = weights.reduce(0, +)
            pmf = weights.map { $0 / total }
            var m2 = 0.0, m4 = 0.0
            for (i, p) in pmf.enumerated() {
                let x = Double(i - radius)
                m2 += x * x * p
                m4 += x * x * x * x * p
            }
            variance = m2
            fourthMoment = m4
        }

        func probability(_ x: Int) -> Double { abs(x) > radius ? 0 : pmf[x + radius] }
        /// P[|X| ≥ k].
        func tail(atLeast k: Int) -> Double { (-radius...radius).filter { abs($0) >= k }.reduce(0) { $0 + probability($1) } }
    }

    /// The law the other tests use (`ExactLaw`, Double sums) against Reference/discrete_gaussian_reference.json,
    /// written by Reference/make_discrete_gaussian_reference.py with mpmath at 50 digits (direct summation
    /// and Poisson summation, which agree there to 40 digits): variance, fourth moment, pmf and tails.
    func testExactLawMatchesTheMpmathReference() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Reference/discrete_gaussian_reference.json")
        let root = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any]
        let laws = try XCTUnwrap(root?["laws"] as? [[String: Any]], "\(url.path): no laws")
        XCTAssertEqual(laws.map { $0["sigma"] as? Double }, [0.5, 0.7, 2.5, 9.3, 1e5])
        for record in laws {
            let sigma = try XCTUnwrap(record["sigma"] as? Double)
            let law = ExactLaw(sigma: sigma)
            let variance = try XCTUnwrap(record["variance"] as? Double, "σ = \(sigma): variance")
            XCTAssertEqual(law.variance, variance, accuracy: 1e-10 * variance, "σ = \(sigma)")
            if let fourth = record["fourth_moment"] as? Double {
                XCTAssertEqual(law.fourthMoment, fourth, accuracy: 1e-10 * fourth, "σ = \(sigma)")
            }
            for (x, p) in ((record["pmf"] as? [Double]) ?? []).enumerated() {
                XCTAssertEqual(law.probability(x), p, accuracy: 1e-12 * p, "σ = \(sigma), P[X = \(x)]")
            }
            for tail in (record["tails"] as? [[String: Any]]) ?? [] {
                let k = try XCTUnwrap(tail["k"] as? Int), p = try XCTUnwrap(tail["p"] as? Double)
                XCTAssertEqual(law.tail(atLeast: k), p, accuracy: 1e-10 * p, "σ = \(sigma), P[|X| ≥ \(k)]")
            }
        }
    }

    /// Mean, variance and lag-one correlation of 10⁶ draws against the exact discrete law, each within five
    /// standard errors, at σ = 0.5 (far from the continuous law: Var = 0.2127, not σ² = 0.25), 2.5 and 10⁵
    /// (DP-SGD's integer scale). Positive control: at σ = 0.5 the continuous variance σ² lies outside the
    /// tolerance, so a sampler of rounded continuous Gaussians would fail.
    func testMomentsMatchTheExactDiscreteLaw() throws {
        for sigma in [0.5, 2.5, 1e5] {
            let n = 1_000_000
            let law = ExactLaw(sigma: sigma)
            let values = try DiscreteGaussian.samples(count: n, sigma: sigma).map(Double.init)
            let count = Double(n)
            let mean = values.reduce(0, +) / count
            var m2 = 0.0, lagProduct = 0.0
            for (i, x) in values.enumerated() {
                m2 += x * x
                if i > 0 { lagProduct += x * values[i - 1] }
            }
            let variance = m2 / count
            let varianceError = ((law.fourthMoment - law.variance * law.variance) / count).squareRoot()
            print("discrete Gaussian σ=\(sigma): mean \(mean), variance \(variance) (exact \(law.variance), σ² \(sigma * sigma))")
            XCTAssertEqual(mean, 0, accuracy: 5 * (law.variance / count).squareRoot(), "σ = \(sigma)")
            XCTAssertEqual(variance, law.variance, accuracy: 5 * varianceError, "σ = \(sigma)")
            XCTAssertEqual(lagProduct / (count - 1) / law.variance, 0, accuracy: 5 / count.squareRoot(), "σ = \(sigma)")
            if sigma == 0.5 {
                XCTAssertGreaterThan(abs(variance - sigma * sigma), 5 * varianceError,
                                     "the moment test must tell the discrete law from the continuous one")
            }
        }
    }

    /// The mass beyond 3σ and 4σ matches the exact tails within five binomial standard errors.
    func testTailsMatchTheExactLaw() throws {
        for sigma in [2.5, 1e5] {
            let n = 1_000_000
            let law = ExactLaw(sigma: sigma)
            let values = try DiscreteGaussian.samples(count: n, sigma: sigma)
            for multiple in [3.0, 4.0] {
                let k = Int((multiple * sigma).rounded(.up))
                let p = law.tail(atLeast: k)
                let observed = Double(values.filter { $0.magnitude >= UInt64(k) }.count)
                let expected = Double(n) * p
                XCTAssertEqual(observed, expected, accuracy: 5 * (expected * (1 - p)).squareRoot(), "σ = \(sigma), |x| ≥ \(k)")
            }
        }
    }

    /// Pearson's χ² of 5·10⁵ draws against the exact pmf (one bin per integer with expected count ≥ 20,
    /// the two tails pooled) stays below the α = 10⁻⁶ critical value, at σ = 0.7, 2.5 and 9.3 (9.3²
    /// is not a dyadic rational: the sampler rounds it up by at most 2⁻³², invisible here).
    func testChiSquareAgainstTheExactPMF() throws {
        for sigma in [0.7, 2.5, 9.3] {
            let values = try DiscreteGaussian.samples(count: 500_000, sigma: sigma)
            let (statistic, critical) = Self.chiSquare(values, law: ExactLaw(sigma: sigma))
            print("discrete Gaussian σ=\(sigma): χ² \(statistic), critical \(critical)")
            XCTAssertLessThan(statistic, critical, "σ = \(sigma)")
        }
    }

    /// Positive controls for the χ² test, at its size and threshold: rounded continuous Gaussians at
    /// σ = 0.7 (P[0] = 0.525 instead of 0.570), our sampler at 1.02σ, and a discrete Laplace law
    /// (CKS Algorithm 2, scale 2) are all rejected against N_Z(0, σ²).
    func testChiSquareRejectsOtherLaws() throws {
        var generator = SystemRandomNumberGenerator()
        let n = 500_000
        let rounded: [Int64] = (0..<n).map { _ in
            let u1 = Double.random(in: Double.leastNonzeroMagnitude..<1, using: &generator)
            let u2 = Double.random(in: 0..<1, using: &generator)
            return Int64(((-2 * log(u1)).squareRoot() * cos(2 * .pi * u2) * 0.7).rounded())
        }
        let roundedTest = Self.chiSquare(rounded, law: ExactLaw(sigma: 0.7))
        XCTAssertGreaterThan(roundedTest.statistic, roundedTest.critical, "rounded continuous Gaussian")
        let scaled = try DiscreteGaussian.samples(count: n, sigma: 2.5 * 1.02)
        let scaledTest = Self.chiSquare(scaled, law: ExactLaw(sigma: 2.5))
        XCTAssertGreaterThan(scaledTest.statistic, scaledTest.critical, "σ 2% too large")
        var bits = RandomBits(source: SodiumWordStream())
        let laplace = try (0..<n).map { _ in try bits.discreteLaplace(scale: 2) }
        let laplaceTest = Self.chiSquare(laplace, law: ExactLaw(sigma: 2.5))
        XCTAssertGreaterThan(laplaceTest.statistic, laplaceTest.critical, "discrete Laplace")
    }

    /// σ outside [1/64, 2²⁴], NaN, ±∞ and a negative count throw an error naming the argument; the ends
    /// of the range are accepted.
    func testInvalidSigmaThrows() throws {
        for sigma in [0, -0.0, -1, .nan, .infinity, -.infinity, 1e300, 0x1p24.nextUp, 0.01, 0x1p-6.nextDown] {
            XCTAssertThrowsError(try DiscreteGaussian.samples(count: 3, sigma: sigma), "σ = \(sigma)") { error in
                XCTAssertEqual((error as? PrivacyParameterError)?.name, "discrete Gaussian sigma", "σ = \(sigma)")
                XCTAssertTrue("\(error)".contains("[1/64, 2^24]"), "\(error)")
            }
            var values: [Int64] = [1, 2]
            XCTAssertThrowsError(try DiscreteGaussian.add(to: &values, sigma: sigma), "σ = \(sigma)")
            XCTAssertEqual(values, [1, 2])
        }
        XCTAssertThrowsError(try DiscreteGaussian.samples(count: -1, sigma: 1))
        XCTAssertEqual(try DiscreteGaussian.samples(count: 0, sigma: 1), [])
        XCTAssertEqual(try DiscreteGaussian.samples(count: 10, sigma: 0x1p-6).count, 10)
        XCTAssertEqual(try DiscreteGaussian.samples(count: 10, sigma: 0x1p24).count, 10)
    }

    /// σ̂² is σ² exactly when σ² is a short dyadic rational, and otherwise rounded up by at most 2⁻³¹ relative.
    func testSigmaSquaredIsExactOrRoundedUp() throws {
        XCTAssertTrue(try DiscreteGaussian.sigmaSquared(for: 2.5) == (25, 4))
        XCTAssertTrue(try DiscreteGaussian.sigmaSquared(for: 3) == (9, 1))
        XCTAssertTrue(try DiscreteGaussian.sigmaSquared(for: 0x1p24) == (1 << 48, 1))
        XCTAssertTrue(try DiscreteGaussian.sigmaSquared(for: 0x1p-6) == (1, 4096))
        for sigma in [0.1, 9.3, 12345.678, 0.0157] {
            let (numerator, denominator) = try DiscreteGaussian.sigmaSquared(for: sigma)
            // In doubles, within a few ulps: A/B ≥ σ² (never less noise) and A/B ≤ σ²·(1 + 2⁻³¹).
            let ratio = Double(numerator) / Double(denominator) / (sigma * sigma)
            XCTAssertGreaterThanOrEqual(ratio, 1 - 0x1p-51, "σ = \(sigma)")
            XCTAssertLessThanOrEqual(ratio, 1 + 0x1p-30, "σ = \(sigma)")
        }
    }

    /// `add` noises every value by an integer; a value pushed out of Int64 throws and leaves the array as it was.
    func testAddNoisesInPlaceAndRefusesOverflow() throws {
        var values = [Int64](repeating: 1_000, count: 10_000)
        try DiscreteGaussian.add(to: &values, sigma: 50)
        XCTAssertGreaterThan(Set(values).count, 100)
        XCTAssertEqual(values.reduce(0.0) { $0 + Double($1) } / 10_000, 1_000, accuracy: 5 * 50 / 100)
        // 64 values at Int64.max: all 64 draws ≤ 0 has probability about 2⁻⁶⁴.
        let edge = [Int64](repeating: .max, count: 64)
        var noised = edge
        XCTAssertThrowsError(try DiscreteGaussian.add(to: &noised, sigma: 1_000)) { error in
            guard case .sumOverflow = error as? DiscreteGaussianError else { return XCTFail("\(error)") }
        }
        XCTAssertEqual(noised, edge)
    }

    /// Two calls give different draws (fresh libsodium randomness, no seed).
    func testDrawsAreFresh() throws {
        XCTAssertNotEqual(try DiscreteGaussian.samples(count: 32, sigma: 1e4), try DiscreteGaussian.samples(count: 32, sigma: 1e4))
    }

    /// The sampler's basic coin is exact: with U's first 16 bits running over all 2¹⁶ patterns (and zeros
    /// after), Bernoulli(p/q) answers true for exactly ⌈2¹⁶·p/q⌉ of them, i.e. exactly when U < p/q.
    func testBernoulliCoinIsExact() {
        struct FixedWords: RandomWordSource {
            var word: UInt64
            var used = false
            mutating func next() -> UInt64 { defer { used = true }; return used ? 0 : word }
        }
        let cases: [(UInt64, UInt64)] = [(1, 3), (2, 7), (5, 8), (0, 5), (5, 5), (12_345, 65_537), (1, 1 << 40)]
        for (p, q) in cases {
            var hits: UInt64 = 0
            for word in 0..<UInt64(1 << 16) {
                var bits = RandomBits(source: FixedWords(word: word))
                if bits.bernoulli(p, over: q) { hits += 1 }
            }
            XCTAssertEqual(hits, ((1 << 16) * p + q - 1) / q, "Bernoulli(\(p)/\(q))")
        }
    }

    /// Pearson's χ² of `values` against `law`, and the critical value at α = 10⁻⁶ (Wilson–Hilferty).
    static func chiSquare(_ values: [Int64], law: ExactLaw) -> (statistic: Double, critical: Double) {
        let n = Double(values.count)
        var limit = 0
        while n * law.probability(limit + 1) >= 20 { limit += 1 }
        var observed = [Double](repeating: 0, count: 2 * limit + 1)  // bins −limit (and below) ... limit (and above)
        for v in values { observed[Int(max(-Int64(limit), min(Int64(limit), v))) + limit] += 1 }
        var statistic = 0.0
        for bin in -limit...limit {
            let expected = n * (bin == -limit || bin == limit ? law.tail(atLeast: limit) / 2 : law.probability(bin))
            statistic += (observed[bin + limit] - expected) * (observed[bin + limit] - expected) / expected
        }
        let k = Double(2 * limit)  // degrees of freedom: bins − 1
        let z = 4.753424  // the standard normal's 1 − 10⁻⁶ quantile
        let critical = k * pow(1 - 2 / (9 * k) + z * (2 / (9 * k)).squareRoot(), 3)
        return (statistic, critical)
    }
}
