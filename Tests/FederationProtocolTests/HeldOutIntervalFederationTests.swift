import FederationHarness
import FederationProtocol
import Foundation
import ModelFormats
import Privacy
import TestSupport
import Wire
import XCTest

/// `heldout_interval` through whole rounds in memory (the real engine, agents, uplink decoder and ledgers): the rounds it
/// skips carry no held-out loss release and charge nothing for it, their pooled loss is n/a, and both previews (the
/// coordinator's `PlanPreview`, a client's `privacy plan` projection) equal what the ledgers were charged. A report
/// without the release in a round that asked for one, or with one in a round that did not, is refused.
final class HeldOutIntervalFederationTests: XCTestCase {
    let t0 = Date(timeIntervalSince1970: 1_700_000_000)

    /// The in-memory federation's plan without the condition accuracy release, so that only the held-out one varies.
    var plan: TrainingPlan {
        var plan = InMemoryFederationTests.plan
        plan.accuracyRecords = 0
        return plan
    }

    func run(secure: Bool, rounds: Int, minimum: Int = 3,
             tamper: ((inout ClientRoundMetrics) -> Void)? = nil) throws -> InMemoryFederation {
        let policy = RoundPolicy(minClients: minimum, maxClients: 3, fraction: 1, aggregation: .fedavg, secureAggregation: secure,
                                 inviteTimeout: 30, roundTimeout: 120, waitForClients: 60, plan: plan, heldOutInterval: 2)
        let global = try AdapterLayout(configuration: InMemoryFederationTests.model, plan: plan).shapes.mapValues { shape in
            (0..<shape.reduce(1, *)).map { Float(sin(Double($0) * 0.11)) * 0.02 }
        }
        let clients = try ["a", "b", "c"].map { name in
            InMemoryFederation.ClientSpec(name: name, policy: InMemoryFederationTests.policy, examples: 40,
                                          directory: try Fixtures.temporaryDirectory("heldout-\(name)"),
                                          tamperMetrics: name == "c" ? tamper : nil) { _, global, round in
                InMemoryFederation.fixedUpdate(like: global, client: name, round: round)
            }
        }
        let federation = try InMemoryFederation(policy: policy, model: InMemoryFederationTests.model, global: global,
                                                clients: clients, now: t0)
        try federation.startRounds(rounds)
        return federation
    }

    /// `heldout_interval` 2 over 4 rounds: rounds 1 and 3 ask (their participants send the release and the round has a
    /// pooled loss), rounds 2 and 4 do not (no participant sends one, the figure is nil, the invitation's plan says so),
    /// and each client's ledger holds the release for rounds 1 and 3 only.
    func testSkippedRoundsCarryNoReleaseAndChargeNothingForIt() throws {
        for secure in [false, true] {
            let federation = try run(secure: secure, rounds: 4)
            XCTAssertEqual(federation.finished.count, 4)
            for round in federation.finished {
                let asked = round.outcome.round % 2 == 1
                XCTAssertTrue(round.outcome.isCommitted, round.outcome.abortReason ?? "")
                XCTAssertEqual(round.outcome.participantMetrics.count, 3)
                XCTAssertEqual(federation.engine.policy.plan(round: round.outcome.round).asksHeldOutRelease, asked)
                XCTAssertTrue(round.outcome.participantMetrics.allSatisfy { ($0.heldOut != nil) == asked },
                              "secure \(secure), round \(round.outcome.round)")
                let figures = RoundFigures(participants: round.outcome.participantMetrics)
                XCTAssertEqual(figures.evalLossBefore != nil, asked, "secure \(secure), round \(round.outcome.round)")
                XCTAssertEqual(figures.evalLossStandardError != nil, asked)
                XCTAssertNotNil(figures.maxEpsilon, "ε is reported every round")
            }
            let entries = try federation.clients["a"]!.ledger().entries
            // Training and release in the rounds that ask, training alone in the others.
            XCTAssertEqual(entries.map { $0.purpose.prefix(7) }, ["round 1", "round 1", "round 2", "round 3", "round 3", "round 4"],
                           "secure \(secure)")
            let releases = entries.filter { $0.samplingRate == 1 && $0.steps == 1 }
            XCTAssertEqual(releases.count, 2)
            XCTAssertTrue(releases.allSatisfy { $0.noiseMultiplier == TrainingPlan.defaultMetricsNoiseMultiplier })
            // The coordinator's preview and a client's `privacy plan` (the same projection over the same schedule)
            // against the ledger after every round.
            let cumulative = entries.reduce(into: [String: Double]()) { $0[String($1.purpose.prefix(7))] = $1.cumulativeEpsilon }
            let preview = try PlanPreview(policy: federation.engine.policy, count: 4, enrolled: ["a"])
            let ledger = try federation.clients["a"]!.ledger()
            let projection = try PrivacyPlanProjection.project(
                .dpsgd(samplingRate: plan.samplingRate, noiseMultiplier: plan.noiseMultiplier, steps: plan.steps),
                releasesInRound: { round in
                    ReleaseSchedule(interval: 2).asks(round: UInt64(round)) ? [MetricsRelease.mechanism(plan: self.plan)] : []
                }, rounds: 4, after: [], budget: ledger.budget)
            for round in 1...4 {
                let charged = try XCTUnwrap(cumulative["round \(round)"])
                XCTAssertEqual(preview.rounds[round - 1].epsilon, charged, accuracy: 1e-9, "secure \(secure), round \(round)")
                XCTAssertEqual(projection.rounds[round - 1].epsilon, charged, accuracy: 1e-9, "secure \(secure), round \(round)")
            }
            let everyRound = try PlanPreview(plan: plan, count: 4, enrolled: ["a"])
            XCTAssertGreaterThan(try XCTUnwrap(everyRound.totalEpsilon), try XCTUnwrap(preview.totalEpsilon) + 1e-6,
                                 "the skipped releases would have cost ε")
        }
    }

    /// A client that leaves out the release in a round that asked (round 1) is dropped with the reason, and one that sends
    /// a release in a round that asked for none (round 2) too; each is accepted in the other round (the controls).
    func testAReportThatDoesNotMatchTheRoundIsRefused() throws {
        let missing = "no held-out release in a round that asked for one"
        let unasked = "a held-out release in a round that asked for none"
        let release = InMemoryFederation.release(before: 3, after: 2.5, records: 100)
        for secure in [false, true] {
            for (tamper, refusedIn, reason) in [({ (m: inout ClientRoundMetrics) in m.heldOut = nil }, UInt64(1), missing),
                                                ({ (m: inout ClientRoundMetrics) in m.heldOut = release }, UInt64(2), unasked)] {
                let federation = try run(secure: secure, rounds: 2, minimum: 2, tamper: tamper)
                XCTAssertEqual(federation.finished.count, 2)
                for round in federation.finished {
                    let refused = round.outcome.round == refusedIn
                    let context = "secure \(secure), round \(round.outcome.round), \(reason)"
                    XCTAssertEqual(round.outcome.participantMetrics.contains { $0.client == "c" }, !refused, context)
                    XCTAssertEqual(round.outcome.dropouts.contains(ClientReason(client: "c", reason: reason)), refused,
                                   "\(context): \(round.outcome.dropouts)")
                }
            }
        }
    }
}
