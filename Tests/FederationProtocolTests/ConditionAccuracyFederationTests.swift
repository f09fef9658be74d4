import FederationHarness
import FederationProtocol
import Foundation
import ModelFormats
import Privacy
import TestSupport
import Wire
import XCTest

/// The condition accuracy release through a whole round in memory (the real engine, agents, uplink decoder and
/// ledgers): clients whose held-out records carry conditions charge it with the round and send it, one without sends
/// nothing, and the round's figure is the pooled release, plain and secure.
final class ConditionAccuracyFederationTests: XCTestCase {
    let t0 = Date(timeIntervalSince1970: 1_700_000_000)

    func release(_ before: Int64, _ after: Int64, _ count: Int64) -> (TrainingPlan, UInt64) -> ConditionAccuracyRelease {
        { plan, _ in ConditionAccuracyRelease(correctBefore: before, correctAfter: after, count: count, noiseMultiplier: plan.accuracyNoiseMultiplier) }
    }

    func client(_ name: String, accuracy: ((TrainingPlan, UInt64) -> ConditionAccuracyRelease)?) throws -> InMemoryFederation.ClientSpec {
        InMemoryFederation.ClientSpec(name: name, policy: InMemoryFederationTests.policy, examples: 40,
                                      directory: try Fixtures.temporaryDirectory("accuracy-\(name)"),
                                      conditionAccuracy: accuracy) { _, global, round in
            InMemoryFederation.fixedUpdate(like: global, client: name, round: round)
        }
    }

    func run(secure: Bool, plan: TrainingPlan = InMemoryFederationTests.plan, rounds: Int = 1,
             accuracyInterval: Int? = nil) throws -> InMemoryFederation {
        let policy = RoundPolicy(minClients: 3, maxClients: 3, fraction: 1, aggregation: .fedavg, secureAggregation: secure,
                                 inviteTimeout: 30, roundTimeout: 120, waitForClients: 60, plan: plan,
                                 accuracyInterval: accuracyInterval)
        let global = try AdapterLayout(configuration: InMemoryFederationTests.model, plan: plan).shapes.mapValues { shape in
            (0..<shape.reduce(1, *)).map { Float(sin(Double($0) * 0.11)) * 0.02 }
        }
        let federation = try InMemoryFederation(policy: policy, model: InMemoryFederationTests.model, global: global,
                                                clients: [client("a", accuracy: release(3, 6, 10)), client("b", accuracy: release(-1, 4, 8)),
                                                          client("c", accuracy: nil)], now: t0)
        try federation.startRounds(rounds)
        return federation
    }

    func testTheReleasesReachTheRoundAndPoolAsComputedDirectly() throws {
        for secure in [false, true] {
            let federation = try run(secure: secure)
            let round = try XCTUnwrap(federation.finished.first)
            XCTAssertTrue(round.outcome.isCommitted, round.outcome.abortReason ?? "")
            let metrics = Dictionary(uniqueKeysWithValues: round.outcome.participantMetrics.map { ($0.client, $0) })
            XCTAssertEqual(metrics["a"]?.conditionAccuracy, ConditionAccuracyRelease(correctBefore: 3, correctAfter: 6, count: 10, noiseMultiplier: 5))
            XCTAssertEqual(metrics["b"]?.conditionAccuracy?.count, 8)
            XCTAssertNotNil(metrics["c"], "secure \(secure): c took part")
            XCTAssertNil(metrics["c"]?.conditionAccuracy, "secure \(secure): a client without conditions releases nothing for accuracy")
            // The round's figure (the audit record's) against the direct computation over a's and b's releases.
            let pooled = try XCTUnwrap(RoundFigures(participants: round.outcome.participantMetrics).conditionAccuracy)
            XCTAssertEqual(pooled.records, 18)
            XCTAssertEqual(try XCTUnwrap(pooled.before), 2.0 / 18, accuracy: 1e-15)
            XCTAssertEqual(try XCTUnwrap(pooled.after), 10.0 / 18, accuracy: 1e-15)
            let sigma = (2 * 75.0).squareRoot()
            XCTAssertEqual(try XCTUnwrap(pooled.standardError), sigma * (1 + pow(10.0 / 18, 2)).squareRoot() / 18, accuracy: 1e-12)
            // Charged in the same write as the round: a and b three entries, c two.
            for (name, purposes) in [("a", 3), ("b", 3), ("c", 2)] {
                let entries = try federation.clients[name]!.ledger().entries
                XCTAssertEqual(entries.count, purposes, "secure \(secure): \(name) \(entries.map(\.purpose))")
                XCTAssertTrue(entries.allSatisfy { $0.purpose.hasPrefix("round 1 in memory") })
            }
            let a = try federation.clients["a"]!.ledger().entries
            XCTAssertEqual(a.last.map { [$0.samplingRate, $0.noiseMultiplier, Double($0.steps)] },
                           [1, TrainingPlan.defaultAccuracyNoiseMultiplier, 1], "one Gaussian mechanism at the plan's accuracy z")
            XCTAssertEqual(metrics["a"]?.epsilon, a.last?.cumulativeEpsilon, "the ε sent includes the accuracy release")
        }
    }

    /// A plan with `accuracy_records` 0 asks for none: nobody charges or sends one, and the round has no figure.
    func testAPlanAskingForNoneGetsNone() throws {
        var plan = InMemoryFederationTests.plan
        plan.accuracyRecords = 0
        let federation = try run(secure: false, plan: plan)
        let round = try XCTUnwrap(federation.finished.first)
        XCTAssertTrue(round.outcome.isCommitted)
        XCTAssertTrue(round.outcome.participantMetrics.allSatisfy { $0.conditionAccuracy == nil })
        XCTAssertNil(RoundFigures(participants: round.outcome.participantMetrics).conditionAccuracy)
        XCTAssertEqual(try federation.clients["a"]!.ledger().entries.count, 2)
    }

    /// `accuracy_interval` 2 over 4 rounds: rounds 1 and 3 ask for the release (their invitations carry the plan's
    /// `accuracy_records`), rounds 2 and 4 for none, so only 1 and 3 are charged for it, carry it and have a figure;
    /// the audit record's plan is the invitation's; the preview counts the 2 releases and so matches the ledger.
    func testAnAccuracyIntervalAsksInItsRoundsOnly() throws {
        for secure in [false, true] {
            let federation = try run(secure: secure, rounds: 4, accuracyInterval: 2)
            XCTAssertEqual(federation.finished.count, 4)
            for round in federation.finished {
                let asked = round.outcome.round % 2 == 1
                XCTAssertTrue(round.outcome.isCommitted, round.outcome.abortReason ?? "")
                XCTAssertEqual(federation.engine.policy.plan(round: round.outcome.round).accuracyRecords,
                               asked ? InMemoryFederationTests.plan.accuracyRecords : 0)
                let figure = RoundFigures(participants: round.outcome.participantMetrics).conditionAccuracy
                XCTAssertEqual(figure != nil, asked, "secure \(secure), round \(round.outcome.round)")
            }
            let entries = try federation.clients["a"]!.ledger().entries
            XCTAssertEqual(entries.count, 3 + 2 + 3 + 2, "secure \(secure): \(entries.map(\.purpose))")
            let preview = try PlanPreview(policy: federation.engine.policy, count: 4, enrolled: ["a"])
            XCTAssertEqual(try XCTUnwrap(preview.rounds.last?.epsilon), try XCTUnwrap(entries.last?.cumulativeEpsilon),
                           accuracy: 1e-9, "the preview counts the releases the ledger was charged for")
        }
    }
}
