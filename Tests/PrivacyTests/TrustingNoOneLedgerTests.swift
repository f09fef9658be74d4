import Foundation
import TestSupport
import XCTest
@testable import Privacy

/// Issue 17: a client's ledger keeps, beside each distributed round's charge under its trust assumption, the
/// same round at its own noise share alone, so that its cumulative ε trusting no one can be shown; nothing is
/// ever charged against that figure.
final class TrustingNoOneLedgerTests: XCTestCase {
    let budget = PrivacyBudget(epsilon: 20, delta: 1e-5, accountant: .rdp)

    /// Two rounds of a cohort of 4, threshold 3, the client assuming 3 honest: the ledger's ε trusting no one is
    /// the composition of both rounds at one share (KLS 2021 with n = 1), computed here directly from the
    /// rounds; the charged ε is the assumption's, well below it; both survive a reopen.
    func testTheLedgerComposesTheRoundsAtTheClientsOwnShare() throws {
        let directory = try Fixtures.temporaryDirectory("ledger-alone")
        defer { try? FileManager.default.removeItem(at: directory) }
        let trusting = try DistributedRound(samplingRate: 0.05, noiseMultiplier: 1, clipNorm: 1, dimension: 4096, cohort: 4,
                                            threshold: 3, assumeHonest: 3, contributions: 32)
        let alone = try DistributedRound(samplingRate: 0.05, noiseMultiplier: 1, clipNorm: 1, dimension: 4096, cohort: 4,
                                         threshold: 3, assumeHonest: 1, contributions: 32)
        XCTAssertEqual(trusting.ledgerMechanismTrustingNoOne, alone.ledgerMechanism, "trusting no one is h = 1")
        var ledger = try PrivacyLedger(directory: directory, creatingWith: budget)
        var receipt: PrivacyReceipt?
        for round in 1...2 {
            receipt = try ledger.chargeBeforeTraining(trusting.ledgerMechanism, clipNorm: 1, purpose: "round \(round)",
                                                      trustingNoOne: trusting.ledgerMechanismTrustingNoOne).receipt()
        }
        let direct = try PrivacyAccounting.epsilon(steps: [alone.ledgerMechanism, alone.ledgerMechanism], delta: 1e-5,
                                                   accountant: .rdp)
        let charged = try PrivacyAccounting.epsilon(steps: [trusting.ledgerMechanism, trusting.ledgerMechanism], delta: 1e-5,
                                                    accountant: .rdp)
        XCTAssertEqual(try XCTUnwrap(receipt).epsilonTrustingNoOne, direct, accuracy: 1e-12)
        XCTAssertEqual(try XCTUnwrap(receipt).epsilon, charged, accuracy: 1e-12)
        XCTAssertGreaterThan(direct, charged * 1.2, "control: the two figures differ for this cohort")
        let reopened = try PrivacyLedger(directory: directory)
        XCTAssertEqual(try reopened.epsilonTrustingNoOne, direct, accuracy: 1e-12)
        XCTAssertEqual(reopened.spentEpsilon, charged, accuracy: 1e-12)
        let text = try String(contentsOf: reopened.fileURL, encoding: .utf8)
        XCTAssertEqual(text.components(separatedBy: "\"noise_multiplier_trusting_no_one\"").count - 1, 2, text)
    }

    /// A ledger of local DP only (and one from before the field) reports its charged ε as the ε trusting no one.
    func testALocalLedgerTrustsNoOneAlready() throws {
        let directory = try Fixtures.temporaryDirectory("ledger-alone")
        defer { try? FileManager.default.removeItem(at: directory) }
        var ledger = try PrivacyLedger(directory: directory, creatingWith: budget)
        XCTAssertEqual(try ledger.epsilonTrustingNoOne, 0)
        let receipt = try ledger.chargeBeforeTraining(MechanismSteps(samplingRate: 0.1, noiseMultiplier: 1.1, steps: 20), clipNorm: 1,
                                                      purpose: "run").receipt()
        XCTAssertEqual(receipt.epsilonTrustingNoOne, receipt.epsilon)
        XCTAssertEqual(try PrivacyLedger(directory: directory).epsilonTrustingNoOne, receipt.epsilon)
    }

    /// One share is never more noise than several: a charge or a stored entry claiming it is refused, as is one on
    /// another sampling rate or a continuous Gaussian; nothing is written.
    func testAnImpossibleTrustingNoOneIsRefused() throws {
        let directory = try Fixtures.temporaryDirectory("ledger-alone")
        defer { try? FileManager.default.removeItem(at: directory) }
        var ledger = try PrivacyLedger(directory: directory, creatingWith: budget)
        let charged = MechanismSteps(samplingRate: 0.05, noiseMultiplier: 2, steps: 1, noise: .discreteGaussian)
        for (bad, field) in [(MechanismSteps(samplingRate: 0.05, noiseMultiplier: 3, steps: 1, noise: .discreteGaussian), "noise multiplier"),
                             (MechanismSteps(samplingRate: 0.1, noiseMultiplier: 1, steps: 1, noise: .discreteGaussian), "trusting no one"),
                             (MechanismSteps(samplingRate: 0.05, noiseMultiplier: 1, steps: 1), "trusting no one")] {
            XCTAssertThrowsError(try ledger.chargeBeforeTraining(charged, clipNorm: 1, purpose: "r", trustingNoOne: bad)) {
                XCTAssertTrue("\($0)".contains(field), "\($0)")
            }
        }
        XCTAssertTrue(try PrivacyLedger(directory: directory).entries.isEmpty)
        let good = MechanismSteps(samplingRate: 0.05, noiseMultiplier: 1.5, steps: 1, noise: .discreteGaussian)
        _ = try ledger.chargeBeforeTraining(charged, clipNorm: 1, purpose: "r", trustingNoOne: good).receipt()
        let text = try String(contentsOf: ledger.fileURL, encoding: .utf8)
        XCTAssertNoThrow(try PrivacyLedger(directory: directory), "control: the file as written reads")
        try text.replacingOccurrences(of: "\"noise_multiplier_trusting_no_one\" : 1.5", with: "\"noise_multiplier_trusting_no_one\" : 2.5")
            .write(to: ledger.fileURL, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try PrivacyLedger(directory: directory)) {
            XCTAssertTrue("\($0)".contains("noise_multiplier_trusting_no_one") || "\($0)".contains("noiseMultiplierTrustingNoOne"), "\($0)")
        }
    }
}
