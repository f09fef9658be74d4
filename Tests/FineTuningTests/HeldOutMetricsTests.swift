import Foundation
import Privacy
import TestSupport
import XCTest
@testable import FineTuning

/// The held-out release (`HeldOutMetrics`): clipped per-record losses on the grid, the count, the
/// noise's σ, and the L2 sensitivity the ledger's charge assumes.
final class HeldOutMetricsTests: XCTestCase {
    let grid: Int64 = 1024

    func evaluation(_ records: [(tokens: Int, loss: Double)]) -> Evaluation {
        Evaluation(examples: records.count, tokens: records.reduce(0) { $0 + $1.tokens }, loss: 0, tokenAccuracy: 0,
                   perExample: records, tokensPerSecond: 0, processedTokens: 0)
    }

    /// Losses above L count as L, negative ones (impossible, but a NaN-free guard) as 0, a record
    /// without a scored token not at all; the count is S per record.
    func testSumsClipEachRecordAndCountInGridUnits() throws {
        let before = evaluation([(10, 3.0), (5, 9.5), (0, .nan), (4, 1.5)])
        let after = evaluation([(10, 2.0), (5, 7.0), (0, .nan), (4, 1.2)])
        let sums = try HeldOutMetrics.exactSums(before: before, after: after, lossClip: 6, gridScale: grid)
        XCTAssertEqual(sums, [Int64((3.0 / 6 * 1024).rounded()) + 1024 + Int64((1.5 / 6 * 1024).rounded()),
                              Int64((2.0 / 6 * 1024).rounded()) + 1024 + Int64((1.2 / 6 * 1024).rounded()),
                              3 * 1024])
        // Control: an unclipped sum would differ (9.5 and 7 are above L = 6).
        XCTAssertNotEqual(sums[0], Int64(((3.0 + 9.5 + 1.5) / 6 * 1024).rounded()))
    }

    /// Adding any one record moves the exact sums by at most √3·S in L2: the sensitivity the release's
    /// σ = z·√3·S and its charge (one Gaussian mechanism of noise multiplier z) assume.
    func testOneRecordMovesTheSumsByAtMostRootThreeGridUnits() throws {
        let base = [(12, 2.5), (8, 4.0), (3, 0.7)]
        var worst = 0.0
        for extra in [(1, 0.0), (1, 6.0), (7, 1e9), (3, 3.3), (2, -1.0)] {
            let a = try HeldOutMetrics.exactSums(before: evaluation(base), after: evaluation(base), lossClip: 6, gridScale: grid)
            let b = try HeldOutMetrics.exactSums(before: evaluation(base + [extra]), after: evaluation(base + [extra]),
                                                 lossClip: 6, gridScale: grid)
            worst = max(worst, zip(a, b).reduce(0.0) { $0 + pow(Double($1.1 - $1.0), 2) }.squareRoot())
        }
        XCTAssertLessThanOrEqual(worst, 3.0.squareRoot() * Double(grid) + 1e-9)
        XCTAssertEqual(worst, 3.0.squareRoot() * Double(grid), accuracy: 1e-9, "a record of loss ≥ L before and after reaches it")
    }

    /// The noise is added at σ = z·√3·S, once per coordinate; the evaluations must be of the same records.
    func testReleaseNoisesEachCoordinateAtTheStatedSigma() throws {
        let e = evaluation([(10, 3.0), (4, 2.0)])
        var seen: [Double] = []
        let released = try HeldOutMetrics.release(before: e, after: e, lossClip: 6, noiseMultiplier: 5, gridScale: grid) { values, sigma in
            seen.append(sigma)
            values = values.map { $0 + 7 }
        }
        XCTAssertEqual(seen, [5 * 3.0.squareRoot() * 1024])
        XCTAssertEqual(released, try HeldOutMetrics.exactSums(before: e, after: e, lossClip: 6, gridScale: grid).map { $0 + 7 })
        XCTAssertThrowsError(try HeldOutMetrics.exactSums(before: e, after: evaluation([(10, 3.0)]), lossClip: 6, gridScale: grid))
    }

    /// With the production sampler (the discrete Gaussian, libsodium randomness): 400 releases of the
    /// same split have the exact sums as their mean and σ as their standard deviation, within the
    /// sampling error of 400 draws (5 standard errors).
    func testProductionNoiseHasTheStatedSpread() throws {
        let e = evaluation([(10, 3.0), (4, 2.0), (6, 5.0)])
        let exact = try HeldOutMetrics.exactSums(before: e, after: e, lossClip: 6, gridScale: grid)
        let sigma = 2 * 3.0.squareRoot() * 1024
        let draws = try (0..<400).map { _ in
            Double(try HeldOutMetrics.release(before: e, after: e, lossClip: 6, noiseMultiplier: 2, gridScale: grid)[2] - exact[2])
        }
        let mean = draws.reduce(0, +) / 400
        let sd = (draws.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / 399).squareRoot()
        XCTAssertEqual(mean, 0, accuracy: 5 * sigma / 20)
        XCTAssertEqual(sd, sigma, accuracy: 5 * sigma / (2 * 399).squareRoot())
        XCTAssertGreaterThan(Set(draws).count, 350, "the draws differ")
    }

    /// At privacy unit user a person contributes one vector however many held-out records it has: adding
    /// or removing a user of five records moves the sums by at most √3·S (at unit record the same five
    /// records move them by √5 times more: the control). A record without a user is refused.
    func testAtUnitUserEachPersonCountsOnce() throws {
        let base: [(tokens: Int, loss: Double)] = [(12, 2.5), (8, 4.0), (3, 0.7)]
        let baseUsers: [String?] = ["ann", "bob", "ann"]
        let heavy = Array(repeating: (tokens: 9, loss: 7.0), count: 5)
        func sums(_ records: [(tokens: Int, loss: Double)], _ users: [String?]?) throws -> [Int64] {
            try HeldOutMetrics.exactSums(before: evaluation(records), after: evaluation(records), lossClip: 6, gridScale: grid,
                                         users: users)
        }
        func distance(_ a: [Int64], _ b: [Int64]) -> Double { zip(a, b).reduce(0.0) { $0 + pow(Double($1.1 - $1.0), 2) }.squareRoot() }
        let without = try sums(base, baseUsers)
        let with = try sums(base + heavy, baseUsers + Array(repeating: "cid", count: 5))
        XCTAssertEqual(distance(without, with), 3.0.squareRoot() * Double(grid), accuracy: 1e-9)
        XCTAssertEqual(without[2], 2 * grid, "ann's two records count once")
        // ann's mean of clipped losses (2.5 and 0.7), one vector.
        XCTAssertEqual(without[0], Int64(((2.5 + 0.7) / 2 / 6 * 1024).rounded()) + Int64((4.0 / 6 * 1024).rounded()))
        let perRecord = distance(try sums(base, nil), try sums(base + heavy, nil))
        XCTAssertEqual(perRecord, 5 * 3.0.squareRoot() * Double(grid), accuracy: 1e-9, "control: five records, five vectors")
        XCTAssertThrowsError(try sums(base, ["ann", nil, "bob"])) { error in
            XCTAssertTrue("\(error)".contains("record 2 has no user"), "\(error)")
        }
    }
}
