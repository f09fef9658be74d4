import Foundation
import Privacy
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
    /// Plain rounds: how the clipped updates combine into the strategy's Δ (JSON `aggregator`, default
    /// `mean`). A secure round takes the mean only: the coordinator never sees an individual update.
    public var aggregator: UpdateAggregator
    /// Plain rounds with `trimmed_mean`: the fraction β of the updates dropped at each end of every
    /// coordinate (JSON `trim_fraction`, in (0, 0.5); nil: `defaultTrimFraction`).
    public var trimFraction: Double?
    /// Plain rounds: the largest L2 norm the coordinator keeps of a client's whole update (JSON
    /// `update_norm_clip`; nil: `defaultNormClip`). Secure rounds have `update_clip` instead, applied by
    /// each client to every value before masking, which the coordinator cannot check.
    public var updateNormClip: Double?
    /// Client-level plans (privacy unit `client`): the most client-level ε at the plan's δ the federation may
    /// ever spend (JSON `client_epsilon_budget`); the coordinator's accountant refuses a round past it before
    /// anyone is sampled (`ClientLevelDP.FederationAccountant`). A client-level round's cohort is the Poisson
    /// sample of the registered clients at `client_sampling_rate`: `fraction` and `max_clients` do not apply to it,
    /// `min_clients` is the fewest reachable sampled clients (and survivors) a round runs with.
    public var clientEpsilonBudget: Double?
    /// Which rounds ask for the plan's condition accuracy release (JSON `accuracy_interval`, k): round 1 and every k-th
    /// round after it (1, 1 + k, 1 + 2k, …); the others' invitations carry `accuracy_records` 0, so their clients
    /// neither score nor release nor are charged for it. nil: every round. A schedule of round numbers, public and
    /// data-independent: fewer releases at a smaller z tell more at the same ε (k = rounds − 1: the base model and the
    /// last round's global adapter).
    public var accuracyInterval: Int?
    /// Which rounds ask for the held-out loss release (JSON `heldout_interval`, k), on the same schedule as
    /// `accuracy_interval`: the others' invitations carry `heldout_release` false, so their clients neither score their
    /// held-out records for it nor release nor are charged for it, and the round's pooled loss is "n/a". nil: every
    /// round.
    public var heldOutInterval: Int?
    /// Client-level plans only: adaptive clipping (Andrew et al. 2021, `ClientLevelDP.AdaptiveClipping`, JSON
    /// `adaptive_clipping` with `target_quantile`, `learning_rate` and `count_noise_multiplier`). `plan.clip_norm` is
    /// then the first round's S; each committed round moves S geometrically towards the γ-quantile of the sampled
    /// clients' update norms, from the noised count of unclipped updates, and the noise multiplier z stays the one
    /// the federation's accountant composes (the update's own noise is raised to z_Δ). nil: S stays `plan.clip_norm`.
    public var adaptiveClipping: ClientLevelDP.AdaptiveClipping?

    /// β when `trim_fraction` is not given: one update in five dropped at each end, so a cohort of 5 to
    /// 9 tolerates one client sending anything, of 10 to 14 two (Yin et al. 2018: up to ⌊β·n⌋).
    public static let defaultTrimFraction = 0.2

    public init(minClients: Int, maxClients: Int, fraction: Double, aggregation: AggregationKind, secureAggregation: Bool,
                inviteTimeout: Double, roundTimeout: Double, waitForClients: Double, plan: TrainingPlan,
                updateClip: Double? = nil, neighbourDegree: Int? = nil,
                dropoutTolerance: Double? = nil, dropoutFailureProbability: Double? = nil,
                aggregator: UpdateAggregator = .mean, trimFraction: Double? = nil, updateNormClip: Double? = nil,
                clientEpsilonBudget: Double? = nil, accuracyInterval: Int? = nil, heldOutInterval: Int? = nil,
                adaptiveClipping: ClientLevelDP.AdaptiveClipping? = nil) {
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
        self.aggregator = aggregator
        self.trimFraction = trimFraction
        self.updateNormClip = updateNormClip
        self.clientEpsilonBudget = clientEpsilonBudget
        self.accuracyInterval = accuracyInterval
        self.heldOutInterval = heldOutInterval
        self.adaptiveClipping = adaptiveClipping
    }

    /// The plan round `round`'s invitation carries: the scheduled one (`plan(round:)`), with a client-level round's S
    /// and, with adaptive clipping, σ_b from its facts.
    public func plan(round: UInt64, clientLevel: ClientLevelRoundFacts?) -> TrainingPlan {
        let scheduled = plan(round: round)
        guard let clientLevel else { return scheduled }
        return scheduled.clientLevelRound(clipNorm: clientLevel.clipNorm, countNoiseMultiplier: clientLevel.countNoiseMultiplier)
    }

    /// The scheduled plan of round `round`: the policy's, without the condition accuracy release in a round
    /// `accuracy_interval` skips, and without the held-out loss release in a round `heldout_interval` skips.
    public func plan(round: UInt64) -> TrainingPlan {
        var invited = plan
        if !ReleaseSchedule(interval: accuracyInterval).asks(round: round) { invited.accuracyRecords = 0 }
        if !ReleaseSchedule(interval: heldOutInterval).asks(round: round) { invited.asksHeldOutRelease = false }
        
        return invited
    }

    /// The most condition accuracy releases any `rounds` consecutive rounds ask for (`ReleaseSchedule.releases`).
    public func accuracyReleases(inRounds rounds: Int) -> Int {
        plan.accuracyRecords > 0 ? ReleaseSchedule(interval: accuracyInterval).releases(inRounds: rounds) : 0
    }

    /// The most held-out loss releases any `rounds` consecutive rounds ask for (`ReleaseSchedule.releases`).
    public func heldOutReleases(inRounds rounds: Int) -> Int {
        plan.asksHeldOutRelease ? ReleaseSchedule(interval: heldOutInterval).releases(inRounds: rounds) : 0
    }

    enum CodingKeys: String, CodingKey {
        case fraction, aggregation, plan, aggregator
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
        case trimFraction = "trim_fraction"
        case updateNormClip = "update_norm_clip"
        case clientEpsilonBudget = "client_epsilon_budget"
        case accuracyInterval = "accuracy_interval"
        case heldOutInterval = "heldout_interval"
        case adaptiveClipping = "adaptive_clipping"
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
        let rule = try c.decodeIfPresent(String.self, forKey: .aggregator) ?? UpdateAggregator.mean.rawValue
        guard let aggregator = UpdateAggregator(rawValue: rule) else {
            throw DecodingError.dataCorruptedError(forKey: .aggregator, in: c, debugDescription: "must be "
                + UpdateAggregator.allCases.map(\.rawValue).joined(separator: ", ") + ", got '\(rule)'")
        }
        self.aggregator = aggregator
        trimFraction = try c.decodeIfPresent(Double.self, forKey: .trimFraction)
        updateNormClip = try c.decodeIfPresent(Double.self, forKey: .updateNormClip)
        clientEpsilonBudget = try c.decodeIfPresent(Double.self, forKey: .clientEpsilonBudget)
        accuracyInterval = try c.decodeIfPresent(Int.self, forKey: .accuracyInterval)
        heldOutInterval = try c.decodeIfPresent(Int.self, forKey: .heldOutInterval)
        adaptiveClipping = try c.decodeIfPresent(ClientLevelDP.AdaptiveClipping.self, forKey: .adaptiveClipping)
    }

    /// The L2 bound on a plain round's updates when `update_norm_clip` is not given: B·√P, with B the
    /// per-value bound of a secure round (`update_clip`, default `SecureUpdate.defaultClip`, which an
    /// AdamW client's honest update never exceeds) and P the adapter's parameter count. Plain rounds then
    /// bound each client as secure rounds do (a vector within ±B has norm at most B·√P), never clipping
    /// an honest client. The clients' DP clip C does not bound an update: AdamW normalises the noised
    /// gradient, so each step moves a value by up to ~7.25η whatever C is.
    public func defaultNormClip(parameterCount: Int) -> Double {
        (updateClip ?? SecureUpdate.defaultClip(plan: plan)) * Double(parameterCount).squareRoot()
    }

    /// The coordinator's clip and combination of plain updates for an adapter of `parameterCount` values.
    public func plainCombiner(parameterCount: Int) -> PlainUpdateCombiner {
        PlainUpdateCombiner(aggregator: aggregator, trimFraction: trimFraction ?? Self.defaultTrimFraction,
                            normClip: updateNormClip ?? defaultNormClip(parameterCount: parameterCount))
    }

    /// The aggregator as previews print it: "mean", "median" or "trimmed_mean (β 0.2)".
    public var aggregatorSummary: String {
        switch aggregator {
        case .mean: return "mean"
        case .median: return "median"
        case .trimmedMean: return String(format: "trimmed_mean (β %g)", trimFraction ?? Self.defaultTrimFraction)
        }
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
        for (field, interval) in [("accuracy_interval", accuracyInterval), ("heldout_interval", heldOutInterval)] {
            if let interval { try check(interval >= 1, field, "must be at least 1 (1: every round), got \(interval)") }
        }
        try validateClientLevel(path: path)
        try validateAggregator(check)
        do { try plan.validate() } catch let FederationError.configuration(_, field, reason) {
            throw FederationError.configuration(path: path, field: "plan.\(field)", reason)
        }
    }

    /// A client-level plan's whole check (`ClientLevelDP.checkPlan`: secure aggregation, distributed noise, S, q,
    /// z, by field) and the federation's budget; neither field without one.
    /// - Throws: `FederationError.configuration` naming `path` and the field.
    public func validateClientLevel(path: String) throws {
        guard plan.countNoiseMultiplier == nil else {
            throw FederationError.configuration(path: path, field: "plan.count_noise_multiplier", "is written into each invitation "
                                                + "by the coordinator from adaptive_clipping; remove it from the plan")
        }
        guard plan.isClientLevel else {
            guard clientEpsilonBudget == nil else {
                throw FederationError.configuration(path: path, field: "client_epsilon_budget", "applies to plan.privacy_unit client only")
            }
            guard adaptiveClipping == nil else {
                throw FederationError.configuration(path: path, field: "adaptive_clipping", "applies to plan.privacy_unit client only")
            }
            return
        }
        do {
            try ClientLevelDP.checkPlan(secureAggregation: secureAggregation, noisePlacement: plan.noisePlacement,
                                        clipNorm: plan.clipNorm, samplingRate: plan.clientSamplingRate,
                                        noiseMultiplier: plan.noiseMultiplier)
        } catch let error as ClientLevelDP.PlanError {
            let field = switch error.field {
            case "secure_aggregation": "secure_aggregation"
            case "sampling_rate": "plan.client_sampling_rate"
            default: "plan.\(error.field)"
            }
            throw FederationError.configuration(path: path, field: field, error.reason)
        }
        guard let budget = clientEpsilonBudget else {
            throw FederationError.configuration(path: path, field: "client_epsilon_budget", "privacy_unit client needs the "
                                                + "federation's client-level ε budget at plan.delta")
        }
        guard budget.isFinite, budget > 0 else {
            throw FederationError.configuration(path: path, field: "client_epsilon_budget", "must be finite and positive, got \(budget)")
        }
        if let adaptiveClipping { try Self.validate(adaptiveClipping, noiseMultiplier: plan.noiseMultiplier, path: path) }
    }

    /// Adaptive clipping's fields in range, and σ_b above z/2 (else no noise is left for the update).
    static func validate(_ adaptive: ClientLevelDP.AdaptiveClipping, noiseMultiplier z: Double, path: String) throws {
        func field(_ error: any Error) -> String {
            let text = "\(error)"
            for name in ["target_quantile", "learning_rate", "count_noise_multiplier"] where text.contains(name) { return name }
            return "count_noise_multiplier"
        }
        do {
            try adaptive.validate()
            _ = try ClientLevelDP.AdaptiveClipping.updateNoiseMultiplier(noiseMultiplier: z, countNoiseMultiplier: adaptive.countNoiseMultiplier)
        } catch {
            throw FederationError.configuration(path: path, field: "adaptive_clipping.\(field(error))", "\(error)")
        }
    }

    /// The robust aggregator's fields: in range, and plain rounds only where the coordinator must see
    /// each update (a secure round hides them; its bound is `update_clip`, applied by each client).
    /// `validate` makes this check with the others; a coordinator also makes it alone at start, for a
    /// configuration built in code or switched to secure aggregation after it was read.
    /// - Throws: `FederationError.configuration` naming `path` and the field.
    public func validateAggregator(path: String) throws {
        try validateAggregator { ok, field, reason in
            if !ok { throw FederationError.configuration(path: path, field: field, reason) }
        }
    }

    private func validateAggregator(_ check: (Bool, String, String) throws -> Void) throws {
        if let trimFraction {
            try check(aggregator == .trimmedMean, "trim_fraction", "applies to \"aggregator\": \"trimmed_mean\" only; "
                      + "remove it or set the aggregator")
            try check(trimFraction.isFinite && trimFraction > 0 && trimFraction < 0.5, "trim_fraction",
                      "must be in (0, 0.5) (the updates left must be a majority), got \(trimFraction)")
        }
        if let updateNormClip {
            try check(updateNormClip.isFinite && updateNormClip > 0, "update_norm_clip",
                      "must be a positive number, got \(updateNormClip)")
        }
        guard secureAggregation else {
            return try check(!plan.isDistributed, "plan.noise_placement", "distributed needs secure aggregation: the "
                             + "cohort's noise shares protect only inside the masked sum; set \"secure_aggregation\": true "
                             + "or noise_placement local")
        }
        try check(aggregator == .mean, "aggregator", "'\(aggregator.rawValue)' needs each client's update, which secure "
                  + "aggregation hides from the coordinator: use \"aggregator\": \"mean\" (each client clips every value "
                  + "to ±update_clip before masking) or turn secure aggregation off (\"secure_aggregation\": false, "
                  + "or serve --secure-aggregation off)")
        try check(updateNormClip == nil, "update_norm_clip", "is the coordinator's clip of plain updates, which it "
                  + "cannot apply to masked ones; with secure aggregation each client clips every value to ±update_clip: "
                  + "set that instead")
    }
}

extension RoundPolicy {
    /// The neighbour graph and secure-aggregation threshold this policy gives a cohort of `cohortSize`: from its
    /// dropout tolerance when set, else its degree (default `NeighbourGraph.defaultDegree`) with the threshold the
    /// session would choose (2m/3 + 1 of the smallest neighbourhood). The round engine's setup and anything that
    /// must predict a distributed round's shares (a benchmark's calibration) read the same numbers.
    public func secureAggregationGraph(cohortSize: Int) throws -> (NeighbourGraph, Int) {
        if let rate = dropoutTolerance {
            let tolerance = try DropoutTolerance(
                dropoutRate: rate, failureProbability: dropoutFailureProbability ?? DropoutTolerance.defaultFailureProbability)
            guard let degree = neighbourDegree else { return try tolerance.graphAndThreshold(cohortSize: cohortSize) }
            let graph: NeighbourGraph = degree >= cohortSize - 1 ? .complete : .harary(degree: degree)
            return (graph, try tolerance.threshold(cohortSize: cohortSize, graph: graph))
        }
        let degree = neighbourDegree ?? NeighbourGraph.defaultDegree(cohortSize: cohortSize)
        let graph: NeighbourGraph = degree >= cohortSize - 1 ? .complete : .harary(degree: degree)
        switch graph {
        case .complete: return (graph, SecureAggregationSession.defaultThreshold(neighbourhoodSize: cohortSize))
        case let .harary(k): return (graph, SecureAggregationSession.defaultThreshold(neighbourhoodSize: k + 1))
        }
    }
}

/// Which rounds ask for a metrics release that a coordinator schedules (`accuracy_interval`, `heldout_interval`):
/// round 1 and every k-th round after it (1, 1 + k, 1 + 2k, …). Round numbers only, so whether a round releases is
/// public and data-independent; the coordinator's invitations, its previews and a client's `privacy plan` all read it
/// here.
public struct ReleaseSchedule: Sendable, Equatable {
    /// k; nil or 1: every round.
    public var interval: Int?

    public init(interval: Int?) { self.interval = interval }

    /// Whether round `round` (1-based) asks for the release.
    public func asks(round: UInt64) -> Bool {
        guard let k = interval, k > 1 else { return true }
        return round % UInt64(k) == 1
    }

    /// The most releases any `rounds` consecutive rounds ask for: ⌈rounds / k⌉, exact for rounds 1 to `rounds` (what
    /// previews count, as they count a release whenever one may be asked).
    public func releases(inRounds rounds: Int) -> Int {
        let k = max(1, interval ?? 1)
        return (max(0, rounds) + k - 1) / k
    }
}
