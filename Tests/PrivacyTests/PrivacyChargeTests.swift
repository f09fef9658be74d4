import Privacy
import TestSupport
import XCTest

/// `PrivacyLedger.chargeBeforeTraining`, the one charge `train --state` and a client's rounds use:
/// written durably when it fits, refused with nothing written when it would pass the ledger's budget
/// or the caller's ceiling.
final class PrivacyChargeTests: XCTestCase {
    let budget = PrivacyBudget(epsilon: 3, delta: 1e-5, accountant: .rdp)
    let mechanism = MechanismSteps(samplingRate: 0.01, noiseMultiplier: 1.2, steps: 300)

    func ledger() throws -> PrivacyLedger {
        try PrivacyLedger(directory: try Fixtures.temporaryDirectory("charge"), creatingWith: budget)
    }

    func testChargeIsWrittenBeforeItReturns() throws {
        var ledger = try ledger()
        let projected = try ledger.epsilon(afterCharging: mechanism)
        let receipt = try ledger.chargeBeforeTraining(mechanism, clipNorm: 0.5, purpose: "round 1", ceiling: 3).receipt()
        let entry = try XCTUnwrap(receipt.entry)
        XCTAssertEqual(receipt.epsilon, projected, accuracy: 1e-12)
        XCTAssertEqual(entry.cumulativeEpsilon, receipt.epsilon)
        XCTAssertEqual(entry.mechanism, mechanism)
        XCTAssertEqual(entry.clipNorm, 0.5)
        XCTAssertEqual(receipt.budget, budget)
        let reopened = try PrivacyLedger(directory: ledger.directory)
        XCTAssertEqual(reopened.entries, [entry])
    }

    /// The caller's ceiling refuses a charge the budget would allow, naming the projected ε.
    func testCeilingRefusesWithTheProjectedEpsilonAndWritesNothing() throws {
        var ledger = try ledger()
        _ = try ledger.chargeBeforeTraining(mechanism, clipNorm: 1, purpose: "round 1").receipt()
        let spent = ledger.spentEpsilon
        let projected = try ledger.epsilon(afterCharging: mechanism)
        XCTAssertLessThan(projected, budget.epsilon, "within the ledger's budget")
        let outcome = try ledger.chargeBeforeTraining(mechanism, clipNorm: 1, purpose: "round 2", ceiling: spent + 0.01)
        guard case let .refused(.overCeiling(refusedAt, ceiling, alreadySpent)) = outcome else { return XCTFail("\(outcome)") }
        XCTAssertEqual(refusedAt, projected, accuracy: 1e-12)
        XCTAssertEqual(ceiling, spent + 0.01)
        XCTAssertEqual(alreadySpent, spent)
        XCTAssertEqual(try PrivacyLedger(directory: ledger.directory).entries.count, 1, "a refused charge writes nothing")
    }

    /// The ledger's budget refuses; the refusal thrown by `receipt()` reads as the ledger's own error.
    func testBudgetRefusesWithTheLedgersErrorAndWritesNothing() throws {
        var ledger = try ledger()
        let large = MechanismSteps(samplingRate: 0.05, noiseMultiplier: 0.6, steps: 5000)
        let outcome = try ledger.chargeBeforeTraining(large, clipNorm: 1, purpose: "run:x")
        guard case let .refused(refusal) = outcome, case let .overBudget(exceeded) = refusal else { return XCTFail("\(outcome)") }
        XCTAssertEqual(exceeded.requested, large)
        XCTAssertGreaterThan(exceeded.requestedEpsilon, budget.epsilon)
        XCTAssertEqual("\(refusal)", "\(exceeded)")
        XCTAssertThrowsError(try outcome.receipt()) { error in
            XCTAssertTrue("\(error)".hasPrefix("privacy budget exceeded ("), "\(error)")
        }
        XCTAssertEqual(try PrivacyLedger(directory: ledger.directory).entries, [])
    }

    /// A run without DP-SGD spends nothing: answered with the ε spent so far, nothing written.
    func testRunWithoutPrivacyChargesNothing() throws {
        var ledger = try ledger()
        _ = try ledger.chargeBeforeTraining(mechanism, clipNorm: 1, purpose: "round 1").receipt()
        let receipt = try ledger.chargeBeforeTraining(nil, clipNorm: 1, purpose: "round 2", ceiling: 0.001).receipt()
        XCTAssertNil(receipt.entry)
        XCTAssertEqual(receipt.epsilon, ledger.spentEpsilon)
        XCTAssertEqual(try PrivacyLedger(directory: ledger.directory).entries.count, 1)
    }

    /// The ceiling is checked against the ledger as it is on disk: a charge made meanwhile by
    /// another process (another instance) counts.
    func testCeilingSeesChargesMadeElsewhere() throws {
        var first = try ledger()
        var second = try PrivacyLedger(directory: first.directory)
        _ = try second.chargeBeforeTraining(mechanism, clipNorm: 1, purpose: "run:elsewhere").receipt()
        let onDisk = try PrivacyLedger(directory: first.directory).epsilon(afterCharging: mechanism)
        let alone = try ledger().epsilon(afterCharging: mechanism)
        XCTAssertGreaterThan(onDisk, alone)
        let outcome = try first.chargeBeforeTraining(mechanism, clipNorm: 1, purpose: "round 1", ceiling: (onDisk + alone) / 2)
        guard case let .refused(.overCeiling(projected, _, _)) = outcome else { return XCTFail("\(outcome)") }
        XCTAssertEqual(projected, onDisk, accuracy: 1e-12)
    }
}
