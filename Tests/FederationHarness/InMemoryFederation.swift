import FederationProtocol
import Foundation
import ModelFormats
import Privacy
import SecureCrypto
import Wire

/// A federation without sockets: the coordinator's `RoundEngine` and one `ClientAgent` per client
/// in one process. Frames travel encoded, through one first-in first-out queue, and are decoded on
/// arrival as a peer would; training is a closure that returns the client's update; time moves only
/// when a test says so. Both sides' actions are carried out as their drivers (`CoordinatorServer`,
/// `ClientRunner`) carry them out: each client's ledger is a real `PrivacyLedger` charged through
/// `chargeBeforeTraining`, committed rounds are aggregated with FedAvg (the secure sum decoded
/// first), and a client's process can be made to die when a given message reaches it.
public final class InMemoryFederation {
    /// A simulated client's training: its update (local − global) for a plan, from a global
    /// adapter, in a round.
    public typealias Training = @Sendable (_ plan: TrainingPlan, _ global: AdapterTensors, _ round: UInt64) -> AdapterTensors

    /// A fault injected into one client.
    public enum ClientFault: Sendable {
        /// Its process dies as a message of this type reaches it: the connection closes (the
        /// coordinator sees a disconnect) and it never answers again.
        case dies(receiving: MessageType)
        /// Its process hangs as a message of this type reaches it: the connection stays open, and it
        /// answers nothing more (deadlines drop it).
        case silent(receiving: MessageType)
        /// Its process dies right after its driver carries out `step`, before the agent hears how it
        /// went: what it wrote (the ledger) and sent (flushed to the coordinator first) stays; nothing more.
        case diesAfter(ClientStep)
    }

    /// One step of a round that a client's driver carries out, for `ClientFault.diesAfter`.
    public enum ClientStep: Sendable, CaseIterable {
        /// The ledger charged (`chargeBeforeTraining` returned).
        case charge
        /// Training done (its update computed, not yet encoded or sent).
        case train
        /// The update sent: a plain round's update and metrics, or a secure round's masked input and metrics.
        case upload
    }

    /// One client to simulate.
    public struct ClientSpec {
        public var name: String
        public var policy: ClientPolicy
        /// Its training records (its own log's; they never travel).
        public var examples: Int
        /// Its state directory: the ledger is created there with the policy's budget unless one exists.
        public var directory: URL
        public var fault: ClientFault?
        public var training: Training
        /// The condition accuracy release its driver makes each round (nil: its held-out records carry no condition, so
        /// it neither charges nor sends one); made only when the plan asks (`accuracy_records` > 0).
        public var conditionAccuracy: ((TrainingPlan, UInt64) -> ConditionAccuracyRelease)?
        /// A client that breaks the protocol after its agent: what it does to its metrics report before sending it (nil:
        /// sent as the agent made it), plain and secure rounds alike.
        public var tamperMetrics: ((inout ClientRoundMetrics) -> Void)?

        public init(name: String, policy: ClientPolicy, examples: Int, directory: URL, fault: ClientFault? = nil,
                    conditionAccuracy: ((TrainingPlan, UInt64) -> ConditionAccuracyRelease)? = nil,
                    tamperMetrics: ((inout ClientRoundMetrics) -> Void)? = nil,
                    training: @escaping Training) {
            self.conditionAccuracy = conditionAccuracy
            self.tamperMetrics = tamperMetrics
            self.name = name
            self.policy = policy
            self.examples = examples
            self.directory = directory
            self.fault = fault
            self.training = training
        }
    }

    /// A simulated client: its agent, and what it did.
    public final class Client {
        public let spec: ClientSpec
        /// The key the coordinator pins at its hello and its agent signs secure-aggregation keys with.
        public let identity: SigningKeyPair
        public fileprivate(set) var agent: ClientAgent
        /// Whether its process runs (a fault or `kill` ends it).
        public fileprivate(set) var alive = true
        /// Whether its process hangs (a fault): connected, answering nothing.
        public fileprivate(set) var hung = false
        /// Its operator log, as its driver writes it.
        public fileprivate(set) var log: [String] = []
        /// The types of the messages it sent, in order.
        public fileprivate(set) var sent: [MessageType] = []
        /// The messages it sent, in order, as frames.
        public fileprivate(set) var sentFrames: [Frame] = []
        /// The global adapter it keeps (from an invitation it prepared, or a committed round).
        public fileprivate(set) var globalAdapter: AdapterTensors?
        /// Errors that closed its connection (a peer fault the agent refused).
        public fileprivate(set) var errors: [String] = []
        /// The fault still to happen (cleared by `restart`).
        public fileprivate(set) var fault: ClientFault?
        /// How many times its process was started again.
        public fileprivate(set) var restarts = 0
        /// The round it is preparing or training: the plan and the global adapter it starts from.
        fileprivate var work: (plan: TrainingPlan, global: AdapterTensors)?

        init(spec: ClientSpec, identity: SigningKeyPair, agent: ClientAgent) {
            self.spec = spec
            self.identity = identity
            self.agent = agent
            self.fault = spec.fault
        }

        /// The client's ledger, created with its policy's budget when it has none (as `join` does).
        public func ledger() throws -> PrivacyLedger {
            if FileManager.default.fileExists(atPath: spec.directory.appendingPathComponent(PrivacyLedger.fileName).path) {
                return try PrivacyLedger(directory: spec.directory)
            }
            return try PrivacyLedger(directory: spec.directory,
                                     creatingWith: PrivacyBudget(epsilon: spec.policy.maxEpsilon, delta: spec.policy.delta,
                                                                 accountant: .rdp, unit: spec.policy.privacyUnit))
        }
    }

    /// A round the coordinator finished, and the global adapter after it.
    public struct FinishedRound {
        public var outcome: RoundOutcome
        public var global: AdapterTensors
        /// How the round ended: an outcome the engine committed is still aborted when its aggregation fails.
        public var verdict: RoundVerdict
        /// Adaptive clipping's move of S in a committed client-level round (nil otherwise).
        public var adaptiveStep: AdaptiveClipStep? = nil
    }

    private enum Delivery {
        case toClient(String, [UInt8])
        case toCoordinator(from: String, [UInt8])
        /// A client's process ends after what it sent before is delivered.
        case crash(String)
    }

    public private(set) var engine: RoundEngine
    public let layout: AdapterLayout
    /// The coordinator's global adapter.
    public private(set) var global: AdapterTensors
    public private(set) var now: Date
    public private(set) var clients: [String: Client] = [:]
    public private(set) var finished: [FinishedRound] = []
    public private(set) var coordinatorLog: [String] = []
    /// The rounds whose update (plain, or masked input) the coordinator received from each client,
    /// whatever became of the round: what the client's ledger must have paid for.
    public private(set) var receivedUpdates: [String: [UInt64]] = [:]
    private var queue: [Delivery] = []
    /// A lying coordinator for tests: rewrites a frame on its way to the named client.
    public var tamperDownlink: ((String, Frame) throws -> Frame)?
    private let model: LlamaConfiguration
    private var uplinks: [String: ClientUplink] = [:]

    /// Connects every client (each says hello with its signing key) to a coordinator whose next
    /// round starts from `global`.
    /// A client-level policy gets a fresh federation accountant, every client as its population, and
    /// `sampleClients` as the coordinator's Poisson sample (default: libsodium's, as the coordinator's).
    public init(policy: RoundPolicy, model: LlamaConfiguration, global: AdapterTensors, clients specs: [ClientSpec],
                now: Date, sampleClients: @escaping @Sendable ([String], Double) -> [String] = RoundEngine.poissonSample) throws {
        layout = try AdapterLayout(configuration: model, plan: policy.plan)
        try layout.check(global, from: "the harness's global adapter")
        engine = RoundEngine(policy: policy, nextRound: 1, federationAccountant: try RoundEngine.federationAccountant(policy: policy),
                             sampleClients: sampleClients) { clients, count in Array(clients.sorted().prefix(count)) }
        engine.setPopulation(specs.map(\.name))
        self.model = model
        self.global = global
        self.now = now
        engine.setGlobalAdapter(digest: AdapterMath.digest(global), parameterCount: global.values.reduce(0) { $0 + $1.count })
        for spec in specs {
            let identity = SigningKeyPair()
            let agent = ClientAgent(name: spec.name, policy: spec.policy, identity: identity) { plan in
                try AdapterLayout(configuration: model, plan: plan)
            }
            let client = Client(spec: spec, identity: identity, agent: agent)
            clients[spec.name] = client
            try coordinate(engine.connect(spec.name, now: now, signingKey: client.identity.publicKey))
        }
    }

    // MARK: What a test does

    /// The operator starts `count` rounds; runs until no message is in flight.
    public func startRounds(_ count: Int) throws {
        try coordinate(engine.requestRounds(count, now: now))
        try run()
    }

    /// The clock moves on by `seconds` (deadlines pass); runs until no message is in flight.
    public func advance(by seconds: TimeInterval) throws {
        now = now.addingTimeInterval(seconds)
        try coordinate(engine.tick(now: now))
        try run()
    }

    /// `name`'s process dies now: its connection closes and it answers nothing more.
    public func kill(_ name: String) throws {
        guard let client = clients[name], client.alive else { return }
        client.alive = false
        client.log.append("(process killed)")
        uplinks[name] = nil
        try coordinate(engine.disconnect(name, now: now))
    }

    /// `name`'s process, dead, starts again on its state directory (its ledger, as a restarted
    /// `join` would): a new agent, which says hello with no round pending, and no fault.
    public func restart(_ name: String) throws {
        guard let client = clients[name], !client.alive else { return }
        let model = self.model
        client.agent = ClientAgent(name: name, policy: client.spec.policy, identity: client.identity) { plan in
            try AdapterLayout(configuration: model, plan: plan)
        }
        client.alive = true
        client.hung = false
        client.fault = nil
        client.work = nil
        client.restarts += 1
        client.log.append("(process restarted)")
        try coordinate(engine.connect(name, now: now, signingKey: client.identity.publicKey))
        try run()
    }

    /// Delivers messages, in the order they were sent, until none is in flight.
    public func run() throws {
        while !queue.isEmpty {
            switch queue.removeFirst() {
            case let .toClient(name, bytes):
                let frame = try Frame.decode(bytes)
                try deliver(try tamperDownlink?(name, frame) ?? frame, to: name)
            case let .toCoordinator(name, bytes):
                guard clients[name]?.alive == true else { continue }
                try coordinatorReceives(try Frame.decode(bytes), from: name)
            case let .crash(name):
                try kill(name)
            }
        }
    }

    /// A fixed update for `client` in `round`, shaped like `global`: each value a function of the
    /// client, round, tensor and index, within ±0.004 (small updates, as a few DP-SGD steps make).
    public static func fixedUpdate(like global: AdapterTensors, client: String, round: UInt64) -> AdapterTensors {
        let seed = Double(client.utf8.reduce(0) { $0 &* 31 &+ Int($1) } % 1000)
        var out: AdapterTensors = [:]
        for (t, name) in global.keys.sorted().enumerated() {
            let count = global[name]?.count ?? 0
            out[name] = (0..<count).map { i in Float(0.004 * sin(Double(i) * 0.37 + Double(t) * 1.3 + seed + Double(round))) }
        }
        return out
    }

    // MARK: The client's driver

    private func deliver(_ frame: Frame, to name: String) throws {
        guard let client = clients[name], client.alive, !client.hung else { return }
        switch client.fault {
        case let .dies(receiving: type)? where type == frame.type:
            try kill(name)
            return
        case let .silent(receiving: type)? where type == frame.type:
            client.hung = true
            client.log.append("(process hangs)")
            return
        default:
            break
        }
        do {
            try carryOut(try client.agent.receive(frame), for: client)
        } catch {
            // As `ClientRunner`: the connection is lost (the harness does not reconnect).
            client.errors.append("\(error)")
            client.agent.connectionLost()
            try kill(name)
        }
    }

    /// A `diesAfter(step)` fault: the process stops now (it carries out nothing more, hears nothing
    /// more) and its connection closes once what it already sent has reached the coordinator.
    private func crashes(_ client: Client, after step: ClientStep) -> Bool {
        guard case .diesAfter(step)? = client.fault else { return false }
        client.hung = true
        client.log.append("(process dies after \(step))")
        queue.append(.crash(client.spec.name))
        return true
    }

    /// Carries out the agent's actions as `ClientRunner.perform` does, with the training closure
    /// and a fixed report in place of the model.
    private func carryOut(_ actions: [ClientAgent.Action], for client: Client) throws {
        var pending = actions[...]
        while let action = pending.popFirst() {
            switch action {
            case let .send(frames):
                try send(frames, from: client)
                if frames.contains(where: { $0.type == .secureMaskedInput }), crashes(client, after: .upload) { return }
            case let .log(line):
                client.log.append(line)
            case let .decline(round, code, detail):
                client.log.append("round \(round): declining (\(code.name)): \(ClientLogText.escaped(detail))")
                try send([Decline(round: round, code: code).frame()], from: client)
            case let .prepare(round, plan, global):
                client.globalAdapter = global
                client.work = (plan, global)
                let mechanism = plan.isPrivate ? MechanismSteps.dpsgd(samplingRate: plan.samplingRate, noiseMultiplier: plan.noiseMultiplier,
                                                                      steps: plan.steps) : nil
                pending += client.agent.prepared(round: round, RoundPreparation(
                    mechanism: mechanism, examples: client.spec.examples,
                    scoresConditions: client.spec.conditionAccuracy != nil && plan.accuracyRecords > 0))
            case let .charge(round, request):
                var ledger = try client.ledger()
                let charge = try ledger.chargeBeforeTraining(request.mechanism, clipNorm: request.clipNorm,
                                                             purpose: "round \(round) in memory" + (request.purposeDetail.map { "; " + $0 } ?? ""),
                                                             ceiling: request.ceiling,
                                                             unit: request.unit, releases: request.releases,
                                                             trustingNoOne: request.trustingNoOne)
                if crashes(client, after: .charge) { return }
                pending += try client.agent.ledgerAnswered(round: round, charge)
            case let .train(round):
                guard let work = client.work else { preconditionFailure("round \(round): training before preparing") }
                client.work = nil
                let report = TrainingReport(update: client.spec.training(work.plan, work.global, round),
                                            heldOut: work.plan.asksHeldOutRelease ? Self.heldOut(plan: work.plan) : nil,
                                            evalLoss: work.plan.asksHeldOutRelease ? (3, 2.5) : nil,
                                            evalTokens: 100, trainLoss: 2.7, seconds: 1,
                                            conditionAccuracy: work.plan.accuracyRecords > 0
                                                ? client.spec.conditionAccuracy?(work.plan, round) : nil)
                if crashes(client, after: .train) { return }
                pending += try client.agent.trainingFinished(round: round, report)
            case let .upload(round, update, metrics):
                try send(try TensorSetFrames.frames(round: round, kind: .update, tensors: update)
                         + [MetricsReport(round: round, metrics: metrics).frame()], from: client)
                if crashes(client, after: .upload) { return }
            case let .keepCommitted(round, _, global):
                client.globalAdapter = global
                client.log.append("round \(round) committed; global adapter kept")
            case let .roundOver(round, reason):
                client.log.append("round \(round) is over for this client: \(reason)")
            }
        }
    }

    private func send(_ frames: [Frame], from client: Client) throws {
        for var frame in frames {
            if frame.type == .metrics, let tamper = client.spec.tamperMetrics {
                var report = try MetricsReport(frame: frame)
                tamper(&report.metrics)
                frame = try report.frame()
            }
            client.sent.append(frame.type)
            client.sentFrames.append(frame)
            queue.append(.toCoordinator(from: client.spec.name, try frame.encoded()))
        }
    }

    // MARK: The coordinator's driver

    /// Turns a client's frame into the engine's event with the coordinator's own decoder.
    private func coordinatorReceives(_ frame: Frame, from client: String) throws {
        var uplink = uplinks[client] ?? ClientUplink(client: client, layout: layout)
        defer { if clients[client]?.alive == true { uplinks[client] = uplink } }
        let engine = self.engine
        if let event = try uplink.receive(frame, isActive: { engine.isActive(client, round: $0) }) {
            switch event {
            case let .upload(round, _): receivedUpdates[client, default: []].append(round)
            case let .secureMaskedInput(input, _): receivedUpdates[client, default: []].append(input.round)
            default: break
            }
            try coordinate(self.engine.handle(event, from: client, now: now))
        }
    }

    /// Carries out the engine's actions, as `CoordinatorServer.perform` does.
    private func coordinate(_ actions: [RoundEngine.Action]) throws {
        for action in actions {
            switch action {
            case let .log(line):
                coordinatorLog.append(line)
            case .beginRound, .chargeFederation:
                break
            case let .invite(client, round):
                try send([engine.invitation(round: round).frame()]
                         + TensorSetFrames.frames(round: round, kind: .globalAdapter, tensors: global), to: client)
            case let .inviteSecurely(client, invite, setup):
                try send([invite.frame(), setup.frame()]
                         + TensorSetFrames.frames(round: invite.round, kind: .globalAdapter, tensors: global), to: client)
            case let .secure(client, message):
                try send([message.frame()], to: client)
            case let .dismiss(client, round, reason):
                coordinatorLog.append("round \(round): client '\(client)' dropped: \(reason)")
                try send([Abort(round: round, code: .dropped, detail: reason).frame()], to: client)
            case let .tellResult(client, result):
                var frames = [try result.frame()]
                if result.committed { frames += try TensorSetFrames.frames(round: result.round, kind: .globalAdapter, tensors: global) }
                try send(frames, to: client)
            case let .finish(outcome):
                let verdict = try finish(outcome)
                try coordinate(engine.roundFinished(round: outcome.round, verdict: verdict, now: now))
            }
        }
    }

    /// A fixed held-out release for a plan: 100 records of loss 3 before and 2.5 after, as the sums
    /// would be without noise (the harness has no model; the mechanism is `HeldOutMetrics`'s to test).
    public static func heldOut(plan: TrainingPlan) -> HeldOutRelease {
        release(before: 3, after: 2.5, records: 100, lossClip: plan.metricsLossClip, noiseMultiplier: plan.metricsNoiseMultiplier)
    }

    /// The release a split of `records` records of mean loss `before` and `after` would give without
    /// noise (for tests of what reads releases; `HeldOutMetrics` makes real ones).
    public static func release(before: Double, after: Double, records: Int, lossClip: Double = 6,
                               noiseMultiplier: Double = 5) -> HeldOutRelease {
        let s = Double(HeldOutRelease.gridScale), n = Double(records)
        return HeldOutRelease(lossBefore: Int64((n * s * before / lossClip).rounded()),
                              lossAfter: Int64((n * s * after / lossClip).rounded()),
                              count: Int64(records) * HeldOutRelease.gridScale, lossClip: lossClip, noiseMultiplier: noiseMultiplier)
    }

    /// Aggregates a committed round as the coordinator does (`RoundAggregation`: plain updates clipped and
    /// combined by the policy's aggregator, a secure round's decoded mean; then FedAvg); the engine
    /// then tells the cohort, except those who declined, how it ended.
    /// A failed aggregation (an unmasked sum that does not decode or fails its range check) aborts the round with
    /// the global adapter unchanged, as the coordinator's `commit` does.
    private func finish(_ outcome: RoundOutcome) throws -> RoundVerdict {
        var verdict: RoundVerdict = outcome.isCommitted ? .committed : .aborted(reason: outcome.abortReason ?? "aborted")
        var step: AdaptiveClipStep?
        if outcome.isCommitted {
            do {
                let (updates, lines) = try RoundAggregation.updates(of: outcome, policy: engine.policy, global: global, layout: layout)
                coordinatorLog += lines
                step = try RoundAggregation.adaptiveClipStep(of: outcome, policy: engine.policy)
                var strategy = FedAvg()
                global = try strategy.aggregate(global: global, updates: updates)
                engine.setGlobalAdapter(digest: AdapterMath.digest(global), parameterCount: global.values.reduce(0) { $0 + $1.count })
                if let step { engine.setClientClipNorm(step.nextClipNorm) }
            } catch {
                verdict = .aborted(reason: "aggregation failed: \(error)")
                coordinatorLog.append("round \(outcome.round): \(verdict.reason)")
            }
        }
        finished.append(FinishedRound(outcome: outcome, global: global, verdict: verdict, adaptiveStep: verdict.isCommitted ? step : nil))
        return verdict
    }

    private func send(_ frames: [Frame], to client: String) throws {
        guard clients[client]?.alive == true else { return }
        for frame in frames { queue.append(.toClient(client, try frame.encoded())) }
    }
}
