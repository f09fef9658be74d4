import SecureCrypto
import XCTest
@testable import SecureAggregation

final class DropoutToleranceTests: XCTestCase {
    /// The log-space binomial tail against a direct sum of C(m, i) p^i (1 − p)^(m − i) with the
    /// binomial coefficients built exactly by Pascal's rule.
    func testBinomialTailMatchesDirectSum() {
        for m in [1, 7, 23, 60] {
            var row: [Double] = [1]
            for _ in 0..<m { row = zip(row + [0], [0] + row).map(+) }
            for p in [0.05, 0.3, 0.7, 0.9] {
                var cumulative = 0.0
                for t in 0...(m + 1) {
                    let tail = DropoutTolerance.binomialLowerTail(trials: m, success: p, below: t)
                    XCTAssertEqual(tail, min(cumulative, 1), accuracy: 1e-12 + 1e-9 * cumulative, "m \(m), p \(p), t \(t)")
                    if t <= m { cumulative += row[t] * pow(p, Double(t)) * pow(1 - p, Double(m - t)) }
                }
            }
        }
    }

    /// Figures enumerated independently (exact integer binomials in Python,
    /// Reference/dropout_policy.py): the chosen degree and threshold for the benchmark's settings, and
    /// the refusals where no threshold with enough collusion resistance (`CollusionResistance`) meets
    /// the bound. Before the collusion floor the policy chose t = 74 of 147 (k = 146), t = 52 of 100
    /// and t = 16 of 31 (k = 30): 0, 3 and 0 colluders withstood.
    func testChosenGraphsAndThresholds() throws {
        let loose = try DropoutTolerance(dropoutRate: 0.3, failureProbability: 1e-4)
        XCTAssertEqual(try loose.graphAndThreshold(cohortSize: 500).graph, .harary(degree: 192))
        XCTAssertEqual(try loose.graphAndThreshold(cohortSize: 500).threshold, 102)
        XCTAssertThrowsError(try loose.graphAndThreshold(cohortSize: 100)) { error in
            guard case SecureAggregationError.collusionResistanceTooLow = error else { return XCTFail("\(error)") }
        }
        let tight = try DropoutTolerance(dropoutRate: 0.1)
        XCTAssertEqual(try tight.graphAndThreshold(cohortSize: 100).graph, .harary(degree: 34))
        XCTAssertEqual(try tight.graphAndThreshold(cohortSize: 100).threshold, 19)
        XCTAssertEqual(try DropoutTolerance(dropoutRate: 0.2, failureProbability: 1e-5).graphAndThreshold(cohortSize: 300).graph,
                       .harary(degree: 76))
        XCTAssertEqual(try DropoutTolerance(dropoutRate: 0.2, failureProbability: 1e-5).graphAndThreshold(cohortSize: 300).threshold, 41)
        XCTAssertThrowsError(try DropoutTolerance(dropoutRate: 0.3).graphAndThreshold(cohortSize: 100))
        XCTAssertThrowsError(try DropoutTolerance(dropoutRate: 0.3).graphAndThreshold(cohortSize: 500))
        XCTAssertThrowsError(try DropoutTolerance(dropoutRate: 0.5))
        XCTAssertThrowsError(try DropoutTolerance(dropoutRate: 0.1, failureProbability: 0))
    }

    /// The chosen threshold is the largest that meets ε, the chosen degree the smallest, and the
    /// threshold never drops below a strict majority plus the collusion floor.
    func testChoiceIsExtremal() throws {
        for (n, rate, epsilon) in [(100, 0.1, 1e-6), (500, 0.3, 1e-4), (300, 0.2, 1e-5), (50, 0.0, 1e-6)] {
            let policy = try DropoutTolerance(dropoutRate: rate, failureProbability: epsilon)
            let (graph, t) = try policy.graphAndThreshold(cohortSize: n)
            let (smallest, largest, _) = DropoutTolerance.neighbourhoods(cohortSize: n, graph: graph)
            XCTAssertLessThanOrEqual(policy.failureBound(cohortSize: n, graph: graph, threshold: t), epsilon)
            XCTAssertGreaterThan(2 * t, largest)
            XCTAssertNoThrow(try CollusionResistance.require(cohortSize: n, graph: graph, threshold: t))
            if t < smallest { XCTAssertGreaterThan(policy.failureBound(cohortSize: n, graph: graph, threshold: t + 1), epsilon) }
            if case let .harary(k) = graph, k - 2 >= NeighbourGraph.defaultDegree(cohortSize: n) {
                XCTAssertThrowsError(try policy.threshold(cohortSize: n, graph: .harary(degree: k - 2)), "n \(n): degree \(k - 2) also works")
            }
            // The session accepts what the policy chose.
            let cohort = (1...n).map { Participant(id: ParticipantID($0), signingKey: SigningKeyPair().publicKey) }
            XCTAssertNoThrow(try SecureAggregationSession(roundID: 1, plan: [], globalAdapterHash: [1], participants: cohort,
                                                          vectorLength: 4, graph: graph, threshold: t))
        }
    }

    /// A sparse round configured for 20% dropout survives 20% of its clients dropping after the share
    /// stage (drawn at random, three times), where the default two-thirds threshold on the default
    /// degree would often abort; and the sum is exact.
    func testRoundSurvivesTheToleratedDropout() throws {
        let n = 60
        let policy = try DropoutTolerance(dropoutRate: 0.2, failureProbability: 1e-6)
        let (graph, t) = try policy.graphAndThreshold(cohortSize: n, minimumDegree: 10)
        for _ in 0..<3 {
            var run = try ProtocolRun.make(count: n, vectorLength: 4, graph: graph, threshold: t) { id in [id, 1, 2, 3] }
            let gone = Set(run.ids.shuffled().prefix(n / 5))
            let result = try run.run(dropping: [.afterShare: gone])
            let survivors = run.ids.filter { !gone.contains($0) }
            XCTAssertEqual(result.sum, run.plaintextSum(of: survivors))
        }
    }

    /// Collusion: the bound on a neighbourhood holding t colluders grows as t falls.
    func testCollusionBoundFallsWithThreshold() {
        let low = DropoutTolerance.collusionBound(cohortSize: 500, graph: .harary(degree: 146), threshold: 74, collusionRate: 0.1)
        let lower = DropoutTolerance.collusionBound(cohortSize: 500, graph: .harary(degree: 146), threshold: 40, collusionRate: 0.1)
        XCTAssertLessThan(low, 1e-20)
        XCTAssertLessThan(low, lower)
        XCTAssertEqual(DropoutTolerance.collusionBound(cohortSize: 10, graph: .complete, threshold: 1, collusionRate: 0.5), 1 - pow(0.5, 10), accuracy: 1e-12)
    }
}
