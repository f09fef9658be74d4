import Foundation
import TestSupport
import XCTest
@testable import Privacy

/// The ledger states whom its ε protects: the budget and every entry carry the unit, a ledger counts
/// one unit only, and a ledger written before the unit existed reads as `record`.
final class PrivacyUnitLedgerTests: XCTestCase {
    let users = PrivacyBudget(epsilon: 5, delta: 1e-5, accountant: .rdp, unit: .user)
    let mechanism = MechanismSteps(samplingRate: 0.1, noiseMultiplier: 1.1, steps: 20)

    func testAUserLedgerChargesUsersAndKeepsTheUnit() throws {
        let directory = try Fixtures.temporaryDirectory("ledger-unit")
        defer { try? FileManager.default.removeItem(at: directory) }
        var ledger = try PrivacyLedger(directory: directory, creatingWith: users)
        let receipt = try ledger.chargeBeforeTraining(mechanism, clipNorm: 1, purpose: "run:a", unit: .user).receipt()
        XCTAssertEqual(receipt.entry?.unit, .user)
        let reopened = try PrivacyLedger(directory: directory)
        XCTAssertEqual(reopened.budget.unit, .user)
        XCTAssertEqual(reopened.entries.map(\.unit), [.user])
        let text = try String(contentsOf: reopened.fileURL, encoding: .utf8)
        XCTAssertEqual(text.components(separatedBy: "\"unit\" : \"user\"").count - 1, 2, "budget and entry: \(text)")

        // A record-level run is not charged to it, nor a user-level one to a record ledger (nothing written).
        XCTAssertThrowsError(try ledger.chargeBeforeTraining(mechanism, clipNorm: 1, purpose: "run:b")) {
            XCTAssertTrue("\($0)".contains("this ledger counts ε per user, a run at privacy unit record cannot be charged"), "\($0)")
        }
        XCTAssertEqual(try PrivacyLedger(directory: directory).entries.count, 1)
        let other = try Fixtures.temporaryDirectory("ledger-unit")
        defer { try? FileManager.default.removeItem(at: other) }
        var records = try PrivacyLedger(directory: other, creatingWith: PrivacyBudget(epsilon: 5, delta: 1e-5, accountant: .rdp))
        XCTAssertThrowsError(try records.charge(purpose: "run:c", samplingRate: 0.1, noiseMultiplier: 1.1, clipNorm: 1,
                                                steps: 20, unit: .user)) {
            XCTAssertTrue("\($0)".contains("counts ε per record"), "\($0)")
        }
        XCTAssertTrue(try PrivacyLedger(directory: other).entries.isEmpty)

        // The unit of a ledger with entries stays; opening with another unit is a budget mismatch naming both.
        XCTAssertThrowsError(try ledger.updateBudget(PrivacyBudget(epsilon: 6, delta: 1e-5, accountant: .rdp, unit: .record))) {
            XCTAssertTrue("\($0)".contains("cannot become record"), "\($0)")
        }
        XCTAssertNoThrow(try ledger.updateBudget(PrivacyBudget(epsilon: 6, delta: 1e-5, accountant: .rdp, unit: .user)))
        XCTAssertThrowsError(try PrivacyLedger(directory: directory,
                                               creatingWith: PrivacyBudget(epsilon: 6, delta: 1e-5, accountant: .rdp))) {
            XCTAssertTrue("\($0)".contains("per user), not epsilon 6.0 at delta 1e-05 (rdp, per record)"), "\($0)")
        }
    }

    /// A version-1 ledger written before the unit existed: budget and entries read as `record`, and it
    /// takes record-level charges as before.
    func testOldLedgersReadAsRecord() throws {
        let directory = try Fixtures.temporaryDirectory("ledger-unit")
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent(PrivacyLedger.fileName)
        let old = """
            {
              "budget" : { "accountant" : "rdp", "delta" : 1.0000000000000001e-05, "epsilon" : 8 },
              "entries" : [
                { "accountant" : "rdp", "clip_norm" : 1, "cumulative_epsilon" : 0.5, "date" : "2026-11-01T10:00:00Z",
                  "delta" : 1.0000000000000001e-05, "id" : "0F6B3E57-2D2B-4C8E-9A51-2E3C1B8D7A10",
                  "noise_multiplier" : 1.1, "purpose" : "round 1", "sampling_rate" : 0.02, "steps" : 20 }
              ],
              "version" : 1
            }
            """
        try old.write(to: file, atomically: true, encoding: .utf8)
        var ledger = try PrivacyLedger(directory: directory)
        XCTAssertEqual(ledger.budget.unit, .record)
        XCTAssertEqual(ledger.entries.map(\.unit), [.record])
        XCTAssertEqual(ledger.entries[0].steps, 20)
        let entry = try ledger.charge(purpose: "round 2", samplingRate: 0.02, noiseMultiplier: 1.1, clipNorm: 1, steps: 20)
        XCTAssertEqual(entry.unit, .record)
        // Positive control: a unit that is not one is refused, naming the field.
        try old.replacingOccurrences(of: "\"epsilon\" : 8 }", with: "\"epsilon\" : 8, \"unit\" : \"household\" }")
            .write(to: file, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try PrivacyLedger(directory: directory)) {
            XCTAssertTrue("\($0)".contains("is corrupt") && "\($0)".contains("unit"), "\($0)")
        }
    }

    func testUnitsMeetRequirements() {
        XCTAssertTrue(PrivacyUnit.user.meets(.record))
        XCTAssertTrue(PrivacyUnit.user.meets(.user))
        XCTAssertTrue(PrivacyUnit.record.meets(.record))
        XCTAssertFalse(PrivacyUnit.record.meets(.user))
    }
}
