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

    /// A run without DP-SGD is recorded as ε = +∞ whatever the budget and the ceiling (its caller allowed
    /// it), and from then on every charge with noise is refused, even a tiny one, and no new budget can
    /// undo it. Seen failing on the old code: `chargeBeforeTraining(nil, ...)` wrote nothing and answered
    /// with the ε spent so far.
    func testRunWithoutPrivacyIsRecordedAsInfiniteEpsilon() throws {
        var ledger = try ledger()
        _ = try ledger.chargeBeforeTraining(mechanism, clipNorm: 1, purpose: "round 1").receipt()
        let nonPrivate = MechanismSteps.nonPrivate(samplingRate: 0.1, steps: 3)
        let receipt = try ledger.chargeBeforeTraining(nonPrivate, clipNorm: 0, purpose: "round 2", ceiling: 0.001).receipt()
        let entry = try XCTUnwrap(receipt.entry)
        XCTAssertEqual(receipt.epsilon, .infinity)
        XCTAssertEqual(entry.mechanism, nonPrivate)
        XCTAssertEqual(entry.noise, .none)
        XCTAssertEqual(entry.clipNorm, 0)
        // Durable, and read back as written (the file holds "infinity", which JSON has no number for).
        let reopened = try PrivacyLedger(directory: ledger.directory)
        XCTAssertEqual(reopened.entries.count, 2)
        XCTAssertEqual(reopened.entries.last, entry)
        XCTAssertEqual(reopened.spentEpsilon, .infinity)
        XCTAssertEqual(reopened.remainingEpsilon, 0)
        let text = try String(contentsOf: ledger.fileURL, encoding: .utf8)
        XCTAssertTrue(text.contains("\"cumulative_epsilon\" : \"infinity\""), text)
        XCTAssertTrue(text.contains("\"noise\" : \"none\""), text)
        // Everything with noise is refused now, with nothing written; the positive control is the same
        // tiny charge on a fresh ledger, which fits.
        let tiny = MechanismSteps(samplingRate: 0.001, noiseMultiplier: 50, steps: 1)
        var fresh = try self.ledger()
        XCTAssertNoThrow(try fresh.chargeBeforeTraining(tiny, clipNorm: 1, purpose: "control").receipt())
        let refused = try ledger.chargeBeforeTraining(tiny, clipNorm: 1, purpose: "round 3")
        guard case let .refused(.overBudget(exceeded)) = refused else { return XCTFail("\(refused)") }
        XCTAssertTrue("\(exceeded)".contains("a run without differential privacy is recorded"), "\(exceeded)")
        XCTAssertEqual(try ledger.chargeBeforeTraining(tiny, clipNorm: 1, purpose: "round 3", ceiling: 100).isRefused, true)
        XCTAssertEqual(try PrivacyLedger(directory: ledger.directory).entries.count, 2)
        XCTAssertThrowsError(try ledger.updateBudget(PrivacyBudget(epsilon: 1e6, delta: 1e-5, accountant: .pld)))
        // A later run without privacy is recorded too (the ledger never forgets a run).
        _ = try ledger.chargeBeforeTraining(nonPrivate, clipNorm: 0, purpose: "round 4").receipt()
        XCTAssertEqual(try PrivacyLedger(directory: ledger.directory).entries.count, 3)
    }

    /// A run without noise must say so everywhere: σ 0 and clip norm 0 (it clips nothing).
    func testRunWithoutNoiseIsValidatedAsSuch() throws {
        var ledger = try ledger()
        XCTAssertThrowsError(try ledger.chargeBeforeTraining(.nonPrivate(samplingRate: 0.1, steps: 3), clipNorm: 1, purpose: "x"))
        XCTAssertThrowsError(try ledger.chargeBeforeTraining(MechanismSteps(samplingRate: 0.1, noiseMultiplier: 1, steps: 3, noise: .none),
                                                             clipNorm: 0, purpose: "x"))
        XCTAssertThrowsError(try ledger.chargeBeforeTraining(MechanismSteps(samplingRate: 0.1, noiseMultiplier: 0, steps: 3),
                                                             clipNorm: 0, purpose: "x"))
        XCTAssertEqual(try PrivacyLedger(directory: ledger.directory).entries, [])
        // ε of compositions: +∞ with a non-trivial run without noise; one that touched nothing adds nothing.
        let alone = try PrivacyAccounting.epsilon(steps: [mechanism], delta: 1e-5, accountant: .rdp)
        XCTAssertEqual(try PrivacyAccounting.epsilon(steps: [mechanism, .nonPrivate(samplingRate: 0.1, steps: 1)], delta: 1e-5,
                                                     accountant: .pld), .infinity)
        XCTAssertEqual(try PrivacyAccounting.epsilon(steps: [mechanism, .nonPrivate(samplingRate: 0.1, steps: 0),
                                                             .nonPrivate(samplingRate: 0, steps: 5)], delta: 1e-5, accountant: .rdp), alone)
    }

    /// A ledger file written before the `noise` field reads as Gaussian noise; a cumulative ε of
    /// "infinity" without a run without privacy is corrupt.
    func testOlderFilesReadAndInfinityNeedsARunWithoutPrivacy() throws {
        var ledger = try ledger()
        _ = try ledger.chargeBeforeTraining(mechanism, clipNorm: 1, purpose: "round 1").receipt()
        let text = try String(contentsOf: ledger.fileURL, encoding: .utf8)
        let old = text.replacingOccurrences(of: "\"noise\" : \"gaussian\",", with: "")
        XCTAssertNotEqual(old, text)
        try old.write(to: ledger.fileURL, atomically: true, encoding: .utf8)
        XCTAssertEqual(try PrivacyLedger(directory: ledger.directory).entries.first?.mechanism, mechanism)
        let forged = old.replacingOccurrences(of: #""cumulative_epsilon" : [0-9.e+-]+"#, with: "\"cumulative_epsilon\" : \"infinity\"",
                                              options: .regularExpression)
        XCTAssertNotEqual(forged, old)
        try forged.write(to: ledger.fileURL, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try PrivacyLedger(directory: ledger.directory)) { error in
            XCTAssertTrue("\(error)".contains("infinite without a run without privacy"), "\(error)")
        }
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

extension PrivacyCharge {
    var isRefused: Bool {
        if case .refused = self { return true }
        return false
    }
}
