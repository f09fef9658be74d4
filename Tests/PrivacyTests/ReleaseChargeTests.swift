import Privacy
import TestSupport
import XCTest

/// Issue 13: a round's metrics release is charged in the same `chargeBeforeTraining` as its training,
/// in one durable write, and counts against the budget and the caller's ceiling.
final class ReleaseChargeTests: XCTestCase {
    let budget = PrivacyBudget(epsilon: 3, delta: 1e-5, accountant: .rdp)
    let training = MechanismSteps(samplingRate: 0.01, noiseMultiplier: 1.2, steps: 300)
    /// The held-out release at noise multiplier 5: the Gaussian mechanism, no subsampling, once.
    let release = MechanismSteps(samplingRate: 1, noiseMultiplier: 5, steps: 1, noise: .discreteGaussian)

    func ledger(_ name: String) throws -> PrivacyLedger {
        try PrivacyLedger(directory: try Fixtures.temporaryDirectory(name), creatingWith: budget)
    }

    /// Reference: dp_accounting 0.6.0 (Google), `RdpAccountant()` composing
    /// `SelfComposedDpEvent(PoissonSampledDpEvent(0.01, GaussianDpEvent(1.2)), 300)` then `GaussianDpEvent(5)`,
    /// `get_epsilon(1e-5)`: 0.950718 for the training alone, 1.190718 with the release (the same with
    /// Opacus' orders). Our RDP accountant is held to 0.5% of it.
    func testTrainingAndReleaseAreChargedInOneWriteAtDpAccountingsEpsilon() throws {
        var ledger = try ledger("release-charge")
        let receipt = try ledger.chargeBeforeTraining(training, clipNorm: 0.5, purpose: "round 1", releases: [release]).receipt()
        XCTAssertEqual(receipt.epsilon, 1.190718, accuracy: 1.190718 * 0.005)
        let entries = try PrivacyLedger(directory: ledger.directory).entries
        XCTAssertEqual(entries.map(\.purpose), ["round 1", "round 1: release"])
        XCTAssertEqual(entries.map { [$0.samplingRate, $0.noiseMultiplier, Double($0.steps)] }, [[0.01, 1.2, 300], [1, 5, 1]])
        XCTAssertEqual(entries[0].cumulativeEpsilon, 0.950718, accuracy: 0.950718 * 0.005)
        XCTAssertEqual(entries[1].cumulativeEpsilon, receipt.epsilon)
        XCTAssertEqual(receipt.entry, entries[0])
        // Control: without the release the receipt is the training's alone, lower by the release's share.
        var other = try self.ledger("release-charge-control")
        let alone = try other.chargeBeforeTraining(training, clipNorm: 0.5, purpose: "round 1").receipt()
        XCTAssertLessThan(alone.epsilon, receipt.epsilon - 0.2)
    }

    /// A ceiling the training alone would meet, but not with its release: refused, nothing written.
    func testTheCeilingCountsTheRelease() throws {
        var ledger = try ledger("release-ceiling")
        let outcome = try ledger.chargeBeforeTraining(training, clipNorm: 0.5, purpose: "round 1", ceiling: 1.0,
                                                      releases: [release])
        guard case let .refused(.overCeiling(projected, ceiling, _)) = outcome else { return XCTFail("\(outcome)") }
        XCTAssertEqual(ceiling, 1.0)
        XCTAssertGreaterThan(projected, 1.0)
        XCTAssertEqual(try PrivacyLedger(directory: ledger.directory).entries, [])
        // Control: the same ceiling admits the training alone.
        XCTAssertNotNil(try ledger.chargeBeforeTraining(training, clipNorm: 0.5, purpose: "round 1", ceiling: 1.0).receipt().entry)
    }

    /// The budget refuses the pair when only the pair passes it, and writes neither entry.
    func testTheBudgetRefusesThePairAndWritesNeither() throws {
        var ledger = try PrivacyLedger(directory: try Fixtures.temporaryDirectory("release-budget"),
                                       creatingWith: PrivacyBudget(epsilon: 1.0, delta: 1e-5, accountant: .rdp))
        let outcome = try ledger.chargeBeforeTraining(training, clipNorm: 0.5, purpose: "round 1", releases: [release])
        guard case .refused(.overBudget) = outcome else { return XCTFail("\(outcome)") }
        XCTAssertEqual(try PrivacyLedger(directory: ledger.directory).entries, [])
    }
}
