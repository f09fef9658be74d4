import Foundation
import Privacy

/// Client → coordinator, the first frame on a connection: who the client says it is (it must match
/// its certificate's name), what it runs, the round it was working on when it last lost the
/// connection (0 for none), so that a restarted coordinator can tell it that round is over, and its
/// Ed25519 public key (`signing.key`), which signs its secure-aggregation key advertisements; the
/// coordinator pins it at first sight. Empty for a client without one (it cannot join secure rounds).
public struct Hello: WireMessage, Equatable {
    public static let messageType = MessageType.hello
    public var client: String
    public var software: String
    public var pendingRound: UInt64
    /// 32 bytes, or empty.
    public var signingKey: [UInt8]

    public init(client: String, software: String, pendingRound: UInt64, signingKey: [UInt8] = []) {
        self.client = client
        self.software = software
        self.pendingRound = pendingRound
        self.signingKey = signingKey
    }

    public func encode(into encoder: inout WireEncoder) throws {
        try encoder.string(client, field: "client")
        try encoder.string(software, field: "software")
        encoder.uint64(pendingRound)
        try encoder.blob(signingKey, field: "signingKey")
    }

    public init(from decoder: inout WireDecoder) throws {
        client = try decoder.string("client", limit: 64)
        software = try decoder.string("software", limit: 256)
        pendingRound = try decoder.uint64("pendingRound")
        signingKey = try decoder.blob("signingKey", limit: 32)
        guard signingKey.isEmpty || signingKey.count == 32 else {
            throw WireError.invalidValue(field: "hello.signingKey", reason: "\(signingKey.count) bytes; an Ed25519 key has 32")
        }
    }
}

/// Coordinator → client: take part in round `round`. The global adapter follows as tensor chunks
/// and a `TensorsDone` whose digest must equal `adapterSHA256`.
public struct Invite: WireMessage, Equatable {
    public static let messageType = MessageType.invite
    public var round: UInt64
    public var plan: TrainingPlan
    public var aggregation: String
    public var secureAggregation: Bool
    public var adapterSHA256: String
    /// Seconds the client has to upload its update, from the invitation.
    public var deadlineSeconds: Double

    public init(round: UInt64, plan: TrainingPlan, aggregation: String, secureAggregation: Bool, adapterSHA256: String,
                deadlineSeconds: Double) {
        self.round = round
        self.plan = plan
        self.aggregation = aggregation
        self.secureAggregation = secureAggregation
        self.adapterSHA256 = adapterSHA256
        self.deadlineSeconds = deadlineSeconds
    }

    public func encode(into encoder: inout WireEncoder) throws {
        encoder.uint64(round)
        encoder.uint32(UInt32(clamping: plan.steps))
        encoder.double(plan.learningRate)
        encoder.double(plan.samplingRate)
        encoder.double(plan.noiseMultiplier)
        encoder.double(plan.clipNorm)
        encoder.double(plan.delta)
        encoder.uint32(UInt32(clamping: plan.maxLength))
        encoder.uint32(UInt32(clamping: plan.rank))
        encoder.double(plan.alpha)
        try encoder.string(plan.targets.joined(separator: ","), field: "targets")
        encoder.double(plan.metricsNoiseMultiplier)
        encoder.double(plan.metricsLossClip)
        try encoder.string(aggregation, field: "aggregation")
        encoder.bool(secureAggregation)
        try encoder.string(adapterSHA256, field: "adapterSHA256")
        encoder.double(deadlineSeconds)
        try encoder.string(plan.privacyUnit.rawValue, field: "privacyUnit")
        // Protocol 4: the noise placement, then (0 for a local plan) the fixed denominator and the contributions bound.
        try encoder.string(plan.noisePlacement.rawValue, field: "noisePlacement")
        encoder.double(plan.expectedBatch ?? 0)
        encoder.uint32(UInt32(clamping: plan.maxContributions ?? 0))
        // Protocol 5: the condition accuracy release's bound on scored records and its z.
        encoder.uint32(UInt32(clamping: plan.accuracyRecords))
        encoder.double(plan.accuracyNoiseMultiplier)
        // Protocol 6: whether the round asks for the held-out loss release (the coordinator's `heldout_interval`).
        encoder.bool(plan.asksHeldOutRelease)
        // Protocol 7: adaptive clipping's σ_b (0: none), which asks the client for the count coordinate.
        encoder.double(plan.countNoiseMultiplier ?? 0)
    }

    public init(from decoder: inout WireDecoder) throws {
        round = try decoder.uint64("round")
        let steps = Int(try decoder.uint32("steps"))
        let learningRate = try decoder.double("learningRate")
        let samplingRate = try decoder.double("samplingRate")
        let noiseMultiplier = try decoder.double("noiseMultiplier")
        let clipNorm = try decoder.double("clipNorm")
        let delta = try decoder.double("delta")
        let maxLength = Int(try decoder.uint32("maxLength"))
        let rank = Int(try decoder.uint32("rank"))
        let alpha = try decoder.double("alpha")
        let targets = try decoder.string("targets", limit: 256).split(separator: ",").map(String.init)
        let metricsNoiseMultiplier = try decoder.double("metricsNoiseMultiplier")
        let metricsLossClip = try decoder.double("metricsLossClip")
        plan = TrainingPlan(steps: steps, learningRate: learningRate, samplingRate: samplingRate,
                            noiseMultiplier: noiseMultiplier, clipNorm: clipNorm, delta: delta, maxLength: maxLength,
                            rank: rank, alpha: alpha, targets: targets, metricsNoiseMultiplier: metricsNoiseMultiplier,
                            metricsLossClip: metricsLossClip)
        aggregation = try decoder.string("aggregation", limit: 32)
        secureAggregation = try decoder.bool("secureAggregation")
        adapterSHA256 = try decoder.string("adapterSHA256", limit: 64)
        deadlineSeconds = try decoder.double("deadlineSeconds")
        let unit = try decoder.string("privacyUnit", limit: 16)
        do { plan.privacyUnit = try TrainingPlan.privacyUnit(named: unit) } catch let error as FederationError {
            throw WireError.invalidValue(field: "invite.plan.privacyUnit", reason: error.description)
        }
        let placement = try decoder.string("noisePlacement", limit: 16)
        guard let noisePlacement = NoisePlacement(rawValue: placement) else {
            throw WireError.invalidValue(field: "invite.plan.noisePlacement", reason: "'\(placement)' is not local or distributed")
        }
        plan.noisePlacement = noisePlacement
        let expectedBatch = try decoder.double("expectedBatch")
        let maxContributions = Int(try decoder.uint32("maxContributions"))
        plan.accuracyRecords = Int(try decoder.uint32("accuracyRecords"))
        plan.accuracyNoiseMultiplier = try decoder.double("accuracyNoiseMultiplier")
        plan.asksHeldOutRelease = try decoder.bool("asksHeldOutRelease")
        let countNoiseMultiplier = try decoder.double("countNoiseMultiplier")
        if countNoiseMultiplier != 0 { plan.countNoiseMultiplier = countNoiseMultiplier }
        // A client-level plan sends neither (its denominator q·N is the coordinator's, its K the cohort), nor q.
        if noisePlacement == .distributed && !plan.isClientLevel {
            plan.expectedBatch = expectedBatch
            plan.maxContributions = maxContributions
        } else if expectedBatch != 0 || maxContributions != 0 {
            throw WireError.invalidValue(field: "invite.plan", reason: "a \(plan.isClientLevel ? "client-level" : "local") plan "
                                         + "with expected_batch \(expectedBatch) or max_contributions \(maxContributions)")
        }
        do { try plan.validate() } catch let error as FederationError {
            throw WireError.invalidValue(field: "invite.plan", reason: error.description)
        }
        guard deadlineSeconds.isFinite, deadlineSeconds > 0 else {
            throw WireError.invalidValue(field: "invite.deadlineSeconds", reason: "\(deadlineSeconds)")
        }
    }
}

/// Client → coordinator: the client takes part in `round` (its ledger is charged next).
public struct Accept: WireMessage, Equatable {
    public static let messageType = MessageType.accept
    public var round: UInt64
    public init(round: UInt64) { self.round = round }
    public func encode(into encoder: inout WireEncoder) throws { encoder.uint64(round) }
    public init(from decoder: inout WireDecoder) throws { round = try decoder.uint64("round") }
}

/// What a set of tensors is.
public enum TensorSetKind: UInt8, Sendable {
    /// The global adapter, coordinator → client.
    case globalAdapter = 1
    /// A client's update (local − global), client → coordinator.
    case update = 2
}

/// Either way: the end of a tensor set. `sha256` is `AdapterTensors.digest` of the set, so the
/// receiver checks it got exactly what was sent.
public struct TensorsDone: WireMessage, Equatable {
    public static let messageType = MessageType.tensorsDone
    public var round: UInt64
    public var kind: TensorSetKind
    public var tensorCount: UInt32
    public var sha256: String

    public init(round: UInt64, kind: TensorSetKind, tensorCount: UInt32, sha256: String) {
        self.round = round
        self.kind = kind
        self.tensorCount = tensorCount
        self.sha256 = sha256
    }

    public func encode(into encoder: inout WireEncoder) throws {
        encoder.uint64(round)
        encoder.uint8(kind.rawValue)
        encoder.uint32(tensorCount)
        try encoder.string(sha256, field: "sha256")
    }

    public init(from decoder: inout WireDecoder) throws {
        round = try decoder.uint64("round")
        let raw = try decoder.uint8("kind")
        guard let kind = TensorSetKind(rawValue: raw) else {
            throw WireError.invalidValue(field: "tensorsDone.kind", reason: "unknown tensor set kind \(raw)")
        }
        self.kind = kind
        tensorCount = try decoder.uint32("tensorCount")
        sha256 = try decoder.string("sha256", limit: 64)
    }
}

/// Client → coordinator: the client's figures for the round, sent after its update: ε from its ledger,
/// the noised held-out release (in a round whose plan asks for it), and the canary exposure summary. No count,
/// timing or loss in clear. Whether the release may be absent is the round's to say: `RoundEngine` refuses a
/// report without it in a round that asked, and one with it in a round that did not.
public struct MetricsReport: WireMessage, Equatable {
    public static let messageType = MessageType.metrics
    public var round: UInt64
    public var metrics: ClientRoundMetrics

    public init(round: UInt64, metrics: ClientRoundMetrics) {
        self.round = round
        self.metrics = metrics
    }

    public func encode(into encoder: inout WireEncoder) throws {
        encoder.uint64(round)
        try encoder.string(metrics.client, field: "client")
        encoder.double(metrics.epsilon)
        encoder.double(metrics.delta)
        encoder.double(metrics.epsilonBudget)
        // Protocol 6: the held-out loss release behind a presence flag (absent in a round that asked for none).
        encoder.bool(metrics.heldOut != nil)
        if let heldOut = metrics.heldOut {
            encoder.int64(heldOut.lossBefore)
            encoder.int64(heldOut.lossAfter)
            encoder.int64(heldOut.count)
            encoder.double(heldOut.lossClip)
            encoder.double(heldOut.noiseMultiplier)
        }
        // Canary exposure: a presence flag, then the summary (never the secrets, never its timing).
        encoder.bool(metrics.canaryExposure != nil)
        if let exposure = metrics.canaryExposure {
            encoder.uint64(UInt64(max(0, exposure.canaries)))
            encoder.uint64(UInt64(max(0, exposure.repetitions)))
            encoder.double(exposure.meanBits)
            encoder.double(exposure.maxBits)
            encoder.uint64(UInt64(max(0, exposure.spaceSize)))
            encoder.bool(exposure.exact)
            encoder.uint64(UInt64(max(0, exposure.candidatesScored)))
        }
        // Protocol 4: a distributed round's trust figures, behind a presence flag.
        encoder.bool(metrics.trust != nil)
        if let trust = metrics.trust {
            encoder.uint32(UInt32(clamping: trust.assumeHonest))
            encoder.double(trust.roundEpsilon)
            encoder.double(trust.roundEpsilonTrustingNoOne)
            // Protocol 5: the client's cumulative ε trusting no one (a client sends it once it has charged).
            encoder.double(trust.epsilonTrustingNoOne ?? .nan)
        }
        // Protocol 5: the condition accuracy release, behind a presence flag (absent when the client scored none).
        encoder.bool(metrics.conditionAccuracy != nil)
        if let accuracy = metrics.conditionAccuracy {
            encoder.int64(accuracy.correctBefore)
            encoder.int64(accuracy.correctAfter)
            encoder.int64(accuracy.count)
            encoder.double(accuracy.noiseMultiplier)
        }
    }

    public init(from decoder: inout WireDecoder) throws {
        round = try decoder.uint64("round")
        let client = try decoder.string("client", limit: 64)
        let epsilon = try decoder.double("epsilon")
        let delta = try decoder.double("delta")
        let budget = try decoder.double("epsilonBudget")
        var heldOut: HeldOutRelease?
        if try decoder.bool("hasHeldOut") {
            heldOut = HeldOutRelease(lossBefore: try decoder.int64("heldOut.lossBefore"),
                                     lossAfter: try decoder.int64("heldOut.lossAfter"), count: try decoder.int64("heldOut.count"),
                                     lossClip: try decoder.double("heldOut.lossClip"),
                                     noiseMultiplier: try decoder.double("heldOut.noiseMultiplier"))
        }
        var exposure: CanaryExposureSummary?
        if try decoder.bool("hasCanaryExposure") {
            exposure = try Self.decodeExposure(&decoder)
        }
        var trust: DistributedTrustFigures?
        if try decoder.bool("hasTrust") {
            trust = DistributedTrustFigures(assumeHonest: Int(try decoder.uint32("trust.assumeHonest")),
                                            roundEpsilon: try decoder.double("trust.roundEpsilon"),
                                            roundEpsilonTrustingNoOne: try decoder.double("trust.roundEpsilonTrustingNoOne"),
                                            epsilonTrustingNoOne: try decoder.double("trust.epsilonTrustingNoOne"))
        }
        if let problem = trust?.problem { throw WireError.invalidValue(field: "metrics.trust", reason: problem) }
        var accuracy: ConditionAccuracyRelease?
        if try decoder.bool("hasConditionAccuracy") {
            accuracy = ConditionAccuracyRelease(correctBefore: try decoder.int64("conditionAccuracy.correctBefore"),
                                                correctAfter: try decoder.int64("conditionAccuracy.correctAfter"),
                                                count: try decoder.int64("conditionAccuracy.count"),
                                                noiseMultiplier: try decoder.double("conditionAccuracy.noiseMultiplier"))
        }
        if let problem = accuracy?.problem { throw WireError.invalidValue(field: "metrics.conditionAccuracy", reason: problem) }
        // Trusting no one can only cost more than trusting some: never below the ledger's ε under the assumption.
        if let cumulative = trust?.epsilonTrustingNoOne, !(cumulative >= epsilon * (1 - 1e-9)) {
            throw WireError.invalidValue(field: "metrics.trust.epsilonTrustingNoOne",
                                         reason: "\(cumulative), below the client's ε \(epsilon) under its assumption")
        }
        if let problem = heldOut?.problem { throw WireError.invalidValue(field: "metrics.heldOut", reason: problem) }
        for (name, value) in [("delta", delta), ("epsilonBudget", budget)] where !(value.isFinite && value >= 0) {
            throw WireError.invalidValue(field: "metrics.\(name)", reason: "\(value)")
        }
        // +∞ is a client's honest ε once its ledger recorded a round without privacy (issue 13).
        guard epsilon >= 0 else { throw WireError.invalidValue(field: "metrics.epsilon", reason: "\(epsilon)") }
        metrics = ClientRoundMetrics(client: client, epsilon: epsilon, delta: delta, epsilonBudget: budget, heldOut: heldOut,
                                     canaryExposure: exposure, trust: trust, conditionAccuracy: accuracy)
    }

    private static func decodeExposure(_ decoder: inout WireDecoder) throws -> CanaryExposureSummary {
        // Counts are checked against their bounds before they become Ints.
        let canaries = try decoder.uint64("canaryExposure.canaries")
        let repetitions = try decoder.uint64("canaryExposure.repetitions")
        let meanBits = try decoder.double("canaryExposure.meanBits")
        let maxBits = try decoder.double("canaryExposure.maxBits")
        let space = try decoder.uint64("canaryExposure.spaceSize")
        let exact = try decoder.bool("canaryExposure.exact")
        let scored = try decoder.uint64("canaryExposure.candidatesScored")
        let largest = UInt64(CanaryExposureSummary.spaceSize(digits: CanaryExposureSummary.maximumDigits))
        guard canaries <= UInt64(CanaryExposureSummary.maximumCanaries), repetitions <= 1_000_000,
              space <= largest, scored <= largest else {
            throw WireError.invalidValue(field: "metrics.canaryExposure",
                                         reason: "counts out of range (\(canaries) canaries × \(repetitions), space \(space), \(scored) scored)")
        }
        let summary = CanaryExposureSummary(canaries: Int(canaries), repetitions: Int(repetitions), meanBits: meanBits,
                                            maxBits: maxBits, spaceSize: Int(space), exact: exact,
                                            candidatesScored: Int(scored))
        if let problem = summary.problem {
            throw WireError.invalidValue(field: "metrics.canaryExposure", reason: problem)
        }
        return summary
    }
}

/// Coordinator → client: how round `round` ended. When committed, the new global adapter follows
/// as tensor chunks and a `TensorsDone` with digest `adapterSHA256`.
public struct RoundResult: WireMessage, Equatable {
    public static let messageType = MessageType.roundResult
    public var round: UInt64
    public var committed: Bool
    public var adapterSHA256: String
    public var reason: String
    /// The audit log's signed head when the result was sent (nil when the coordinator has none to give).
    public var auditHead: AuditHead?

    public init(round: UInt64, committed: Bool, adapterSHA256: String, reason: String, auditHead: AuditHead? = nil) {
        self.round = round
        self.committed = committed
        self.adapterSHA256 = adapterSHA256
        self.reason = reason
        self.auditHead = auditHead
    }

    public func encode(into encoder: inout WireEncoder) throws {
        encoder.uint64(round)
        encoder.bool(committed)
        try encoder.string(adapterSHA256, field: "adapterSHA256")
        try encoder.string(reason, field: "reason")
        encoder.bool(auditHead != nil)
        try auditHead?.encode(into: &encoder)
    }

    public init(from decoder: inout WireDecoder) throws {
        round = try decoder.uint64("round")
        committed = try decoder.bool("committed")
        adapterSHA256 = try decoder.string("adapterSHA256", limit: 64)
        reason = try decoder.string("reason")
        auditHead = try decoder.bool("hasAuditHead") ? try AuditHead(from: &decoder) : nil
    }
}
