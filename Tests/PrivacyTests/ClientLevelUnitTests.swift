import Foundation
@testable import Privacy
import TestSupport
import XCTest

/// Issue 17: the unit `client` sits above user and record, and a client's ledger never counts ε per client.
final class ClientLevelUnitTests: XCTestCase {
    func testClientMeetsEveryRequirementAndNothingBelowMeetsClient() {
        XCTAssertTrue(PrivacyUnit.client.meets(.user) && PrivacyUnit.client.meets(.record) && PrivacyUnit.client.meets(.client))
        XCTAssertFalse(PrivacyUnit.user.meets(.client), "a user-level plan does not protect a whole client")
        XCTAssertFalse(PrivacyUnit.record.meets(.client))
        XCTAssertTrue(PrivacyUnit.user.meets(.record) && !PrivacyUnit.record.meets(.user), "the order below is unchanged")
    }

    /// Seen passing a `client` budget through when the guard in `PrivacyBudget.validate` was removed.
    func testALedgerBudgetAtUnitClientIsRefused() {
        XCTAssertThrowsError(try PrivacyBudget(epsilon: 8, delta: 1e-5, accountant: .rdp, unit: .client).validate()) {
            XCTAssertTrue("\($0)".contains("budget unit"), "\($0)")
        }
        XCTAssertNoThrow(try PrivacyBudget(epsilon: 8, delta: 1e-5, accountant: .rdp, unit: .user).validate())
    }

    /// The federation's accountant (continuous Gaussian at z) covers a client-level round's discrete shares when τ
    /// underflows, as it does on the grid a real round gets (d = 4,096, 3 of 4 shares: τ = 0, the check passes);
    /// with shares of σ 0.6 grid units τ is 0.37 and KLS's ρ passes 1/(2z²) at the same l₂ = 1/z, so the check refuses
    /// it, naming τ (the case that must fail). Both hand-built cases have l₂ = Δ₂/(√3·σ) = 1: z = 1.
    func testTheFederationsGaussianChargeCoversTheDiscreteShares() throws {
        let round = try ClientLevelDP.round(samplingRate: 1, noiseMultiplier: 1, clipNorm: 0.5, dimension: 4096, cohort: 4, threshold: 3,
                                            assumeHonest: 1)
        XCTAssertNoThrow(try ClientLevelDP.checkAccountedNoise(round, noiseMultiplier: 1))
        func steps(sigma: Double) throws -> DistributedDiscreteGaussianSteps {
            let l2 = 3.0.squareRoot() * sigma
            let sensitivity = try RoundedSensitivity.conditionalRounding(scaledClip: l2 - 1, dimension: 1, beta: 0)
            XCTAssertEqual(sensitivity.l2, l2, accuracy: 1e-12)
            return DistributedDiscreteGaussianSteps(samplingRate: 1, shares: 3, shareSigma: sigma, dimension: 1, sensitivity: sensitivity,
                                                    steps: 1)
        }
        XCTAssertEqual(try steps(sigma: 60).tau, 0)
        XCTAssertNoThrow(try ClientLevelDP.checkAccountedNoise(try steps(sigma: 60), noiseMultiplier: 1))
        let coarse = try steps(sigma: 0.6)
        XCTAssertEqual(coarse.tau, 0.374, accuracy: 0.001)
        XCTAssertThrowsError(try ClientLevelDP.checkAccountedNoise(coarse, noiseMultiplier: 1)) {
            XCTAssertTrue("\($0)".contains("τ"), "\($0)")
        }
    }
}
