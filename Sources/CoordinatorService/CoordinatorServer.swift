import Audit
import FederationProtocol
import Foundation
import LanguageModel
import ModelFormats
import SecureAggregation
import SecureCrypto
import Synchronization
import SystemIO
import Transport
import Wire


/// One client's connection, as the server sees it: frames to send go through `outbox` and are
/// written by the connection's own thread (OpenSSL does not allow one SSL object to be read and
/// written from two threads at once).
final class ClientConnection: @unchecked Sendable {
    let client: String
    let tls: TLSConnection
    private let outbox = Mutex<[[UInt8]]>([])
    /// The update being received, per round.
    var receiver: TensorSetReceiver?
    var receivedDelta: (round: UInt64, tensors: AdapterTensors)?
    /// A masked input waiting for its metrics report.
    var receivedMasked: SecureMaskedInput?
    /// The Ed25519 key the client presented and the registry pinned.
    var signingKey: SigningPublicKey?

    init(client: String, tls: TLSConnection) {
        self.client = client
        self.tls = tls
    }

    func enqueue(_ frames: [Frame]) {
        enqueue(encoded: frames.compactMap { try? $0.encoded() })
    }

    /// Frames already encoded; the arrays are shared, not copied, by every connection they go to.
    func enqueue(encoded frames: [[UInt8]]) {
        outbox.withLock { $0.append(contentsOf: frames) }
    }

    /// Writes everything queued; throws if the connection fails.
    func flush() throws {
        while true {
            let pending: [[UInt8]] = outbox.withLock { queue in
                defer { queue.removeAll() }
                return queue
            }
            if pending.isEmpty { return }
            for bytes in pending { try tls.write(bytes) }
        }
    }
}

/// The coordinator's driver: accepts clients over mutual TLS, feeds the round engine, carries out
/// its actions (invitations, aggregation, the global adapter, the audit log), and answers the
/// operator's commands on the control socket. Durable state lives in the state directory; the
/// round in flight is marked there before its invitations leave, so that a restart after a crash
/// aborts it cleanly and tells its clients.
public final class CoordinatorServer: @unchecked Sendable {
    public let paths: CoordinatorPaths
    public let configuration: CoordinatorConfiguration
    public let settings: CoordinatorSettings
    let log: OperatorLog
    let layout: AdapterLayout
    let baseModel: String
    private let signer: SigningKeyPair
    private let serverContext: TLSServerContext
    private let engine: Mutex<RoundEngine>
    private let connections = Mutex<[String: ClientConnection]>([:])
    /// The global adapter and the round that produced it (0 = the initial adapter).
    private let global: Mutex<(round: UInt64, tensors: AdapterTensors, digest: String, fileSHA256: String)>
    /// How past rounds ended, for clients that reconnect asking about one.
    private let outcomes = Mutex<[UInt64: (committed: Bool, reason: String)]>([:])
    /// The last encoded global-adapter frames, keyed by round and digest (`globalAdapterFrames`).
    private let adapterFrames = Mutex<(key: String, frames: [[UInt8]])?>(nil)
    private var aggregator: any AggregationStrategy
    private let stopping = Atomic<Bool>(false)
    private var listener: TLSListener?
    private var controlServer: ControlSocketServer?
    /// The port actually listened on.
    public private(set) var port: UInt16 = 0

    /// Loads the state directory and recovers from a crash: a round still marked in flight is
    /// aborted in the audit log (or found committed) and its mark removed.
    public init(paths: CoordinatorPaths, configuration: CoordinatorConfiguration, log: OperatorLog) throws {
        self.paths = paths
        self.configuration = configuration
        self.log = log
        settings = try CoordinatorSettings.load(paths: paths)
        signer = try SigningKeyPair.readSecretKeyFile(path: paths.signingKey.path)
        let registry = try ClientRegistry(paths: paths)
        let authorization = RegistryAuthorization(registry: registry) { message in log.write(message) }
        let caPEM = try PEMFile.readCertificate(at: paths.caCertificate.path)
        serverContext = try TLSServerContext(caPEM: caPEM,
                                             certificatePEM: try PEMFile.readCertificate(at: paths.serverCertificate.path),
                                             keyPEM: try PEMFile.readPrivateKey(at: paths.serverKey.path),
                                             authorize: authorization.hook)
        let modelConfiguration = try CoordinatorServer.modelConfiguration(path: configuration.model)
        layout = try AdapterLayout(configuration: modelConfiguration, plan: configuration.rounds.plan)
        baseModel = URL(fileURLWithPath: configuration.model).lastPathComponent

        // The audit log says which rounds happened; the in-flight mark says which one was cut short.
        let verification = try AuditLog.verify(url: paths.auditLog, publicKey: signer.publicKey)
        if let failure = verification.failure {
            throw FederationError.audit(record: failure.record, "\(failure.reason); refusing to extend a broken chain "
                                        + "(inspect with 'conclave-coordinator audit --state \(paths.root.path)')")
        }
        var lastRound: UInt64 = 0
        var lastCommitted: UInt64 = 0
        var pastOutcomes: [UInt64: (Bool, String)] = [:]
        for record in verification.records {
            lastRound = max(lastRound, record.round)
            if record.status == "committed" { lastCommitted = max(lastCommitted, record.round) }
            pastOutcomes[record.round] = (record.status == "committed", record.abortReason ?? "committed")
        }

        // The global adapter: the last committed round's, or the initial one (made once, kept).
        let adapterDirectory = paths.adapter(round: lastCommitted)
        var tensors: AdapterTensors
        if FileManager.default.fileExists(atPath: adapterDirectory.appendingPathComponent("adapter_model.safetensors").path) {
            let peft = try PEFTAdapter(directory: adapterDirectory)
            tensors = peft.tensors.mapValues(\.values)
        } else if lastCommitted == 0 {
            tensors = CoordinatorServer.initialAdapter(layout: layout)
            try layout.write(tensors, to: adapterDirectory, baseModel: baseModel)
        } else {
            throw FederationError.state(path: adapterDirectory.path, "the adapter of committed round \(lastCommitted) is missing")
        }
        try layout.check(tensors, from: adapterDirectory.path)
        let fileSHA = try AdapterMath.fileSHA256(adapterDirectory.appendingPathComponent("adapter_model.safetensors"))
        global = Mutex((lastCommitted, tensors, AdapterMath.digest(tensors), fileSHA))

        switch configuration.rounds.aggregation {
        case "fedadam":
            let eta = configuration.serverLearningRate ?? 0.01
            let state = adapterDirectory.appendingPathComponent("fedadam.safetensors")
            aggregator = FileManager.default.fileExists(atPath: state.path)
                ? try FedAdam.read(from: state) : try FedAdam(learningRate: eta)
        default:
            aggregator = FedAvg()
        }

        var nextRound = lastRound + 1
        if let inFlight = try CoordinatorServer.readInFlight(paths) {
            if pastOutcomes[inFlight.round] == nil {
                let reason = "the coordinator stopped while the round was in flight"
                let record = AuditRecord(status: "aborted", round: inFlight.round, started: inFlight.started, finished: Date(),
                                         cohort: inFlight.cohort, participants: [], declines: [], dropouts: [],
                                         aggregation: configuration.rounds.aggregation,
                                         secureAggregation: configuration.rounds.secureAggregation,
                                         plan: configuration.rounds.plan, clients: [], maxEpsilon: nil, evalLossBefore: nil,
                                         evalLossAfter: nil, adapterSHA256: fileSHA, abortReason: reason,
                                         previousHash: "")
                try AuditLog(paths: paths).append(record, signer: signer)
                pastOutcomes[inFlight.round] = (false, reason)
                // An adapter written for the round but never committed is not the global adapter.
                try? FileManager.default.removeItem(at: paths.adapter(round: inFlight.round))
                log.write("round \(inFlight.round): aborted on restart (\(reason)); recorded in the audit log")
            }
            nextRound = max(nextRound, inFlight.round + 1)
            try? FileManager.default.removeItem(at: paths.roundInFlight)
        }
        outcomes.withLock { stored in
            for (round, outcome) in pastOutcomes { stored[round] = (outcome.0, outcome.1) }
        }
        engine = Mutex(RoundEngine(policy: configuration.rounds, nextRound: nextRound) { clients, count in
            CoordinatorServer.randomChoice(clients, count: count)
        })
        let start = global.withLock { (digest: $0.digest, count: $0.tensors.values.reduce(0) { $0 + $1.count }) }
        engine.withLock { $0.setGlobalAdapter(digest: start.digest, parameterCount: start.count) }
    }

    /// The model's shape, from a GGUF's metadata or an HF directory's config.json (weights are not read).
    static func modelConfiguration(path: String) throws -> LlamaConfiguration {
        let url = URL(fileURLWithPath: path)
        if path.hasSuffix(".gguf") { return try LlamaConfiguration(gguf: try GGUFFile(url: url)) }
        return try LlamaConfiguration(configJSON: url.appendingPathComponent("config.json"))
    }

    /// PEFT's initialisation (A Kaiming-uniform, B zero), from a fresh random seed: the starting
    /// point is public and carries no data.
    static func initialAdapter(layout: AdapterLayout) -> AdapterTensors {
        var tensors: AdapterTensors = [:]
        for (name, shape) in layout.shapes {
            let count = shape.reduce(1, *)
            if name.hasSuffix(".lora_A.weight") {
                let bound = 1 / Float(shape[1]).squareRoot()
                tensors[name] = SecureRandom.unitDoubles(count: count).map { Float($0 * 2 - 1) * bound }
            } else {
                tensors[name] = [Float](repeating: 0, count: count)
            }
        }
        return tensors
    }

    /// `count` of `clients`, uniformly without replacement, from libsodium's generator.
    static func randomChoice(_ clients: [String], count: Int) -> [String] {
        var pool = clients
        var chosen: [String] = []
        for _ in 0..<min(count, pool.count) {
            let index = Int(SecureRandom.uniform(UInt32(pool.count)))
            chosen.append(pool.remove(at: index))
        }
        return chosen
    }

    // MARK: Running

    /// Listens, serves, and returns when `stop()` is called (or SIGINT/SIGTERM, which `serve` maps to it).
    public func run() throws {
        let host = configuration.listen ?? settings.host
        let listener = try TLSListener(host: host, port: UInt16(clamping: settings.port), context: serverContext)
        self.listener = listener
        port = listener.port
        controlServer = try ControlSocketServer(path: paths.controlSocket.path, log: { [log] in log.write("control: \($0)") }) {
            [weak self] request in
            self?.control(request) ?? Array(#"{"error":"the coordinator is stopping"}"#.utf8)
        }
        controlServer?.start()
        log.write("coordinator '\(settings.name)' listening on \(host):\(listener.port) (TLS 1.3, mutual); "
                  + "control socket \(paths.controlSocket.path); next round \(engine.withLock { $0.nextRound }); "
                  + "aggregation \(configuration.rounds.aggregation)")
        let ticker = Thread { [self] in
            while !stopping.load(ordering: .relaxed) {
                Thread.sleep(forTimeInterval: 0.25)
                perform(engine.withLock { $0.tick(now: Date()) })
            }
        }
        ticker.start()
        while !stopping.load(ordering: .relaxed) {
            let pending: PendingTLSConnection
            do {
                pending = try listener.acceptSocket()
            } catch {
                if stopping.load(ordering: .relaxed) { break }
                log.write("accept failed: \(error)")
                Thread.sleep(forTimeInterval: 0.05)
                continue
            }
            let thread = Thread { [self] in serve(pending) }
            thread.stackSize = 1 << 20
            thread.start()
        }
        controlServer?.close()
        log.write("coordinator stopped")
    }

    /// Stops accepting and closes every connection (the round in flight stays marked and is
    /// aborted at the next start).
    public func stop() {
        guard !stopping.exchange(true, ordering: .relaxed) else { return }
        listener?.close()
        for connection in connections.withLock({ Array($0.values) }) { connection.tls.cancel() }
    }

    // MARK: Connections

    private func serve(_ pending: PendingTLSConnection) {
        let tls: TLSConnection
        do {
            tls = try pending.handshake()
        } catch {
            log.write("refused \(pending.peerAddress): \(error)")
            return
        }
        let peer = tls.peerDescription
        var reader = FrameReader()
        let connection: ClientConnection
        do {
            try tls.setTimeouts(read: 10, write: 60)
            guard let first = try reader.nextFrame(reading: { try tls.read(into: $0) }) else {
                throw FederationError.peer(peer, "closed the connection before its hello")
            }
            let hello = try Hello(frame: first)
            guard hello.client == tls.peerCommonName else {
                throw FederationError.peer(peer, "says it is '\(hello.client)' but its certificate names '\(tls.peerCommonName)'")
            }
            let signingKey = try pinSigningKey(hello)
            connection = ClientConnection(client: hello.client, tls: tls)
            connection.signingKey = signingKey
            let previous = connections.withLock { table -> ClientConnection? in
                defer { table[hello.client] = connection }
                return table[hello.client]
            }
            if let previous {
                log.write("client '\(hello.client)' reconnected; closing its previous connection")
                previous.tls.cancel()
            }
            if hello.pendingRound != 0 { tellAboutPastRound(hello.pendingRound, to: connection) }
            try tls.setTimeouts(read: 0.25, write: 60)
        } catch {
            log.write("connection \(peer): \(error); closing it")
            tls.close()
            return
        }
        perform(engine.withLock { $0.connect(connection.client, now: Date(), signingKey: connection.signingKey) })
        var failure: String?
        while !stopping.load(ordering: .relaxed) {
            do {
                try connection.flush()
                guard let frame = try reader.nextFrame(reading: { try tls.read(into: $0) }) else {
                    failure = "closed the connection"
                    break
                }
                try handle(frame, from: connection)
            } catch TransportError.timedOut {
                continue
            } catch {
                failure = "\(error)"
                break
            }
        }
        let isCurrent = connections.withLock { table -> Bool in
            guard table[connection.client] === connection else { return false }
            table[connection.client] = nil
            return true
        }
        log.write("client '\(connection.client)' (\(peer)): \(failure ?? "coordinator stopping"); connection closed")
        tls.close()
        if isCurrent { perform(engine.withLock { $0.disconnect(connection.client, now: Date()) }) }
    }

    /// Pins the hello's signing key in the registry at first sight, or checks it against the pinned
    /// one; a client presenting another key is refused. Nil for a hello without a key.
    private func pinSigningKey(_ hello: Hello) throws -> SigningPublicKey? {
        guard !hello.signingKey.isEmpty else { return nil }
        let key = try SigningPublicKey(bytes: hello.signingKey)
        let hex = Hex.encode(hello.signingKey)
        let lock = try StateDirectoryLock(paths.root)
        defer { withExtendedLifetime(lock) {} }
        var registry = try ClientRegistry(paths: paths)
        if try registry.pinSigningKey(id: hello.client, key: hex) {
            try registry.save()
            log.write("client '\(hello.client)': signing key \(hex) pinned at first sight")
        }
        return key
    }

    private func handle(_ frame: Frame, from connection: ClientConnection) throws {
        let client = connection.client
        switch frame.type {
        case .secureAdvertise:
            let message = try SecureAdvertise(frame: frame)
            perform(engine.withLock { $0.secureAdvertise(client, round: message.round, message, now: Date()) })
        case .secureShares:
            let message = try SecureShares(frame: frame)
            perform(engine.withLock { $0.secureShares(client, round: message.round, message, now: Date()) })
        case .secureMaskedInput:
            connection.receivedMasked = try SecureMaskedInput(frame: frame)
        case .secureUnmaskResponse:
            let message = try SecureUnmaskResponse(frame: frame)
            perform(engine.withLock { $0.secureUnmask(client, round: message.round, message, now: Date()) })
        case .abort:
            let message = try Abort(frame: frame)
            perform(engine.withLock { $0.withdraw(client, round: message.round, reason: message.reason, now: Date()) })
        case .accept:
            let message = try Accept(frame: frame)
            perform(engine.withLock { $0.accept(client, round: message.round, now: Date()) })
        case .decline:
            let message = try Decline(frame: frame)
            perform(engine.withLock { $0.decline(client, round: message.round, reason: message.reason, now: Date()) })
        case .tensorChunk:
            let chunk = try TensorChunk(frame: frame)
            if connection.receiver?.round != chunk.round {
                guard engine.withLock({ $0.isActive(client, round: chunk.round) }) else {
                    throw FederationError.round(chunk.round, "update from '\(client)', which is not in that round")
                }
                connection.receiver = TensorSetReceiver(round: chunk.round, kind: .update, layout: layout)
            }
            try connection.receiver!.add(chunk)
        case .tensorsDone:
            let done = try TensorsDone(frame: frame)
            guard let receiver = connection.receiver else {
                throw FederationError.round(done.round, "end of an update that never started")
            }
            connection.receivedDelta = (done.round, try receiver.finish(done))
            connection.receiver = nil
        case .metrics:
            let report = try MetricsReport(frame: frame)
            guard report.metrics.client == client else {
                throw FederationError.peer(client, "metrics name another client '\(report.metrics.client)'")
            }
            if let masked = connection.receivedMasked, masked.round == report.round {
                connection.receivedMasked = nil
                perform(engine.withLock {
                    $0.secureMaskedInput(client, round: report.round, masked, metrics: report.metrics, now: Date())
                })
                return
            }
            guard let delta = connection.receivedDelta, delta.round == report.round else {
                throw FederationError.round(report.round, "metrics from '\(client)' without its update")
            }
            guard report.metrics.client == client else {
                throw FederationError.peer(client, "metrics name another client '\(report.metrics.client)'")
            }
            connection.receivedDelta = nil
            let update = ReceivedUpdate(delta: delta.tensors, metrics: report.metrics)
            perform(engine.withLock { $0.upload(client, round: report.round, update: update, now: Date()) })
        default:
            throw FederationError.peer(client, "unexpected \(frame.type) message")
        }
    }

    /// A client that lost its connection during `round` asks how it ended.
    private func tellAboutPastRound(_ round: UInt64, to connection: ClientConnection) {
        let outcome = outcomes.withLock { $0[round] }
        if outcome?.committed == true {
            let digest = global.withLock { $0.digest }
            connection.enqueue([try? RoundResult(round: round, committed: true, adapterSHA256: digest,
                                                 reason: "committed").frame()].compactMap { $0 })
            connection.enqueue(encoded: globalAdapterFrames(round: round))
            return
        }
        let reason = outcome?.reason
            ?? (engine.withLock({ $0.currentRound }) == round ? "dropped from round \(round): the connection was lost"
                                                               : "round \(round) is unknown to the coordinator")
        connection.enqueue([try? RoundResult(round: round, committed: false, adapterSHA256: "", reason: reason).frame()]
            .compactMap { $0 })
    }

    /// The global adapter's frames labelled with `round`, encoded once and shared by every client
    /// they go to (an invitation or a result to a whole cohort would otherwise encode and hold one
    /// copy of the adapter per client).
    private func globalAdapterFrames(round: UInt64) -> [[UInt8]] {
        let current = global.withLock { $0 }
        let key = "\(round) \(current.digest)"
        if let cached = adapterFrames.withLock({ $0?.key == key ? $0?.frames : nil }) { return cached }
        let frames = ((try? TensorSetFrames.frames(round: round, kind: .globalAdapter, tensors: current.tensors)) ?? [])
            .compactMap { try? $0.encoded() }
        adapterFrames.withLock { $0 = (key, frames) }
        return frames
    }

    // MARK: Actions

    private func perform(_ actions: [RoundEngine.Action]) {
        for action in actions {
            switch action {
            case let .log(message):
                log.write(message)
            case let .beginRound(round, started, cohort):
                do {
                    try CoordinatorServer.writeInFlight(InFlightMark(round: round, started: started, cohort: cohort), paths)
                } catch {
                    log.write("round \(round): cannot mark the round in flight: \(error)")
                }
            case let .invite(client, round):
                let current = global.withLock { $0 }
                let policy = configuration.rounds
                do {
                    let invite = Invite(round: round, plan: policy.plan, aggregation: policy.aggregation,
                                        secureAggregation: policy.secureAggregation, adapterSHA256: current.digest,
                                        deadlineSeconds: policy.roundTimeout)
                    let connection = connections.withLock { $0[client] }
                    connection?.enqueue([try invite.frame()])
                    connection?.enqueue(encoded: globalAdapterFrames(round: round))
                } catch {
                    log.write("round \(round): cannot invite '\(client)': \(error)")
                }
            case let .inviteSecurely(client, invite, setup):
                let current = global.withLock { $0 }
                do {
                    guard current.digest == invite.adapterSHA256 else {
                        throw FederationError.round(invite.round, "the global adapter changed under the invitation")
                    }
                    let connection = connections.withLock { $0[client] }
                    connection?.enqueue([try invite.frame(), try setup.frame()])
                    connection?.enqueue(encoded: globalAdapterFrames(round: invite.round))
                } catch {
                    log.write("round \(invite.round): cannot invite '\(client)': \(error)")
                }
            case let .secure(client, message):
                do {
                    connections.withLock { $0[client] }?.enqueue([try message.frame()])
                } catch {
                    log.write("cannot send a secure-aggregation message to '\(client)': \(error)")
                }
            case let .dismiss(client, round, reason):
                log.write("round \(round): client '\(client)' dropped: \(reason)")
                let frame = try? Abort(round: round, reason: "dropped: \(reason)").frame()
                connections.withLock { $0[client] }?.enqueue([frame].compactMap { $0 })
            case let .finish(outcome):
                let thread = Thread { [self] in finish(outcome) }
                thread.start()
            }
        }
    }

    /// Aggregates a committed round, writes its adapter, appends its audit record, tells the
    /// cohort, and lets the engine start the next round. An aborted round only gets its record.
    private func finish(_ outcome: RoundOutcome) {
        let policy = configuration.rounds
        let current = global.withLock { $0 }
        var status = outcome.isCommitted ? "committed" : "aborted"
        var reason = outcome.abortReason
        var newTensors = current.tensors
        var fileSHA = current.fileSHA256
        if outcome.isCommitted {
            do {
                var updates = outcome.updates.map {
                    WeightedUpdate(client: $0.client, weight: Double($0.update.metrics.examples), delta: $0.update.delta)
                }
                if let secure = outcome.secure {
                    // The unmasked sum decodes to the example-weighted mean delta: one update of weight 1
                    // gives FedAvg global + mean, and FedAdam the mean as its Δ.
                    let decoded = try SecureUpdate.decodeMean(sum: secure.sum, survivors: secure.survivors.count,
                                                              setup: secure.setup, layout: layout)
                    updates = [WeightedUpdate(client: "secure sum of \(secure.survivors.joined(separator: ","))",
                                              weight: 1, delta: decoded.mean)]
                    log.write(String(format: "round %llu: decoded the mean of %d masked updates (total weight %.6f)",
                                     outcome.round, secure.survivors.count, decoded.totalWeight))
                }
                newTensors = try aggregator.aggregate(global: current.tensors, updates: updates)
                let directory = paths.adapter(round: outcome.round)
                try layout.write(newTensors, to: directory, baseModel: baseModel)
                if let adam = aggregator as? FedAdam {
                    try adam.write(to: directory.appendingPathComponent("fedadam.safetensors"))
                }
                fileSHA = try AdapterMath.fileSHA256(directory.appendingPathComponent("adapter_model.safetensors"))
            } catch {
                status = "aborted"
                reason = "aggregation failed: \(error)"
                newTensors = current.tensors
                fileSHA = current.fileSHA256
                try? FileManager.default.removeItem(at: paths.adapter(round: outcome.round))
            }
        }
        let metrics = status == "committed" ? (outcome.secure?.metrics ?? outcome.updates.map(\.update.metrics)) : []
        let tokens = Double(metrics.reduce(0) { $0 + $1.evalTokens })
        func weighted(_ value: (ClientRoundMetrics) -> Double) -> Double? {
            guard tokens > 0 else { return nil }
            return metrics.reduce(0) { $0 + value($1) * Double($1.evalTokens) } / tokens
        }
        let record = AuditRecord(status: status, round: outcome.round, started: outcome.started, finished: Date(),
                                 cohort: outcome.cohort, participants: metrics.map(\.client), declines: outcome.declines,
                                 dropouts: outcome.dropouts, aggregation: policy.aggregation,
                                 secureAggregation: policy.secureAggregation, plan: policy.plan, clients: metrics,
                                 maxEpsilon: metrics.map(\.epsilon).max(), evalLossBefore: weighted(\.evalLossBefore),
                                 evalLossAfter: weighted(\.evalLossAfter), adapterSHA256: fileSHA, abortReason: reason,
                                 previousHash: "")
        do {
            try AuditLog(paths: paths).append(record, signer: signer)
        } catch {
            // Without its record the round did not happen: keep the old adapter, drop the new one.
            log.write("round \(outcome.round): cannot append the audit record: \(error); the round is not committed")
            status = "aborted"
            reason = "the audit record could not be written"
            newTensors = current.tensors
            try? FileManager.default.removeItem(at: paths.adapter(round: outcome.round))
        }
        try? FileManager.default.removeItem(at: paths.roundInFlight)
        let committed = status == "committed"
        if committed {
            global.withLock { $0 = (outcome.round, newTensors, AdapterMath.digest(newTensors), fileSHA) }
        }
        let nextDigest = global.withLock { $0.digest }
        let parameterCount = newTensors.values.reduce(0) { $0 + $1.count }
        engine.withLock { $0.setGlobalAdapter(digest: nextDigest, parameterCount: parameterCount) }
        outcomes.withLock { $0[outcome.round] = (committed, reason ?? "committed") }
        let digest = global.withLock { $0.digest }
        var frames: [[UInt8]] = []
        if let result = try? RoundResult(round: outcome.round, committed: committed, adapterSHA256: committed ? digest : "",
                                         reason: reason ?? "committed").frame().encoded() {
            frames.append(result)
        }
        if committed { frames += globalAdapterFrames(round: outcome.round) }
        let told = outcome.cohort.filter { client in
            outcome.declines.contains { $0.client == client } == false
        }
        for client in told { connections.withLock { $0[client] }?.enqueue(encoded: frames) }
        if committed {
            log.write(String(format: "round %llu committed: %d participants, held-out loss %@ → %@, max ε %@, adapter %@",
                             outcome.round, metrics.count, format(record.evalLossBefore), format(record.evalLossAfter),
                             format(record.maxEpsilon), String(fileSHA.prefix(12))))
        } else {
            log.write("round \(outcome.round) aborted: \(reason ?? "")")
        }
        perform(engine.withLock { $0.roundFinished(now: Date()) })
    }

    private func format(_ value: Double?) -> String { value.map { String(format: "%.4f", $0) } ?? "-" }

    // MARK: Control socket

    /// Answers `rounds start`, `status` and `clients`: one JSON request, one JSON response.
    func control(_ request: [UInt8]) -> [UInt8] {
        func reply(_ object: [String: Any]) -> [UInt8] {
            (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])).map(Array.init)
                ?? Array(#"{"error":"cannot encode the response"}"#.utf8)
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(request)) as? [String: Any],
              let command = object["command"] as? String else {
            return reply(["error": "the request is not a JSON object with a 'command'"])
        }
        switch command {
        case "start":
            guard let count = object["count"] as? Int, (1...10_000).contains(count) else {
                return reply(["error": "'count' must be an integer in 1...10000"])
            }
            let (actions, first) = engine.withLock { engine -> ([RoundEngine.Action], UInt64) in
                let first = engine.nextRound + UInt64(engine.queued) + (engine.phase == .waitingForClients ? 0 : 0)
                return (engine.requestRounds(count, now: Date()), first)
            }
            perform(actions)
            return reply(["queued": count, "first_round": first])
        case "status":
            var status = engine.withLock { $0.status }
            let current = global.withLock { $0 }
            status["global_round"] = current.round
            status["adapter_sha256"] = current.fileSHA256
            status["adapter"] = paths.adapter(round: current.round).path
            status["name"] = settings.name
            status["port"] = Int(port)
            status["aggregation"] = configuration.rounds.aggregation
            status["secure_aggregation"] = configuration.rounds.secureAggregation
            return reply(status)
        case "clients":
            let connected = engine.withLock { $0.connected }
            let peers = connections.withLock { table in table.mapValues { $0.tls.peerAddress } }
            let registry = (try? ClientRegistry(paths: paths))
            let records = registry?.jsonRecords() ?? []
            let rows: [[String: Any]] = records.map { record in
                var row = record
                if let id = record["id"] as? String {
                    row["connected"] = connected[id] != nil
                    if let since = connected[id] { row["connected_since"] = since.timeIntervalSince1970 }
                    if let address = peers[id] { row["address"] = address }
                }
                return row
            }
            return reply(["clients": rows])
        case "stop":
            DispatchQueue.global().asyncAfter(deadline: .now() + 0.1) { [self] in stop() }
            return reply(["stopping": true])
        default:
            return reply(["error": "unknown command '\(command)'"])
        }
    }

    // MARK: The in-flight mark

    struct InFlightMark: Codable {
        var round: UInt64
        var started: Date
        var cohort: [String]
    }

    static func writeInFlight(_ mark: InFlightMark, _ paths: CoordinatorPaths) throws {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        try writeFileAtomically(try encoder.encode(mark), to: paths.roundInFlight, permissions: 0o600)
    }

    static func readInFlight(_ paths: CoordinatorPaths) throws -> InFlightMark? {
        guard let data = FileManager.default.contents(atPath: paths.roundInFlight.path) else { return nil }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do {
            return try decoder.decode(InFlightMark.self, from: data)
        } catch {
            throw FederationError.state(path: paths.roundInFlight.path, "malformed: \(error)")
        }
    }
}
