import Audit
import CoordinatorService
import FederationProtocol
import Foundation
import ModelFormats
import Privacy
import SecureCrypto
import Synchronization
import SystemIO
import Transport
import Wire

/// One enrolled light client: its id, key and certificate, kept in memory (never written).
struct LightClientIdentity: Sendable {
    let id: String
    let keyPEM: PrivateKeyPEM
    let certificatePEM: String
}

/// A fleet of light clients, one thread and one mutual-TLS connection each, speaking the real
/// protocol through `ClientAgent`: they accept every invitation and at once upload a small random
/// update of the plan's layout with plausible metrics, without training or a ledger.
final class LightClientFleet: @unchecked Sendable {
    /// What the clients have seen, for the orchestrator.
    struct Tally {
        var connected = 0
        var threadsEnded = 0
        var failures: [String] = []
        /// Per round: updates sent, committed results received, other endings (aborted, dropped).
        var uploads: [UInt64: Int] = [:]
        var committed: [UInt64: Int] = [:]
        var otherEndings: [UInt64: [String]] = [:]
        /// Per round: CPU seconds the clients spent making and sending their updates (sum over threads).
        var computeSeconds: [UInt64: Double] = [:]
    }

    let tally = Mutex(Tally())
    private let connections = Mutex<[TLSConnection]>([])
    private let closing = Atomic<Bool>(false)
    private let host: String
    private let port: UInt16
    private let caPEM: String
    private let model: LlamaConfiguration
    private let software = "conclave-bench-federation light client"

    init(host: String, port: UInt16, caPEM: String, model: LlamaConfiguration) {
        self.host = host
        self.port = port
        self.caPEM = caPEM
        self.model = model
    }

    /// Starts one thread per identity; each connects (retrying up to five times), says hello and serves rounds.
    func start(_ identities: [LightClientIdentity]) {
        for identity in identities {
            let thread = Thread { [self] in run(identity) }
            // Frames here are a few kilobytes; a small stack keeps 1,000 threads cheap.
            thread.stackSize = 256 << 10
            thread.start()
        }
    }

    /// Closes every connection (after the coordinator has stopped) and waits for the threads to end.
    func stop(expecting count: Int, timeout: TimeInterval) {
        closing.store(true, ordering: .relaxed)
        for connection in connections.withLock({ $0 }) { connection.cancel() }
        let deadline = Date().addingTimeInterval(timeout)
        while tally.withLock({ $0.threadsEnded }) < count, Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
    }

    private func run(_ identity: LightClientIdentity) {
        defer { tally.withLock { $0.threadsEnded += 1 } }
        do {
            let context = try TLSClientContext(caPEM: caPEM, certificatePEM: identity.certificatePEM,
                                               keyPEM: identity.keyPEM, expectedHost: host)
            var connection: TLSConnection?
            var lastError: Error?
            // All of them come from 127.0.0.1, so the coordinator's per-address bound on connections that
            // have not logged in refuses most of a simultaneous start: retry as a real client does.
            for attempt in 0..<12 {
                do {
                    connection = try TLSConnection.connect(host: host, port: port, context: context, timeout: 30)
                    break
                } catch {
                    lastError = error
                    Thread.sleep(forTimeInterval: min(5, 0.5 * Double(1 << attempt)) * Double.random(in: 0.5...1.5))
                }
            }
            guard let connection else { throw lastError ?? BenchmarkError("no connection") }
            connections.withLock { $0.append(connection) }
            try connection.setTimeouts(read: nil, write: 60)
            try connection.write(Hello(client: identity.id, software: software, pendingRound: 0).frame().encoded())
            tally.withLock { $0.connected += 1 }
            defer { tally.withLock { $0.connected -= 1 } }
            try serve(connection, as: identity.id)
        } catch {
            if !closing.load(ordering: .relaxed) {
                tally.withLock { $0.failures.append("\(identity.id): \(error)") }
            }
        }
    }

    private func serve(_ connection: TLSConnection, as id: String) throws {
        let model = self.model
        // A policy that accepts every plan; the agent's decisions and messages are the real ones.
        let policy = ClientPolicy(maxEpsilon: 1e9, delta: 1, maxStepsPerRound: .max, requirePrivacy: false)
        var agent = ClientAgent(name: id, policy: policy, identity: SigningKeyPair()) { plan in
            try AdapterLayout(configuration: model, plan: plan)
        }
        var reader = FrameReader()
        while true {
            guard let frame = try reader.nextFrame(reading: { try connection.read(into: $0) }) else {
                if closing.load(ordering: .relaxed) { return }
                throw BenchmarkError("the coordinator closed the connection")
            }
            try perform(try agent.receive(frame), agent: &agent, connection: connection, as: id)
        }
    }

    /// Carries out the agent's actions without a model or a ledger: no training (a small random
    /// update at once) and a fixed ε; accept, update and metrics go out as one write.
    private func perform(_ actions: [ClientAgent.Action], agent: inout ClientAgent, connection: TLSConnection,
                         as id: String) throws {
        var pending = actions[...]
        var bytes: [UInt8] = []
        var start = 0.0
        var plan: TrainingPlan?
        while let action = pending.popFirst() {
            switch action {
            case let .prepare(round, invited, _):
                start = threadCPUSeconds()
                plan = invited
                pending += agent.prepared(round: round, RoundPreparation(mechanism: nil, examples: 32))
            case let .charge(round, _):
                let budget = PrivacyBudget(epsilon: 10, delta: plan?.delta ?? 1e-5, accountant: .rdp)
                pending += try agent.ledgerAnswered(round: round, .charged(PrivacyReceipt(entry: nil, epsilon: 0.5, budget: budget)))
            case let .train(round):
                guard let plan else { throw BenchmarkError("round \(round): training before preparing") }
                // A light client has no model: a fixed release of the right shape (the benchmark measures the protocol).
                let heldOut = HeldOutRelease(lossBefore: 1_000, lossAfter: 980, count: 2_400, lossClip: plan.metricsLossClip,
                                             noiseMultiplier: plan.metricsNoiseMultiplier)
                let report = TrainingReport(update: try randomUpdate(plan), heldOut: plan.asksHeldOutRelease ? heldOut : nil,
                                            evalLoss: (2.5, 2.45), evalTokens: 256, trainLoss: 2.48, seconds: 0)
                pending += try agent.trainingFinished(round: round, report)
            case let .send(frames):
                for frame in frames { bytes += try frame.encoded() }
            case let .upload(round, update, metrics):
                for frame in try TensorSetFrames.frames(round: round, kind: .update, tensors: update) { bytes += try frame.encoded() }
                bytes += try MetricsReport(round: round, metrics: metrics).frame().encoded()
                try connection.write(bytes)
                bytes = []
                let spent = threadCPUSeconds() - start
                tally.withLock {
                    $0.uploads[round, default: 0] += 1
                    $0.computeSeconds[round, default: 0] += spent
                }
            case let .keepCommitted(round, _, _):
                tally.withLock { $0.committed[round, default: 0] += 1 }
            case let .roundOver(round, reason):
                tally.withLock { $0.otherEndings[round, default: []].append("\(id): \(reason)") }
            case let .decline(round, code, detail):
                // Its policy accepts every plan: a decline means the benchmark is set up wrong.
                throw BenchmarkError("round \(round): a light client declined (\(code.name)): \(detail)")
            case .log:
                break
            }
        }
        if !bytes.isEmpty { try connection.write(bytes) }
    }

    /// A random update of the plan's layout (values of order 1e-3, like a few small SGD steps).
    private func randomUpdate(_ plan: TrainingPlan) throws -> AdapterTensors {
        let layout = try AdapterLayout(configuration: model, plan: plan)
        var delta: AdapterTensors = [:]
        for (name, shape) in layout.shapes {
            let count = shape.reduce(1, *)
            delta[name] = SecureRandom.unitDoubles(count: count).map { Float(($0 - 0.5) * 2e-3) }
        }
        return delta
    }
}
