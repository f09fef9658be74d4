import FederationProtocol
import Foundation
import ModelFormats
import Privacy
import SecureCrypto
import TestSupport
import Wire
import XCTest

/// The condition accuracy release is a third mechanism of a round: a client that makes it charges it in the same
/// request (and so the same ledger write) as its training and its held-out loss release, one that does not charges and
/// sends nothing for it; the budget and the policy's ceiling see it.
final class ConditionAccuracyChargeTests: XCTestCase {
    let mechanism = MechanismSteps(samplingRate: 0.1, noiseMultiplier: 1.1, steps: 3)
    let accuracy = ConditionAccuracyRelease(correctBefore: 4, correctAfter: 9, count: 11, noiseMultiplier: 5)

    /// ClientAgentTests' agent, plan and tensors.
    func agent() -> ClientAgent {
        ClientAgent(name: "clinic-1", policy: ClientAgentTests.policy, identity: SigningKeyPair()) { plan in
            try AdapterLayout(configuration: ClientAgentTests.configuration, plan: plan)
        }
    }

    func tensors(_ value: Float) throws -> AdapterTensors {
        try AdapterLayout(configuration: ClientAgentTests.configuration, plan: ClientAgentTests.plan).shapes.mapValues { shape in
            (0..<shape.reduce(1, *)).map { Float($0) * value }
        }
    }

    func report(_ update: AdapterTensors) -> TrainingReport {
        TrainingReport(update: update, heldOut: HeldOutRelease(lossBefore: 51_200, lossAfter: 42_667, count: 102_400, lossClip: 6,
                                                               noiseMultiplier: 5),
                       evalLoss: (3, 2.5), evalTokens: 100, trainLoss: 2.7, seconds: 4)
    }

    func charge(scoresConditions: Bool) throws -> (ClientAgent, ChargeRequest) {
        var a = agent()
        let global = try tensors(0.5)
        _ = try a.receive(Invite(round: 4, plan: ClientAgentTests.plan, aggregation: "fedavg", secureAggregation: false,
                                 adapterSHA256: AdapterMath.digest(global), deadlineSeconds: 60).frame())
        for frame in try TensorSetFrames.frames(round: 4, kind: .globalAdapter, tensors: global) { _ = try a.receive(frame) }
        let actions = a.prepared(round: 4, RoundPreparation(mechanism: mechanism, examples: 20, scoresConditions: scoresConditions))
        guard case let .charge(4, request)? = actions.first, actions.count == 1 else {
            XCTFail("\(actions)")
            throw CancellationError()
        }
        return (a, request)
    }

    func testTheAccuracyReleaseIsChargedWithTheRoundOnlyWhenMade() throws {
        let loss = MechanismSteps(samplingRate: 1, noiseMultiplier: TrainingPlan.defaultMetricsNoiseMultiplier, steps: 1, noise: .discreteGaussian)
        let made = MechanismSteps(samplingRate: 1, noiseMultiplier: TrainingPlan.defaultAccuracyNoiseMultiplier, steps: 1, noise: .discreteGaussian)
        var (a, request) = try charge(scoresConditions: true)
        XCTAssertEqual(request.releases, [loss, made])
        _ = try a.ledgerAnswered(round: 4, .charged(PrivacyReceipt(entry: nil, epsilon: 1.5, budget: ClientAgentTests.budget)))
        var trained = report(try tensors(0.01))
        trained.conditionAccuracy = accuracy
        let actions = try a.trainingFinished(round: 4, trained)
        guard case let .upload(4, _, metrics)? = actions.first else { return XCTFail("\(actions)") }
        XCTAssertEqual(metrics.conditionAccuracy, accuracy, "the release goes up as the driver made it")

        // Control: a client whose held-out records carry no condition charges the loss release alone and sends none.
        var (b, plain) = try charge(scoresConditions: false)
        XCTAssertEqual(plain.releases, [loss])
        _ = try b.ledgerAnswered(round: 4, .charged(PrivacyReceipt(entry: nil, epsilon: 1.5, budget: ClientAgentTests.budget)))
        let without = try b.trainingFinished(round: 4, report(try tensors(0.01)))
        guard case let .upload(4, _, metricsWithout)? = without.first else { return XCTFail("\(without)") }
        XCTAssertNil(metricsWithout.conditionAccuracy)
    }

    /// The ledger: one charge writes the training and both releases as entries of the same round, and the ε it
    /// reports composes all three; against the training and the loss release alone (the control), the accuracy release
    /// adds to ε, and a budget between the two refuses the round with it and accepts it without.
    func testTheLedgerComposesTheThreeInOneWrite() throws {
        let (_, request) = try charge(scoresConditions: true)
        let (_, plain) = try charge(scoresConditions: false)
        func ledger(_ epsilon: Double) throws -> PrivacyLedger {
            try PrivacyLedger(directory: try Fixtures.temporaryDirectory("accuracy-ledger"),
                              creatingWith: PrivacyBudget(epsilon: epsilon, delta: 1e-5, accountant: .rdp))
        }
        var with = try ledger(50)
        guard case let .charged(receipt) = try with.chargeBeforeTraining(request.mechanism, clipNorm: 0.5, purpose: "round 4",
                                                                        releases: request.releases) else { return XCTFail("refused") }
        XCTAssertEqual(with.entries.count, 3)
        XCTAssertEqual(with.entries.map(\.mechanism), [request.mechanism] + request.releases)
        XCTAssertTrue(with.entries.allSatisfy { $0.purpose.hasPrefix("round 4") }, "\(with.entries.map(\.purpose))")
        let expected = try PrivacyAccounting.epsilon(steps: [request.mechanism] + request.releases, delta: 1e-5, accountant: .rdp)
        XCTAssertEqual(receipt.epsilon, expected, accuracy: 1e-9)
        let withoutAccuracy = try PrivacyAccounting.epsilon(steps: [plain.mechanism] + plain.releases, delta: 1e-5, accountant: .rdp)
        XCTAssertGreaterThan(expected, withoutAccuracy + 1e-3, "the accuracy release costs ε")
        let between = (expected + withoutAccuracy) / 2
        var tight = try ledger(between), tightToo = try ledger(between)
        guard case .refused = try tight.chargeBeforeTraining(request.mechanism, clipNorm: 0.5, purpose: "round 4",
                                                                       releases: request.releases) else {
            return XCTFail("a budget below the three together must refuse")
        }
        guard case .charged = try tightToo.chargeBeforeTraining(plain.mechanism, clipNorm: 0.5, purpose: "round 4",
                                                                       releases: plain.releases) else {
            return XCTFail("the same budget takes the round without the accuracy release")
        }
    }
}
