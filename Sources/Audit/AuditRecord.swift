import Foundation
import SecureCrypto
import SystemIO
import Wire

/// One round as the audit log keeps it. Every field a person auditing the federation asks about:
/// who was asked, who took part, who declined or dropped and why, under which plan, what privacy each
/// participant has spent in total, what the model gained, and which adapter came out.
public struct AuditRecord: Codable, Sendable, Equatable {
    /// "committed" or "aborted".
    public var status: String
    public var round: UInt64
    public var started: Date
    public var finished: Date
    /// Clients invited.
    public var cohort: [String]
    /// Clients whose update went into the aggregate.
    public var participants: [String]
    public var declines: [ClientReason]
    public var dropouts: [ClientReason]
    /// "fedavg" or "fedadam".
    public var aggregation: String
    public var secureAggregation: Bool
    /// How the round's updates combined into the strategy's Δ: "mean", "trimmed_mean" or "median"
    /// (`UpdateAggregator`); nil in records written before it was recorded (they were all means).
    public var aggregator: String?
    /// With "trimmed_mean": the fraction β of updates dropped at each end of every value. JSON `trim_fraction`.
    public var trimFraction: Double?
    /// Plain rounds: the L2 norm the coordinator clipped each client's update to; nil for secure rounds
    /// (each client clips its own values, unseen) and in older records. JSON `update_norm_clip`.
    public var updateNormClip: Double?
    public var plan: TrainingPlan
    /// Per participant: cumulative ε after the round, the DP-released held-out figures (records written
    /// before issue 13: the clear figures, `ClientRoundMetrics.clearFigures`).
    public var clients: [ClientRoundMetrics]
    /// The largest cumulative ε among participants.
    public var maxEpsilon: Double?
    /// Held-out loss before and after over the participants: post-processing of their DP releases
    /// (`ReleasedLoss`: mean per-record loss, clamped to [0, L]). In records written before issue 13,
    /// which have no `evalLossStandardError`, the exact token-weighted mean of figures sent in clear.
    public var evalLossBefore: Double?
    public var evalLossAfter: Double?
    /// Standard error of either released loss from the release noise alone (nats); nil in old records,
    /// and when the released count is not positive. JSON `eval_loss_standard_error`.
    public var evalLossStandardError: Double?
    /// sha256 (hex) of the global adapter's `adapter_model.safetensors` after the round (the
    /// previous one for an aborted round).
    public var adapterSHA256: String
    /// Why an aborted round was aborted.
    public var abortReason: String?
    /// BLAKE2b-256 (hex) of the previous line of the log, bytes as written; 64 zeros for the first.
    public var previousHash: String
    /// A distributed-DP round's noise as it reached the sum (nil for local noise and in older records);
    /// each participant's trust and ε both ways are in `clients[].trust`. JSON `distributed`.
    public var distributed: DistributedNoiseRecord?
    /// A client-level round's sampling and the federation's client-level ε (nil for other units and in older
    /// records). JSON `client_level`.
    public var clientLevel: ClientLevelRecord?
    /// Condition accuracy before and after over the participants that released one: post-processing of their DP
    /// releases (`ReleasedAccuracy`: the fraction of scored held-out units whose generated assessment named the
    /// condition, clamped to [0, 1]), with the standard error of the noise; nil when no participant released one, the
    /// released count was not positive, and in records written before the release existed. JSON
    /// `condition_accuracy_before`, `condition_accuracy_after`, `condition_accuracy_standard_error`.
    public var conditionAccuracyBefore: Double?
    public var conditionAccuracyAfter: Double?
    public var conditionAccuracyStandardError: Double?

    public init(status: String, round: UInt64, started: Date, finished: Date, cohort: [String], participants: [String],
                declines: [ClientReason], dropouts: [ClientReason], aggregation: String, secureAggregation: Bool,
                plan: TrainingPlan, clients: [ClientRoundMetrics], maxEpsilon: Double?, evalLossBefore: Double?,
                evalLossAfter: Double?, evalLossStandardError: Double? = nil, adapterSHA256: String, abortReason: String?, previousHash: String,
                aggregator: String? = nil, trimFraction: Double? = nil, updateNormClip: Double? = nil) {
        self.status = status
        self.round = round
        self.started = started
        self.finished = finished
        self.cohort = cohort
        self.participants = participants
        self.declines = declines
        self.dropouts = dropouts
        self.aggregation = aggregation
        self.secureAggregation = secureAggregation
        self.aggregator = aggregator
        self.trimFraction = trimFraction
        self.updateNormClip = updateNormClip
        self.plan = plan
        self.clients = clients
        self.maxEpsilon = maxEpsilon
        self.evalLossBefore = evalLossBefore
        self.evalLossAfter = evalLossAfter
        self.evalLossStandardError = evalLossStandardError
        self.adapterSHA256 = adapterSHA256
        self.abortReason = abortReason
        self.previousHash = previousHash
    }

    enum CodingKeys: String, CodingKey {
        case status, round, started, finished, cohort, participants, declines, dropouts, aggregation, plan, clients, aggregator
        case trimFraction = "trim_fraction"
        case updateNormClip = "update_norm_clip"
        case secureAggregation = "secure_aggregation"
        case maxEpsilon = "max_epsilon"
        case evalLossBefore = "eval_loss_before"
        case evalLossAfter = "eval_loss_after"
        case evalLossStandardError = "eval_loss_standard_error"
        case adapterSHA256 = "adapter_sha256"
        case abortReason = "abort_reason"
        case previousHash = "previous_hash"
        case distributed
        case clientLevel = "client_level"
        case conditionAccuracyBefore = "condition_accuracy_before"
        case conditionAccuracyAfter = "condition_accuracy_after"
        case conditionAccuracyStandardError = "condition_accuracy_standard_error"
    }

    /// Whether the held-out figures are DP releases (every record since issue 13), rather than figures
    /// clients sent in clear (older records).
    public var metricsReleased: Bool { !clients.contains { $0.clearFigures != nil } }

    /// The aggregation as tables show it: the strategy, then a robust aggregator when there was one
    /// ("fedavg", "fedavg+median", "fedadam+trimmed_mean(0.2)").
    public var aggregationText: String {
        switch aggregator {
        case nil, "mean"?: return aggregation
        case "trimmed_mean"?: return aggregation + "+trimmed_mean" + (trimFraction.map { String(format: "(%g)", $0) } ?? "")
        case let other?: return aggregation + "+" + other
        }
    }
}

/// What a distributed-DP round's sum carried (issue 17), from public values: the plan, the secure round's
/// cohort, threshold and survivors, and the scale every party derives from them (`DistributedRound`).
public struct DistributedNoiseRecord: Codable, Sendable, Equatable {
    /// Whom ε protects: the plan's privacy unit ("record" or "user").
    public var unit: String
    /// n, t and s: invited, the fewest survivors the sum needs, and the survivors whose shares are in it.
    public var cohort: Int
    public var threshold: Int
    public var survivors: Int
    /// f: the grid is 2^−f; each share's σ in grid units (z·Δ₂/√t).
    public var fractionalBits: Int
    public var shareSigma: Double
    /// z of the plan (the noise the threshold's survivors carry), and z·√(s/t), the noise that survived.
    public var plannedNoiseMultiplier: Double
    public var survivingNoiseMultiplier: Double
    /// The bound on the probability that the modular sum wrapped (a utility figure; see `DistributedRound`).
    public var wrapProbability: Double
    /// The fixed denominator the sum was divided by.
    public var expectedBatch: Double

    public init(unit: String, cohort: Int, threshold: Int, survivors: Int, fractionalBits: Int, shareSigma: Double,
                plannedNoiseMultiplier: Double, survivingNoiseMultiplier: Double, wrapProbability: Double, expectedBatch: Double) {
        self.unit = unit
        self.cohort = cohort
        self.threshold = threshold
        self.survivors = survivors
        self.fractionalBits = fractionalBits
        self.shareSigma = shareSigma
        self.plannedNoiseMultiplier = plannedNoiseMultiplier
        self.survivingNoiseMultiplier = survivingNoiseMultiplier
        self.wrapProbability = wrapProbability
        self.expectedBatch = expectedBatch
    }

    enum CodingKeys: String, CodingKey {
        case unit, cohort, threshold, survivors
        case fractionalBits = "fractional_bits"
        case shareSigma = "share_sigma"
        case plannedNoiseMultiplier = "planned_noise_multiplier"
        case survivingNoiseMultiplier = "surviving_noise_multiplier"
        case wrapProbability = "wrap_probability"
        case expectedBatch = "expected_batch"
    }
}
