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
    /// "fedavg" or "fedadam".
    public var aggregation: String
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
    /// Secure aggregation: example counts above this weigh as this much (nil: `SecureUpdate.defaultWeightBound`).
    public var weightBound: Double?
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

    public init(minClients: Int, maxClients: Int, fraction: Double, aggregation: String, secureAggregation: Bool,
                inviteTimeout: Double, roundTimeout: Double, waitForClients: Double, plan: TrainingPlan,
                updateClip: Double? = nil, weightBound: Double? = nil, neighbourDegree: Int? = nil,
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
        self.weightBound = weightBound
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
        aggregation = try c.decode(String.self, forKey: .aggregation)
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
        try check(["fedavg", "fedadam"].contains(aggregation), "aggregation", "must be fedavg or fedadam, got '\(aggregation)'")
        for (field, value) in [("invite_timeout", inviteTimeout), ("round_timeout", roundTimeout),
                               ("wait_for_clients", waitForClients)] {
            try check(value.isFinite && value > 0, field, "must be a positive number of seconds, got \(value)")
        }
        if let updateClip {
            try check(updateClip.isFinite && updateClip > 0, "update_clip", "must be a positive number, got \(updateClip)")
        }
        if let weightBound {
            try check(weightBound.isFinite && weightBound >= 1, "weight_bound", "must be at least 1, got \(weightBound)")
        }
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

/// One client's update as the coordinator received it: the change it made to the global adapter
/// (local − global) and its figures.
public struct ReceivedUpdate: Sendable {
    public var delta: AdapterTensors
    public var metrics: ClientRoundMetrics
    public init(delta: AdapterTensors, metrics: ClientRoundMetrics) {
        self.delta = delta
        self.metrics = metrics
    }
}

/// How a round ended, for the driver to aggregate (when committed), persist and audit.
public struct RoundOutcome: Sendable {
    public var round: UInt64
    public var started: Date
    public var finished: Date
    public var cohort: [String]
    /// Participants' updates, in client-id order.
    public var updates: [(client: String, update: ReceivedUpdate)]
    public var declines: [ClientReason]
    public var dropouts: [ClientReason]
    /// Nil when the round commits.
    public var abortReason: String?
    /// With secure aggregation: the unmasked sum instead of `updates` (which is then empty).
    public var secure: SecureRoundResult? = nil
    public var isCommitted: Bool { abortReason == nil }
}

/// The coordinator's round engine: a state machine without I/O. The driver feeds it events
/// (connections, messages, the clock, operator requests) and carries out the actions it returns,
/// in order. Tests drive it directly, with injected dropouts and timeouts.
public struct RoundEngine: Sendable {
    public enum Phase: String, Sendable, Codable {
        /// No round in flight.
        case idle
        /// A round was requested but fewer than `minClients` are connected.
        case waitingForClients = "waiting_for_clients"
        /// Invitations are out; updates are coming in.
        case training
        /// The round's outcome is with the driver (aggregating, writing, auditing).
        case finishing
    }

    public enum Action: Sendable {
        /// Persist that `round` is in flight, before any invitation leaves.
        case beginRound(round: UInt64, started: Date, cohort: [String])
        /// Send the invitation (and the global adapter) to `client`.
        case invite(client: String, round: UInt64)
        /// Send this invitation, then the secure round's setup, then the global adapter, to `client`.
        case inviteSecurely(client: String, invite: Invite, setup: SecureRoundSetup)
        /// Send a secure-aggregation stage message to `client`.
        case secure(client: String, message: SecureDownlink)
        /// Tell `client` it is out of `round` (dropped for a missed deadline, or the round is over).
        case dismiss(client: String, round: UInt64, reason: String)
        /// The round is over: aggregate if committed, write, audit, tell the cohort, then call
        /// `roundFinished(now:)`.
        case finish(RoundOutcome)
        /// A line for the operator's log.
        case log(String)
    }

    private struct InFlight: Sendable {
        var round: UInt64
        var started: Date
        var cohort: [String]
        var accepted: Set<String> = []
        var declines: [ClientReason] = []
        var dropouts: [ClientReason] = []
        var updates: [String: ReceivedUpdate] = [:]
        var inviteDeadline: Date
        var roundDeadline: Date
        /// The secure-aggregation protocol of this round, when it has one.
        var secure: SecureRound?

        func resolved(_ client: String) -> Bool {
            updates[client] != nil || declines.contains { $0.client == client } || dropouts.contains { $0.client == client }
        }
        var allResolved: Bool { cohort.allSatisfy(resolved) }
    }

    public let policy: RoundPolicy
    /// Chooses `count` of the given clients (the driver passes a CSPRNG-backed choice; tests a fixed one).
    private let choose: @Sendable ([String], Int) -> [String]
    public private(set) var phase: Phase = .idle
    /// Connected clients (hello received) and since when.
    public private(set) var connected: [String: Date] = [:]
    /// Rounds requested and not yet started.
    public private(set) var queued = 0
    /// The number the next round takes.
    public private(set) var nextRound: UInt64
    private var inFlight: InFlight?
    private var waitingSince: Date?
    /// Connected clients' pinned Ed25519 keys (the driver checked them against the registry).
    public private(set) var signingKeys: [String: SigningPublicKey] = [:]
    /// The digest of the global adapter the next round starts from (`AdapterMath.digest`).
    public private(set) var globalAdapterDigest = ""
    /// The global adapter's parameter count (secure rounds mask this many values and the weight).
    public private(set) var parameterCount = 0

    /// Tells the engine the global adapter the next round starts from (secure rounds bind its digest).
    public mutating func setGlobalAdapter(digest: String, parameterCount: Int) {
        globalAdapterDigest = digest
        self.parameterCount = parameterCount
    }

    public init(policy: RoundPolicy, nextRound: UInt64, choose: @escaping @Sendable ([String], Int) -> [String]) {
        self.policy = policy
        self.nextRound = nextRound
        self.choose = choose
    }

    /// The round in flight, its cohort and who has answered, for `status`.
    public var status: [String: Any] {
        var out: [String: Any] = ["phase": phase.rawValue, "queued_rounds": queued, "next_round": nextRound,
                                  "connected": connected.keys.sorted()]
        if let r = inFlight {
            out["round"] = r.round
            out["cohort"] = r.cohort
            out["accepted"] = r.accepted.sorted()
            out["uploaded"] = r.updates.keys.sorted()
            out["declined"] = r.declines.map { ["client": $0.client, "reason": $0.reason] }
            out["dropped"] = r.dropouts.map { ["client": $0.client, "reason": $0.reason] }
            out["started"] = r.started.timeIntervalSince1970
            if let secure = r.secure { out["secure_stage"] = secure.stage.rawValue }
        }
        return out
    }

    /// The round `client` is in, if any (for telling a reconnecting client about its old round).
    public var currentRound: UInt64? { inFlight?.round }

    /// Whether `client` is still expected to upload a plain (unmasked) update in the round in flight.
    public func isActive(_ client: String, round: UInt64) -> Bool {
        guard let r = inFlight, r.round == round, r.secure == nil else { return false }
        return r.cohort.contains(client) && !r.resolved(client)
    }

    // MARK: Events

    /// The operator asks for `count` more rounds.
    public mutating func requestRounds(_ count: Int, now: Date) -> [Action] {
        queued += max(0, count)
        return startIfPossible(now: now)
    }

    /// A client finished its handshake and hello; `signingKey` is its pinned Ed25519 key, if it sent one.
    public mutating func connect(_ client: String, now: Date, signingKey: SigningPublicKey? = nil) -> [Action] {
        connected[client] = now
        signingKeys[client] = signingKey
        return [.log("client '\(client)' connected (\(connected.count) connected)")] + startIfPossible(now: now)
    }

    /// A client's connection closed.
    public mutating func disconnect(_ client: String, now: Date) -> [Action] {
        connected[client] = nil
        signingKeys[client] = nil
        var actions: [Action] = [.log("client '\(client)' disconnected (\(connected.count) connected)")]
        if inFlight?.secure != nil, phase == .training {
            return actions + secureEvent(now: now) { $0.withdraw(client, reason: "disconnected", now: now) }
        }
        if var r = inFlight, phase == .training, r.cohort.contains(client), !r.resolved(client) {
            inFlight = nil
            r.dropouts.append(ClientReason(client: client, reason: "disconnected"))
            inFlight = r
            actions.append(.log("round \(r.round): client '\(client)' dropped: disconnected"))
            actions += finishIfResolved(now: now)
        }
        return actions
    }

    /// `client` accepts `round`.
    public mutating func accept(_ client: String, round: UInt64, now: Date) -> [Action] {
        guard var r = inFlight, phase == .training, r.round == round, r.cohort.contains(client), !r.resolved(client),
              !r.accepted.contains(client) else {
            return [.log("ignored accept of round \(round) from '\(client)': not awaiting it")]
        }
        inFlight = nil  // release the stored copy, so `r` mutates its collections in place
        r.accepted.insert(client)
        inFlight = r
        return [.log("round \(round): client '\(client)' accepted")]
    }

    /// `client` declines `round`.
    public mutating func decline(_ client: String, round: UInt64, reason: String, now: Date) -> [Action] {
        guard var r = inFlight, phase == .training, r.round == round, r.cohort.contains(client), !r.resolved(client) else {
            return [.log("ignored decline of round \(round) from '\(client)': not awaiting it")]
        }
        inFlight = nil  // release the stored copy, so `r` mutates its collections in place
        r.accepted.remove(client)
        r.declines.append(ClientReason(client: client, reason: reason))
        inFlight = r
        if r.secure != nil {
            return [.log("round \(round): client '\(client)' declined: \(reason)")]
                + secureEvent(now: now) { $0.withdraw(client, reason: "declined", now: now) }
        }
        return [.log("round \(round): client '\(client)' declined: \(reason)")] + finishIfResolved(now: now)
    }

    /// `client`'s update and metrics for `round` arrived complete.
    public mutating func upload(_ client: String, round: UInt64, update: ReceivedUpdate, now: Date) -> [Action] {
        guard var r = inFlight, phase == .training, r.round == round, r.accepted.contains(client), !r.resolved(client),
              r.secure == nil else {
            return [.log("ignored update of round \(round) from '\(client)': not awaiting a plain update from it")]
        }
        inFlight = nil  // release the stored copy, so `r` mutates its collections in place
        r.updates[client] = update
        inFlight = r
        return [.log(String(format: "round %llu: update from '%@' (%d examples, held-out loss %.4f → %.4f, ε %.2f)",
                            round, client, update.metrics.examples, update.metrics.evalLossBefore,
                            update.metrics.evalLossAfter, update.metrics.epsilon))] + finishIfResolved(now: now)
    }

    /// The clock: drops clients that missed a deadline, gives up waiting for clients.
    public mutating func tick(now: Date) -> [Action] {
        switch phase {
        case .waitingForClients:
            guard let since = waitingSince, now.timeIntervalSince(since) >= policy.waitForClients else { return [] }
            let round = nextRound
            nextRound += 1
            queued -= 1
            phase = .finishing
            waitingSince = nil
            let reason = "only \(connected.count) of the minimum \(policy.minClients) clients connected within "
                + "\(Int(policy.waitForClients)) s"
            return [.finish(RoundOutcome(round: round, started: since, finished: now, cohort: [], updates: [],
                                         declines: [], dropouts: [], abortReason: reason))]
        case .training:
            if let r = inFlight, r.secure != nil {
                var actions: [Action] = []
                if now >= r.inviteDeadline {
                    let reason = "no answer to the invitation within \(Int(policy.inviteTimeout)) s"
                    for client in r.cohort where !r.accepted.contains(client) && !r.resolved(client) {
                        actions += secureEvent(now: now) { $0.withdraw(client, reason: reason, now: now) }
                    }
                }
                return actions + secureEvent(now: now) { $0.tick(now: now) }
            }
            guard var r = inFlight else { return [] }
            inFlight = nil
            var actions: [Action] = []
            for client in r.cohort where !r.resolved(client) {
                if !r.accepted.contains(client), now >= r.inviteDeadline {
                    let reason = "no answer to the invitation within \(Int(policy.inviteTimeout)) s"
                    r.dropouts.append(ClientReason(client: client, reason: reason))
                    actions.append(.dismiss(client: client, round: r.round, reason: reason))
                } else if now >= r.roundDeadline {
                    let reason = "no update within the round's \(Int(policy.roundTimeout)) s"
                    r.dropouts.append(ClientReason(client: client, reason: reason))
                    actions.append(.dismiss(client: client, round: r.round, reason: reason))
                }
            }
            inFlight = r
            return actions.isEmpty ? [] : actions + finishIfResolved(now: now)
        case .idle, .finishing:
            return []
        }
    }

    /// The driver has carried out `.finish`: the next queued round may start.
    public mutating func roundFinished(now: Date) -> [Action] {
        phase = .idle
        inFlight = nil
        return startIfPossible(now: now)
    }

    /// Cancels the queued rounds (the operator's decision); the round in flight runs on.
    public mutating func cancelQueued() { queued = phase == .waitingForClients ? 1 : 0 }

    // MARK: Internals

    private mutating func startIfPossible(now: Date) -> [Action] {
        guard queued > 0, phase == .idle || phase == .waitingForClients else { return [] }
        // Secure rounds need every member's pinned signing key.
        let eligible = connected.keys.sorted().filter { !policy.secureAggregation || signingKeys[$0] != nil }
        guard eligible.count >= policy.minClients else {
            if phase == .idle {
                phase = .waitingForClients
                waitingSince = now
                return [.log("round \(nextRound): waiting for \(policy.minClients) clients (\(eligible.count) connected)")]
            }
            return []
        }
        let wanted = min(policy.maxClients, max(policy.minClients, Int((policy.fraction * Double(eligible.count)).rounded(.up))))
        let cohort = choose(eligible, min(wanted, eligible.count)).sorted()
        let round = nextRound
        nextRound += 1
        queued -= 1
        let started = waitingSince ?? now
        waitingSince = nil
        phase = .training
        inFlight = InFlight(round: round, started: started, cohort: cohort,
                            inviteDeadline: now.addingTimeInterval(policy.inviteTimeout),
                            roundDeadline: now.addingTimeInterval(policy.roundTimeout))
        let begin: [Action] = [.beginRound(round: round, started: started, cohort: cohort),
                               .log("round \(round): inviting \(cohort.joined(separator: ", "))")]
        guard policy.secureAggregation else { return begin + cohort.map { .invite(client: $0, round: round) } }
        do {
            let (invite, setup) = try secureInvitation(round: round, cohort: cohort)
            inFlight?.secure = try SecureRound(invite: invite, setup: setup,
                                               firstDeadline: now.addingTimeInterval(policy.roundTimeout),
                                               stageTimeout: policy.inviteTimeout)
            return begin + [.log("round \(round): secure aggregation over a \(setup.graph), threshold \(setup.threshold) "
                                 + "per neighbourhood, update clip ±\(setup.updateClip), weight bound \(Int(setup.weightBound))")]
                + cohort.map { .inviteSecurely(client: $0, invite: invite, setup: setup) }
        } catch {
            phase = .finishing
            return begin + [.finish(RoundOutcome(round: round, started: started, finished: now, cohort: cohort, updates: [],
                                                 declines: [], dropouts: [],
                                                 abortReason: "cannot set up secure aggregation: \(error)"))]
        }
    }

    /// The invitation and secure-aggregation setup of a round: members numbered 1...n in name order.
    private func secureInvitation(round: UInt64, cohort: [String]) throws -> (Invite, SecureRoundSetup) {
        guard parameterCount >= 1, !globalAdapterDigest.isEmpty else {
            throw FederationError.round(round, "the driver has not set the global adapter")
        }
        let members = try cohort.sorted().enumerated().map { index, name -> SecureRoundSetup.Member in
            guard let key = signingKeys[name] else { throw FederationError.peer(name, "has no pinned signing key") }
            return SecureRoundSetup.Member(id: ParticipantID(index + 1), name: name, signingKey: key)
        }
        guard members.count >= 2 else {
            throw FederationError.round(round, "secure aggregation needs at least 2 clients, the cohort has \(members.count)")
        }
        let graph: NeighbourGraph, threshold: Int
        if let rate = policy.dropoutTolerance {
            let tolerance = try DropoutTolerance(
                dropoutRate: rate, failureProbability: policy.dropoutFailureProbability ?? DropoutTolerance.defaultFailureProbability)
            if let degree = policy.neighbourDegree {
                graph = degree >= members.count - 1 ? .complete : .harary(degree: degree)
                threshold = try tolerance.threshold(cohortSize: members.count, graph: graph)
            } else {
                (graph, threshold) = try tolerance.graphAndThreshold(cohortSize: members.count)
            }
        } else {
            let degree = policy.neighbourDegree ?? NeighbourGraph.defaultDegree(cohortSize: members.count)
            graph = degree >= members.count - 1 ? .complete : .harary(degree: degree)
            // The threshold the session would choose for this graph (2m/3 + 1 of the smallest neighbourhood).
            switch graph {
            case .complete: threshold = SecureAggregationSession.defaultThreshold(neighbourhoodSize: members.count)
            case let .harary(k): threshold = SecureAggregationSession.defaultThreshold(neighbourhoodSize: k + 1)
            }
        }
        let invite = Invite(round: round, plan: policy.plan, aggregation: policy.aggregation, secureAggregation: true,
                            adapterSHA256: globalAdapterDigest, deadlineSeconds: policy.roundTimeout)
        let setup = SecureRoundSetup(
            round: round, members: members, degree: { if case let .harary(k) = graph { return UInt32(k) } else { return 0 } }(),
            threshold: UInt32(threshold),
            updateClip: policy.updateClip ?? SecureUpdate.defaultClip(plan: policy.plan),
            weightBound: policy.weightBound ?? SecureUpdate.defaultWeightBound, vectorLength: UInt64(parameterCount + 1))
        _ = try setup.session(invite: invite)  // refuses a graph or threshold the session cannot use
        return (invite, setup)
    }

    // MARK: Secure rounds

    /// `client`'s key advertisement for `round`.
    public mutating func secureAdvertise(_ client: String, round: UInt64, _ message: SecureAdvertise, now: Date) -> [Action] {
        guard inFlight?.round == round, inFlight?.accepted.contains(client) == true else {
            return [.log("ignored key advertisement of round \(round) from '\(client)': it has not accepted that round")]
        }
        return secureEvent(now: now) { $0.advertise(client, message, now: now) }
    }

    /// `client`'s sealed shares for `round`.
    public mutating func secureShares(_ client: String, round: UInt64, _ message: SecureShares, now: Date) -> [Action] {
        guard inFlight?.round == round else { return [.log("ignored key shares of round \(round) from '\(client)'")] }
        return secureEvent(now: now) { $0.shares(client, message, now: now) }
    }

    /// `client`'s masked input and figures for `round`.
    public mutating func secureMaskedInput(_ client: String, round: UInt64, _ message: SecureMaskedInput,
                                           metrics: ClientRoundMetrics, now: Date) -> [Action] {
        guard inFlight?.round == round else { return [.log("ignored masked input of round \(round) from '\(client)'")] }
        var actions = secureEvent(now: now) { $0.maskedInput(client, message, metrics: metrics, now: now) }
        actions.insert(.log(String(format: "round %llu: masked update from '%@' (held-out loss %.4f → %.4f, ε %.2f)",
                                   round, client, metrics.evalLossBefore, metrics.evalLossAfter, metrics.epsilon)), at: 0)
        return actions
    }

    /// `client`'s revealed shares for `round`.
    public mutating func secureUnmask(_ client: String, round: UInt64, _ message: SecureUnmaskResponse, now: Date) -> [Action] {
        guard inFlight?.round == round else { return [.log("ignored unmask shares of round \(round) from '\(client)'")] }
        return secureEvent(now: now) { $0.unmask(client, message, now: now) }
    }

    /// `client` gives up on `round` with a reason (e.g. it refused a stage's message).
    public mutating func withdraw(_ client: String, round: UInt64, reason: String, now: Date) -> [Action] {
        guard inFlight?.round == round, phase == .training else { return [] }
        if inFlight?.secure != nil {
            return secureEvent(now: now) { $0.withdraw(client, reason: reason, now: now) }
        }
        guard var r = inFlight, r.cohort.contains(client), !r.resolved(client) else { return [] }
        inFlight = nil
        r.dropouts.append(ClientReason(client: client, reason: reason))
        inFlight = r
        return [.log("round \(round): client '\(client)' dropped: \(reason)")] + finishIfResolved(now: now)
    }

    /// Runs an event through the secure round and turns its outputs into actions.
    private mutating func secureEvent(now: Date, _ body: (inout SecureRound) -> [SecureRound.Output]) -> [Action] {
        guard var r = inFlight, phase == .training, var secure = r.secure else { return [] }
        // Release both stored copies, so the secure round's buffers (masked inputs, shares) are
        // mutated in place rather than copied on every message.
        inFlight = nil
        r.secure = nil
        let outputs = body(&secure)
        r.secure = secure
        var actions: [Action] = []
        var outcome: RoundOutcome?
        for output in outputs {
            switch output {
            case let .send(client, message):
                actions.append(.secure(client: client, message: message))
            case let .drop(client, reason):
                if !r.declines.contains(where: { $0.client == client }), !r.dropouts.contains(where: { $0.client == client }) {
                    r.dropouts.append(ClientReason(client: client, reason: reason))
                    actions.append(.dismiss(client: client, round: r.round, reason: reason))
                }
            case let .log(message):
                actions.append(.log(message))
            case let .completed(result):
                var reason: String?
                if result.survivors.count < policy.minClients {
                    reason = "too few survivors: \(result.survivors.count) of the minimum \(policy.minClients)"
                }
                outcome = RoundOutcome(round: r.round, started: r.started, finished: now, cohort: r.cohort, updates: [],
                                       declines: r.declines, dropouts: r.dropouts, abortReason: reason,
                                       secure: reason == nil ? result : nil)
            case let .aborted(reason):
                outcome = RoundOutcome(round: r.round, started: r.started, finished: now, cohort: r.cohort, updates: [],
                                       declines: r.declines, dropouts: r.dropouts, abortReason: reason)
            }
        }
        inFlight = r
        if let outcome {
            phase = .finishing
            actions.append(.finish(outcome))
        }
        return actions
    }

    private mutating func finishIfResolved(now: Date) -> [Action] {
        guard let r = inFlight, phase == .training, r.allResolved else { return [] }
        phase = .finishing
        let updates = r.updates.keys.sorted().map { (client: $0, update: r.updates[$0]!) }
        var reason: String?
        if updates.count < policy.minClients {
            reason = "too few survivors: \(updates.count) update\(updates.count == 1 ? "" : "s") of the minimum \(policy.minClients)"
        }
        return [.finish(RoundOutcome(round: r.round, started: r.started, finished: now, cohort: r.cohort,
                                     updates: reason == nil ? updates : [], declines: r.declines, dropouts: r.dropouts,
                                     abortReason: reason))]
    }
}
