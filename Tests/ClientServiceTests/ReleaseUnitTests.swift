import Foundation
import Privacy
import Wire
import XCTest
@testable import ClientService
@testable import FineTuning

/// A round's held-out loss release counts units as the ledger it is charged to: in a client-level round (plan unit
/// client) a user-level ledger is charged per person, so the release must average each person's records into one
/// unit (count S per person), as the condition accuracy release does (`ConditionRoundDataTests`).
final class ReleaseUnitTests: XCTestCase {
    func testClientLevelLossReleaseGroupsByTheLedgersUnit() throws {
        let plan = TrainingPlan(steps: 1, learningRate: 0.01, samplingRate: 0.5, noiseMultiplier: 1.1, clipNorm: 0.5, delta: 1e-5,
                                maxLength: 64, rank: 2, alpha: 4, targets: ["q_proj"])
        var clientLevel = plan
        clientLevel.privacyUnit = .client
        // Three held-out records of two people: ann's first two, bob's the third.
        let examples = ["ann", "ann", "bob"].enumerated().map { index, user in
            TokenizedExample(ids: [1, 2, 3], labels: [-100, 2, 3], line: index + 1, user: user)
        }
        let evaluation = Evaluation(examples: 3, tokens: 6, loss: 0, tokenAccuracy: 0,
                                    perExample: [(2, 1.0), (2, 3.0), (2, 2.0)], tokensPerSecond: 0, processedTokens: 0)
        func exact(_ plan: TrainingPlan, ledger: PrivacyUnit) throws -> HeldOutRelease {
            try ClientRunner.release(before: evaluation, after: evaluation, plan: plan, evalExamples: examples, ledgerUnit: ledger,
                                     noise: { _, _ in })
        }
        let grid = HeldOutRelease.gridScale
        func onGrid(_ loss: Double) -> Int64 { Int64((loss / plan.metricsLossClip * Double(grid)).rounded()) }
        let perPerson = try exact(clientLevel, ledger: .user)
        XCTAssertEqual(perPerson.count, 2 * grid, "two people, one unit each")
        XCTAssertEqual(perPerson.lossBefore, onGrid(2.0) + onGrid(2.0), "ann's mean (1 + 3) / 2, bob's 2")
        // Controls: a record-level ledger at privacy unit client, and a record-level plan, count each record.
        XCTAssertEqual(try exact(clientLevel, ledger: .record).count, 3 * grid)
        XCTAssertEqual(try exact(plan, ledger: .user).count, 3 * grid, "a record-level plan's unit is its own")
        var userLevel = plan
        userLevel.privacyUnit = .user
        XCTAssertEqual(try exact(userLevel, ledger: .user).count, 2 * grid)
    }
}
