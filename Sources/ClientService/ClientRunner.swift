import FederationProtocol
import FineTuning
import Foundation
import LanguageModel
import Privacy
import SecureAggregation
import SecureCrypto
import SystemIO
import Tokenizer
import Transport
import Wire

/// Where and how a client reaches its coordinator.
public struct CoordinatorAddress: Sendable {
    public var host: String
    public var port: UInt16
    public var caPath: String
    public var certificatePath: String

    public init(host: String, port: UInt16, caPath: String, certificatePath: String) {
        self.host = host
        self.port = port
        self.caPath = caPath
        self.certificatePath = certificatePath
    }

    /// Parses "HOST:PORT" (IPv6 as "[::1]:PORT").
    public static func parse(_ text: String) throws -> (host: String, port: UInt16) {
        guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]), port > 0 else {
            throw FederationError.configuration(path: "--coordinator", field: "coordinator", "expected HOST:PORT, got '\(text)'")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else {
            throw FederationError.configuration(path: "--coordinator", field: "coordinator", "no host in '\(text)'")
        }
        return (host, port)
    }
}

/// The client's agent: keeps a connection to the coordinator (reconnecting with backoff), and for
/// each invitation checks the plan against the client's policy and ledger, charges the ledger,
/// trains with DP-SGD from the global adapter, evaluates before and after on the held-out split,
/// and uploads the change. Raw data and gradients never leave this process.
public final class ClientRunner: @unchecked Sendable {
    public let paths: ClientPaths
    public let configuration: ClientConfiguration
    public let address: CoordinatorAddress
    public let name: String
    /// Stop after this many rounds have ended for this client (nil: run until stopped).
    public let maximumRounds: Int?
    private let log: OperatorLog
    private let loaded: LoadedModel
    /// Nil for a model without one (records must then carry input_ids).
    private let tokenizer: BPETokenizer?
    private let context: TLSClientContext
    private var agent: ClientAgent
    private var roundsEnded = 0
    private let software = "conclave-client 0.1"
    /// Signs this client's per-round secure-aggregation keys (`signing.key`).
    private let identity: SigningKeyPair
    /// The secure round this client is masking an update for, between its training and the unmask stage.
    private var secure: SecureParticipation?
    /// The secret canaries planted in this client's training data, when its configuration asks for them.
    private let canaries: ClientCanaries?

    /// A client's part in one secure round: the protocol's state, the encoded update it will mask,
    /// and its figures (sent in clear with the masked input).
    private struct SecureParticipation {
        var round: UInt64
        var protocolState: SecureAggregationClient
        var input: [UInt32]
        var metrics: ClientRoundMetrics
    }

    public init(paths: ClientPaths, configuration: ClientConfiguration, address: CoordinatorAddress,
                maximumRounds: Int?, log: OperatorLog) throws {
        self.paths = paths
        self.configuration = configuration
        self.address = address
        self.maximumRounds = maximumRounds
        self.log = log
        name = try ClientSettings.load(paths: paths).name
        identity = try ClientSetup.signingKey(paths: paths)
        context = try TLSClientContext(caPEM: try PEMFile.readCertificate(at: address.caPath),
                                       certificatePEM: try PEMFile.readCertificate(at: address.certificatePath),
                                       keyPEM: try PEMFile.readPrivateKey(at: paths.key.path),
                                       expectedHost: address.host)
        loaded = try ModelLoader.load(path: configuration.model, threads: configuration.threads)
        tokenizer = loaded.tokenizer
        let modelConfiguration = loaded.model.configuration
        agent = ClientAgent { plan in try AdapterLayout(configuration: modelConfiguration, plan: plan) }
        // Made (or read back) now, so a bad canary configuration fails at start, not in a round.
        if let wanted = configuration.canaries {
            canaries = try ClientCanaries.loadOrCreate(wanted, directory: paths.root, tokenizer: tokenizer,
                                                       vocabularySize: modelConfiguration.vocabSize)
        } else {
            canaries = nil
        }
        if let canaries {
            log.write("planting \(canaries.set.canaries.count) secret canaries × \(canaries.set.repetitions) in the training data "
                      + "(\(canaries.set.canaries.count * canaries.set.repetitions) extra records; secrets kept in \(ClientCanaries.fileName))")
        }
        // The ledger exists from the start, with the policy's budget, so `budget` can show it.
        _ = try openLedger()
    }

    private func openLedger() throws -> PrivacyLedger {
        let budget = PrivacyBudget(epsilon: configuration.policy.maxEpsilon, delta: configuration.policy.delta,
                                   accountant: .rdp)
        if FileManager.default.fileExists(atPath: paths.root.appendingPathComponent(PrivacyLedger.fileName).path) {
            return try PrivacyLedger(directory: paths.root)
        }
        return try PrivacyLedger(directory: paths.root, creatingWith: budget)
    }

    /// Connects and serves rounds until `maximumRounds` have ended; reconnects with exponential
    /// backoff (0.5 s doubling to 10 s) when the connection fails.
    public func run() throws {
        var backoff = 0.5
        while maximumRounds.map({ roundsEnded < $0 }) ?? true {
            let connection: TLSConnection
            do {
                connection = try TLSConnection.connect(host: address.host, port: address.port, context: context, timeout: 10)
            } catch {
                log.write("cannot reach the coordinator at \(address.host):\(address.port): \(error); retrying in \(backoff) s")
                Thread.sleep(forTimeInterval: backoff)
                backoff = min(10, backoff * 2)
                continue
            }
            backoff = 0.5
            do {
                try session(connection)
                connection.close()
                return
            } catch {
                log.write("connection to the coordinator lost: \(error)")
                connection.close()
                agent.connectionLost()
                Thread.sleep(forTimeInterval: backoff)
            }
        }
    }

    private func send(_ frames: [Frame], on connection: TLSConnection) throws {
        for frame in frames { try connection.write(try frame.encoded()) }
    }

    private func session(_ connection: TLSConnection) throws {
        try connection.setTimeouts(read: nil, write: 120)
        try send([Hello(client: name, software: software, pendingRound: agent.pendingRound,
                        signingKey: identity.publicKey.bytes).frame()], on: connection)
        log.write("connected to the coordinator at \(address.host):\(address.port) as '\(name)'")
        var reader = FrameReader()
        while maximumRounds.map({ roundsEnded < $0 }) ?? true {
            guard let frame = try reader.nextFrame(reading: { try connection.read(into: $0) }) else {
                throw FederationError.peer("coordinator", "closed the connection")
            }
            for action in try agent.receive(frame) {
                switch action {
                case let .invited(invite, global):
                    let uploaded = try work(invite, global: global, connection: connection)
                    agent.finishedWork(round: invite.round, uploaded: uploaded)
                    if !uploaded { roundsEnded += 1 }
                case let .secure(round, message):
                    try secureStage(round, message, connection: connection)
                case let .committed(result, global):
                    if secure?.round == result.round { secure = nil }
                    try keepGlobal(global, plan: nil, round: result.round)
                    log.write("round \(result.round) committed; global adapter saved to \(paths.globalAdapter.path)")
                    roundsEnded += 1
                case let .roundOver(round, reason):
                    if secure?.round == round { secure = nil }
                    log.write("round \(round) is over for this client: \(reason)")
                    roundsEnded += 1
                }
            }
        }
    }

    private var lastPlan: TrainingPlan?

    private func keepGlobal(_ tensors: AdapterTensors, plan: TrainingPlan?, round: UInt64) throws {
        guard let plan = plan ?? lastPlan else { return }
        let layout = try AdapterLayout(configuration: loaded.model.configuration, plan: plan)
        try layout.write(tensors, to: paths.globalAdapter, baseModel: URL(fileURLWithPath: configuration.model).lastPathComponent)
    }

    /// Decides, charges, trains, evaluates and uploads; returns whether an update was sent.
    private func work(_ invite: Invite, global: AdapterTensors, connection: TLSConnection) throws -> Bool {
        let round = invite.round, plan = invite.plan
        lastPlan = plan
        func decline(_ reason: String) throws -> Bool {
            log.write("round \(round): declining: \(reason)")
            try send([Decline(round: round, reason: reason).frame()], on: connection)
            return false
        }
        if let objection = configuration.policy.objection(to: plan) { return try decline(objection) }
        // A secure round's session is checked before anything is charged: this client must be in the
        // cohort under its own key, and the announced adapter must be the one it received.
        var secureClient: SecureAggregationClient?
        if invite.secureAggregation {
            guard let setup = agent.secureSetup, setup.round == round else {
                return try decline("secure aggregation: the invitation came without its setup")
            }
            do {
                guard let id = setup.id(of: name) else {
                    return try decline("secure aggregation: this client is not in the announced cohort")
                }
                secureClient = try SecureAggregationClient(session: try setup.session(invite: invite), id: id,
                                                           identity: identity,
                                                           localAdapterHash: Array(AdapterMath.digest(global).utf8))
            } catch {
                return try decline("secure aggregation: \(error)")
            }
        }
        let model = loaded.model
        let layout = try AdapterLayout(configuration: model.configuration, plan: plan)
        let globalAdapter = try layout.adapter(global, from: "the coordinator's global adapter")
        try keepGlobal(global, plan: plan, round: round)

        var examples: [TokenizedExample], evalExamples: [TokenizedExample]
        do {
            examples = try Dataset.load(URL(fileURLWithPath: configuration.data), tokenizer: tokenizer,
                                        maxLength: plan.maxLength, vocabularySize: model.configuration.vocabSize)
            evalExamples = try Dataset.load(URL(fileURLWithPath: configuration.evalData), tokenizer: tokenizer,
                                            maxLength: plan.maxLength, vocabularySize: model.configuration.vocabSize)
        } catch {
            return try decline("data: \(error)")
        }
        // Each repetition of each canary is one more record: DP-SGD samples and accounts for them all.
        if let canaries { examples = canaries.planted(into: examples) }
        var training = TrainingConfiguration()
        training.rank = plan.rank
        training.alpha = plan.alpha
        training.targets = layout.targets
        training.steps = plan.steps
        training.learningRate = plan.learningRate
        training.samplingRate = plan.samplingRate
        training.decay = .constant
        if plan.isPrivate {
            training.privacy = DifferentialPrivacy(noiseMultiplier: plan.noiseMultiplier, clipNorm: plan.clipNorm,
                                                   delta: plan.delta)
        }
        let trainer: LoRATrainer
        do {
            trainer = try LoRATrainer(model: model, examples: examples, configuration: training,
                                      initial: TrainableLoRA.from(globalAdapter, for: model))
        } catch {
            return try decline("cannot train on this plan: \(error)")
        }

        // The ledger is charged, durably, before the first noisy gradient; a crash can overcount.
        var epsilon = 0.0
        var ledger = try openLedger()
        if let mechanism = trainer.mechanism {
            let projected = try ledger.epsilon(afterCharging: mechanism)
            if projected > configuration.policy.maxEpsilon {
                return try decline(String(format: "privacy budget: this round would bring ε to %.3f, over the policy's %.3f "
                                          + "(%.3f spent)", projected, configuration.policy.maxEpsilon, ledger.spentEpsilon))
            }
            do {
                let entry = try ledger.charge(purpose: "round \(round) at \(address.host):\(address.port)",
                                              samplingRate: mechanism.samplingRate,
                                              noiseMultiplier: mechanism.noiseMultiplier, clipNorm: plan.clipNorm,
                                              steps: mechanism.steps)
                epsilon = entry.cumulativeEpsilon
            } catch let refusal as PrivacyBudgetExceededError {
                return try decline("privacy budget: \(refusal)")
            }
        } else {
            epsilon = ledger.spentEpsilon
        }
        try send([Accept(round: round).frame()], on: connection)
        log.write(String(format: "round %llu: accepted; %d records, q %.4f, σ %.3f, C %.2f, %d steps; ε after %.3f at δ %g",
                         round, examples.count, plan.samplingRate, plan.noiseMultiplier, plan.clipNorm, plan.steps,
                         epsilon, ledger.budget.delta))

        let start = ProcessStatistics.now()
        model.setAdapter(globalAdapter)
        let before = try Evaluator.evaluate(model: model, examples: evalExamples)
        // Exposure on the adapter as received (the previous round's result; the initial one in round 1).
        let exposure = try canaries?.measure(model: model)
        if let exposure {
            log.write(String(format: "round %llu: canary exposure on the global adapter: mean %.2f bits, max %.2f of %.2f "
                             + "(%@ over |R| = %d, %.1f s)", round, exposure.meanBits, exposure.maxBits,
                             log2(Double(exposure.spaceSize)), exposure.exact ? "exact" : "estimated from \(exposure.candidatesScored) candidates",
                             exposure.spaceSize, exposure.seconds))
        }
        let progress = ProgressReporter(label: "round \(round)", total: trainer.totalSteps)
        let result = try trainer.train(progress: progress)
        let local = result.lora.adapter()
        model.setAdapter(local)
        let after = try Evaluator.evaluate(model: model, examples: evalExamples)
        model.setAdapter(nil)
        let localTensors = local.federationTensors
        try layout.write(localTensors, to: paths.localAdapter, baseModel: URL(fileURLWithPath: configuration.model).lastPathComponent)
        var delta = AdapterMath.difference(localTensors, global)
        #if DEBUG
        // Test hook, compiled into debug builds only: a fixed update per client and round, so that
        // tests can run the same federation with and without secure aggregation and compare.
        if ProcessInfo.processInfo.environment["CONCLAVE_TEST_DETERMINISTIC_UPDATE"] == "1" {
            delta = Self.deterministicUpdate(like: delta, client: name, round: round)
        }
        #endif
        let metrics = ClientRoundMetrics(client: name, examples: examples.count, evalLossBefore: before.loss,
                                         evalLossAfter: after.loss, evalTokens: after.tokens, epsilon: epsilon,
                                         delta: ledger.budget.delta, epsilonBudget: min(ledger.budget.epsilon, configuration.policy.maxEpsilon),
                                         trainLoss: result.trainLoss,
                                         seconds: ProcessStatistics.now() - start, canaryExposure: exposure)
        if var secureClient, let setup = agent.secureSetup {
            let encoded = try SecureUpdate.encode(delta: delta, examples: examples.count, setup: setup, layout: layout)
            if encoded.clipped > 0 {
                log.write("round \(round): \(encoded.clipped) weighted update values exceeded ±\(setup.updateClip) and were clipped")
            }
            let advertisement = try secureClient.advertiseKeys()
            secure = SecureParticipation(round: round, protocolState: secureClient, input: encoded.words, metrics: metrics)
            try send([SecureAdvertise(round: round, advertisement: advertisement).frame()], on: connection)
            log.write(String(format: "round %llu: trained (held-out loss %.4f → %.4f, %.0f s); secure aggregation: keys advertised",
                             round, before.loss, after.loss, metrics.seconds))
            return true
        }
        try send(try TensorSetFrames.frames(round: round, kind: .update, tensors: delta)
                 + [MetricsReport(round: round, metrics: metrics).frame()], on: connection)
        log.write(String(format: "round %llu: update sent; held-out loss %.4f → %.4f, train loss %.4f, %.0f s",
                         round, before.loss, after.loss, result.trainLoss, metrics.seconds))
        return true
    }

    /// Answers one secure-aggregation stage; a refusal (bad signature, wrong session, an unmask
    /// request that would expose a peer) ends this client's part in the round, with the reason sent.
    private func secureStage(_ round: UInt64, _ message: SecureDownlink, connection: TLSConnection) throws {
        guard var participation = secure, participation.round == round else {
            log.write("round \(round): ignored a secure-aggregation message for a round this client is not masking for")
            return
        }
        do {
            var frames: [Frame] = []
            switch message {
            case let .advertisements(message):
                let shares = try participation.protocolState.shareKeys(message.broadcast)
                frames = [try SecureShares(round: round, message: shares).frame()]
                log.write("round \(round): secure aggregation: \(shares.shares.count) encrypted shares sent")
            case let .shares(message):
                #if DEBUG
                // Test hook, debug builds only: die here, after sharing keys and before the masked input.
                if ProcessInfo.processInfo.environment["CONCLAVE_TEST_EXIT_BEFORE_MASKED_INPUT"] == "1" {
                    log.write("round \(round): test hook: exiting before the masked input")
                    exit(3)
                }
                #endif
                let masked = try participation.protocolState.maskInput(message.bundle, input: participation.input)
                participation.input = []
                frames = [try SecureMaskedInput(round: round, input: masked).frame(),
                          try MetricsReport(round: round, metrics: participation.metrics).frame()]
                log.write("round \(round): secure aggregation: masked update sent (\(masked.words.count) words)")
            case let .unmask(message):
                let response = try participation.protocolState.unmask(message.request)
                frames = [try SecureUnmaskResponse(round: round, response: response).frame()]
                log.write("round \(round): secure aggregation: \(response.shares.count) shares revealed for unmasking")
            }
            secure = participation
            try send(frames, on: connection)
        } catch let error as SecureAggregationError {
            secure = nil
            log.write("round \(round): secure aggregation: \(error); leaving the round")
            try send([Abort(round: round, reason: "secure aggregation: \(error)").frame()], on: connection)
        }
    }

    #if DEBUG
    /// The test hook's update: a fixed function of the client, the round, the tensor and the index,
    /// within ±0.004.
    static func deterministicUpdate(like delta: AdapterTensors, client: String, round: UInt64) -> AdapterTensors {
        let seed = Double(client.utf8.reduce(0) { $0 &* 31 &+ Int($1) } % 1000)
        var out: AdapterTensors = [:]
        for (t, name) in delta.keys.sorted().enumerated() {
            let count = delta[name]?.count ?? 0
            out[name] = (0..<count).map { i in Float(0.004 * sin(Double(i) * 0.37 + Double(t) * 1.3 + seed + Double(round))) }
        }
        return out
    }
    #endif
}
