import FederationHarness
import FederationProtocol
import Foundation
import ModelFormats
import Privacy
import SecureAggregation
import SecureCrypto
import TestSupport
import Wire
import XCTest

/// Issue 13, "What must hold": no field of any message a client sends depends on its private data
/// except through an accounted mechanism. This test walks every field of every message type a client
/// sends, as the coordinator decodes it, and names the mechanism that covers it. A field added
/// without a classification (or a message type added without a verdict) fails it; the controls below
/// show that the walk sees such a field. SECURITY.md, "What a client sends", is this table in prose.
final class ClientMessageFieldTests: XCTestCase {
    /// Why a field may leave the client.
    enum Mechanism: String {
        /// The same for every dataset: protocol constants, the client's enrolled name, its software.
        case publicConstant = "public constant"
        /// Chosen by the coordinator (round ids, the plan and its layout) and echoed back.
        case fromPlan = "from the plan"
        /// The client's ledger: ε composed from the mechanisms it was charged for and its budget, which
        /// depend on the plans it accepted and its operator's settings, never on its records.
        case ledger = "ledger (mechanism parameters, not records)"
        /// Released with noise and charged to the ledger before training: the DP-SGD update (plain
        /// rounds) and the held-out metrics release.
        case dpReleased = "DP-released and charged"
        /// A deterministic function of DP-released values and public or random inputs (digests of the
        /// DP update, canary exposure on the DP-trained global adapter with the client's random secrets).
        case postProcessing = "post-processing of DP outputs"
        /// Masked (uniform modulo 2^32 on its own); the coordinator learns only the sum over survivors,
        /// of DP-SGD outputs and a constant participation word.
        case maskedAndSummed = "masked and only summed"
        /// Fresh keys, signatures, session ids, encrypted or secret-shared key material: independent of data.
        case keyMaterial = "key material"
        /// One of a fixed set of codes (helper "declines" makes the text a code; the details stay in the client's log).
        case fixedCode = "fixed code"
        /// Always empty from a client: ClientUplink refuses a client's abort whose detail holds text
        /// (only the coordinator's own aborts carry one); checked here on what clients send.
        case emptyFromClient = "empty from a client"
        /// Never on the wire: nil in every message the coordinator decodes (checked).
        case notSent = "not sent"
    }

    /// Every client → coordinator message type, and each field's mechanism, by its path in the decoded message.
    static let clientMessages: [MessageType: [String: Mechanism]] = [
        .hello: ["client": .publicConstant, "software": .publicConstant, "pendingRound": .fromPlan,
                 "signingKey": .keyMaterial],
        .accept: ["round": .fromPlan],
        .decline: ["round": .fromPlan, "code": .fixedCode],
        .abort: ["round": .fromPlan, "code": .fixedCode, "detail": .emptyFromClient],
        .tensorChunk: ["round": .fromPlan, "name": .fromPlan, "offset": .fromPlan, "totalCount": .fromPlan,
                       "values": .dpReleased],
        .tensorsDone: ["round": .fromPlan, "kind": .publicConstant, "tensorCount": .fromPlan, "sha256": .postProcessing],
        .metrics: [
            "round": .fromPlan, "metrics.client": .publicConstant, "metrics.epsilon": .ledger, "metrics.delta": .ledger,
            "metrics.epsilonBudget": .ledger,
            "metrics.heldOut.lossBefore": .dpReleased, "metrics.heldOut.lossAfter": .dpReleased,
            "metrics.heldOut.count": .dpReleased, "metrics.heldOut.lossClip": .fromPlan,
            "metrics.heldOut.noiseMultiplier": .fromPlan,
            "metrics.canaryExposure.canaries": .publicConstant, "metrics.canaryExposure.repetitions": .publicConstant,
            "metrics.canaryExposure.meanBits": .postProcessing, "metrics.canaryExposure.maxBits": .postProcessing,
            "metrics.canaryExposure.spaceSize": .publicConstant, "metrics.canaryExposure.exact": .publicConstant,
            "metrics.canaryExposure.candidatesScored": .publicConstant, "metrics.canaryExposure.seconds": .notSent,
            "metrics.clearFigures": .notSent,
            // Distributed DP (issue 17): the client's policy (assume_honest) and the ε it was charged under it and
            // would be trusting no one, functions of the plan, the cohort and the policy.
            "metrics.trust.assumeHonest": .ledger, "metrics.trust.roundEpsilon": .ledger,
            "metrics.trust.roundEpsilonTrustingNoOne": .ledger, "metrics.trust.epsilonTrustingNoOne": .ledger,
            // The condition accuracy release (protocol 5): noised counts, and its z from the plan.
            "metrics.conditionAccuracy.correctBefore": .dpReleased, "metrics.conditionAccuracy.correctAfter": .dpReleased,
            "metrics.conditionAccuracy.count": .dpReleased, "metrics.conditionAccuracy.noiseMultiplier": .fromPlan,
        ],
        .secureAdvertise: ["round": .fromPlan, "advertisement.sessionID": .keyMaterial, "advertisement.sender": .fromPlan,
                           "advertisement.encryptionKey.bytes": .keyMaterial, "advertisement.maskingKey.bytes": .keyMaterial,
                           "advertisement.seedCommitment": .keyMaterial, "advertisement.signature": .keyMaterial],
        .secureShares: ["round": .fromPlan, "message.sessionID": .keyMaterial, "message.sender": .fromPlan,
                        "message.shares[].sender": .fromPlan, "message.shares[].recipient": .fromPlan,
                        "message.shares[].ciphertext": .keyMaterial],
        .secureMaskedInput: ["round": .fromPlan, "input.sessionID": .keyMaterial, "input.sender": .fromPlan,
                             "input.words": .maskedAndSummed],
        .secureConsistencySignature: ["round": .fromPlan, "signature.sessionID": .keyMaterial, "signature.sender": .fromPlan,
                                      "signature.signature": .keyMaterial],
        .secureUnmaskResponse: ["round": .fromPlan, "response.sessionID": .keyMaterial, "response.sender": .fromPlan,
                                "response.shares[].owner": .fromPlan, "response.shares[].kind": .fromPlan,
                                "response.shares[].share.index": .fromPlan, "response.shares[].share.threshold": .fromPlan,
                                "response.shares[].share.secretByteCount": .publicConstant,
                                "response.shares[].share.value": .keyMaterial],
    ]

    /// Message types only the coordinator sends.
    static let coordinatorMessages: Set<MessageType> = [.invite, .roundResult, .secureSetup, .secureAdvertisements,
                                                         .secureShareBundle, .secureConsistencyRequest, .secureUnmaskRequest]

    /// Types the walk treats as one field (opaque key material).
    static let opaqueTypes: Set<String> = ["SecretBytes"]

    /// The fields of a message: leaf paths (struct properties joined by ".", array elements as "[]"),
    /// and whether each leaf is nil. Optionals that hold a value are walked through.
    static func fields(of value: Any, path: String = "") -> [String: Bool] {
        let mirror = Mirror(reflecting: value)
        if mirror.displayStyle == .optional {
            guard let wrapped = mirror.children.first?.value else { return [path: true] }
            return fields(of: wrapped, path: path)
        }
        if opaqueTypes.contains(String(describing: type(of: value))) { return [path: false] }
        if mirror.displayStyle == .collection {
            var result: [String: Bool] = [:]
            let elements = mirror.children.map(\.value)
            // Arrays of numbers or bytes are one field; arrays of structures are walked element by element.
            guard let first = elements.first, Mirror(reflecting: first).displayStyle == .struct else { return [path: false] }
            for element in elements { result.merge(fields(of: element, path: path + "[]")) { $0 && $1 } }
            return result
        }
        guard mirror.displayStyle == .struct || mirror.displayStyle == .class, !mirror.children.isEmpty else {
            return [path: false]
        }
        var result: [String: Bool] = [:]
        for child in mirror.children {
            let name = child.label ?? "?"
            result.merge(fields(of: child.value, path: path.isEmpty ? name : path + "." + name)) { $0 && $1 }
        }
        return result
    }

    /// The problems of the decoded messages of one type against the table: fields no entry names
    /// (an absent optional structure is fine when the table names its fields), entries no message has,
    /// and "not sent" fields that arrived with a value.
    static func problems(_ messages: [Any], type: MessageType, table: [MessageType: [String: Mechanism]] = clientMessages) -> [String] {
        guard let classified = table[type] else { return ["\(type): no classification for this message type"] }
        var problems: Set<String> = []
        var seen: Set<String> = []
        for message in messages {
            for (path, isNil) in fields(of: message) {
                seen.insert(path)
                if let mechanism = classified[path] {
                    if mechanism == .notSent && !isNil { problems.insert("\(type).\(path): 'not sent' but it arrived with a value") }
                    if mechanism == .emptyFromClient, let abort = message as? Abort, !abort.detail.isEmpty {
                        problems.insert("\(type).\(path): 'empty from a client' but it holds text")
                    }
                } else if !(isNil && classified.keys.contains { $0.hasPrefix(path + ".") }) {
                    problems.insert("\(type).\(path): a field the client sends with no mechanism named")
                }
            }
        }
        for path in classified.keys where !seen.contains(path) {
            problems.insert("\(type).\(path): classified, but no message has such a field")
        }
        return problems.sorted()
    }

    /// Decodes a frame a client sent as the coordinator would.
    static func decode(_ frame: Frame) throws -> Any {
        switch frame.type {
        case .hello: return try Hello(frame: frame)
        case .accept: return try Accept(frame: frame)
        case .decline: return try Decline(frame: frame)
        case .abort: return try Abort(frame: frame)
        case .tensorChunk: return try TensorChunk(frame: frame)
        case .tensorsDone: return try TensorsDone(frame: frame)
        case .metrics: return try MetricsReport(frame: frame)
        case .secureAdvertise: return try SecureAdvertise(frame: frame)
        case .secureShares: return try SecureShares(frame: frame)
        case .secureMaskedInput: return try SecureMaskedInput(frame: frame)
        case .secureConsistencySignature: return try SecureConsistencySignature(frame: frame)
        case .secureUnmaskResponse: return try SecureUnmaskResponse(frame: frame)
        default: throw FederationError.peer("test", "a client sent \(frame.type), which only the coordinator sends")
        }
    }

    // MARK: The walk

    func testEveryMessageTypeIsClientOrCoordinatorSentAndNeverBoth() {
        let client = Set(Self.clientMessages.keys)
        XCTAssertEqual(client.intersection(Self.coordinatorMessages), [])
        XCTAssertEqual(client.union(Self.coordinatorMessages), Set(MessageType.allCases),
                       "a message type without a verdict: classify its fields here and in SECURITY.md")
    }

    /// Every frame the clients of a plain round (one declining) and of a secure round send, decoded by
    /// the coordinator's decoders, plus a hello and an abort: every field has a mechanism.
    func testEveryFieldOfEveryMessageAClientSendsHasAMechanism() throws {
        var frames = try framesSent(secure: false) + framesSent(secure: true)
        let key = SigningKeyPair()
        frames.append(try Hello(client: "a", software: "conclave 1", pendingRound: 3, signingKey: key.publicKey.bytes).frame())
        frames.append(try Abort(round: 2, code: .secureAggregation).frame())
        // A canary client's metrics (the harness's clients plant none) in a distributed round (its trust figures):
        // the exposure summary, its timing set
        // as the client's own measurement has it (the wire must drop it).
        let exposure = CanaryExposureSummary(canaries: 5, repetitions: 4, meanBits: 1.5, maxBits: 3.25, spaceSize: 1000,
                                             exact: true, candidatesScored: 999, seconds: 0.25)
        let release = InMemoryFederation.heldOut(plan: InMemoryFederationTests.plan)
        frames.append(try MetricsReport(round: 1, metrics: ClientRoundMetrics(client: "a", epsilon: 1, delta: 1e-5, epsilonBudget: 8,
                                                                               heldOut: release, canaryExposure: exposure,
                                                                               trust: DistributedTrustFigures(
                                                                                assumeHonest: 2, roundEpsilon: 0.5,
                                                                                roundEpsilonTrustingNoOne: 0.9,
                                                                                epsilonTrustingNoOne: 1.4),
                                                                               conditionAccuracy: ConditionAccuracyRelease(
                                                                                correctBefore: 2, correctAfter: 5, count: 9,
                                                                                noiseMultiplier: 5))).frame())
        XCTAssertEqual(Set(frames.map(\.type)), Set(Self.clientMessages.keys),
                       "every client message type is walked at least once")
        var problems: [String] = []
        for type in Set(frames.map(\.type)) {
            problems += Self.problems(try frames.filter { $0.type == type }.map(Self.decode), type: type)
        }
        XCTAssertEqual(problems.sorted(), [])
    }

    /// The metrics a client sends: no exact count, loss or timing, and the release's parameters are the plan's.
    func testMetricsCarryOnlyTheReleaseAndTheLedger() throws {
        let frames = try framesSent(secure: false).filter { $0.type == .metrics }
        XCTAssertFalse(frames.isEmpty)
        for frame in frames {
            let report = try MetricsReport(frame: frame)
            let heldOut = try XCTUnwrap(report.metrics.heldOut)
            XCTAssertEqual(heldOut.lossClip, InMemoryFederationTests.plan.metricsLossClip)
            XCTAssertEqual(heldOut.noiseMultiplier, InMemoryFederationTests.plan.metricsNoiseMultiplier)
            XCTAssertNil(report.metrics.clearFigures)
        }
    }

    // MARK: Positive controls: the walk sees what it must

    /// A message with a field the table does not name fails, and so does a classified field that is gone.
    func testAnUnclassifiedFieldFailsTheWalk() {
        struct Probe { var round: UInt64; var heldOutTokens: Int; var nested: Nested }
        struct Nested { var epsilon: Double; var examples: [Int] }
        let table: [MessageType: [String: Mechanism]] = [.metrics: ["round": .fromPlan, "nested.epsilon": .ledger,
                                                                    "gone": .fromPlan]]
        let problems = Self.problems([Probe(round: 1, heldOutTokens: 7, nested: Nested(epsilon: 1, examples: [1, 2]))],
                                     type: .metrics, table: table)
        XCTAssertEqual(problems, ["metrics.gone: classified, but no message has such a field",
                                  "metrics.heldOutTokens: a field the client sends with no mechanism named",
                                  "metrics.nested.examples: a field the client sends with no mechanism named"])
    }

    /// Today's table against a metrics report that still carried the old clear figures: the walk names
    /// each of them (and a 'not sent' field with a value).
    func testTheOldClearFiguresWouldFailTheWalk() throws {
        let json = #"{"client":"a","epsilon":1,"delta":1e-5,"epsilon_budget":10,"examples":120,"eval_loss_before":3.5,"#
            + #""eval_loss_after":3.4,"eval_tokens":900,"train_loss":3.1,"seconds":131.4}"#
        let old = try JSONDecoder().decode(ClientRoundMetrics.self, from: Data(json.utf8))
        let problems = Self.problems([MetricsReport(round: 1, metrics: old)], type: .metrics)
        for field in ["examples", "evalLossBefore", "evalLossAfter", "evalTokens", "trainLoss", "seconds"] {
            XCTAssertTrue(problems.contains("metrics.metrics.clearFigures.\(field): a field the client sends with no mechanism named"),
                          "\(field): \(problems)")
        }
    }

    // MARK: Frames from real agents

    /// The frames the clients of one in-memory round sent: three clients, one declining on its policy.
    func framesSent(secure: Bool) throws -> [Frame] {
        let model = InMemoryFederationTests.model, plan = InMemoryFederationTests.plan
        let layout = try AdapterLayout(configuration: model, plan: plan)
        let global = layout.shapes.mapValues { shape in (0..<shape.reduce(1, *)).map { Float($0 % 7) * 0.01 } }
        let strict = ClientPolicy(maxEpsilon: 50, delta: 1e-5, maxStepsPerRound: 1)
        let specs = try [("a", InMemoryFederationTests.policy), ("b", InMemoryFederationTests.policy),
                         ("c", InMemoryFederationTests.policy), ("d", strict)].map { name, policy in
            InMemoryFederation.ClientSpec(name: name, policy: policy, examples: 40,
                                          directory: try Fixtures.temporaryDirectory("fields-\(name)")) { _, global, round in
                InMemoryFederation.fixedUpdate(like: global, client: name, round: round)
            }
        }
        let federation = try InMemoryFederation(
            policy: RoundPolicy(minClients: 2, maxClients: 4, fraction: 1, aggregation: .fedavg, secureAggregation: secure,
                                inviteTimeout: 30, roundTimeout: 120, waitForClients: 60, plan: plan),
            model: model, global: global, clients: specs, now: Date(timeIntervalSince1970: 1_700_000_000))
        try federation.startRounds(1)
        XCTAssertEqual(federation.finished.first?.outcome.isCommitted, true)
        return federation.clients.values.flatMap(\.sentFrames)
    }
}
