import XCTest
@testable import SecureAggregation

/// `CollusionResistance` against the paper's condition and the issue's figures.
final class CollusionResistanceTests: XCTestCase {
    /// Bonawitz et al. (CCS 2017) give active security on the complete graph for t > 2n/3 against fewer
    /// than n/3 corrupt clients (t = ⌊2n/3⌋ + 1, n_C < n/3). The count behind it: two sets of t
    /// signers among n share 2t − n members, so they share an honest one unless 2t − n colluders sign
    /// both; withstood = 2t − n − 1 must therefore cover every n_C < n/3 at that t, for every n the
    /// protocol allows, and be the largest c with 2t > n + c.
    func testWithstoodMeetsThePapersCondition() {
        for n in 3...SecureAggregationSession.maximumNeighbourhoodSize {
            let t = 2 * n / 3 + 1
            let withstood = CollusionResistance.withstood(cohortSize: n, graph: .complete, threshold: t)
            let largestCorrupt = (n + 2) / 3 - 1  // the largest integer below n/3
            XCTAssertGreaterThanOrEqual(withstood, largestCorrupt, "n = \(n), t = \(t)")
            XCTAssertTrue(2 * t > n + withstood && !(2 * t > n + withstood + 1), "n = \(n), t = \(t), withstood \(withstood)")
            XCTAssertLessThanOrEqual(withstood, t - 1)
        }
    }

    /// The issue's figures: the thresholds `dropout_tolerance` chose before this change withstood 0
    /// (Harary degree 30, t = 16) and 3 (complete, n = 100, t = 52) colluders, not 15 and 51; both are
    /// now refused by name, and the default threshold passes for every cohort size.
    func testIssueFiguresAreRefusedAndDefaultsPass() {
        XCTAssertEqual(CollusionResistance.withstood(cohortSize: 100, graph: .harary(degree: 30), threshold: 16), 0)
        XCTAssertEqual(CollusionResistance.withstood(cohortSize: 100, graph: .complete, threshold: 52), 3)
        XCTAssertEqual(CollusionResistance.withstood(cohortSize: 500, graph: .harary(degree: 146), threshold: 74), 0)
        for (graph, t) in [(NeighbourGraph.harary(degree: 30), 16), (.complete, 52)] {
            XCTAssertThrowsError(try CollusionResistance.require(cohortSize: 100, graph: graph, threshold: t)) { error in
                guard case let SecureAggregationError.collusionResistanceTooLow(withstood, minimum, detail) = error else {
                    return XCTFail("\(error)")
                }
                XCTAssertLessThan(withstood, minimum)
                XCTAssertTrue(detail.contains("threshold \(t)"), detail)
            }
        }
        for n in 2...SecureAggregationSession.maximumNeighbourhoodSize {
            XCTAssertNoThrow(try CollusionResistance.require(cohortSize: n, graph: .complete,
                                                             threshold: SecureAggregationSession.defaultThreshold(neighbourhoodSize: n)))
        }
        XCTAssertEqual(CollusionResistance.minimum(neighbourhoodSize: 31), 2)
        XCTAssertEqual(CollusionResistance.minimumThreshold(neighbourhoodSize: 31), 17)
    }
}
