import FederationProtocol
import Foundation
import ModelFormats
import Privacy
import SecureAggregation
import SecureCrypto
import SystemIO
import TestSupport
import Wire
import XCTest

/// The client's protocol state machine, driven with frames and with the driver's results: its
/// decisions (policy, secure session, charge, budget), and the messages and tensor sets it reads.
final class ClientAgentTests: XCTestCase {
    static let configuration = LlamaConfiguration(vocabSize: 64, hiddenSize: 16, intermediateSize: 32, numHiddenLayers: 2,
                                                  numAttentionHeads: 4, numKeyValueHeads: 2, maxPositionEmbeddings: 128)
    static let plan = TrainingPlan(steps: 3, learningRate: 0.01, samplingRate: 0.1, noiseMultiplier: 1.1, clipNorm: 0.5,
                                   delta: 1e-5, maxLength: 64, rank: 2, alpha: 4, targets: ["q_proj", "v_proj"])

    func layout() throws -> AdapterLayout { try AdapterLayout(configuration: Self.configuration, plan: Self.plan) }

    func tensors(_ value: Float) throws -> AdapterTensors {
        try layout().shapes.mapValues { shape in (0..<shape.reduce(1, *)).map { Float($0) * value } }
    }

    static let policy = ClientPolicy(maxEpsilon: 8, delta: 1e-5, maxStepsPerRound: 10)
    static let budget = PrivacyBudget(epsilon: 8, delta: 1e-5, accountant: .rdp)

    func agent(name: String = "clinic-1", policy: ClientPolicy = ClientAgentTests.policy,
               identity: SigningKeyPair = SigningKeyPair()) -> ClientAgent {
        ClientAgent(name: name, policy: policy, identity: identity) { plan in
            try AdapterLayout(configuration: Self.configuration, plan: plan)
        }
    }

    let release = HeldOutRelease(lossBefore: 51_200, lossAfter: 42_667, count: 102_400, lossClip: 6, noiseMultiplier: 5)

    func report(_ update: AdapterTensors) -> TrainingReport {
        TrainingReport(update: update, heldOut: release, evalLoss: (3, 2.5), evalTokens: 100, trainLoss: 2.7,
                       seconds: 4)
    }

    /// Feeds the invitation and the global adapter; returns the agent's answer to the last frame.
    func invite(_ a: inout ClientAgent, round: UInt64, global: AdapterTensors, plan: TrainingPlan = ClientAgentTests.plan)
        throws -> [ClientAgent.Action]
    {
        var message = invite(round: round, tensors: global)
        message.plan = plan
        var actions = try a.receive(message.frame())
        for frame in try TensorSetFrames.frames(round: round, kind: .globalAdapter, tensors: global) { actions += try a.receive(frame) }
        return actions
    }

    /// Invitation, preparation, charge and training of a plain round: the agent ends awaiting the result.
    func work(_ a: inout ClientAgent, round: UInt64, global: AdapterTensors) throws {
        _ = try invite(&a, round: round, global: global)
        _ = a.prepared(round: round, RoundPreparation(mechanism: MechanismSteps(samplingRate: 0.1, noiseMultiplier: 1.1, steps: 3),
                                                      examples: 20))
        _ = try a.ledgerAnswered(round: round, .charged(PrivacyReceipt(entry: nil, epsilon: 1.5, budget: Self.budget)))
        _ = try a.trainingFinished(round: round, report(global))
    }

    func invite(round: UInt64, tensors: AdapterTensors) -> Invite {
        Invite(round: round, plan: Self.plan, aggregation: "fedavg", secureAggregation: false,
               adapterSHA256: AdapterMath.digest(tensors), deadlineSeconds: 60)
    }

    func testLayoutNamesAndShapesFollowPEFT() throws {
        let l = try layout()
        XCTAssertEqual(l.shapes.count, 2 * 2 * 2)
        XCTAssertEqual(l.shapes["base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"], [2, 16])
        XCTAssertEqual(l.shapes["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"], [8, 2], "kv width 2 heads × 4")
    }

    func testAPlainRoundFromInvitationToCommit() throws {
        var a = agent()
        let global = try tensors(0.5)
        let message = invite(round: 4, tensors: global)
        XCTAssertTrue(try a.receive(message.frame()).isEmpty)
        XCTAssertEqual("\(a.state)", "receivingInvite(4)")
        XCTAssertEqual(a.pendingRound, 0)
        var actions: [ClientAgent.Action] = []
        for frame in try TensorSetFrames.frames(round: 4, kind: .globalAdapter, tensors: global) {
            actions += try a.receive(frame)
        }
        guard case let .prepare(4, plan, adapter)? = actions.first, actions.count == 1 else { return XCTFail("\(actions)") }
        XCTAssertEqual(plan, Self.plan)
        XCTAssertEqual(adapter, global)
        XCTAssertEqual("\(a.state)", "preparing(4)")
        XCTAssertEqual(a.pendingRound, 4)

        // The ledger is asked first, with the policy's ε as ceiling; nothing is sent yet.
        let mechanism = MechanismSteps(samplingRate: 0.1, noiseMultiplier: 1.1, steps: 3)
        actions = a.prepared(round: 4, RoundPreparation(mechanism: mechanism, examples: 20))
        guard case let .charge(4, request)? = actions.first, actions.count == 1 else { return XCTFail("\(actions)") }
        // The held-out release is charged in the same request: one Gaussian mechanism at the plan's z.
        XCTAssertEqual(request, ChargeRequest(mechanism: mechanism, clipNorm: 0.5, ceiling: 8,
                                              releases: [MechanismSteps(samplingRate: 1,
                                                                        noiseMultiplier: TrainingPlan.defaultMetricsNoiseMultiplier,
                                                                        steps: 1, noise: .discreteGaussian)]))
        XCTAssertEqual("\(a.state)", "charging(4)")

        // Charged: accept, then train.
        let budget = PrivacyBudget(epsilon: 20, delta: 1e-5, accountant: .rdp)
        actions = try a.ledgerAnswered(round: 4, .charged(PrivacyReceipt(entry: nil, epsilon: 1.25, budget: budget)))
        XCTAssertEqual(actions.count, 3, "\(actions)")
        guard case let .send(frames) = actions[0], case .log(let line) = actions[1], case .train(4) = actions[2] else {
            return XCTFail("\(actions)")
        }
        XCTAssertEqual(try frames.map { try Accept(frame: $0) }, [Accept(round: 4)])
        XCTAssertEqual(line, "round 4: accepted; 20 records, q 0.1000, σ 1.100, C 0.50, 3 steps; ε after 1.250 at δ 1e-05")
        XCTAssertEqual("\(a.state)", "training(4)")

        // Trained: the update goes up with metrics the agent fills from the ledger and the policy.
        let update = try tensors(0.01)
        actions = try a.trainingFinished(round: 4, report(update))
        guard case let .upload(4, sent, metrics)? = actions.first else { return XCTFail("\(actions)") }
        XCTAssertEqual(sent, update)
        XCTAssertEqual(metrics, ClientRoundMetrics(client: "clinic-1", epsilon: 1.25, delta: 1e-5, epsilonBudget: 8,
                                                   heldOut: release),
                       "the release as the driver made it; the budget reported is the smaller of the ledger's and the policy's")
        XCTAssertNil(metrics.clearFigures, "no exact count, loss or timing goes up")
        XCTAssertEqual("\(a.state)", "awaitingResult(4)")
        XCTAssertEqual(a.roundsEnded, 0)

        // The round commits: the new adapter follows the result and is kept.
        let next = try tensors(0.25)
        XCTAssertTrue(try a.receive(RoundResult(round: 4, committed: true, adapterSHA256: AdapterMath.digest(next),
                                                reason: "committed").frame()).isEmpty)
        XCTAssertEqual("\(a.state)", "receivingResult(4)")
        var committed: [ClientAgent.Action] = []
        for frame in try TensorSetFrames.frames(round: 4, kind: .globalAdapter, tensors: next) { committed += try a.receive(frame) }
        guard case let .keepCommitted(4, keptPlan, adapter2)? = committed.first else { return XCTFail("\(committed)") }
        XCTAssertEqual(keptPlan, Self.plan)
        XCTAssertEqual(adapter2, next)
        XCTAssertEqual("\(a.state)", "idle")
        XCTAssertEqual(a.roundsEnded, 1)
    }

    func testPolicyObjectionDeclinesBeforeAnyWork() throws {
        var a = agent()
        var plan = Self.plan
        plan.noiseMultiplier = 0
        let actions = try invite(&a, round: 2, global: try tensors(1), plan: plan)
        guard case let .decline(2, code, reason)? = actions.first, actions.count == 1 else { return XCTFail("\(actions)") }
        XCTAssertEqual(code, .policy)
        XCTAssertEqual(reason, "policy: the plan has no differential privacy (noise multiplier 0)")
        XCTAssertEqual("\(a.state)", "idle")
        XCTAssertEqual(a.roundsEnded, 1)
        XCTAssertEqual(a.pendingRound, 0)
    }

    func testBudgetRefusalsAndFailedPreparationDecline() throws {
        let global = try tensors(1)
        let mechanism = MechanismSteps(samplingRate: 0.1, noiseMultiplier: 1.1, steps: 3)
        func declineReason(_ answer: (inout ClientAgent) throws -> [ClientAgent.Action]) throws -> (DeclineCode, String)? {
            var a = agent()
            _ = try invite(&a, round: 7, global: global)
            let actions = try answer(&a)
            XCTAssertEqual("\(a.state)", "idle")
            XCTAssertEqual(a.roundsEnded, 1)
            guard case let .decline(7, code, reason)? = actions.first, actions.count == 1 else { return nil }
            return (code, reason)
        }
        func charged(_ outcome: PrivacyCharge) throws -> (DeclineCode, String)? {
            try declineReason { a in
                _ = a.prepared(round: 7, RoundPreparation(mechanism: mechanism, examples: 20))
                return try a.ledgerAnswered(round: 7, outcome)
            }
        }
        let ceiling = try charged(.refused(.overCeiling(projectedEpsilon: 9.1234, ceiling: 8, spentEpsilon: 7.5)))
        XCTAssertEqual(ceiling?.0, .privacyBudget)
        XCTAssertEqual(ceiling?.1, "privacy budget: this round would bring ε to 9.123, over the policy's 8.000 (7.500 spent)")
        // A ledger whose own budget is below what the round spends.
        var ledger = try PrivacyLedger(directory: try Fixtures.temporaryDirectory("agent-ledger"),
                                       creatingWith: PrivacyBudget(epsilon: 0.01, delta: 1e-5, accountant: .rdp))
        let refusal = try ledger.chargeBeforeTraining(mechanism, clipNorm: 0.5, purpose: "round 7")
        guard case let .refused(.overBudget(exceeded)) = refusal else { return XCTFail("\(refusal)") }
        XCTAssertEqual(try charged(refusal)?.0, .privacyBudget)
        XCTAssertEqual(try charged(refusal)?.1, "privacy budget: \(exceeded)")
        let data = try declineReason { $0.preparationFailed(round: 7, .data("no such file")) }
        XCTAssertEqual(data?.0, .data)
        XCTAssertEqual(data?.1, "data: no such file")
        let trainer = try declineReason { $0.preparationFailed(round: 7, .trainer("rank 9")) }
        XCTAssertEqual(trainer?.0, .cannotTrainOnThisPlan)
        XCTAssertEqual(trainer?.1, "cannot train on this plan: rank 9")
    }

    /// A secure invitation is declined before anything is charged when this client is not in the
    /// announced cohort, or is listed under another key.
    func testSecureSessionIsCheckedBeforeTheCharge() throws {
        let global = try tensors(1)
        let identity = SigningKeyPair()
        func attempt(members: [SecureRoundSetup.Member], threshold: UInt32 = 3) throws -> [ClientAgent.Action] {
            var a = agent(identity: identity)
            var message = invite(round: 3, tensors: global)
            message.secureAggregation = true
            let setup = SecureRoundSetup(round: 3, members: members, degree: 0, threshold: threshold, updateClip: 0.24,
                                         vectorLength: UInt64(global.values.reduce(1) { $0 + $1.count }))
            var actions = try a.receive(message.frame()) + a.receive(setup.frame())
            for frame in try TensorSetFrames.frames(round: 3, kind: .globalAdapter, tensors: global) { actions += try a.receive(frame) }
            return actions
        }
        let others = (2...3).map { SecureRoundSetup.Member(id: ParticipantID($0), name: "m\($0)", signingKey: SigningKeyPair().publicKey) }
        let outside = try attempt(members: others)
        guard case let .decline(3, .secureAggregation, reason)? = outside.first else { return XCTFail("\(outside)") }
        XCTAssertEqual(reason, "secure aggregation: this client is not in the announced cohort")
        let wrongKey = try attempt(members: [SecureRoundSetup.Member(id: 1, name: "clinic-1", signingKey: SigningKeyPair().publicKey)] + others)
        guard case let .decline(3, .secureAggregation, keyReason)? = wrongKey.first else { return XCTFail("\(wrongKey)") }
        XCTAssertTrue(keyReason.hasPrefix("secure aggregation: "), keyReason)
        let member = try attempt(members: [SecureRoundSetup.Member(id: 1, name: "clinic-1", signingKey: identity.publicKey)] + others)
        guard case .prepare(3, _, _)? = member.first else { return XCTFail("\(member)") }
        // A coordinator announcing t = 2 of 3 (withstands no colluder against a lying coordinator,
        // `CollusionResistance`) is declined before the charge, by the named error.
        let weak = try attempt(members: [SecureRoundSetup.Member(id: 1, name: "clinic-1", signingKey: identity.publicKey)] + others,
                               threshold: 2)
        guard case let .decline(3, .secureAggregation, weakReason)? = weak.first else { return XCTFail("\(weak)") }
        XCTAssertTrue(weakReason.contains("withstands 0 colluding clients"), weakReason)
    }

    func testTamperedAdapterIsRefused() throws {
        var a = agent()
        let global = try tensors(1)
        _ = try a.receive(invite(round: 1, tensors: global).frame())
        var frames = try TensorSetFrames.frames(round: 1, kind: .globalAdapter, tensors: global)
        // Change one value in the first chunk: the digest in TensorsDone no longer matches.
        var chunk = try TensorChunk(frame: frames[0])
        chunk.values[chunk.values.count - 1] += 1
        frames[0] = try chunk.frame()
        XCTAssertThrowsError(try frames.forEach { _ = try a.receive($0) }) { error in
            XCTAssertTrue("\(error)".contains("digest"), "\(error)")
        }
    }

    func testWrongShapesAndStrayFramesAreRefused() throws {
        var a = agent()
        XCTAssertThrowsError(try a.receive(TensorChunk(round: 1, name: "x", offset: 0, totalCount: 1, values: [1]).frame()))
        _ = try a.receive(invite(round: 2, tensors: try tensors(1)).frame())
        let name = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
        XCTAssertThrowsError(try a.receive(TensorChunk(round: 2, name: name, offset: 0, totalCount: 1_000_000,
                                                       values: [1]).frame())) { error in
            XCTAssertTrue("\(error)".contains("expected 32"), "\(error)")
        }
        XCTAssertThrowsError(try a.receive(TensorChunk(round: 2, name: "unknown.weight", offset: 0, totalCount: 1,
                                                       values: [1]).frame()))
        XCTAssertThrowsError(try a.receive(Accept(round: 2).frame()), "a client never receives accept")
    }

    func testAbortAndLostConnection() throws {
        var a = agent()
        let global = try tensors(1)
        _ = try a.receive(invite(round: 3, tensors: global).frame())
        a.connectionLost()
        XCTAssertEqual("\(a.state)", "idle", "a half-received invitation is forgotten")
        try work(&a, round: 4, global: global)
        a.connectionLost()
        XCTAssertEqual(a.pendingRound, 4, "the round stays pending so the coordinator can say how it ended")
        let actions = try a.receive(RoundResult(round: 4, committed: false, adapterSHA256: "",
                                                reason: "the coordinator stopped while the round was in flight").frame())
        guard case let .roundOver(round, reason)? = actions.first else { return XCTFail("\(actions)") }
        XCTAssertEqual(round, 4)
        XCTAssertTrue(reason.contains("coordinator stopped"))
        XCTAssertEqual("\(a.state)", "idle")
        XCTAssertEqual(a.roundsEnded, 1)

        // Lost in the middle of the work (the upload failed): pending too, and a new invitation is welcome
        // once the coordinator has said the round is over.
        _ = try invite(&a, round: 5, global: global)
        _ = a.prepared(round: 5, RoundPreparation(mechanism: nil, examples: 20))
        XCTAssertEqual("\(a.state)", "charging(5)")
        a.connectionLost()
        XCTAssertEqual(a.pendingRound, 5)
        _ = try a.receive(RoundResult(round: 5, committed: false, adapterSHA256: "", reason: "aborted").frame())
        XCTAssertEqual("\(a.state)", "idle")
        XCTAssertTrue(try a.receive(invite(round: 6, tensors: global).frame()).isEmpty)
        XCTAssertEqual("\(a.state)", "receivingInvite(6)")

        // A new invitation while awaiting a result ends the old round for this client.
        var b = agent()
        try work(&b, round: 8, global: global)
        let superseded = try b.receive(invite(round: 9, tensors: global).frame())
        guard case let .roundOver(8, why)? = superseded.first else { return XCTFail("\(superseded)") }
        XCTAssertEqual(why, "a new round started")
        XCTAssertEqual(b.roundsEnded, 1)
        XCTAssertEqual("\(b.state)", "receivingInvite(9)")
    }

    func testMessagesRoundTripAndCheckTheirFields() throws {
        let global = try tensors(1)
        let message = invite(round: 9, tensors: global)
        XCTAssertEqual(try Invite(frame: message.frame()), message)
        var bad = message
        bad.plan.samplingRate = 2
        XCTAssertThrowsError(try Invite(frame: bad.frame())) { error in
            XCTAssertTrue("\(error)".contains("sampling_rate"), "\(error)")
        }
        let metrics = ClientRoundMetrics(client: "x", epsilon: 1, delta: 1e-5, epsilonBudget: 8, heldOut: release)
        XCTAssertEqual(try MetricsReport(frame: MetricsReport(round: 1, metrics: metrics).frame()).metrics, metrics)
        var negative = metrics
        negative.epsilon = -1
        XCTAssertThrowsError(try MetricsReport(frame: MetricsReport(round: 1, metrics: negative).frame()))
        var unreleased = metrics
        unreleased.heldOut?.noiseMultiplier = 0
        XCTAssertThrowsError(try MetricsReport(frame: MetricsReport(round: 1, metrics: unreleased).frame())) { error in
            XCTAssertTrue("\(error)".contains("heldOut"), "\(error)")
        }
        let hello = Hello(client: "clinic-1", software: "conclave-client 0.1", pendingRound: 3)
        XCTAssertEqual(try Hello(frame: hello.frame()), hello)
    }

    func testClientPolicyObjections() {
        let policy = ClientPolicy(maxEpsilon: 8, delta: 1e-5, maxStepsPerRound: 10)
        XCTAssertNil(policy.objection(to: Self.plan))
        var plan = Self.plan
        plan.noiseMultiplier = 0
        XCTAssertEqual(policy.objection(to: plan), "policy: the plan has no differential privacy (noise multiplier 0)")
        plan = Self.plan
        plan.delta = 1e-3
        XCTAssertNotNil(policy.objection(to: plan))
        plan = Self.plan
        plan.steps = 11
        XCTAssertEqual(policy.objection(to: plan), "policy: the plan asks 11 steps, this client trains at most 10 per round")
    }
}
