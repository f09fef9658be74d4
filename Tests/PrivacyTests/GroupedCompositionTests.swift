import XCTest
@testable import Privacy

/// `PrivacyAccounting` merges a ledger's identical entries before composing them (a charge used to
/// recompute every past round). Merging must not change ε: compared here with the accountants fed every
/// entry one by one, as they were before.
final class GroupedCompositionTests: XCTestCase {
    /// 300 rounds of a federation's client: 8 DP-SGD steps and one metrics release per round.
    static let rounds: [MechanismSteps] = (0..<300).flatMap { round in
        [MechanismSteps(samplingRate: 0.05, noiseMultiplier: 1.0, steps: 8, noise: .discreteGaussian),
         MechanismSteps(samplingRate: 1, noiseMultiplier: 20, steps: round % 3 == 0 ? 3 : 1, noise: .discreteGaussian)]
    }

    func testGroupingKeepsEveryStepOnce() {
        let grouped = PrivacyAccounting.grouped(Self.rounds)
        XCTAssertEqual(grouped, [MechanismSteps(samplingRate: 0.05, noiseMultiplier: 1.0, steps: 2400, noise: .discreteGaussian),
                                 MechanismSteps(samplingRate: 1, noiseMultiplier: 20, steps: 500, noise: .discreteGaussian)])
        // Different noise kinds or rates are never merged; a sum past the accountants' limit is split.
        let mixed = [MechanismSteps(samplingRate: 0.1, noiseMultiplier: 1, steps: 5, noise: .gaussian),
                     MechanismSteps(samplingRate: 0.1, noiseMultiplier: 1, steps: 5, noise: .discreteGaussian),
                     MechanismSteps(samplingRate: 0.1, noiseMultiplier: 1, steps: MechanismSteps.maximumSteps, noise: .gaussian)]
        XCTAssertEqual(PrivacyAccounting.grouped(mixed), [mixed[0], mixed[2], mixed[1]])
    }

    func testRDPOfTheGroupedLedgerEqualsTheEntryByEntryComposition() throws {
        var oneByOne = RDPAccountant()
        for mechanism in Self.rounds { try oneByOne.add(mechanism) }
        let expected = try oneByOne.epsilon(delta: 1e-5).epsilon
        let grouped = try PrivacyAccounting.epsilon(steps: Self.rounds, delta: 1e-5, accountant: .rdp)
        XCTAssertEqual(grouped, expected, accuracy: expected * 1e-9)
        // Control: one round fewer is visibly less, so the comparison can tell a lost entry.
        var shorter = RDPAccountant()
        for mechanism in Self.rounds.dropLast(2) { try shorter.add(mechanism) }
        XCTAssertLessThan(try shorter.epsilon(delta: 1e-5).epsilon, expected * (1 - 1e-6))
    }

    func testPLDOfTheGroupedLedgerIsCloseToTheEntryByEntryComposition() throws {
        let entries = (0..<12).map { _ in MechanismSteps(samplingRate: 0.02, noiseMultiplier: 1.1, steps: 25) }
        var oneByOne = PLDAccountant()
        for mechanism in entries { try oneByOne.add(mechanism) }
        let separate = try oneByOne.estimate(delta: 1e-5).epsilon
        let grouped = try PrivacyAccounting.epsilon(steps: entries, delta: 1e-5, accountant: .pld)
        // Both are upper bounds of the same composition (300 steps); they differ only by discretisation.
        XCTAssertEqual(grouped, separate, accuracy: separate * 0.02)
        // Control: 11 entries (275 steps) are outside that tolerance, so it can tell a lost entry.
        var shorter = PLDAccountant()
        for mechanism in entries.dropLast() { try shorter.add(mechanism) }
        XCTAssertGreaterThan(abs(try shorter.estimate(delta: 1e-5).epsilon - separate), separate * 0.02)
    }
}
