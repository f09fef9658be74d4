import Foundation
import SecureAggregation
import SecureCrypto
import SystemIO
import Wire

/// How the coordinator runs rounds: cohort size, deadlines, aggregation, and the training plan.
public struct RoundPolicy: Codable, Sendable, Equatable {
    /// A round needs at least this many clients invited, and this many updates to commit.
    public var minClients: Int
    /// At most this many clients are invited.
    public var maxClients: Int
    /// The fraction of connected clients invited (then clamped to min...max).
    public var fraction: Double
    /// How updates become the next global adapter.
    public var aggregation: AggregationKind
    /// Whether updates are masked (secure aggregation); recorded in every audit record.
    public var secureAggregation: Bool
    /// Seconds a client has to accept or decline an invitation.
    public var inviteTimeout: Double
    /// Seconds from the invitation to the last update.
    public var roundTimeout: Double
    /// Seconds a started round waits for `minClients` to be connected before it is aborted.
    public var waitForClients: Double
    /// What each client trains.
    public var plan: TrainingPlan
    /// Secure aggregation: the bound B on each weighted update value (nil: `SecureUpdate.defaultClip`).
    public var updateClip: Double?
    /// `weight_bound` as an old configuration wrote it: refused by `validate` (updates weigh the same
    /// since issue 13; a weight from the record count made the count travel).
    public private(set) var weightBound: Double?
    /// Secure aggregation: the SecAgg+ neighbour degree (nil: `NeighbourGraph.defaultDegree` of the cohort).
    public var neighbourDegree: Int?
    /// Secure aggregation: the fraction of a cohort expected to drop out that a round must survive
    /// (nil: the default threshold, two thirds of each neighbourhood, and the default degree). When set,
    /// the threshold is the largest that survives it except with probability
    /// `dropoutFailureProbability`, and without `neighbourDegree` the degree is the smallest that
    /// allows one (`DropoutTolerance`).
    public var dropoutTolerance: Double?
    /// Secure aggregation: with `dropoutTolerance`, the largest acceptable probability that a round
    /// aborts for lack of survivors (nil: `DropoutTolerance.defaultFailureProbability`).
    public var dropoutFailureProbability: Double?

    public init(minClients: Int, maxClients: Int, fraction: Double, aggregation: AggregationKind, secureAggregation: Bool,
                inviteTimeout: Double, roundTimeout: Double, waitForClients: Double, plan: TrainingPlan,
                updateClip: Double? = nil, neighbourDegree: Int? = nil,
                dropoutTolerance: Double? = nil, dropoutFailureProbability: Double? = nil) {
        self.minClients = minClients
        self.maxClients = maxClients
        self.fraction = fraction
        self.aggregation = aggregation
        self.secureAggregation = secureAggregation
        self.inviteTimeout = inviteTimeout
        self.roundTimeout = roundTimeout
        self.waitForClients = waitForClients
        self.plan = plan
        self.updateClip = updateClip
        self.weightBound = nil
        self.neighbourDegree = neighbourDegree
        self.dropoutTolerance = dropoutTolerance
        self.dropoutFailureProbability = dropoutFailureProbability
    }

    enum CodingKeys: String, CodingKey {
        case fraction, aggregation, plan
        case minClients = "min_clients"
        case maxClients = "max_clients"
        case secureAggregation = "secure_aggregation"
        case inviteTimeout = "invite_timeout"
        case roundTimeout = "round_timeout"
        case waitForClients = "wait_for_clients"
        case updateClip = "update_clip"
        case weightBound = "weight_bound"
        case neighbourDegree = "neighbour_degree"
        case dropoutTolerance = "dropout_tolerance"
        case dropoutFailureProbability = "dropout_failure_probability"
    }

    /// Every field as written; `secure_aggregation` may be left out and is then on, and the
    /// optional tuning fields default as documented.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        minClients = try c.decode(Int.self, forKey: .minClients)
        maxClients = try c.decode(Int.self, forKey: .maxClients)
        fraction = try c.decode(Double.self, forKey: .fraction)
        let spelling = try c.decode(String.self, forKey: .aggregation)
        guard let aggregation = AggregationKind(rawValue: spelling) else {
            throw DecodingError.dataCorruptedError(forKey: .aggregation, in: c,
                                                   debugDescription: "must be fedavg or fedadam, got '\(spelling)'")
        }
        self.aggregation = aggregation
        secureAggregation = try c.decodeIfPresent(Bool.self, forKey: .secureAggregation) ?? true
        inviteTimeout = try c.decode(Double.self, forKey: .inviteTimeout)
        roundTimeout = try c.decode(Double.self, forKey: .roundTimeout)
        waitForClients = try c.decode(Double.self, forKey: .waitForClients)
        plan = try c.decode(TrainingPlan.self, forKey: .plan)
        updateClip = try c.decodeIfPresent(Double.self, forKey: .updateClip)
        weightBound = try c.decodeIfPresent(Double.self, forKey: .weightBound)
        neighbourDegree = try c.decodeIfPresent(Int.self, forKey: .neighbourDegree)
        dropoutTolerance = try c.decodeIfPresent(Double.self, forKey: .dropoutTolerance)
        dropoutFailureProbability = try c.decodeIfPresent(Double.self, forKey: .dropoutFailureProbability)
    }

    public func validate(path: String) throws {
        func check(_ ok: Bool, _ field: String, _ reason: String) throws {
            if !ok { throw FederationError.configuration(path: path, field: field, reason) }
        }
        try check(minClients >= 1, "min_clients", "must be at least 1, got \(minClients)")
        try check(maxClients >= minClients, "max_clients", "must be at least min_clients (\(minClients)), got \(maxClients)")
        try check(fraction > 0 && fraction <= 1, "fraction", "must be in (0, 1], got \(fraction)")
        for (field, value) in [("invite_timeout", inviteTimeout), ("round_timeout", roundTimeout),
                               ("wait_for_clients", waitForClients)] {
            try check(value.isFinite && value > 0, field, "must be a positive number of seconds, got \(value)")
        }
        if let updateClip {
            try check(updateClip.isFinite && updateClip > 0, "update_clip", "must be a positive number, got \(updateClip)")
        }
        try check(weightBound == nil, "weight_bound", "is no longer used: every client's update weighs the same, because a "
                  + "weight from its record count made the private count travel; remove the field")
        if let neighbourDegree {
            try check(neighbourDegree >= 2, "neighbour_degree", "must be at least 2, got \(neighbourDegree)")
        }
        if let dropoutTolerance {
            try check(dropoutTolerance.isFinite && dropoutTolerance >= 0 && dropoutTolerance < 0.5, "dropout_tolerance",
                      "must be in [0, 0.5) (the threshold stays a strict majority), got \(dropoutTolerance)")
        }
        if let dropoutFailureProbability {
            try check(dropoutTolerance != nil, "dropout_failure_probability", "needs dropout_tolerance")
            try check(dropoutFailureProbability.isFinite && dropoutFailureProbability > 0 && dropoutFailureProbability < 1,
                      "dropout_failure_probability", "must be in (0, 1), got \(dropoutFailureProbability)")
        }
        do { try plan.validate() } catch let FederationError.configuration(_, field, reason) {
            throw FederationError.configuration(path: path, field: "plan.\(field)", reason)
        }
    }
}

