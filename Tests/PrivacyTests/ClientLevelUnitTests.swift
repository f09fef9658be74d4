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
}
