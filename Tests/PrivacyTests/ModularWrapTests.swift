import XCTest
@testable import Privacy

final class ModularWrapTests: XCTestCase {
    /// The bound is never below the exact two-sided tail of a sum of n discrete Gaussians (numpy, by direct
    /// convolution, in the reference), and the sub-Gaussian moment bound it rests on holds (mpmath, 40 digits).
    func testBoundIsNeverBelowTheExactTail() throws {
        var tightest = Double.infinity
        for record in try DistributedReference.records("tails", in: "wrap") {
            let sigma = try record.number("share_sigma"), n = Int(try record.number("shares")), a = try record.number("a")
            let exact = try record.number("exact_two_sided_tail")
            // b = 24: 2^23 − ⌈c̃⌉ = a with one contribution of c̃ = 2^23 − a.
            let bound = try ModularWrap.probability(modulusBits: 24, scaledClip: 8_388_608 - a, dimension: 1, contributions: 1,
                                                    shares: n, shareSigma: sigma)
            XCTAssertGreaterThanOrEqual(bound, exact, "σ=\(sigma) n=\(n) a=\(a): bound \(bound) vs exact \(exact)")
            if exact > 1e-300 { tightest = min(tightest, bound / exact) }
        }
        for record in try DistributedReference.records("mgf", in: "wrap") {
            XCTAssertLessThanOrEqual(try record.number("log_mgf"), try record.number("log_subgaussian_bound") * (1 + 1e-12) + 1e-15)
        }
        XCTAssertGreaterThanOrEqual(tightest, 1)
        print("wrap bound over exact tail: smallest ratio \(tightest)")
    }

    /// Positive control: at a gap of one standard deviation the exact tail is about 0.3, far above a naive
    /// one-sided, one-coordinate bound exp(−a²/(2nσ²))/2 one might write instead, which the test above would
    /// catch; and the bound is 1 when the signal alone can reach the modulus.
    func testPositiveControls() throws {
        let record = try XCTUnwrap(try DistributedReference.records("tails", in: "wrap").first {
            (try? $0.number("share_sigma")) == 10 && (try? $0.number("shares")) == 1 && (try? $0.number("a")) == 10
        })
        let exact = try record.number("exact_two_sided_tail")
        XCTAssertLessThan(exp(-0.5) / 2, exact)
        XCTAssertEqual(try ModularWrap.probability(modulusBits: 8, scaledClip: 130, dimension: 1, contributions: 1, shares: 1,
                                                   shareSigma: 1), 1)
        XCTAssertThrowsError(try ModularWrap.probability(modulusBits: 65, scaledClip: 1, dimension: 1, contributions: 1, shares: 1,
                                                         shareSigma: 1))
    }

    /// The chooser returns the finest scale whose bound meets the target, checked, and the next finer one
    /// does not; for secure aggregation's 32-bit words, clip 1, d = 2^20, 8 clients, threshold 6, z = 1.
    func testChooserPicksTheFinestScaleThatMeetsTheTarget() throws {
        let target = 1e-9, beta = exp(-0.5)
        let bits = try ModularWrap.fractionalBits(modulusBits: 32, clipNorm: 1, dimension: 1 << 20, contributions: 8, cohort: 8,
                                                  threshold: 6, noiseMultiplier: 1, beta: beta, target: target)
        func p(_ f: Int) throws -> Double {
            let scaled = Double(sign: .plus, exponent: f, significand: 1)
            let l2 = try RoundedSensitivity.conditionalRounding(scaledClip: scaled, dimension: 1 << 20, beta: beta).l2
            return try ModularWrap.probability(modulusBits: 32, scaledClip: scaled, dimension: 1 << 20, contributions: 8, shares: 8,
                                               shareSigma: l2 / 6.0.squareRoot())
        }
        XCTAssertLessThanOrEqual(try p(bits), target)
        XCTAssertGreaterThan(try p(bits + 1), target)
        print("wrap chooser: 32-bit words, clip 1, d=2^20, 8 clients, t=6, z=1, target 1e-9: f = \(bits), p = \(try p(bits))")
        XCTAssertEqual(ModularWrap.accountedDelta(delta: 1e-5, wrapProbability: 1e-9, rounds: 100), 1e-5 + 1e-7, accuracy: 1e-18)
        XCTAssertThrowsError(try ModularWrap.fractionalBits(modulusBits: 8, clipNorm: 1, dimension: 1 << 20, contributions: 1000,
                                                            cohort: 1000, threshold: 10, noiseMultiplier: 1, beta: beta, target: 1e-9))
    }
}
