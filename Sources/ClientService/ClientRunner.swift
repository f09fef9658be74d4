import FederationProtocol
import FineTuning
import Foundation
import LanguageModel
import Privacy
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

/// The client's TLS identity or CA cannot work (a key that is not the certificate's, a certificate or
/// coordinator from another CA): a configuration error, so `join` stops instead of retrying.
public struct ClientIdentityError: Error, CustomStringConvertible {
    public let description: String
}

/// The client's driver: keeps a connection to the coordinator (reconnecting with backoff) and
/// carries out what its `ClientAgent` decides: it prepares a round (keeps the global adapter, loads
/// the data, builds the DP-SGD trainer), charges the ledger, trains and evaluates before and after
/// on the held-out split, and sends what the agent says. Raw data and gradients never leave this
/// process.
public final class ClientRunner: @unchecked Sendable {
    public let paths: ClientPaths
    public let configuration: ClientConfiguration
    public let address: CoordinatorAddress
    public let name: String
    /// Stop after this many rounds have ended for this client (nil: run until stopped).
    public let maximumRounds: Int?
    /// Seconds without a byte from the coordinator after which the connection is presumed dead and
    /// made again (rounds continue across a reconnection: the hello names the round awaited). With TCP
    /// keepalive on the socket, this bounds how long a half-open connection can hang the client.
    public var silenceLimit: TimeInterval = 900
    private let log: OperatorLog
    /// Where `--events` sends one JSON line per round event (nil: nowhere). Local only: nothing of it
    /// is sent to the coordinator.
    private let events: EventLog?
    private let loaded: LoadedModel
    /// Nil for a model without one (records must then carry input_ids).
    private let tokenizer: BPETokenizer?
    private let context: TLSClientContext
    /// The common name of the CA given as `--ca`, for errors that compare it with a certificate's issuer.
    private let caName: String
    private var agent: ClientAgent
    private let software = "conclave-client 0.1"
    /// Signs this client's per-round secure-aggregation keys (`signing.key`).
    private let identity: SigningKeyPair
    /// The secret canaries planted in this client's training data, when its configuration asks for them.
    private let canaries: ClientCanaries?
    /// The records as last read, reused by the next round while the files are unchanged.
    private let records = RoundData.Cache()

    /// A round made ready to train, between the agent's `.prepare` and `.train`.
    private struct PreparedRound {
        var plan: TrainingPlan
        var layout: AdapterLayout
        var global: AdapterTensors
        var globalAdapter: LoRAAdapter
        var trainer: LoRATrainer
        var evalExamples: [TokenizedExample]
        var examples: Int
        /// The held-out records scored for the condition accuracy release (`ConditionAccuracy.scored`): nil when the
        /// plan asks for none or the held-out records carry no condition (then nothing is released or charged for it).
        var accuracyIndices: [Int]?
    }

    public init(paths: ClientPaths, configuration: ClientConfiguration, address: CoordinatorAddress,
                maximumRounds: Int?, log: OperatorLog, events: EventLog? = nil) throws {
        self.paths = paths
        self.configuration = configuration
        self.address = address
        self.maximumRounds = maximumRounds
        self.log = log
        self.events = events
        name = try ClientSettings.load(paths: paths).name
        identity = try ClientSetup.signingKey(paths: paths)
        let caPEM = try PEMFile.readCertificate(at: address.caPath)
        let certificatePEM = try PEMFile.readCertificate(at: address.certificatePath)
        let keyPEM = try PEMFile.readPrivateKey(at: paths.key.path)
        caName = try Self.checkIdentity(caPEM: caPEM, certificatePEM: certificatePEM, keyPEM: keyPEM,
                                        keyPath: paths.key.path, address: address)
        context = try TLSClientContext(caPEM: caPEM, certificatePEM: certificatePEM, keyPEM: keyPEM, expectedHost: address.host)
        loaded = try ModelLoader.load(path: configuration.model, threads: configuration.threads)
        tokenizer = loaded.tokenizer
        let modelConfiguration = loaded.model.configuration
        agent = ClientAgent(name: name, policy: configuration.policy, identity: identity) { plan in
            try AdapterLayout(configuration: modelConfiguration, plan: plan)
        }
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

    /// Key, certificate and CA checked against each other before any connection: a mistake there is
    /// a configuration error that no retry can fix, so `join` stops at once saying which file is wrong.
    /// Returns the CA's common name.
    static func checkIdentity(caPEM: String, certificatePEM: String, keyPEM: PrivateKeyPEM, keyPath: String,
                              address: CoordinatorAddress) throws -> String {
        guard try IdentityChecks.keyMatches(certificatePEM: certificatePEM, keyPEM: keyPEM) else {
            throw ClientIdentityError(description: "\(keyPath) does not match \(address.certificatePath): the certificate was "
                                      + "issued for another key. Give --cert the certificate `enroll` issued for this client's "
                                      + "request (client.csr in the state directory), or run `init` again and enrol anew")
        }
        let caName = try IdentityChecks.names(certificatePEM: caPEM, what: "--ca \(address.caPath)").subject
        guard try IdentityChecks.isIssued(certificatePEM: certificatePEM, byAnyOf: caPEM) else {
            let issuer = try IdentityChecks.names(certificatePEM: certificatePEM, what: "--cert \(address.certificatePath)").issuer
            throw ClientIdentityError(description: "your certificate \(address.certificatePath) is issued by '\(issuer)'; your --ca "
                                      + "\(address.caPath) is '\(caName)'. Give --ca the ca.pem of the federation that enrolled "
                                      + "this client (or enrol with this one)")
        }
        return caName
    }

    /// Why the coordinator's certificate was refused, as a sentence naming the CA that issued it and ours.
    private func rejection(subject: String, issuer: String, reason: String) -> ClientIdentityError {
        let coordinator = "\(address.host):\(address.port)"
        if issuer != caName {
            return ClientIdentityError(description: "the coordinator's certificate ('\(subject)' at \(coordinator)) is issued by "
                                       + "'\(issuer)'; your --ca \(address.caPath) is '\(caName)'. Give --ca the ca.pem of the "
                                       + "federation this coordinator runs, or --coordinator the address of yours (\(reason))")
        }
        return ClientIdentityError(description: "the coordinator's certificate ('\(subject)' at \(coordinator)) failed "
                                   + "verification, which retrying cannot fix: \(reason). Check that --coordinator names the "
                                   + "host or address in its certificate and that both machines' clocks are right")
    }

    /// The ledger in the state directory, created with the policy's budget and unit; an existing one
    /// that counts another unit than the policy's is an error at start, not a refusal in every round.
    private func openLedger() throws -> PrivacyLedger {
        let policy = configuration.policy
        let budget = PrivacyBudget(epsilon: policy.maxEpsilon, delta: policy.delta, accountant: .rdp, unit: policy.privacyUnit)
        if FileManager.default.fileExists(atPath: paths.root.appendingPathComponent(PrivacyLedger.fileName).path) {
            let ledger = try PrivacyLedger(directory: paths.root)
            guard ledger.budget.unit == policy.privacyUnit else {
                throw PrivacyLedgerError.invalid(path: ledger.fileURL.path, reason: "it counts ε per \(ledger.budget.unit.rawValue), "
                    + "the policy's privacy_unit is \(policy.privacyUnit.rawValue); set policy.privacy_unit to "
                    + "\(ledger.budget.unit.rawValue), or give this client a new state directory for \(policy.privacyUnit.rawValue)-level rounds")
            }
            return ledger
        }
        return try PrivacyLedger(directory: paths.root, creatingWith: budget)
    }

    private var wantsMoreRounds: Bool { maximumRounds.map { agent.roundsEnded < $0 } ?? true }

    /// Connects and serves rounds until `maximumRounds` have ended; reconnects with exponential
    /// backoff (0.5 s doubling to 10 s) when the connection fails.
    public func run() throws {
        var backoff = 0.5
        while wantsMoreRounds {
            let connection: TLSConnection
            do {
                connection = try TLSConnection.connect(host: address.host, port: address.port, context: context, timeout: 10)
            } catch let TransportError.serverCertificateRejected(_, subject, issuer, reason) {
                // Not a network blip: the same certificate will be refused on every attempt.
                throw rejection(subject: subject, issuer: issuer, reason: reason)
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
        try connection.setTimeouts(read: silenceLimit, write: 120)
        try send([Hello(client: name, software: software, pendingRound: agent.pendingRound,
                        signingKey: identity.publicKey.bytes).frame()], on: connection)
        log.write("connected to the coordinator at \(address.host):\(address.port) as '\(name)'")
        var reader = FrameReader()
        while wantsMoreRounds {
            let next: Frame?
            do {
                next = try reader.nextFrame(reading: { try connection.read(into: $0) })
            } catch TransportError.timedOut {
                throw FederationError.peer("coordinator", "sent nothing for \(Int(silenceLimit)) s; reconnecting")
            }
            guard let frame = next else {
                throw FederationError.peer("coordinator", "closed the connection")
            }
            if frame.type == .invite, let events, let invite = try? Invite(frame: frame) {
                events.emit("invited", round: invite.round, ["coordinator": .string("\(address.host):\(address.port)")])
            }
            if frame.type == .roundResult, let head = try? RoundResult(frame: frame).auditHead { keepAuditHead(head) }
            try perform(try agent.receive(frame), on: connection)
        }
    }

    /// Keeps the audit log's head that came with a round result (`ClientAuditHead`); a refused one is
    /// logged and the head kept before stays. A failure to write is logged, never fatal to the round.
    private func keepAuditHead(_ head: AuditHead) {
        do {
            if case let .refuse(reason) = try ClientAuditHead.keep(head, paths: paths) {
                log.write("WARNING: the coordinator's audit-log head was refused and not kept: \(reason)")
            }
        } catch {
            log.write("cannot keep the coordinator's audit-log head: \(error)")
        }
    }

    /// Carries out the agent's actions in order, feeding each result back to the agent and carrying
    /// out what it answers in turn.
    private func perform(_ actions: [ClientAgent.Action], on connection: TLSConnection) throws {
        var pending = actions[...]
        var prepared: PreparedRound?
        while let action = pending.popFirst() {
            switch action {
            case let .send(frames):
                try send(frames, on: connection)
                if frames.contains(where: { $0.type == .secureMaskedInput }) { FaultPoint.reach("client-after-upload") }
                emitSent(frames)
            case let .log(line):
                log.write(line)
            case let .decline(round, code, detail):
                // The coordinator hears the code alone; the words (which may quote the data) stay here.
                let words = ClientLogText.escaped(detail)
                log.write("round \(round): declining (\(code.name)): \(words)")
                events?.emit("declined", round: round, ["reason": .string(words), "code": .string(code.name)])
                try send([Decline(round: round, code: code).frame()], on: connection)
            case let .prepare(round, plan, global):
                switch try prepare(plan: plan, global: global) {
                case let .success(ready):
                    prepared = ready
                    pending += agent.prepared(round: round, RoundPreparation(mechanism: ready.trainer.mechanism,
                                                                             examples: ready.examples,
                                                                             scoresConditions: ready.accuracyIndices != nil))
                case let .failure(failure):
                    pending += agent.preparationFailed(round: round, failure)
                }
            case let .charge(round, request):
                var ledger = try openLedger()
                let charge = try ledger.chargeBeforeTraining(request.mechanism, clipNorm: request.clipNorm,
                                                             purpose: "round \(round) at \(address.host):\(address.port)"
                                                                + (request.purposeDetail.map { "; " + $0 } ?? ""),
                                                             ceiling: request.ceiling, unit: request.unit,
                                                             releases: request.releases, trustingNoOne: request.trustingNoOne)
                if case let .charged(receipt) = charge {
                    FaultPoint.reach("client-after-charge")
                    events?.emit("charged", round: round, ["epsilon": .double(receipt.epsilon),
                                                           "delta": .double(receipt.budget.delta),
                                                           "budget_epsilon": .double(receipt.budget.epsilon)])
                }
                pending += try agent.ledgerAnswered(round: round, charge)
            case let .train(round):
                guard let ready = prepared else { preconditionFailure("round \(round): training before preparing") }
                prepared = nil
                let report = try train(ready, round: round)
                FaultPoint.reach("client-after-train")
                pending += try agent.trainingFinished(round: round, report)
            case let .upload(round, update, metrics):
                try send(try TensorSetFrames.frames(round: round, kind: .update, tensors: update)
                         + [MetricsReport(round: round, metrics: metrics).frame()], on: connection)
                FaultPoint.reach("client-after-upload")
                events?.emit("uploaded", round: round)
            case let .keepCommitted(round, plan, global):
                try keepGlobal(global, plan: plan)
                FaultPoint.reach("client-after-keep-global")
                log.write("round \(round) committed; global adapter saved to \(paths.globalAdapter.path)")
                events?.emit("committed", round: round, ["global_adapter": .string(paths.globalAdapter.path)])
            case let .roundOver(round, reason):
                log.write("round \(round) is over for this client: \(reason)")
                events?.emit("round_over", round: round, ["reason": .string(reason)])
            }
        }
    }

    /// The agent's own frames as monitoring events: its acceptance, and a secure round's masked upload.
    private func emitSent(_ frames: [Frame]) {
        guard let events else { return }
        for frame in frames {
            if frame.type == .accept, let accept = try? Accept(frame: frame) {
                events.emit("accepted", round: accept.round)
            } else if frame.type == .secureMaskedInput {
                // Its round is the one the agent now awaits the result of (not decoded again: it is the whole update).
                events.emit("uploaded", round: agent.pendingRound, ["secure": .bool(true)])
            }
        }
    }

    private func keepGlobal(_ tensors: AdapterTensors, plan: TrainingPlan) throws {
        let layout = try AdapterLayout(configuration: loaded.model.configuration, plan: plan)
        try layout.write(tensors, to: paths.globalAdapter, baseModel: URL(fileURLWithPath: configuration.model).lastPathComponent)
    }

    /// Keeps the global adapter, loads the data (canaries planted) and builds the trainer for `plan`;
    /// a failure the client declines with is returned, others are thrown.
    private func prepare(plan: TrainingPlan, global: AdapterTensors) throws -> Result<PreparedRound, PreparationFailure> {
        let model = loaded.model
        let layout = try AdapterLayout(configuration: model.configuration, plan: plan)
        let globalAdapter = try layout.adapter(global, from: "the coordinator's global adapter")
        try keepGlobal(global, plan: plan)
        var examples: [TokenizedExample], evalExamples: [TokenizedExample]
        // A private plan's unit is the policy's by now (ClientPolicy objects to any other), so whether a
        // record without a user fails does not depend on a private plan.
        switch RoundData.load(configuration, maxLength: plan.maxLength, tokenizer: tokenizer,
                              vocabularySize: model.configuration.vocabSize, requireUser: plan.privacyUnit == .user,
                              cache: records) {
        case let .success(records): (examples, evalExamples) = (records.train, records.eval)
        case let .failure(failure): return .failure(failure)
        }
        // Each repetition of each canary is one more record: DP-SGD samples and accounts for them all.
        if let canaries { examples = canaries.planted(into: examples) }
        if plan.privacyUnit == .user {
            // A planted canary is a person of its own (a random id no dataset user can hold by chance).
            for index in examples.indices where examples[index].user == nil {
                examples[index].user = "canary \(UUID().uuidString)"
            }
        }
        do {
            let trainer = try LoRATrainer(model: model, examples: examples, configuration: Self.training(plan, layout: layout),
                                          initial: TrainableLoRA.from(globalAdapter, for: model))
            return .success(PreparedRound(plan: plan, layout: layout, global: global, globalAdapter: globalAdapter, trainer: trainer,
                                          evalExamples: evalExamples, examples: examples.count,
                                          accuracyIndices: Self.accuracyIndices(plan: plan, evalExamples: evalExamples,
                                                                                ledgerUnit: ledgerUnit)))
        } catch {
            return .failure(.trainer("\(error)"))
        }
    }

    /// The unit the ledger counts: the policy's (a ledger of another unit is refused at start).
    private var ledgerUnit: PrivacyUnit { configuration.policy.privacyUnit }

    /// The persons a round's metrics releases (held-out loss, condition accuracy) group the held-out records by, or nil
    /// when each record is its own unit. The unit is the plan's, or at privacy unit client the ledger's (the policy's),
    /// which a client-level round's releases are charged at: a user-level ledger is charged per person, so each person
    /// must move a release by at most one unit's sensitivity.
    static func releaseUsers(plan: TrainingPlan, evalExamples: [TokenizedExample], ledgerUnit: PrivacyUnit) -> [String?]? {
        let unit = plan.isClientLevel ? ledgerUnit : plan.privacyUnit
        return unit == .user ? evalExamples.map(\.user) : nil
    }

    /// The held-out records a round scores for condition accuracy, or nil when it releases none: the plan asks for none,
    /// or its held-out records carry no condition (RoundData has checked that they all do or none does, so whether a
    /// client releases does not turn on one record). A unit is a record or a person (`releaseUsers`).
    static func accuracyIndices(plan: TrainingPlan, evalExamples: [TokenizedExample], ledgerUnit: PrivacyUnit) -> [Int]? {
        guard plan.accuracyRecords > 0, evalExamples.contains(where: { $0.condition != nil }) else { return nil }
        return ConditionAccuracy.scored(evalExamples, limit: plan.accuracyRecords,
                                        users: releaseUsers(plan: plan, evalExamples: evalExamples, ledgerUnit: ledgerUnit))
    }

    /// The condition accuracy of the scored held-out records with the model's adapter as set (nil when none are scored).
    private func conditionsNamed(_ prepared: PreparedRound) throws -> [Bool]? {
        guard let indices = prepared.accuracyIndices, let tokenizer else { return nil }
        return try ConditionAccuracy.correct(model: loaded.model, tokenizer: tokenizer, examples: prepared.evalExamples,
                                             indices: indices)
    }

    /// The round's condition accuracy release (`ConditionAccuracy`, charged with the training by the agent's charge),
    /// logged exactly here only; nil when the round scores none.
    private func accuracyRelease(before: [Bool]?, after: [Bool]?, plan: TrainingPlan, round: UInt64,
                                 time: String) throws -> ConditionAccuracyRelease? {
        guard let before, let after else { return nil }
        let sums = try ConditionAccuracy.release(before: before, after: after, noiseMultiplier: plan.accuracyNoiseMultiplier)
        let release = ConditionAccuracyRelease(correctBefore: sums[0], correctAfter: sums[1], count: sums[2],
                                               noiseMultiplier: plan.accuracyNoiseMultiplier)
        log.write(String(format: "round %llu: condition named in %d → %d of %d held-out assessments (exact, this log only; "
                         + "%@); released with discrete Gaussian noise σ = %.2f records (z %g)", round,
                         before.filter { $0 }.count, after.filter { $0 }.count, before.count, time, release.sigma,
                         release.noiseMultiplier))
        return release
    }

    /// The trainer's configuration for a federation's plan.
    static func training(_ plan: TrainingPlan, layout: AdapterLayout) -> TrainingConfiguration {
        var training = TrainingConfiguration()
        training.rank = plan.rank
        training.alpha = plan.alpha
        training.targets = layout.targets
        training.steps = plan.steps
        training.learningRate = plan.learningRate
        training.samplingRate = plan.samplingRate
        // A client-level plan's local steps sample records without noise: the unit is the whole client, whose update
        // the agent clips to S.
        training.privacyUnit = plan.isClientLevel ? .record : plan.privacyUnit
        training.decay = .constant
        // A distributed round clips and sums without local noise (`clippedStepSum`); the share is added on the grid.
        if plan.isPrivate && !plan.isDistributed {
            training.privacy = DifferentialPrivacy(noiseMultiplier: plan.noiseMultiplier, clipNorm: plan.clipNorm,
                                                   delta: plan.delta)
        }
        return training
    }

    /// Evaluates the global adapter (and the canaries' exposure on it), trains, evaluates the
    /// result, keeps it in `local-adapter/`, and reports the update.
    private func train(_ prepared: PreparedRound, round: UInt64) throws -> TrainingReport {
        if prepared.plan.isDistributed && !prepared.plan.isClientLevel { return try distributedStep(prepared, round: round) }
        let model = loaded.model
        let start = ProcessStatistics.now()
        model.setAdapter(prepared.globalAdapter)
        let (before, namedBefore, timeBefore) = try heldOutFigures(prepared)
        // Exposure on the adapter as received (the previous round's result; the initial one in round 1).
        let exposure = try canaries?.measure(model: model)
        if let exposure {
            log.write(String(format: "round %llu: canary exposure on the global adapter: mean %.2f bits, max %.2f of %.2f "
                             + "(%@ over |R| = %d, %.1f s)", round, exposure.meanBits, exposure.maxBits,
                             log2(Double(exposure.spaceSize)), exposure.exact ? "exact" : "estimated from \(exposure.candidatesScored) candidates",
                             exposure.spaceSize, exposure.seconds ?? .nan))
        }
        let progress = ProgressReporter(label: "round \(round)", total: prepared.trainer.totalSteps)
        let result = try prepared.trainer.train(progress: progress)
        let local = result.lora.adapter()
        model.setAdapter(local)
        let (after, namedAfter, timeAfter) = try heldOutFigures(prepared)
        model.setAdapter(nil)
        let accuracy = try accuracyRelease(before: namedBefore, after: namedAfter, plan: prepared.plan, round: round,
                                           time: "before: \(timeBefore); after: \(timeAfter)")
        let localTensors = local.federationTensors
        try prepared.layout.write(localTensors, to: paths.localAdapter,
                                  baseModel: URL(fileURLWithPath: configuration.model).lastPathComponent)
        var heldOut: HeldOutRelease?
        if let before, let after {
            let release = try Self.release(before: before, after: after, plan: prepared.plan, evalExamples: prepared.evalExamples,
                                           ledgerUnit: ledgerUnit)
            log.write(String(format: "round %llu: held-out loss %.4f → %.4f over %d records (exact, this log only); released "
                             + "with discrete Gaussian noise σ = %.0f grid units (z %g, L %g)", round, before.loss, after.loss,
                             after.examples, release.sigma, release.noiseMultiplier, release.lossClip))
            heldOut = release
        } else {
            log.write("round \(round): the round asks for no held-out loss release; the held-out records were not scored")
        }
        return TrainingReport(update: AdapterMath.difference(localTensors, prepared.global), heldOut: heldOut,
                              evalLoss: before.flatMap { b in after.map { (RoundData.reportedLoss(b), RoundData.reportedLoss($0)) } },
                              evalTokens: after?.tokens ?? 0, trainLoss: result.trainLoss,
                              seconds: ProcessStatistics.now() - start, canaryExposure: exposure, conditionAccuracy: accuracy)
    }

    /// A distributed-DP round: the held-out loss of the global adapter, then this client's clipped gradient sum
    /// at it (the agent adds the noise share on the grid and masks it). Nothing is trained locally, so the
    /// release's "after" is the global adapter's loss again; the next round's "before" shows the step.
    private func distributedStep(_ prepared: PreparedRound, round: UInt64) throws -> TrainingReport {
        let model = loaded.model
        let start = ProcessStatistics.now()
        model.setAdapter(prepared.globalAdapter)
        let (before, named, time) = try heldOutFigures(prepared)
        let evaluated = ProcessStatistics.now()
        // Nothing is trained locally: "after" is the global adapter's again, as for the loss.
        let accuracy = try accuracyRelease(before: named, after: named, plan: prepared.plan, round: round, time: time)
        let generated = ProcessStatistics.now()
        let exposure = try canaries?.measure(model: model)
        model.setAdapter(nil)
        let measured = ProcessStatistics.now()
        let step = try prepared.trainer.clippedStepSum(clipNorm: prepared.plan.clipNorm)
        let stepped = ProcessStatistics.now()
        let sum = prepared.trainer.lora.adapter(from: step.sum.map { Float($0) }).federationTensors
        let heldOut = try before.map {
            try Self.release(before: $0, after: $0, plan: prepared.plan, evalExamples: prepared.evalExamples, ledgerUnit: ledgerUnit)
        }
        let trainLoss = step.examples > 0 ? step.loss / Double(step.examples) : .nan
        let scored = before.map { String(format: "held-out loss %.4f over %d records (exact, this log only)", $0.loss, $0.examples) }
            ?? "no held-out loss release asked (held-out records not scored)"
        log.write(String(format: "round %llu: %@; %d units sampled, clipped gradients summed (mean loss %.4f); seconds: "
                         + "evaluation %.1f, canaries %.1f, gradients %.1f", round, scored, step.units, trainLoss,
                         evaluated - start, measured - generated, stepped - measured))
        return TrainingReport(update: sum, heldOut: heldOut,
                              evalLoss: before.map { (RoundData.reportedLoss($0), RoundData.reportedLoss($0)) },
                              evalTokens: before?.tokens ?? 0, trainLoss: trainLoss,
                              seconds: ProcessStatistics.now() - start, canaryExposure: exposure, conditionAccuracy: accuracy)
    }

    /// The held-out loss of the model's adapter as set, or nil in a round that asks for no held-out release (whose
    /// held-out records are then not scored at all: nothing of them is computed, so nothing could leak); and the
    /// condition accuracy of the scored records (`conditionsNamed`), nil when none are scored. A round that asks for
    /// both writes each scored record's assessment from the pass that scores its loss (`Evaluator.evaluate(assessing:)`:
    /// one pass over each prompt, where the two took two). `time` says where the seconds went, for this log only.
    private func heldOutFigures(_ prepared: PreparedRound) throws -> (loss: Evaluation?, named: [Bool]?, time: String) {
        let start = ProcessStatistics.now()
        func seconds(since: Double) -> String { String(format: "%.1f s", ProcessStatistics.now() - since) }
        guard prepared.plan.asksHeldOutRelease else {
            return (nil, try conditionsNamed(prepared), seconds(since: start) + " of generation")
        }
        guard let indices = prepared.accuracyIndices, let tokenizer else {
            return (try Evaluator.evaluate(model: loaded.model, examples: prepared.evalExamples), nil, seconds(since: start))
        }
        let (evaluation, assessments) = try Evaluator.evaluate(model: loaded.model, examples: prepared.evalExamples,
                                                               assessing: indices, tokenizer: tokenizer)
        return (evaluation, ConditionAccuracy.correct(examples: prepared.evalExamples, indices: indices, assessments: assessments),
                seconds(since: start) + " of held-out scoring and generation, one pass over each prompt")
    }

    /// The round's held-out release (`HeldOutMetrics`, charged with the training by the agent's charge), its records
    /// grouped by the unit the ledger is charged at (`releaseUsers`).
    /// - Parameter noise: as `HeldOutMetrics.release`'s; nil (production) is the discrete Gaussian.
    static func release(before: Evaluation, after: Evaluation, plan: TrainingPlan, evalExamples: [TokenizedExample],
                        ledgerUnit: PrivacyUnit, noise: ((inout [Int64], Double) throws -> Void)? = nil) throws -> HeldOutRelease {
        let sums = try HeldOutMetrics.release(before: before, after: after, lossClip: plan.metricsLossClip,
                                              noiseMultiplier: plan.metricsNoiseMultiplier, gridScale: HeldOutRelease.gridScale,
                                              users: releaseUsers(plan: plan, evalExamples: evalExamples, ledgerUnit: ledgerUnit),
                                              noise: noise)
        return HeldOutRelease(lossBefore: sums[0], lossAfter: sums[1], count: sums[2], lossClip: plan.metricsLossClip,
                              noiseMultiplier: plan.metricsNoiseMultiplier)
    }
}
