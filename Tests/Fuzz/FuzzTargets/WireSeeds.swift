import Foundation
import Wire
import SecureAggregation
import SecureCrypto

enum WireSeeds {
    static let plan = TrainingPlan(steps: 4, learningRate: 0.002, samplingRate: 0.05, noiseMultiplier: 1.0, clipNorm: 1.0,
                                   delta: 1e-5, maxLength: 256, rank: 4, alpha: 8, targets: ["q_proj", "v_proj"])
    static let invite = Invite(round: 3, plan: plan, aggregation: "fedavg", secureAggregation: true,
                               adapterSHA256: String(repeating: "ab", count: 32), deadlineSeconds: 60)

    /// Issue 17: an invitation to a client-level (DP-FedAvg) round with adaptive clipping's σ_b (protocol 7), so that
    /// campaigns start inside its decoding.
    static let clientLevelInvite: Invite = {
        var plan = TrainingPlan(steps: 10, learningRate: 0.0005, samplingRate: 0.05, noiseMultiplier: 1.0, clipNorm: 0.05,
                                delta: 1e-5, maxLength: 256, rank: 4, alpha: 8, targets: ["q_proj", "v_proj"],
                                privacyUnit: .client, noisePlacement: .distributed)
        plan.countNoiseMultiplier = 5
        return Invite(round: 4, plan: plan, aggregation: "fedavg", secureAggregation: true,
                      adapterSHA256: String(repeating: "ab", count: 32), deadlineSeconds: 60)
    }()

    /// Protocol 6: an invitation to a round that asks for no held-out loss release (`heldout_interval`).
    static let skippingInvite: Invite = {
        var skipping = invite
        skipping.round = 4
        skipping.plan.asksHeldOutRelease = false
        return skipping
    }()

    /// A stream: the step byte, then frames.
    static func stream(_ step: UInt8, _ messages: [any WireMessage]) throws -> Data {
        var bytes: [UInt8] = [step]
        for message in messages { bytes += try message.frame().encoded() }
        return Data(bytes)
    }

    /// The plain round's messages, both ways, a client's metrics with every optional part among them.
    static func frames() throws -> [String: Data] {
        let values = (0..<10).map { Float($0) * 0.25 }
        let chunks = TensorChunk.split(round: 3, name: "layers.0.q_proj.lora_A", values: values, maximumValuesPerChunk: 4)
        let coordinator: [any WireMessage] = [invite] + chunks
            + [TensorsDone(round: 3, kind: .globalAdapter, tensorCount: 1, sha256: String(repeating: "0", count: 64)),
               RoundResult(round: 3, committed: true, adapterSHA256: String(repeating: "cd", count: 32), reason: ""),
               skippingInvite, Abort(round: 4, code: .dropped, detail: "coordinator stopping")]
        let client: [any WireMessage] = [Hello(client: "clinic-1", software: "conclave 0.1", pendingRound: 2,
                                               signingKey: SecureSeeds.identity(1).publicKey.bytes),
                                         Accept(round: 3), Decline(round: 5, code: .privacyBudget), Abort(round: 6, code: .secureAggregation)] + chunks
            + [TensorsDone(round: 3, kind: .update, tensorCount: 1, sha256: String(repeating: "1", count: 64)),
               // A distributed round's metrics with every optional part (protocol 5: trust, condition accuracy).
               MetricsReport(round: 3, metrics: ClientRoundMetrics(
                   client: "clinic-1", epsilon: 1.5, delta: 1e-5, epsilonBudget: 8,
                   heldOut: HeldOutRelease(lossBefore: 51_200, lossAfter: 42_667, count: 102_400, lossClip: 6, noiseMultiplier: 20),
                   trust: DistributedTrustFigures(assumeHonest: 2, roundEpsilon: 0.5, roundEpsilonTrustingNoOne: 0.9,
                                                  epsilonTrustingNoOne: 1.75),
                   conditionAccuracy: ConditionAccuracyRelease(correctBefore: 3, correctAfter: 7, count: 10, noiseMultiplier: 5))),
               // Protocol 6: the metrics of a round that asked for no held-out release.
               MetricsReport(round: 4, metrics: ClientRoundMetrics(client: "clinic-1", epsilon: 1.6, delta: 1e-5,
                                                                   epsilonBudget: 8, heldOut: nil))]
        var update: [Frame] = [try Accept(round: 3).frame()]
        if let layout = WireTargets.uplinkLayout {
            let tensors = layout.shapes.mapValues { shape in (0..<shape.reduce(1, *)).map { Float($0 % 7) * 0.125 } }
            update += try TensorSetFrames.frames(round: 3, kind: .update, tensors: tensors)
        }
        return ["coordinator-to-client.bin": try stream(255, coordinator), "client-to-coordinator.bin": try stream(6, client),
                "coordinator-to-client-client-level.bin": try stream(255, [clientLevelInvite]),
                "client-update.bin": Data([255] + (try update.flatMap { try $0.encoded() }))]
    }

    /// Two real secure rounds of three members (identities 1, 2, 3), all surviving and one dropping out
    /// before its masked input, as the target reads them: invitation, setup, then every message.
    static func secureRounds() throws -> [String: Data] {
        ["three-members.bin": try secureRound(dropping: nil), "one-dropout.bin": try secureRound(dropping: 3)]
    }

    static func secureRound(dropping dropout: ParticipantID?) throws -> Data {
        let setup = SecureRoundSetup(round: 3, members: (1...3).map {
            SecureRoundSetup.Member(id: ParticipantID($0), name: "m\($0)", signingKey: SecureSeeds.identity(UInt8($0)).publicKey)
        }, degree: 0, threshold: 2, updateClip: 1, vectorLength: 6)
        let session = try setup.session(invite: invite)
        var server = SecureAggregationServer(session: session)
        var clients = try setup.members.map {
            try SecureAggregationClient(session: session, id: $0.id, identity: SecureSeeds.identity(UInt8($0.id)),
                                        localAdapterHash: Array(invite.adapterSHA256.utf8))
        }
        var messages: [any WireMessage] = [invite, setup]
        for i in clients.indices {
            let advertisement = try clients[i].advertiseKeys()
            try server.receive(advertisement)
            messages.append(SecureAdvertise(round: 3, advertisement: advertisement))
        }
        let broadcasts = try server.finishAdvertising()
        for i in clients.indices {
            guard let broadcast = broadcasts.first(where: { $0.recipient == setup.members[i].id }) else { continue }
            if i == 0 { messages.append(SecureAdvertisements(round: 3, broadcast: broadcast)) }
            let shares = try clients[i].shareKeys(broadcast)
            try server.receive(shares)
            messages.append(SecureShares(round: 3, message: shares))
        }
        let bundles = try server.finishSharing()
        for i in clients.indices where setup.members[i].id != dropout {
            guard let bundle = bundles.first(where: { $0.recipient == setup.members[i].id }) else { continue }
            if i == 0 { messages.append(SecureShareBundle(round: 3, bundle: bundle)) }
            let input = try clients[i].maskInput(bundle, input: [UInt32](repeating: UInt32(i + 1), count: 6))
            try server.receive(input)
            messages.append(SecureMaskedInput(round: 3, input: input))
        }
        let checks = try server.finishMaskedInput()
        for i in clients.indices where setup.members[i].id != dropout {
            guard let check = checks.first(where: { $0.recipient == setup.members[i].id }) else { continue }
            if i == 0 { messages.append(SecureConsistencyRequest(round: 3, request: check)) }
            let signature = try clients[i].signSurvivors(check)
            try server.receive(signature)
            messages.append(SecureConsistencySignature(round: 3, signature: signature))
        }
        let requests = try server.finishConsistencyCheck()
        for i in clients.indices where setup.members[i].id != dropout {
            guard let request = requests.first(where: { $0.recipient == setup.members[i].id }) else { continue }
            if i == 0 { messages.append(SecureUnmaskRequest(round: 3, request: request)) }
            let response = try clients[i].unmask(request)
            try server.receive(response)
            messages.append(SecureUnmaskResponse(round: 3, response: response))
        }
        _ = try server.finishUnmasking()
        return try stream(255, messages)
    }
}
