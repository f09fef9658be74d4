import Audit
import CoordinatorService
import FederationProtocol
import Foundation
import ModelFormats
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
/// update of the plan's layout with plausible metrics, without training.
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
            for attempt in 0..<5 {
                do {
                    connection = try TLSConnection.connect(host: host, port: port, context: context, timeout: 30)
                    break
                } catch {
                    lastError = error
                    Thread.sleep(forTimeInterval: 0.5 * Double(1 << attempt))
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
        var agent = ClientAgent { plan in try AdapterLayout(configuration: model, plan: plan) }
        var reader = FrameReader()
        while true {
            guard let frame = try reader.nextFrame(reading: { try connection.read(into: $0) }) else {
                if closing.load(ordering: .relaxed) { return }
                throw BenchmarkError("the coordinator closed the connection")
            }
            for action in try agent.receive(frame) {
                switch action {
                case let .invited(invite, _):
                    let start = threadCPUSeconds()
                    let bytes = try update(for: invite, as: id)
                    try connection.write(bytes)
                    agent.finishedWork(round: invite.round, uploaded: true)
                    let spent = threadCPUSeconds() - start
                    tally.withLock {
                        $0.uploads[invite.round, default: 0] += 1
                        $0.computeSeconds[invite.round, default: 0] += spent
                    }
                case let .committed(result, _):
                    tally.withLock { $0.committed[result.round, default: 0] += 1 }
                case let .roundOver(round, reason):
                    tally.withLock { $0.otherEndings[round, default: []].append("\(id): \(reason)") }
                case let .secure(round, _):
                    // Light clients take part in plain rounds only (the benchmark's policy has secure aggregation off).
                    throw BenchmarkError("round \(round): secure aggregation is not supported by light clients")
                }
            }
        }
    }

    /// Accept, a random update of the plan's layout (values of order 1e-3, like a few small SGD
    /// steps), and metrics, encoded as one write.
    private func update(for invite: Invite, as id: String) throws -> [UInt8] {
        let layout = try AdapterLayout(configuration: model, plan: invite.plan)
        var delta: AdapterTensors = [:]
        for (name, shape) in layout.shapes {
            let count = shape.reduce(1, *)
            delta[name] = SecureRandom.unitDoubles(count: count).map { Float(($0 - 0.5) * 2e-3) }
        }
        let metrics = ClientRoundMetrics(client: id, examples: 32, evalLossBefore: 2.5, evalLossAfter: 2.45,
                                         evalTokens: 256, epsilon: 0.5, delta: invite.plan.delta, epsilonBudget: 10,
                                         trainLoss: 2.48, seconds: 0)
        var frames = [try Accept(round: invite.round).frame()]
        frames += try TensorSetFrames.frames(round: invite.round, kind: .update, tensors: delta)
        frames.append(try MetricsReport(round: invite.round, metrics: metrics).frame())
        var bytes: [UInt8] = []
        for frame in frames { bytes += try frame.encoded() }
        return bytes
    }
}
