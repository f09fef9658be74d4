import Foundation
import Privacy
import SecureAggregation
import SecureCrypto
import SystemIO
import Wire

/// The coordinator's round engine: a state machine without I/O. The driver feeds it events
/// (connections, messages, the clock, operator requests) and carries out the actions it returns,
/// in order. Tests drive it directly, with injected dropouts and timeouts.
///
/// One round at a time: idle → (waiting for clients →) training → finishing → idle. The round's
/// facts live in the state they belong to, so a round in training always has its cohort and
/// deadlines, and a round waiting for clients has no cohort yet.
public struct RoundEngine: Sendable {
    /// The state's name, as `status` reports it.
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
        /// Persist that `round` is in flight, before any invitation leaves (with a client-level round's sampling and
        /// charge, which a restart's record of the round keeps).
        case beginRound(round: UInt64, started: Date, cohort: [String], clientLevel: ClientLevelRoundFacts?)
        /// A client-level round was charged to the federation's accountant before its clients were sampled:
        /// persist `accountant` durably before anything else of `round` is carried out, and send none of its
        /// invitations if that fails (the round then ends at its deadline).
        case chargeFederation(round: UInt64, accountant: ClientLevelDP.FederationAccountant)
        /// Send the invitation (`invitation(round:)`) and the global adapter to `client`.
        case invite(client: String, round: UInt64)
        /// Send this invitation, then the secure round's setup, then the global adapter, to `client`.
        case inviteSecurely(client: String, invite: Invite, setup: SecureRoundSetup)
        /// Send a secure-aggregation stage message to `client`.
        case secure(client: String, message: SecureDownlink)
        /// Tell `client` it is out of `round` (dropped for a missed deadline, or the round is over).
        case dismiss(client: String, round: UInt64, reason: String)
        /// Send `result` to `client`; a committed result is followed by the global adapter, labelled
        /// with the result's round.
        case tellResult(client: String, result: RoundResult)
        /// The round is over: aggregate if committed, write, audit, then call
        /// `roundFinished(round:verdict:now:)` with how that went.
        case finish(RoundOutcome)
        /// A line for the operator's log.
        case log(String)
    }

    /// A round from its invitations to its outcome.
    private struct InFlight: Sendable {
        var round: UInt64
        var started: Date
        var cohort: [String]
        var accepted: Set<String> = []
        var declines: [ClientReason] = []
        var dropouts: [ClientReason] = []
        var inviteDeadline: Date
        var exchange: Exchange
        /// A client-level round's sampling and charge.
        var clientLevel: ClientLevelRoundFacts?

        /// How the cohort's updates reach the coordinator.
        enum Exchange: Sendable {
            /// In clear, each by `deadline`.
            case plain(updates: [String: ReceivedUpdate], deadline: Date)
            /// Masked, through the secure-aggregation stages, each with its own deadline.
            case secure(SecureRound)
        }

        func resolved(_ client: String) -> Bool {
            if case let .plain(updates, _) = exchange, updates[client] != nil { return true }
            return declines.contains { $0.client == client } || dropouts.contains { $0.client == client }
        }
        var allResolved: Bool { cohort.allSatisfy(resolved) }
        var isSecure: Bool { if case .secure = exchange { true } else { false } }

        /// Drops the members of a plain round that missed the invitation's or the round's deadline.
        mutating func dropLate(now: Date, policy: RoundPolicy) -> [Action] {
            guard case let .plain(_, roundDeadline) = exchange else { return [] }
            var actions: [Action] = []
            for client in cohort where !resolved(client) {
                let reason: String
                if !accepted.contains(client), now >= inviteDeadline {
                    reason = "no answer to the invitation within \(Int(policy.inviteTimeout)) s"
                } else if now >= roundDeadline {
                    reason = "no update within the round's \(Int(policy.roundTimeout)) s"
                } else {
                    continue
                }
                dropouts.append(ClientReason(client: client, reason: reason))
                actions.append(.dismiss(client: client, round: round, reason: reason))
            }
            return actions
        }

        /// The secure round's outputs as actions, its drops recorded, and the outcome if it ended.
        mutating func apply(_ outputs: [SecureRound.Output], policy: RoundPolicy, now: Date) -> ([Action], RoundOutcome?) {
            var actions: [Action] = []
            var outcome: RoundOutcome?
            for output in outputs {
                switch output {
                case let .send(client, message):
                    actions.append(.secure(client: client, message: message))
                case let .drop(client, reason):
                    if !declines.contains(where: { $0.client == client }), !dropouts.contains(where: { $0.client == client }) {
                        dropouts.append(ClientReason(client: client, reason: reason))
                        actions.append(.dismiss(client: client, round: round, reason: reason))
                    }
                case let .log(message):
                    actions.append(.log(message))
                case let .completed(result):
                    var reason: String?
                    if result.survivors.count < policy.minClients {
                        reason = "too few survivors: \(result.survivors.count) of the minimum \(policy.minClients)"
                    }
                    outcome = RoundOutcome(round: round, started: started, finished: now, cohort: cohort, updates: [],
                                           declines: declines, dropouts: dropouts, abortReason: reason,
                                           secure: reason == nil ? result : nil, clientLevel: clientLevel)
                case let .aborted(reason):
                    outcome = RoundOutcome(round: round, started: started, finished: now, cohort: cohort, updates: [],
                                           declines: declines, dropouts: dropouts, abortReason: reason, clientLevel: clientLevel)
                }
            }
            return (actions, outcome)
        }
    }

    /// A finished round whose outcome is with the driver.
    private struct Finishing: Sendable {
        var round: UInt64
        /// Who hears the result: the cohort, less those that declined.
        var told: [String]
        /// The round as it ended, shown by `status`; nil when it ended before any invitation left.
        var invited: InFlight?
    }

    private enum State: Sendable {
        case idle
        /// The first of the requested rounds waits, since `since`, for `minClients` eligible clients.
        case waitingForClients(since: Date)
        case training(InFlight)
        case finishing(Finishing)
    }

    public let policy: RoundPolicy
    /// Chooses `count` of the given clients (the driver passes a CSPRNG-backed choice; tests a fixed one).
    private let choose: @Sendable ([String], Int) -> [String]
    private var state = State.idle
    /// Rounds requested and not yet started, besides the one waiting for clients.
    private var backlog = 0
    /// How past rounds ended, for clients that reconnect asking about one.
    private var pastRounds: [UInt64: RoundVerdict]
    /// Connected clients (hello received) and since when.
    public private(set) var connected: [String: Date] = [:]
    /// The number the next round takes.
    public private(set) var nextRound: UInt64
    /// Connected clients' pinned Ed25519 keys (the driver checked them against the registry).
    public private(set) var signingKeys: [String: SigningPublicKey] = [:]
    /// The digest of the global adapter the next round starts from (`AdapterMath.digest`).
    public private(set) var globalAdapterDigest = ""
    /// The global adapter's parameter count (secure rounds mask this many values and the weight).
    public private(set) var parameterCount = 0
    /// Client-level plans: every registered client (enrolled, not revoked), the population N the coordinator
    /// Poisson-samples each round from (`setPopulation`; connected clients count whether listed or not).
    public private(set) var population: [String] = []
    /// Client-level plans: the federation's accountant over client participations, charged before each sample.
    public private(set) var federationAccountant: ClientLevelDP.FederationAccountant?
    /// Client-level plans: the S the next round clips to, the plan's `clip_norm` until adaptive clipping moves it
    /// (`setClientClipNorm`, from each committed round's noised count).
    public private(set) var clientClipNorm: Double
    /// Client-level plans: the Poisson sample of the population at rate q (the driver passes libsodium's,
    /// `ClientLevelDP.ClientSampler`; tests may pass another).
    private let sampleClients: @Sendable ([String], Double) -> [String]

    /// - Parameters:
    ///   - nextRound: the number the first round takes.
    ///   - pastRounds: how earlier rounds ended (from the audit log), for clients that ask.
    ///   - choose: picks a cohort of the given size from the eligible clients.
    ///   - federationAccountant: client-level plans: the accountant as persisted (its charged rounds), required.
    ///   - sampleClients: client-level plans: the Poisson sample at rate q (default: libsodium's).
    public init(policy: RoundPolicy, nextRound: UInt64, pastRounds: [UInt64: RoundVerdict] = [:],
                federationAccountant: ClientLevelDP.FederationAccountant? = nil,
                sampleClients: @escaping @Sendable ([String], Double) -> [String] = RoundEngine.poissonSample,
                choose: @escaping @Sendable ([String], Int) -> [String]) {
        precondition(!policy.plan.isClientLevel || federationAccountant != nil, "a client-level plan needs the federation's accountant")
        self.policy = policy
        self.nextRound = nextRound
        self.pastRounds = pastRounds
        self.federationAccountant = federationAccountant
        self.clientClipNorm = policy.plan.clipNorm
        self.sampleClients = sampleClients
        self.choose = choose
    }

    /// Each client independently with probability q, from libsodium (`ClientLevelDP.ClientSampler`).
    public static func poissonSample(_ clients: [String], samplingRate: Double) -> [String] {
        guard let sampler = try? ClientLevelDP.ClientSampler(samplingRate: samplingRate) else { return [] }
        return sampler.sample(clients)
    }

    /// The federation's accountant for a client-level `policy` with `rounds` already charged (nil otherwise).
    /// - Throws: `PrivacyParameterError` when the budget is invalid or the charged rounds already pass it.
    public static func federationAccountant(policy: RoundPolicy, rounds: [ClientLevelDP.Round] = [])
        throws -> ClientLevelDP.FederationAccountant? {
        guard policy.plan.isClientLevel, let budget = policy.clientEpsilonBudget else { return nil }
        return try ClientLevelDP.FederationAccountant(epsilonBudget: budget, delta: policy.plan.delta, rounds: rounds)
    }

    /// Tells the engine the S the next client-level round clips to (adaptive clipping's, after a committed round or as
    /// a restarted coordinator finds it in its audit log); ignored unless finite and positive.
    public mutating func setClientClipNorm(_ clipNorm: Double) {
        guard clipNorm.isFinite, clipNorm > 0 else { return }
        clientClipNorm = clipNorm
    }

    /// Tells the engine the registered clients (client-level rounds sample from them).
    public mutating func setPopulation(_ clients: [String]) { population = clients }

    /// Tells the engine the global adapter the next round starts from (secure rounds bind its digest).
    public mutating func setGlobalAdapter(digest: String, parameterCount: Int) {
        globalAdapterDigest = digest
        self.parameterCount = parameterCount
    }

    // MARK: Queries

    public var phase: Phase {
        switch state {
        case .idle: return .idle
        case .waitingForClients: return .waitingForClients
        case .training: return .training
        case .finishing: return .finishing
        }
    }

    /// Rounds requested and not yet started (the one waiting for clients included).
    public var queued: Int {
        if case .waitingForClients = state { return backlog + 1 }
        return backlog
    }

    /// The number the first of the rounds requested next will take.
    public var firstUnrequestedRound: UInt64 { nextRound + UInt64(queued) }

    /// The round in flight, its cohort and who has answered, for `status`.
    public var status: Status {
        Status(phase: phase, queuedRounds: queued, nextRound: nextRound, connected: connected.keys.sorted(),
               inFlight: invited.map { r in
                   var uploaded: [String] = [], secureStage: String?
                   switch r.exchange {
                   case let .plain(updates, _): uploaded = updates.keys.sorted()
                   case let .secure(secure): secureStage = secure.stage.rawValue
                   }
                   return RoundInFlight(round: r.round, cohort: r.cohort, accepted: r.accepted.sorted(), uploaded: uploaded,
                                        declined: r.declines, dropped: r.dropouts, started: r.started, secureStage: secureStage)
               })
    }

    /// The round whose invitations went out, while it is in training or finishing.
    private var invited: InFlight? {
        switch state {
        case let .training(r): return r
        case let .finishing(f): return f.invited
        case .idle, .waitingForClients: return nil
        }
    }

    /// The round in training, if any, and whether it is secure.
    private var training: (round: UInt64, isSecure: Bool)? {
        guard case let .training(r) = state else { return nil }
        return (r.round, r.isSecure)
    }

    /// The round `client` is in, if any (for telling a reconnecting client about its old round).
    public var currentRound: UInt64? { invited?.round }

    /// Whether `client` is still expected to upload a plain (unmasked) update in the round in flight.
    public func isActive(_ client: String, round: UInt64) -> Bool {
        guard case let .training(r) = state, r.round == round, !r.isSecure else { return false }
        return r.cohort.contains(client) && !r.resolved(client)
    }

    /// The invitation to plain round `round`: the policy's plan and the global adapter's digest.
    public func invitation(round: UInt64) -> Invite {
        Invite(round: round, plan: policy.plan(round: round), aggregation: policy.aggregation.rawValue,
               secureAggregation: policy.secureAggregation, adapterSHA256: globalAdapterDigest,
               deadlineSeconds: policy.roundTimeout)
    }

    // MARK: Events

    /// The operator asks for `count` more rounds.
    public mutating func requestRounds(_ count: Int, now: Date) -> [Action] {
        backlog += max(0, count)
        return startIfPossible(now: now)
    }

    /// Cancels the queued rounds (the operator's decision); the round in flight, or the one waiting
    /// for clients, runs on.
    public mutating func cancelQueued() { backlog = 0 }

    /// A client finished its handshake and hello; `signingKey` is its pinned Ed25519 key, if it sent
    /// one, and `pendingRound` the round it lost its connection in (0: none), which it is told about.
    public mutating func connect(_ client: String, now: Date, signingKey: SigningPublicKey? = nil,
                                 pendingRound: UInt64 = 0) -> [Action] {
        connected[client] = now
        signingKeys[client] = signingKey
        let told: [Action] = pendingRound == 0 ? [] : [.tellResult(client: client, result: result(ofPastRound: pendingRound))]
        return told + [.log("client '\(client)' connected (\(connected.count) connected)")] + startIfPossible(now: now)
    }

    /// A client's connection closed.
    public mutating func disconnect(_ client: String, now: Date) -> [Action] {
        connected[client] = nil
        signingKeys[client] = nil
        let log = Action.log("client '\(client)' disconnected (\(connected.count) connected)")
        guard let round = training?.round else { return [log] }
        return [log] + leave(client, round: round, reason: "disconnected", now: now)
    }

    /// `client` accepts `round`.
    public mutating func accept(_ client: String, round: UInt64, now: Date) -> [Action] {
        let accepted = modifyTraining { r -> Bool in
            guard r.round == round, r.cohort.contains(client), !r.resolved(client), !r.accepted.contains(client) else {
                return false
            }
            r.accepted.insert(client)
            return true
        }
        guard accepted == true else { return [.log("ignored accept of round \(round) from '\(client)': not awaiting it")] }
        return [.log("round \(round): client '\(client)' accepted")]
    }

    /// `client` declines `round`.
    public mutating func decline(_ client: String, round: UInt64, reason: String, now: Date) -> [Action] {
        let secure = modifyTraining { r -> Bool? in
            guard r.round == round, r.cohort.contains(client), !r.resolved(client) else { return nil }
            r.accepted.remove(client)
            r.declines.append(ClientReason(client: client, reason: reason))
            return r.isSecure
        }
        guard let secure = secure ?? nil else {
            return [.log("ignored decline of round \(round) from '\(client)': not awaiting it")]
        }
        let log = Action.log("round \(round): client '\(client)' declined: \(reason)")
        if secure { return [log] + secureEvent(now: now) { $0.withdraw(client, reason: "declined", now: now) } }
        return [log] + finishIfResolved(now: now)
    }

    /// `client`'s update and metrics for `round` arrived complete.
    public mutating func upload(_ client: String, round: UInt64, update: ReceivedUpdate, now: Date) -> [Action] {
        if training?.round == round, let problem = heldOutProblem(update.metrics, round: round) {
            return leave(client, round: round, reason: problem, now: now)
        }
        let stored = modifyTraining { r -> Bool in
            guard r.round == round, r.accepted.contains(client), !r.resolved(client),
                  case .plain(var updates, let deadline) = r.exchange else { return false }
            r.exchange = .plain(updates: [:], deadline: deadline)  // releases the stored copy: `updates` grows in place
            updates[client] = update
            r.exchange = .plain(updates: updates, deadline: deadline)
            return true
        }
        guard stored == true else {
            return [.log("ignored update of round \(round) from '\(client)': not awaiting a plain update from it")]
        }
        return [.log(String(format: "round %llu: update from '%@' (%@, ε %.2f)", round, client,
                            releasedLossText(update.metrics), update.metrics.epsilon))] + finishIfResolved(now: now)
    }

    /// Why `metrics` cannot complete an update of `round`, or nil: its held-out loss release must be there exactly when
    /// the round's plan asked for it (`heldout_interval`). One missing is refused (a release every round asked for is
    /// how the round's figure is pooled); one the round did not ask for was not charged by the plan's accounting.
    private func heldOutProblem(_ metrics: ClientRoundMetrics, round: UInt64) -> String? {
        switch (policy.plan(round: round).asksHeldOutRelease, metrics.heldOut != nil) {
        case (true, false): return "no held-out release in a round that asked for one"
        case (false, true): return "a held-out release in a round that asked for none"
        default: return nil
        }
    }

    /// `client` gives up on `round` with a reason (e.g. it refused a stage's message).
    public mutating func withdraw(_ client: String, round: UInt64, reason: String, now: Date) -> [Action] {
        guard training?.round == round else { return [] }
        return leave(client, round: round, reason: reason, now: now)
    }

    /// The clock: drops clients that missed a deadline, gives up waiting for clients.
    public mutating func tick(now: Date) -> [Action] {
        switch state {
        case let .waitingForClients(since):
            guard now.timeIntervalSince(since) >= policy.waitForClients else { return [] }
            let round = nextRound
            nextRound += 1
            let reason = "only \(connected.count) of the minimum \(policy.minClients) clients connected within "
                + "\(Int(policy.waitForClients)) s"
            return [finish(RoundOutcome(round: round, started: since, finished: now, cohort: [], updates: [],
                                        declines: [], dropouts: [], abortReason: reason))]
        case let .training(r) where r.isSecure:
            let silent = now >= r.inviteDeadline ? r.cohort.filter { !r.accepted.contains($0) && !r.resolved($0) } : []
            var actions: [Action] = []
            let reason = "no answer to the invitation within \(Int(policy.inviteTimeout)) s"
            for client in silent { actions += secureEvent(now: now) { $0.withdraw(client, reason: reason, now: now) } }
            return actions + secureEvent(now: now) { $0.tick(now: now) }
        case .training:
            let policy = policy
            let actions = modifyTraining { $0.dropLate(now: now, policy: policy) } ?? []
            return actions.isEmpty ? [] : actions + finishIfResolved(now: now)
        case .idle, .finishing:
            return []
        }
    }

    /// The driver has carried out `.finish` for `round`: it tells the cohort the verdict and the next
    /// queued round may start. Call `setGlobalAdapter` first when the round committed.
    public mutating func roundFinished(round: UInt64, verdict: RoundVerdict, now: Date) -> [Action] {
        guard case let .finishing(finishing) = state, finishing.round == round else {
            preconditionFailure("roundFinished(round: \(round)) while \(phase.rawValue)")
        }
        pastRounds[round] = verdict
        state = .idle
        let result = RoundResult(round: round, committed: verdict.isCommitted,
                                 adapterSHA256: verdict.isCommitted ? globalAdapterDigest : "", reason: verdict.reason)
        return finishing.told.map { .tellResult(client: $0, result: result) } + startIfPossible(now: now)
    }

    // MARK: Internals

    /// Runs `body` on the round in training (nil in any other state), in place: the stored copy is
    /// released first, so the round's buffers (updates, the secure round's masked sum) are mutated
    /// rather than copied on every message.
    private mutating func modifyTraining<R>(_ body: (inout InFlight) -> R) -> R? {
        guard case .training(var r) = state else { return nil }
        state = .idle
        defer { state = .training(r) }
        return body(&r)
    }

    /// What a client that lost its connection during `round` is told about it.
    private func result(ofPastRound round: UInt64) -> RoundResult {
        switch pastRounds[round] {
        case .committed?:
            return RoundResult(round: round, committed: true, adapterSHA256: globalAdapterDigest, reason: "committed")
        case let .aborted(reason)?:
            return RoundResult(round: round, committed: false, adapterSHA256: "", reason: reason)
        case nil:
            let reason = currentRound == round ? "dropped from round \(round): the connection was lost"
                                               : "round \(round) is unknown to the coordinator"
            return RoundResult(round: round, committed: false, adapterSHA256: "", reason: reason)
        }
    }

    /// `client` is out of the round in training (disconnected, or gave up): dropped and dismissed.
    private mutating func leave(_ client: String, round: UInt64, reason: String, now: Date) -> [Action] {
        guard let training else { return [] }
        if training.isSecure { return secureEvent(now: now) { $0.withdraw(client, reason: reason, now: now) } }
        let dropped = modifyTraining { r -> Bool in
            guard r.cohort.contains(client), !r.resolved(client) else { return false }
            r.dropouts.append(ClientReason(client: client, reason: reason))
            return true
        }
        guard dropped == true else { return [] }
        return [.log("round \(round): client '\(client)' dropped: \(reason)")] + finishIfResolved(now: now)
    }

    private mutating func startIfPossible(now: Date) -> [Action] {
        let waitingSince: Date?
        switch state {
        case .idle:
            guard backlog > 0 else { return [] }
            waitingSince = nil
        case let .waitingForClients(since):
            waitingSince = since
        case .training, .finishing:
            return []
        }
        // Secure rounds need every member's pinned signing key.
        let eligible = connected.keys.sorted().filter { !policy.secureAggregation || signingKeys[$0] != nil }
        if waitingSince == nil { backlog -= 1 }
        guard eligible.count >= policy.minClients else {
            guard waitingSince == nil else { return [] }
            state = .waitingForClients(since: now)
            return [.log("round \(nextRound): waiting for \(policy.minClients) clients (\(eligible.count) connected)")]
        }
        if policy.plan.isClientLevel { return beginClientLevel(eligible: eligible, started: waitingSince ?? now, now: now) }
        let wanted = min(policy.maxClients, max(policy.minClients, Int((policy.fraction * Double(eligible.count)).rounded(.up))))
        return begin(cohort: choose(eligible, min(wanted, eligible.count)).sorted(), started: waitingSince ?? now, now: now)
    }

    /// A client-level round (DP-FedAvg): refused, with the rounds queued after it, when the federation's ε would pass
    /// its budget; else charged first (whatever the sample turns out to be: the charge must not depend on it), then
    /// every registered client Poisson-sampled at q. The connected ones sampled are the cohort; a cohort below
    /// max(2, min_clients) cannot run secure aggregation and the round is skipped, its record written and its
    /// charge kept (SECURITY.md, "Client-level DP").
    private mutating func beginClientLevel(eligible: [String], started: Date, now: Date) -> [Action] {
        guard var accountant = federationAccountant, let q = policy.plan.clientSamplingRate else {
            preconditionFailure("a client-level round without its accountant or client_sampling_rate")
        }
        let plan = policy.plan
        let epsilon: Double
        do {
            epsilon = try accountant.charge(ClientLevelDP.Round(samplingRate: q, noiseMultiplier: plan.noiseMultiplier))
        } catch {
            state = .idle
            backlog = 0
            return [.log("round \(nextRound) refused before sampling, with the rounds queued after it: \(error)")]
        }
        federationAccountant = accountant
        let everyone = Set(population).union(connected.keys).sorted()
        let sampled = sampleClients(everyone, q)
        let reachable = Set(eligible)
        let cohort = sampled.filter(reachable.contains).sorted()
        let facts = ClientLevelRoundFacts(population: everyone.count, sampled: sampled.count, samplingRate: q,
                                          noiseMultiplier: plan.noiseMultiplier, clipNorm: clientClipNorm, epsilon: epsilon,
                                          delta: plan.delta, epsilonBudget: accountant.epsilonBudget,
                                          roundsCharged: accountant.rounds.count, adaptiveClipping: policy.adaptiveClipping)
        let charged: [Action] = [
            .chargeFederation(round: nextRound, accountant: accountant),
            .log(String(format: "round %llu: client-level, charged before sampling: the federation's ε %.4f of %g at δ %g "
                         + "(q %g, z %g, %d rounds); sampled %d of %d registered clients, %d connected", nextRound, epsilon,
                         accountant.epsilonBudget, plan.delta, q, plan.noiseMultiplier, accountant.rounds.count, sampled.count,
                         everyone.count, cohort.count)),
        ]
        let fewest = max(2, policy.minClients)
        guard cohort.count >= fewest else {
            let round = nextRound
            nextRound += 1
            let reason = "skipped: \(cohort.count) sampled client\(cohort.count == 1 ? "" : "s") connected (\(sampled.count) of "
                + "\(everyone.count) sampled at q \(q)), fewer than the \(fewest) secure aggregation needs; charged all the same"
            return charged + [.beginRound(round: round, started: started, cohort: cohort, clientLevel: facts),
                              finish(RoundOutcome(round: round, started: started, finished: now, cohort: cohort, updates: [],
                                                  declines: [], dropouts: [], abortReason: reason, clientLevel: facts))]
        }
        return charged + begin(cohort: cohort, started: started, now: now, clientLevel: facts)
    }

    /// Starts the next round with `cohort`: marks it, then invites (plainly or with a secure setup).
    private mutating func begin(cohort: [String], started: Date, now: Date, clientLevel: ClientLevelRoundFacts? = nil) -> [Action] {
        let round = nextRound
        nextRound += 1
        let begin: [Action] = [.beginRound(round: round, started: started, cohort: cohort, clientLevel: clientLevel),
                               .log("round \(round): inviting \(cohort.joined(separator: ", "))")]
        func inFlight(_ exchange: InFlight.Exchange) -> InFlight {
            InFlight(round: round, started: started, cohort: cohort,
                     inviteDeadline: now.addingTimeInterval(policy.inviteTimeout), exchange: exchange, clientLevel: clientLevel)
        }
        guard policy.secureAggregation else {
            state = .training(inFlight(.plain(updates: [:], deadline: now.addingTimeInterval(policy.roundTimeout))))
            return begin + cohort.map { .invite(client: $0, round: round) }
        }
        do {
            let (invite, setup) = try secureInvitation(round: round, cohort: cohort, clientLevel: clientLevel)
            if clientLevel != nil {
                do {
                    try ClientLevelDP.checkAccountedNoise(SecureUpdate.clientLevelParameters(plan: invite.plan, setup: setup, assumeHonest: 1),
                                                          noiseMultiplier: policy.plan.noiseMultiplier)
                } catch {
                    throw FederationError.round(round, "the federation's client-level accountant does not cover this cohort's "
                                                + "discrete noise: \(error)")
                }
            }
            let secure = try SecureRound(invite: invite, setup: setup, firstDeadline: now.addingTimeInterval(policy.roundTimeout),
                                         stageTimeout: policy.inviteTimeout)
            state = .training(inFlight(.secure(secure)))
            return begin + [.log("round \(round): secure aggregation over a \(setup.graph), threshold \(setup.threshold) "
                                 + "per neighbourhood, update clip ±\(setup.updateClip), equal weights")]
                + cohort.map { .inviteSecurely(client: $0, invite: invite, setup: setup) }
        } catch {
            return begin + [finish(RoundOutcome(round: round, started: started, finished: now, cohort: cohort, updates: [],
                                                declines: [], dropouts: [],
                                                abortReason: "cannot set up secure aggregation: \(error)", clientLevel: clientLevel))]
        }
    }

    /// The invitation and secure-aggregation setup of a round: members numbered 1...n in name order.
    private func secureInvitation(round: UInt64, cohort: [String], clientLevel: ClientLevelRoundFacts?) throws -> (Invite, SecureRoundSetup) {
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
        let (graph, threshold) = try neighbourhoods(cohortSize: members.count)
        // Refused when planned: a threshold that few colluders with a lying coordinator defeat (clients refuse it too).
        try CollusionResistance.require(cohortSize: members.count, graph: graph, threshold: threshold)
        let plan = policy.plan(round: round, clientLevel: clientLevel)
        let invite = Invite(round: round, plan: plan, aggregation: policy.aggregation.rawValue,
                            secureAggregation: true, adapterSHA256: globalAdapterDigest, deadlineSeconds: policy.roundTimeout)
        let setup = SecureRoundSetup(
            round: round, members: members, degree: { if case let .harary(k) = graph { return UInt32(k) } else { return 0 } }(),
            threshold: UInt32(threshold),
            updateClip: policy.updateClip ?? SecureUpdate.defaultClip(plan: policy.plan),
            vectorLength: UInt64(SecureUpdate.vectorLength(parameterCount: parameterCount, plan: plan)))
        _ = try setup.session(invite: invite)  // refuses a graph or threshold the session cannot use
        return (invite, setup)
    }

    /// The neighbour graph and Shamir threshold of a secure cohort of `cohortSize`, from the policy.
    private func neighbourhoods(cohortSize: Int) throws -> (NeighbourGraph, Int) {
        try policy.secureAggregationGraph(cohortSize: cohortSize)
    }

    // MARK: Secure rounds

    /// `client`'s key advertisement for `round`.
    public mutating func secureAdvertise(_ client: String, round: UInt64, _ message: SecureAdvertise, now: Date) -> [Action] {
        guard let r = invited, r.round == round, r.accepted.contains(client) else {
            return [.log("ignored key advertisement of round \(round) from '\(client)': it has not accepted that round")]
        }
        return secureEvent(now: now) { $0.advertise(client, message, now: now) }
    }

    /// `client`'s sealed shares for `round`.
    public mutating func secureShares(_ client: String, round: UInt64, _ message: SecureShares, now: Date) -> [Action] {
        guard invited?.round == round else { return [.log("ignored key shares of round \(round) from '\(client)'")] }
        return secureEvent(now: now) { $0.shares(client, message, now: now) }
    }

    /// `client`'s masked input and figures for `round`.
    public mutating func secureMaskedInput(_ client: String, round: UInt64, _ message: SecureMaskedInput,
                                           metrics: ClientRoundMetrics, now: Date) -> [Action] {
        guard invited?.round == round else { return [.log("ignored masked input of round \(round) from '\(client)'")] }
        if training?.round == round, let problem = heldOutProblem(metrics, round: round) {
            return leave(client, round: round, reason: problem, now: now)
        }
        return [.log(String(format: "round %llu: masked update from '%@' (%@, ε %.2f)",
                            round, client, releasedLossText(metrics), metrics.epsilon))]
            + secureEvent(now: now) { $0.maskedInput(client, message, metrics: metrics, now: now) }
    }

    /// `client`'s signature on the survivor set of `round`.
    public mutating func secureConsistency(_ client: String, round: UInt64, _ message: SecureConsistencySignature,
                                           now: Date) -> [Action] {
        guard invited?.round == round else { return [.log("ignored survivor-set signature of round \(round) from '\(client)'")] }
        return secureEvent(now: now) { $0.consistencySignature(client, message, now: now) }
    }

    /// `client`'s revealed shares for `round`.
    public mutating func secureUnmask(_ client: String, round: UInt64, _ message: SecureUnmaskResponse, now: Date) -> [Action] {
        guard invited?.round == round else { return [.log("ignored unmask shares of round \(round) from '\(client)'")] }
        return secureEvent(now: now) { $0.unmask(client, message, now: now) }
    }

    /// Runs an event through the secure round in training and turns its outputs into actions.
    private mutating func secureEvent(now: Date, _ body: (inout SecureRound) -> [SecureRound.Output]) -> [Action] {
        let policy = policy
        let handled = modifyTraining { r -> ([Action], RoundOutcome?)? in
            guard case var .secure(secure) = r.exchange else { return nil }
            // Releases the stored copy, so the secure round's buffers (masked inputs, shares) are
            // mutated in place rather than copied on every message.
            r.exchange = .plain(updates: [:], deadline: .distantPast)
            let outputs = body(&secure)
            r.exchange = .secure(secure)
            return r.apply(outputs, policy: policy, now: now)
        }
        guard let (actions, outcome) = handled ?? nil else { return [] }
        guard let outcome else { return actions }
        return actions + [finish(outcome)]
    }

    /// Ends a plain round in training once every member has uploaded, declined or dropped.
    private mutating func finishIfResolved(now: Date) -> [Action] {
        guard case let .training(r) = state, case let .plain(received, _) = r.exchange, r.allResolved else { return [] }
        let updates = received.keys.sorted().map { (client: $0, update: received[$0]!) }
        var reason: String?
        if updates.count < policy.minClients {
            reason = "too few survivors: \(updates.count) update\(updates.count == 1 ? "" : "s") of the minimum \(policy.minClients)"
        }
        return [finish(RoundOutcome(round: r.round, started: r.started, finished: now, cohort: r.cohort,
                                    updates: reason == nil ? updates : [], declines: r.declines, dropouts: r.dropouts,
                                    abortReason: reason))]
    }

    /// Hands `outcome` to the driver; the round stays on view (`status`) until `roundFinished`.
    private mutating func finish(_ outcome: RoundOutcome) -> Action {
        let invited: InFlight? = if case let .training(r) = state { r } else { nil }
        let declined = Set(outcome.declines.map(\.client))
        state = .finishing(Finishing(round: outcome.round, told: outcome.cohort.filter { !declined.contains($0) },
                                     invited: invited))
        return .finish(outcome)
    }
}

/// A client's released held-out loss for the operator's log: "held-out loss (DP-released ± se) a → b".
func releasedLossText(_ metrics: ClientRoundMetrics) -> String {
    guard let heldOut = metrics.heldOut, let released = ReleasedLoss([heldOut]) else { return "no held-out release" }
    func figure(_ value: Double?) -> String { value.map { String(format: "%.4f", $0) } ?? "n/a" }
    return "held-out loss (DP-released, ± \(figure(released.standardError))) \(figure(released.before)) → \(figure(released.after))"
}
