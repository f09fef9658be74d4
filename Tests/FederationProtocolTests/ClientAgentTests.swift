import FederationProtocol
import Foundation
import ModelFormats
import SystemIO
import Wire
import XCTest

/// The client's protocol state machine, and the messages and tensor sets it reads, driven with frames.
final class ClientAgentTests: XCTestCase {
    static let configuration = LlamaConfiguration(vocabSize: 64, hiddenSize: 16, intermediateSize: 32, numHiddenLayers: 2,
                                                  numAttentionHeads: 4, numKeyValueHeads: 2, maxPositionEmbeddings: 128)
    static let plan = TrainingPlan(steps: 3, learningRate: 0.01, samplingRate: 0.1, noiseMultiplier: 1.1, clipNorm: 0.5,
                                   delta: 1e-5, maxLength: 64, rank: 2, alpha: 4, targets: ["q_proj", "v_proj"])

    func layout() throws -> AdapterLayout { try AdapterLayout(configuration: Self.configuration, plan: Self.plan) }

    func tensors(_ value: Float) throws -> AdapterTensors {
        try layout().shapes.mapValues { shape in (0..<shape.reduce(1, *)).map { Float($0) * value } }
    }

    func agent() -> ClientAgent {
        ClientAgent { plan in try AdapterLayout(configuration: Self.configuration, plan: plan) }
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

    func testInviteThenGlobalAdapterAsksToWork() throws {
        var a = agent()
        let global = try tensors(0.5)
        let message = invite(round: 4, tensors: global)
        XCTAssertTrue(try a.receive(message.frame()).isEmpty)
        XCTAssertEqual(a.state, .receivingInvite(4))
        var actions: [ClientAgent.Action] = []
        for frame in try TensorSetFrames.frames(round: 4, kind: .globalAdapter, tensors: global) {
            actions += try a.receive(frame)
        }
        guard case let .invited(received, adapter)? = actions.first else { return XCTFail("\(actions)") }
        XCTAssertEqual(received, message)
        XCTAssertEqual(adapter, global)
        XCTAssertEqual(a.state, .working(4))
        XCTAssertEqual(a.pendingRound, 4)
        a.finishedWork(round: 4, uploaded: true)
        XCTAssertEqual(a.state, .awaitingResult(4))

        // The round commits: the new adapter follows the result and is kept.
        let next = try tensors(0.25)
        XCTAssertTrue(try a.receive(RoundResult(round: 4, committed: true, adapterSHA256: AdapterMath.digest(next),
                                                reason: "committed").frame()).isEmpty)
        var committed: [ClientAgent.Action] = []
        for frame in try TensorSetFrames.frames(round: 4, kind: .globalAdapter, tensors: next) { committed += try a.receive(frame) }
        guard case let .committed(result, adapter2)? = committed.first else { return XCTFail("\(committed)") }
        XCTAssertEqual(result.round, 4)
        XCTAssertEqual(adapter2, next)
        XCTAssertEqual(a.state, .idle)
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
        XCTAssertEqual(a.state, .idle, "a half-received invitation is forgotten")
        _ = try a.receive(invite(round: 4, tensors: global).frame())
        for frame in try TensorSetFrames.frames(round: 4, kind: .globalAdapter, tensors: global) { _ = try a.receive(frame) }
        a.finishedWork(round: 4, uploaded: true)
        a.connectionLost()
        XCTAssertEqual(a.pendingRound, 4, "the round stays pending so the coordinator can say how it ended")
        let actions = try a.receive(RoundResult(round: 4, committed: false, adapterSHA256: "",
                                                reason: "the coordinator stopped while the round was in flight").frame())
        guard case let .roundOver(round, reason)? = actions.first else { return XCTFail("\(actions)") }
        XCTAssertEqual(round, 4)
        XCTAssertTrue(reason.contains("coordinator stopped"))
        XCTAssertEqual(a.state, .idle)

        // Lost in the middle of the work (the upload failed): pending too, and a new invitation is welcome
        // once the coordinator has said the round is over.
        _ = try a.receive(invite(round: 5, tensors: global).frame())
        for frame in try TensorSetFrames.frames(round: 5, kind: .globalAdapter, tensors: global) { _ = try a.receive(frame) }
        XCTAssertEqual(a.state, .working(5))
        a.connectionLost()
        XCTAssertEqual(a.pendingRound, 5)
        _ = try a.receive(RoundResult(round: 5, committed: false, adapterSHA256: "", reason: "aborted").frame())
        XCTAssertEqual(a.state, .idle)
        XCTAssertTrue(try a.receive(invite(round: 6, tensors: global).frame()).isEmpty)
        XCTAssertEqual(a.state, .receivingInvite(6))
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
        let metrics = ClientRoundMetrics(client: "x", examples: 5, evalLossBefore: 3, evalLossAfter: 2, evalTokens: 10,
                                         epsilon: 1, delta: 1e-5, epsilonBudget: 8, trainLoss: 2.5, seconds: 3)
        XCTAssertEqual(try MetricsReport(frame: MetricsReport(round: 1, metrics: metrics).frame()).metrics, metrics)
        var negative = metrics
        negative.epsilon = -1
        XCTAssertThrowsError(try MetricsReport(frame: MetricsReport(round: 1, metrics: negative).frame()))
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
