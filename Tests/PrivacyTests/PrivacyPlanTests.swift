import Privacy
import TestSupport
import XCTest

/// `PrivacyPlanProjection`: the preview of N rounds (`conclave-client privacy plan`) agrees with the
/// accountant on N×steps compositions and with the charges `chargeBeforeTraining` really makes.
final class PrivacyPlanTests: XCTestCase {
    let budget = PrivacyBudget(epsilon: 3, delta: 1e-5, accountant: .rdp)
    let mechanism = MechanismSteps(samplingRate: 0.01, noiseMultiplier: 1.2, steps: 300)

    /// N rounds of T steps on an empty ledger are N×T compositions of one mechanism, as `privacy epsilon` counts.
    func testRoundsAreTheAccountantsEpsilonOfNTimesTheSteps() throws {
        let projection = try PrivacyPlanProjection.project(mechanism, rounds: 4, after: [], budget: budget)
        XCTAssertEqual(projection.spentEpsilon, 0)
        for round in projection.rounds where !round.refused {
            var rdp = RDPAccountant()
            try rdp.add(samplingRate: 0.01, noiseMultiplier: 1.2, steps: 300 * round.round)
            XCTAssertEqual(round.epsilon, try rdp.epsilon(delta: 1e-5).epsilon, accuracy: 1e-9, "round \(round.round)")
        }
    }

    /// The first refused round is the one whose real charge `chargeBeforeTraining` refuses, for the
    /// ledger's budget and for a ceiling below it; the ε of each charged round is the receipt's.
    func testFirstRefusedRoundIsTheOneChargeBeforeTrainingRefuses() throws {
        // One round is ε 3.49 at δ 1e-5 alone, two 4.26: a budget of 6 holds a few rounds, a ceiling of 5 fewer.
        let round = MechanismSteps(samplingRate: 0.05, noiseMultiplier: 0.9, steps: 30)
        let budget = PrivacyBudget(epsilon: 6, delta: 1e-5, accountant: .rdp)
        var firstRefused: [Int] = []
        for ceiling in [nil, 5.0] as [Double?] {
            var ledger = try PrivacyLedger(directory: try Fixtures.temporaryDirectory("plan"), creatingWith: budget)
            _ = try ledger.chargeBeforeTraining(round, clipNorm: 1, purpose: "earlier").receipt()
            let projection = try ledger.projection(of: round, rounds: 40, ceiling: ceiling)
            XCTAssertEqual(projection.spentEpsilon, ledger.spentEpsilon, accuracy: 1e-12)
            let first = try XCTUnwrap(projection.firstRefusedRound, "6 ε cannot hold 41 such rounds")
            firstRefused.append(first)
            XCTAssertGreaterThan(first, 1)
            // The rounds after the first refused one are refused alike; the first after it is charged for real too.
            XCTAssertTrue(projection.rounds[first...].allSatisfy(\.refused))
            for planned in projection.rounds.prefix(first + 1) {
                let charge = try ledger.chargeBeforeTraining(round, clipNorm: 1, purpose: "round \(planned.round)",
                                                             ceiling: ceiling)
                switch charge {
                case let .charged(receipt):
                    XCTAssertFalse(planned.refused, "round \(planned.round) charged but projected refused (ceiling \(String(describing: ceiling)))")
                    XCTAssertEqual(receipt.epsilon, planned.epsilon, accuracy: 1e-12)
                case .refused:
                    XCTAssertTrue(planned.refused, "round \(planned.round) refused but projected charged")
                    XCTAssertGreaterThanOrEqual(planned.round, first)
                }
            }
            XCTAssertEqual(ledger.entries.count, first, "the earlier charge and rounds 1..<\(first)")
        }
        XCTAssertLessThan(firstRefused[1], firstRefused[0], "the ceiling refuses before the budget")
    }

    func testZeroRoundsAndInvalidMechanismsAreErrors() {
        XCTAssertThrowsError(try PrivacyPlanProjection.project(mechanism, rounds: 0, after: [], budget: budget))
        let invalid = MechanismSteps(samplingRate: 2, noiseMultiplier: 1, steps: 1)
        XCTAssertThrowsError(try PrivacyPlanProjection.project(invalid, rounds: 1, after: [], budget: budget))
    }
}
