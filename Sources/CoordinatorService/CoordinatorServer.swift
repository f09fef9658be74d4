import Audit
import FederationProtocol
import Foundation
import LanguageModel
import ModelFormats
import SecureCrypto
import Synchronization
import SystemIO
import Transport
import Wire

/// The global adapter rounds start from, and the round that produced it (0 = the initial adapter).
struct GlobalAdapter: Sendable {
    var round: UInt64
    var tensors: AdapterTensors
    /// `AdapterMath.digest` of `tensors`: what invitations and results name.
    var digest: String
    /// The SHA-256 of its safetensors file, as the audit record and `status` show it.
    var fileSHA256: String

    var parameterCount: Int { tensors.values.reduce(0) { $0 + $1.count } }
}

/// The coordinator's driver: accepts clients over mutual TLS, feeds the round engine, carries out
/// its actions (invitations, aggregation, the global adapter, the audit log), and answers the
/// operator's commands on the control socket. Durable state lives in the state directory; the
/// round in flight is marked there before its invitations leave, so that a restart after a crash
/// aborts it cleanly and tells its clients.
///
/// The driver's jobs, one file each: connections and their frames (`+Connections`), crash recovery
/// at start (`+Recovery`), carrying out the engine's actions and finishing a round into the audit
/// log (`+Rounds`), and the control socket (`+Control`).
public final class CoordinatorServer: @unchecked Sendable {
    public let paths: CoordinatorPaths
    public let configuration: CoordinatorConfiguration
    public let settings: CoordinatorSettings
    let log: OperatorLog
    /// Where `--events` sends one JSON line per round event, for monitoring tools (nil: nowhere).
    let events: EventLog?
    let layout: AdapterLayout
    let baseModel: String
    let signer: SigningKeyPair
    private let serverContext: TLSServerContext
    /// The registry's verdict on a certificate, re-read when `clients.json` changes: at each handshake,
    /// and before every step that may draw a cohort (`withAdmittedClients`).
    let authorization: RegistryAuthorization
    /// Bounds on connections before login (`ConnectionAdmission`).
    let admissionLimits: ConnectionAdmission.Limits
    let preLogin: Mutex<PreLoginState>
    let engine: Mutex<RoundEngine>
    let connections = Mutex<[String: ClientConnection]>([:])
    let global: Mutex<GlobalAdapter>
    /// The audit log's signed head, sent with every round result (nil until it could be read).
    let auditHead = Mutex<AuditHead?>(nil)
    /// The last encoded global-adapter frames, keyed by round and digest (`globalAdapterFrames`).
    let adapterFrames = Mutex<(key: String, frames: [[UInt8]])?>(nil)
    /// Used by one finishing round at a time (the engine starts the next round only after it).
    var aggregator: any AggregationStrategy
    let stopping = Atomic<Bool>(false)
    private var listener: TLSListener?
    private var controlServer: ControlSocketServer?
    /// The port actually listened on.
    public private(set) var port: UInt16 = 0

    /// Loads the state directory and recovers from a crash: a round still marked in flight is
    /// aborted in the audit log (or found committed) and its mark removed.
    public init(paths: CoordinatorPaths, configuration: CoordinatorConfiguration, log: OperatorLog,
                events: EventLog? = nil, admissionLimits: ConnectionAdmission.Limits = .init()) throws {
        // Robust aggregators need plain rounds, also in a configuration built in code (the demo, tests).
        try configuration.rounds.validateAggregator(path: "the coordinator's configuration")
        self.paths = paths
        self.configuration = configuration
        self.log = log
        self.events = events
        settings = try CoordinatorSettings.load(paths: paths)
        signer = try SigningKeyPair.readSecretKeyFile(path: paths.signingKey.path)
        self.admissionLimits = admissionLimits
        preLogin = Mutex(PreLoginState(admission: ConnectionAdmission(limits: admissionLimits)))
        authorization = RegistryAuthorization(registry: try ClientRegistry(paths: paths)) { message in log.write(message) }
        serverContext = try Self.tlsContext(paths: paths, authorization: authorization)
        layout = try AdapterLayout(configuration: try Self.modelConfiguration(path: configuration.model),
                                   plan: configuration.rounds.plan)
        baseModel = URL(fileURLWithPath: configuration.model).lastPathComponent

        // The audit log says which rounds happened; the in-flight mark says which one was cut short.
        var history = try RoundHistory(paths: paths, signer: signer)
        let adapter = try Self.loadGlobalAdapter(round: history.lastCommitted, paths: paths, layout: layout, baseModel: baseModel)
        global = Mutex(adapter)
        aggregator = try configuration.rounds.aggregation.strategy(
            serverLearningRate: configuration.serverLearningRate, resumingFrom: paths.adapter(round: adapter.round))
        try history.recoverRoundInFlight(paths: paths, configuration: configuration, signer: signer,
                                         adapterSHA256: adapter.fileSHA256, log: log)
        // Client-level plans: the federation's accountant goes on from every round its state file says was charged.
        let clientLevel = try Self.loadClientLevelState(paths: paths, policy: configuration.rounds)
        var engine = RoundEngine(policy: configuration.rounds, nextRound: history.lastRound + 1, pastRounds: history.verdicts,
                                 federationAccountant: try clientLevel?.accountant(policy: configuration.rounds)
                                     ?? RoundEngine.federationAccountant(policy: configuration.rounds)) { clients, count in
            CoordinatorServer.randomChoice(clients, count: count)
        }
        engine.setGlobalAdapter(digest: adapter.digest, parameterCount: adapter.parameterCount)
        engine.setPopulation(authorization.activeClients())
        // Adaptive clipping goes on from the S its last committed round set (the audit log is the round's commit).
        if configuration.rounds.adaptiveClipping != nil, let clipNorm = history.adaptiveClipNorm {
            engine.setClientClipNorm(clipNorm)
            log.write(String(format: "adaptive clipping resumes at S %.6g, set by the last committed round", clipNorm))
        }
        self.engine = Mutex(engine)
        refreshAuditHead()
    }

    /// The server's TLS context: its certificate and key, the federation's CA, and the registry deciding
    /// which client certificates are enrolled and not revoked.
    private static func tlsContext(paths: CoordinatorPaths, authorization: RegistryAuthorization) throws -> TLSServerContext {
        try TLSServerContext(caPEM: try PEMFile.readCertificate(at: paths.caCertificate.path),
                                    certificatePEM: try PEMFile.readCertificate(at: paths.serverCertificate.path),
                                    keyPEM: try PEMFile.readPrivateKey(at: paths.serverKey.path),
                                    authorize: authorization.hook)
    }

    /// The model's shape, from a GGUF's metadata or an HF directory's config.json (weights are not read).
    static func modelConfiguration(path: String) throws -> LlamaConfiguration {
        let url = URL(fileURLWithPath: path)
        if path.hasSuffix(".gguf") { return try LlamaConfiguration(gguf: try GGUFFile(url: url)) }
        return try LlamaConfiguration(configJSON: url.appendingPathComponent("config.json"))
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
        let listener = try TLSListener(host: host, port: UInt16(clamping: settings.port), context: serverContext,
                                       handshakeTimeout: admissionLimits.loginSeconds)
        self.listener = listener
        port = listener.port
        controlServer = try ControlSocketServer(path: paths.controlSocket.path, log: { [log] in log.write("control: \($0)") }) {
            [weak self] request in
            self?.control(request) ?? Array(#"{"error":"the coordinator is stopping"}"#.utf8)
        }
        controlServer?.start()
        log.write("coordinator '\(settings.name)' listening on \(host):\(listener.port) (TLS 1.3, mutual); "
                  + "control socket \(paths.controlSocket.path); next round \(engine.withLock { $0.nextRound }); "
                  + "aggregation \(configuration.rounds.aggregation.rawValue)" + aggregationText)
        let ticker = Thread { [self] in
            while !stopping.load(ordering: .relaxed) {
                Thread.sleep(forTimeInterval: 0.25)
                perform(stepWithAdmittedClients { $0.tick(now: Date()) })
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
            admit(pending)
        }
        controlServer?.close()
        log.write("coordinator stopped")
    }

    /// How a round's updates are bounded and combined, for the start-up line: ", secure (...)" or ", plain: ...".
    private var aggregationText: String {
        let policy = configuration.rounds
        guard !policy.secureAggregation else {
            return String(format: " of the mean of masked updates (each client clips every value to ±%g; unchecked)",
                          policy.updateClip ?? SecureUpdate.defaultClip(plan: policy.plan))
        }
        let combiner = policy.plainCombiner(parameterCount: SecureUpdate.vectorLength(layout: layout) - 1)
        return " of the \(policy.aggregatorSummary) of plain updates, each clipped to L2 norm "
            + String(format: "%g", combiner.normClip)
    }

    /// Stops accepting and closes every connection (the round in flight stays marked and is
    /// aborted at the next start).
    public func stop() {
        guard !stopping.exchange(true, ordering: .relaxed) else { return }
        listener?.close()
        for connection in connections.withLock({ Array($0.values) }) { connection.tls.cancel() }
    }
}
