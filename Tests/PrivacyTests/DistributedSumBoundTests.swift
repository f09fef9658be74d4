import Foundation
import XCTest
@testable import Privacy

/// The range check's bound on a distributed round's sum (`DistributedRound.sumNormBound`): K clipped
/// contributions plus s rounding errors, plus Laurent–Massart's chi-square tail for s sub-Gaussian shares.
final class DistributedSumBoundTests: XCTestCase {
    let round = try! DistributedRound(samplingRate: 0.05, noiseMultiplier: 1, clipNorm: 1, dimension: 256, cohort: 3, threshold: 2,
                                      assumeHonest: 1, contributions: 8)

    /// The signal part is exactly K·c̃ + s·√d (the triangle inequality's worst case); the rest is the noise's.
    func noisePart(survivors: Int, p: Double) throws -> Double {
        try round.sumNormBound(survivors: survivors, contributions: 8, clipNorm: 1, failureProbability: p)
            - (8 * round.scale + Double(survivors) * 16)
    }

    /// 400 sums of 3 real shares (the sampler clients use, libsodium): at p = 0.05 the noise part is exceeded at
    /// most 5% of the time (≤ 33 of 400: 20 plus three binomial standard deviations), and it has power: it is
    /// within 15% of the median norm, √(s·d)·σ_share being the norm's typical size.
    func testTheNoisePartHoldsAtItsProbabilityAndIsNotVacuous() throws {
        let bound = try noisePart(survivors: 3, p: 0.05)
        var norms: [Double] = []
        for _ in 0..<400 {
            var sum = [Int64](repeating: 0, count: 256)
            for _ in 0..<3 { try DiscreteGaussian.add(to: &sum, sigma: round.shareSigma) }
            norms.append(sum.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot())
        }
        let over = norms.filter { $0 > bound }.count
        XCTAssertLessThanOrEqual(over, 33, "bound \(bound)")
        let median = norms.sorted()[200]
        XCTAssertLessThan(bound, 1.15 * median, "the bound must be near the noise's size to detect anything")
        XCTAssertGreaterThan(median, 0.9 * (3 * 256.0).squareRoot() * round.shareSigma, "control: the shares have their σ")
        // Fewer shares, or a far smaller p, move the bound the right way.
        XCTAssertLessThan(try noisePart(survivors: 2, p: 0.05), bound)
        XCTAssertGreaterThan(try noisePart(survivors: 3, p: 1e-9), bound)
    }

    /// Bad parameters are refused by name.
    func testBadParametersAreRefused() {
        for (s, k, c, p, name) in [(0, 8, 1.0, 0.1, "survivors"), (2, 0, 1.0, 0.1, "contributions"), (2, 8, 0.0, 0.1, "clip norm"),
                                   (2, 8, 1.0, 1.0, "failure probability"), (2, 8, 1.0, 0.0, "failure probability")] {
            XCTAssertThrowsError(try round.sumNormBound(survivors: s, contributions: k, clipNorm: c, failureProbability: p)) {
                XCTAssertTrue("\($0)".contains(name), "\($0)")
            }
        }
    }
}
