import Audit
@testable import CoordinatorService
import FederationProtocol
import Foundation
import Privacy
import SecureCrypto
import SystemIO
import TestSupport
import Wire
import XCTest

/// Issue 17: the coordinator's client-level accountant is written durably when a round is charged, before its
/// invitations, and a restarted coordinator goes on from it; the round's audit record carries the unit and ε.
/// Both tests were seen failing with the state file's write left out of `persistClientLevelState`.
final class ClientLevelAccountantTests: CoordinatorStateTestCase {
    override class var stateLabel: String { "coordinator-client-level" }

    /// q is tiny, so the sample of the two connected clients is (all but surely) empty and the round is skipped:
    /// charged all the same.
    func useClientLevelPlan(budget: Double = 50) {
        let plan = TrainingPlan(steps: 3, learningRate: 0.01, samplingRate: 0.25, noiseMultiplier: 1.0, clipNorm: 0.5,
                                delta: 1e-5, maxLength: 64, rank: 2, alpha: 4, targets: ["q_proj", "v_proj"], privacyUnit: .client,
                                noisePlacement: .distributed, clientSamplingRate: 1e-9)
        configuration.rounds = RoundPolicy(minClients: 2, maxClients: 2, fraction: 1, aggregation: .fedavg, secureAggregation: true,
                                           inviteTimeout: 20, roundTimeout: 60, waitForClients: 30, plan: plan,
                                           clientEpsilonBudget: budget)
    }

    /// Runs `count` rounds on `server` with two connected clients and waits for each to finish.
    func runRounds(_ server: CoordinatorServer, count: Int) throws {
        let now = Date()
        let connected = server.engine.withLock { engine in
            engine.connect("a", now: now, signingKey: SigningKeyPair().publicKey)
                + engine.connect("b", now: now, signingKey: SigningKeyPair().publicKey)
        }
        server.perform(connected)
        for _ in 0..<count {
            server.perform(server.engine.withLock { $0.requestRounds(1, now: Date()) })
            let deadline = Date().addingTimeInterval(20)
            while server.engine.withLock({ $0.phase }) != .idle && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
            XCTAssertEqual(server.engine.withLock { $0.phase }, .idle)
        }
    }

    func testTheAccountantSurvivesARestartAndTheRecordCarriesTheUnit() throws {
        useClientLevelPlan()
        let first = try start()
        XCTAssertEqual(first.engine.withLock { $0.federationAccountant?.rounds.count }, 0)
        try runRounds(first, count: 2)
        let charged = try XCTUnwrap(first.engine.withLock { $0.federationAccountant })
        XCTAssertEqual(charged.rounds.count, 2)
        let restarted = try start()
        XCTAssertEqual(restarted.engine.withLock { $0.federationAccountant }, charged, "rebuilt from its state file")
        let verification = try AuditLog(paths: paths).verify(publicKey: try AuditLog.verifyingKey(in: paths))
        XCTAssertTrue(verification.verified, "\(String(describing: verification.failure))")
        XCTAssertEqual(verification.records.count, 2)
        let record = try XCTUnwrap(verification.records.last)
        let clientLevel = try XCTUnwrap(record.clientLevel, "\(record)")
        XCTAssertEqual(clientLevel.unit, "client")
        XCTAssertEqual(clientLevel.roundsCharged, 2)
        XCTAssertEqual(clientLevel.epsilon, try charged.epsilon(), accuracy: 1e-12)
        XCTAssertEqual(record.plan.privacyUnit, .client)
        XCTAssertTrue(record.abortReason?.hasPrefix("skipped") == true, "\(record.abortReason ?? "")")
        // Control: without the state file a coordinator starts from no charged round, so the file is what carries it.
        try FileManager.default.removeItem(at: paths.clientLevelAccountant)
        XCTAssertEqual(try start().engine.withLock { $0.federationAccountant?.rounds.count }, 0)
    }

    /// A client-level round cut short by a crash (three clients sampled at q = 1, invited, none answering) is charged
    /// and recorded on restart like any other: the aborted record keeps its sampling and the federation's ε (from the
    /// in-flight mark), and the accountant holds the round. Seen failing (no `client_level` in the record) before the
    /// mark carried it.
    func testARoundCutShortKeepsItsChargeAndItsClientLevelRecord() throws {
        useClientLevelPlan()
        configuration.rounds.plan.clientSamplingRate = 1
        configuration.rounds.minClients = 3
        let first = try start()
        let now = Date()
        first.perform(first.engine.withLock { engine in
            ["a", "b", "c"].flatMap { engine.connect($0, now: now, signingKey: SigningKeyPair().publicKey) }
                + engine.requestRounds(1, now: now)
        })
        XCTAssertEqual(first.engine.withLock { $0.phase }, .training, "the round is in flight")
        let restarted = try start()
        XCTAssertEqual(restarted.engine.withLock { $0.federationAccountant?.rounds.count }, 1)
        let records = try AuditLog(paths: paths).verify(publicKey: try AuditLog.verifyingKey(in: paths)).records
        XCTAssertEqual(records.count, 1)
        let record = try XCTUnwrap(records.first)
        XCTAssertEqual(record.status, "aborted")
        let level = try XCTUnwrap(record.clientLevel, "\(record)")
        XCTAssertEqual(level.sampled, 3)
        XCTAssertEqual(level.population, 3)
        XCTAssertEqual(level.roundsCharged, 1)
    }

    /// Adaptive clipping resumes after a restart from the S the last committed round set, as its audit record says
    /// (the record is the round's commit): a record carrying next S 0.3125 is appended (marked aborted here, since a
    /// committed one would need its adapter on disk; the reader takes the next S wherever it is, and only a committed
    /// round's aggregation writes one), and a coordinator with adaptive clipping starts at it. Controls: a later record
    /// that moved nothing does not reset it, and the same log under a policy without adaptive clipping starts at the
    /// plan's S.
    func testAdaptiveClippingResumesFromTheAuditLog() throws {
        useClientLevelPlan()
        configuration.rounds.adaptiveClipping = try ClientLevelDP.AdaptiveClipping(targetQuantile: 0.5, learningRate: 0.2,
                                                                                   countNoiseMultiplier: 2)
        XCTAssertEqual(try start().engine.withLock { $0.clientClipNorm }, 0.5, "no round yet: the plan's S")
        let signer = try SigningKeyPair.readSecretKeyFile(path: paths.signingKey.path)
        func record(round: UInt64, status: String, next: Double?) -> AuditRecord {
            var record = AuditRecord(status: status, round: round, started: Date(), finished: Date(), cohort: ["a", "b"],
                                     participants: [], declines: [], dropouts: [], aggregation: "fedavg", secureAggregation: true,
                                     plan: configuration.rounds.plan, clients: [], maxEpsilon: nil, evalLossBefore: nil,
                                     evalLossAfter: nil, adapterSHA256: "", abortReason: "test",
                                     previousHash: "")
            var level = ClientLevelRecord(population: 2, sampled: 2, samplingRate: 1, noiseMultiplier: 1, clipNorm: 0.5,
                                          expectedCohort: 2, epsilon: 1, delta: 1e-5, epsilonBudget: 50, roundsCharged: Int(round))
            level.adaptiveClipping = AdaptiveClippingRecord(targetQuantile: 0.5, learningRate: 0.2, countNoiseMultiplier: 2,
                                                            unclippedFraction: next == nil ? nil : 1, nextClipNorm: next)
            record.clientLevel = level
            return record
        }
        try AuditLog(paths: paths).append(record(round: 1, status: "aborted", next: 0.3125), signer: signer)
        try AuditLog(paths: paths).append(record(round: 2, status: "aborted", next: nil), signer: signer)
        XCTAssertEqual(try start().engine.withLock { $0.clientClipNorm }, 0.3125)
        configuration.rounds.adaptiveClipping = nil
        XCTAssertEqual(try start().engine.withLock { $0.clientClipNorm }, 0.5, "control: without adaptive clipping")
    }

    /// A budget lowered below what was already charged: the coordinator refuses to start, naming the state file.
    func testABudgetBelowTheChargedRoundsIsRefusedAtStart() throws {
        useClientLevelPlan()
        try runRounds(try start(), count: 1)
        let spent = try XCTUnwrap(try start().engine.withLock { try $0.federationAccountant?.epsilon() })
        useClientLevelPlan(budget: spent / 2)
        XCTAssertThrowsError(try start()) { XCTAssertTrue("\($0)".contains("client-level-accountant.json"), "\($0)") }
    }
}
