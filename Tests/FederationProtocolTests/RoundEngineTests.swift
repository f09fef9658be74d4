import FederationProtocol
import Foundation
import SystemIO
import Wire
import XCTest

/// The round engine driven directly: no sockets, no clock but the one the test moves.
final class RoundEngineTests: XCTestCase {
    static let plan = TrainingPlan(steps: 4, learningRate: 0.002, samplingRate: 0.05, noiseMultiplier: 1.0, clipNorm: 1.0,
                                   delta: 1e-5, maxLength: 256, rank: 4, alpha: 8, targets: ["q_proj", "v_proj"])

    func policy(min: Int = 2, max: Int = 3, fraction: Double = 1) -> RoundPolicy {
        RoundPolicy(minClients: min, maxClients: max, fraction: fraction, aggregation: .fedavg, secureAggregation: false,
                    inviteTimeout: 10, roundTimeout: 100, waitForClients: 30, plan: Self.plan)
    }

    /// A deterministic choice: the first `count` clients in order.
    func engine(_ policy: RoundPolicy, next: UInt64 = 1) -> RoundEngine {
        RoundEngine(policy: policy, nextRound: next) { clients, count in Array(clients.prefix(count)) }
    }

    let t0 = Date(timeIntervalSince1970: 1_000_000)

    func update(_ client: String, examples: Int = 10) -> ReceivedUpdate {
        ReceivedUpdate(delta: ["t": [1]], metrics: ClientRoundMetrics(
            client: client, epsilon: 1.5, delta: 1e-5, epsilonBudget: 8,
            heldOut: HeldOutRelease(lossBefore: Int64(examples) * 512, lossAfter: Int64(examples) * 427,
                                    count: Int64(examples) * 1024, lossClip: 6, noiseMultiplier: 5)))
    }

    func invites(_ actions: [RoundEngine.Action]) -> [String] {
        actions.compactMap { if case let .invite(client, _) = $0 { return client } else { return nil } }
    }

    func outcome(_ actions: [RoundEngine.Action]) -> RoundOutcome? {
        for action in actions { if case let .finish(outcome) = action { return outcome } }
        return nil
    }

    func testFullRoundCommitsWithEveryUpdate() {
        var e = engine(policy())
        _ = e.connect("a", now: t0)
        _ = e.connect("b", now: t0)
        _ = e.connect("c", now: t0)
        let started = e.requestRounds(1, now: t0)
        guard case let .beginRound(round, _, cohort, _)? = started.first else { return XCTFail("no beginRound first: \(started)") }
        XCTAssertEqual(round, 1)
        XCTAssertEqual(cohort, ["a", "b", "c"])
        XCTAssertEqual(invites(started), ["a", "b", "c"])
        XCTAssertEqual(e.phase, .training)
        for client in ["a", "b", "c"] { _ = e.accept(client, round: 1, now: t0) }
        XCTAssertNil(outcome(e.upload("a", round: 1, update: update("a"), now: t0)))
        XCTAssertNil(outcome(e.upload("b", round: 1, update: update("b"), now: t0)))
        let done = outcome(e.upload("c", round: 1, update: update("c"), now: t0))
        XCTAssertEqual(done?.isCommitted, true)
        XCTAssertEqual(done?.updates.map(\.client), ["a", "b", "c"])
        XCTAssertEqual(e.phase, .finishing)
        _ = e.roundFinished(round: 1, verdict: .committed, now: t0)
        XCTAssertEqual(e.phase, .idle)
        XCTAssertEqual(e.nextRound, 2)
    }

    func testDeclineAndDisconnectStillCommitWithEnoughSurvivors() {
        var e = engine(policy(min: 1))
        for c in ["a", "b", "c"] { _ = e.connect(c, now: t0) }
        _ = e.requestRounds(1, now: t0)
        _ = e.decline("a", round: 1, reason: "privacy budget: spent", now: t0)
        _ = e.accept("b", round: 1, now: t0)
        _ = e.accept("c", round: 1, now: t0)
        _ = e.disconnect("b", now: t0)
        let done = outcome(e.upload("c", round: 1, update: update("c"), now: t0))
        XCTAssertEqual(done?.isCommitted, true)
        XCTAssertEqual(done?.declines, [ClientReason(client: "a", reason: "privacy budget: spent")])
        XCTAssertEqual(done?.dropouts, [ClientReason(client: "b", reason: "disconnected")])
        XCTAssertEqual(done?.updates.map(\.client), ["c"])
    }

    func testTooFewSurvivorsAbortsAndRevealsNoUpdate() {
        var e = engine(policy(min: 2))
        for c in ["a", "b"] { _ = e.connect(c, now: t0) }
        _ = e.requestRounds(1, now: t0)
        _ = e.accept("a", round: 1, now: t0)
        _ = e.accept("b", round: 1, now: t0)
        _ = e.upload("a", round: 1, update: update("a"), now: t0)
        let done = outcome(e.disconnect("b", now: t0))
        XCTAssertEqual(done?.isCommitted, false)
        XCTAssertEqual(done?.abortReason, "too few survivors: 1 update of the minimum 2")
        XCTAssertEqual(done?.updates.count, 0, "an aborted round hands no update to aggregation")
    }

    func testDeadlinesDropStragglers() {
        var e = engine(policy(min: 1))
        for c in ["a", "b", "c"] { _ = e.connect(c, now: t0) }
        _ = e.requestRounds(1, now: t0)
        _ = e.accept("a", round: 1, now: t0)
        _ = e.accept("b", round: 1, now: t0)
        // c never answers: dropped at the invite deadline (10 s), not before.
        XCTAssertTrue(e.tick(now: t0.addingTimeInterval(9)).isEmpty)
        let atInvite = e.tick(now: t0.addingTimeInterval(10))
        XCTAssertTrue(atInvite.contains { if case .dismiss("c", 1, _) = $0 { return true } else { return false } })
        _ = e.upload("a", round: 1, update: update("a"), now: t0.addingTimeInterval(50))
        // b accepted but never uploads: dropped at the round deadline (100 s); the round commits with a.
        let atRound = e.tick(now: t0.addingTimeInterval(100))
        let done = outcome(atRound)
        XCTAssertEqual(done?.isCommitted, true)
        XCTAssertEqual(done?.dropouts.map(\.client), ["c", "b"])
        XCTAssertEqual(done?.dropouts.last?.reason, "no update within the round's 100 s")
    }

    func testWaitsForClientsThenStartsOrGivesUp() {
        var e = engine(policy(min: 2))
        _ = e.connect("a", now: t0)
        XCTAssertTrue(invites(e.requestRounds(2, now: t0)).isEmpty)
        XCTAssertEqual(e.phase, .waitingForClients)
        // A second client arrives in time: the round starts.
        XCTAssertEqual(invites(e.connect("b", now: t0.addingTimeInterval(5))), ["a", "b"])
        for c in ["a", "b"] { _ = e.accept(c, round: 1, now: t0) }
        _ = e.upload("a", round: 1, update: update("a"), now: t0)
        _ = e.upload("b", round: 1, update: update("b"), now: t0)
        // Round 2 is queued; b leaves, so it waits, then gives up after wait_for_clients (30 s).
        _ = e.disconnect("b", now: t0.addingTimeInterval(6))
        XCTAssertTrue(invites(e.roundFinished(round: 1, verdict: .committed, now: t0.addingTimeInterval(6))).isEmpty)
        XCTAssertEqual(e.phase, .waitingForClients)
        XCTAssertNil(outcome(e.tick(now: t0.addingTimeInterval(35))))
        let done = outcome(e.tick(now: t0.addingTimeInterval(36)))
        XCTAssertEqual(done?.round, 2)
        XCTAssertEqual(done?.isCommitted, false)
        XCTAssertEqual(done?.abortReason, "only 1 of the minimum 2 clients connected within 30 s")
    }

    func testMessagesForOtherRoundsOrStrangersAreIgnored() {
        var e = engine(policy(min: 1, max: 1))
        for c in ["a", "b"] { _ = e.connect(c, now: t0) }
        _ = e.requestRounds(1, now: t0)  // cohort: a only (max 1)
        _ = e.accept("b", round: 1, now: t0)
        XCTAssertNil(outcome(e.upload("b", round: 1, update: update("b"), now: t0)), "b was not invited")
        _ = e.accept("a", round: 1, now: t0)
        XCTAssertNil(outcome(e.upload("a", round: 7, update: update("a"), now: t0)), "wrong round")
        XCTAssertEqual(outcome(e.upload("a", round: 1, update: update("a"), now: t0))?.updates.map(\.client), ["a"])
    }

    func testCohortFollowsFractionWithinBounds() {
        var e = engine(policy(min: 2, max: 4, fraction: 0.5))
        for i in 0..<10 { _ = e.connect("c\(i)", now: t0) }
        XCTAssertEqual(invites(e.requestRounds(1, now: t0)).count, 4, "half of 10 is 5, capped at max 4")
        var f = engine(policy(min: 3, max: 10, fraction: 0.1))
        for i in 0..<10 { _ = f.connect("c\(i)", now: t0) }
        XCTAssertEqual(invites(f.requestRounds(1, now: t0)).count, 3, "a tenth of 10 is 1, raised to min 3")
    }

    func results(_ actions: [RoundEngine.Action]) -> [(client: String, result: RoundResult)] {
        actions.compactMap { if case let .tellResult(client, result) = $0 { return (client, result) } else { return nil } }
    }

    /// A client reconnecting after it lost its connection during a round hears how that round ended:
    /// committed (with the adapter to fetch), aborted and why, still in flight (it was dropped), or unknown.
    func testReconnectingClientHearsHowItsRoundEnded() throws {
        var e = RoundEngine(policy: policy(min: 1), nextRound: 5,
                            pastRounds: [3: .committed, 4: .aborted(reason: "too few survivors: 0 updates of the minimum 1")]) {
            clients, count in Array(clients.prefix(count))
        }
        e.setGlobalAdapter(digest: "digest-after-3", parameterCount: 8)
        let committed = e.connect("a", now: t0, pendingRound: 3)
        guard case .tellResult("a", RoundResult(round: 3, committed: true, adapterSHA256: "digest-after-3", reason: "committed"))?
                = committed.first else { return XCTFail("the result does not come first: \(committed)") }
        XCTAssertEqual(results(e.connect("b", now: t0, pendingRound: 4)).map(\.result),
                       [RoundResult(round: 4, committed: false, adapterSHA256: "", reason: "too few survivors: 0 updates of the minimum 1")])
        XCTAssertEqual(results(e.connect("c", now: t0, pendingRound: 9)).map(\.result.reason), ["round 9 is unknown to the coordinator"])
        XCTAssertTrue(results(e.connect("d", now: t0)).isEmpty, "a client without a pending round hears nothing")

        _ = e.requestRounds(1, now: t0)
        XCTAssertEqual(e.currentRound, 5)
        _ = e.disconnect("a", now: t0)
        let back = results(e.connect("a", now: t0, pendingRound: 5))
        XCTAssertEqual(back.map(\.result), [RoundResult(round: 5, committed: false, adapterSHA256: "",
                                                         reason: "dropped from round 5: the connection was lost")])
    }

    /// The driver's verdict decides what the cohort hears: the engine's committed outcome is told as
    /// committed with the new adapter, unless the driver's work failed; decliners hear nothing, and a
    /// later reconnect hears the same verdict.
    func testCohortHearsTheDriversVerdictButDeclinersDoNot() {
        for verdict in [RoundVerdict.committed, .aborted(reason: "the audit record could not be written")] {
            var e = engine(policy(min: 1))
            for c in ["a", "b", "c"] { _ = e.connect(c, now: t0) }
            _ = e.requestRounds(2, now: t0)
            _ = e.decline("c", round: 1, reason: "privacy budget: spent", now: t0)
            for c in ["a", "b"] { _ = e.accept(c, round: 1, now: t0) }
            _ = e.upload("a", round: 1, update: update("a"), now: t0)
            XCTAssertEqual(outcome(e.upload("b", round: 1, update: update("b"), now: t0))?.isCommitted, true)
            XCTAssertEqual(e.phase, .finishing)
            XCTAssertTrue(invites(e.requestRounds(0, now: t0)).isEmpty, "no round starts while one is finishing")

            if verdict.isCommitted { e.setGlobalAdapter(digest: "digest-after-1", parameterCount: 8) }
            let finished = e.roundFinished(round: 1, verdict: verdict, now: t0)
            let told = results(finished)
            XCTAssertEqual(told.map(\.client), ["a", "b"])
            let expected = RoundResult(round: 1, committed: verdict.isCommitted,
                                       adapterSHA256: verdict.isCommitted ? "digest-after-1" : "", reason: verdict.reason)
            XCTAssertEqual(told.map(\.result), [expected, expected])
            XCTAssertEqual(invites(finished), ["a", "b", "c"], "the queued round starts after the results")
            _ = e.disconnect("c", now: t0)
            XCTAssertEqual(results(e.connect("c", now: t0, pendingRound: 1)).map(\.result), [expected])
        }
    }

    /// `queued` counts the round waiting for clients, so the first number of the next request is
    /// right in every phase; cancelling leaves the waiting round, which gives up on its own.
    func testQueuedRoundsCountTheOneWaitingForClients() {
        var e = engine(policy(min: 2))
        _ = e.connect("a", now: t0)
        XCTAssertEqual(e.firstUnrequestedRound, 1)
        _ = e.requestRounds(3, now: t0)
        XCTAssertEqual(e.phase, .waitingForClients)
        XCTAssertEqual(e.queued, 3)
        XCTAssertEqual(e.status.queuedRounds, 3)
        XCTAssertEqual(e.firstUnrequestedRound, 4)
        e.cancelQueued()
        XCTAssertEqual(e.queued, 1, "the round waiting for clients runs on")
        XCTAssertEqual(e.phase, .waitingForClients)
        let done = outcome(e.tick(now: t0.addingTimeInterval(30)))
        XCTAssertEqual(done?.round, 1)
        XCTAssertEqual(e.queued, 0)
        XCTAssertEqual(e.firstUnrequestedRound, 2)
        XCTAssertNil(e.currentRound, "a round given up before inviting anyone is not in flight")
        XCTAssertTrue(results(e.roundFinished(round: 1, verdict: .aborted(reason: done?.abortReason ?? ""), now: t0)).isEmpty,
                      "nobody was invited, nobody is told")
        XCTAssertEqual(e.phase, .idle)
        // Started in training, a request's first round follows the one in flight.
        _ = e.connect("b", now: t0)
        _ = e.requestRounds(1, now: t0)
        XCTAssertEqual(e.phase, .training)
        XCTAssertEqual(e.firstUnrequestedRound, 3)
    }

    /// `status` shows the round in flight, with who answered, from its invitations until the driver
    /// has finished it.
    func testStatusShowsTheRoundUntilTheDriverFinishesIt() {
        var e = engine(policy(min: 1))
        for c in ["a", "b"] { _ = e.connect(c, now: t0) }
        XCTAssertNil(e.status.inFlight)
        _ = e.requestRounds(1, now: t0)
        _ = e.accept("a", round: 1, now: t0)
        _ = e.decline("b", round: 1, reason: "busy", now: t0)
        var status = e.status
        XCTAssertEqual(status.phase, .training)
        XCTAssertEqual(status.inFlight?.round, 1)
        XCTAssertEqual(status.inFlight?.cohort, ["a", "b"])
        XCTAssertEqual(status.inFlight?.accepted, ["a"])
        XCTAssertEqual(status.inFlight?.declined, [ClientReason(client: "b", reason: "busy")])
        XCTAssertNil(status.inFlight?.secureStage)
        _ = e.upload("a", round: 1, update: update("a"), now: t0)
        status = e.status
        XCTAssertEqual(status.phase, .finishing)
        XCTAssertEqual(status.inFlight?.uploaded, ["a"])
        _ = e.roundFinished(round: 1, verdict: .committed, now: t0)
        XCTAssertEqual(e.status.phase, .idle)
        XCTAssertNil(e.status.inFlight)
    }

    /// A plain round's invitation carries the policy's plan and deadline and the adapter's digest.
    func testInvitationNamesThePlanAndTheGlobalAdapter() {
        var e = engine(policy())
        e.setGlobalAdapter(digest: "abc", parameterCount: 3)
        XCTAssertEqual(e.invitation(round: 7), Invite(round: 7, plan: Self.plan, aggregation: "fedavg", secureAggregation: false,
                                                      adapterSHA256: "abc", deadlineSeconds: 100))
    }

    /// The audit record's figures: the mean per-record loss over the participants' releases (sums over
    /// counts, post-processing), clamped to [0, L], its standard error from the noise, the largest ε;
    /// no loss when the released count is not positive.
    func testRoundFiguresPoolTheReleasesAndStateTheirNoise() {
        let s = Double(HeldOutRelease.gridScale)
        func metrics(_ before: Double, _ after: Double, records: Int64, epsilon: Double) -> ClientRoundMetrics {
            ClientRoundMetrics(client: "c", epsilon: epsilon, delta: 1e-5, epsilonBudget: 8,
                               heldOut: HeldOutRelease(lossBefore: Int64(Double(records) * s * before / 6),
                                                       lossAfter: Int64(Double(records) * s * after / 6),
                                                       count: records * HeldOutRelease.gridScale, lossClip: 6, noiseMultiplier: 5))
        }
        let figures = RoundFigures(participants: [metrics(3, 2, records: 100, epsilon: 1.5), metrics(4, 1, records: 300, epsilon: 2.5)])
        XCTAssertEqual(figures.evalLossBefore ?? 0, (3 * 100 + 4 * 300) / 400.0, accuracy: 1e-3)
        XCTAssertEqual(figures.evalLossAfter ?? 0, (2 * 100 + 1 * 300) / 400.0, accuracy: 1e-3)
        // se = L·√(σ₁² + σ₂²)·√(1 + m²)/C, σ = z·√3·S, m = the larger mean over L, C = 400·S.
        let sigma = 5 * 3.0.squareRoot() * s
        let m = 3.75 / 6
        XCTAssertEqual(figures.evalLossStandardError ?? 0, 6 * (2 * sigma * sigma).squareRoot() * (1 + m * m).squareRoot() / (400 * s),
                       accuracy: 1e-4)
        XCTAssertEqual(figures.maxEpsilon, 2.5)
        // Noise can take a small split's count below zero: no loss then, and a mean outside [0, L] is clamped.
        var empty = metrics(3, 2, records: 1, epsilon: 1)
        empty.heldOut?.count = -5
        XCTAssertNil(RoundFigures(participants: [empty]).evalLossBefore)
        XCTAssertEqual(RoundFigures(participants: [empty]).maxEpsilon, 1)
        var wild = metrics(3, 2, records: 10, epsilon: 1)
        wild.heldOut?.lossBefore = -40_000
        wild.heldOut?.lossAfter = 900_000
        XCTAssertEqual(RoundFigures(participants: [wild]).evalLossBefore, 0)
        XCTAssertEqual(RoundFigures(participants: [wild]).evalLossAfter, 6)
        XCTAssertNil(RoundFigures(participants: []).maxEpsilon)
    }

    func testPolicyValidationNamesTheField() {
        var bad = policy()
        bad.maxClients = 1
        XCTAssertThrowsError(try bad.validate(path: "c.json")) { error in
            XCTAssertEqual("\(error)", "c.json: field 'max_clients': must be at least min_clients (2), got 1")
        }
        var badPlan = policy()
        badPlan.plan.samplingRate = 0
        XCTAssertThrowsError(try badPlan.validate(path: "c.json")) { error in
            XCTAssertTrue("\(error)".contains("plan.sampling_rate"), "\(error)")
        }
    }
}
