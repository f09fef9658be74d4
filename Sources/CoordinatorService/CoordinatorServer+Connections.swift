import FederationProtocol
import Foundation
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

extension CoordinatorServer {
    /// One client's connection, on its own thread: handshake and hello, then its frames until it
    /// closes or the coordinator stops.
    func serve(_ pending: PendingTLSConnection) {
        let tls: TLSConnection
        do {
            tls = try pending.handshake()
        } catch {
            log.write("refused \(pending.peerAddress): \(error)")
            return
        }
        let peer = tls.peerDescription
        var reader = FrameReader()
        guard let (connection, pendingRound) = greet(tls, reader: &reader) else { return }
        perform(engine.withLock {
            $0.connect(connection.client, now: Date(), signingKey: connection.signingKey, pendingRound: pendingRound)
        })
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

    /// Reads the hello, checks it names the certificate's client and pins its signing key, and makes
    /// the connection that client's current one (closing any previous one). Nil, with the connection
    /// closed, when the hello is missing or refused; else the connection and the round the client
    /// asks about (0: none).
    private func greet(_ tls: TLSConnection, reader: inout FrameReader) -> (ClientConnection, UInt64)? {
        let peer = tls.peerDescription
        do {
            try tls.setTimeouts(read: 10, write: 60)
            guard let first = try reader.nextFrame(reading: { try tls.read(into: $0) }) else {
                throw FederationError.peer(peer, "closed the connection before its hello")
            }
            let hello = try Hello(frame: first)
            guard hello.client == tls.peerCommonName else {
                throw FederationError.peer(peer, "says it is '\(hello.client)' but its certificate names '\(tls.peerCommonName)'")
            }
            let connection = ClientConnection(client: hello.client, tls: tls)
            connection.signingKey = try pinSigningKey(hello)
            let previous = connections.withLock { table -> ClientConnection? in
                defer { table[hello.client] = connection }
                return table[hello.client]
            }
            if let previous {
                log.write("client '\(hello.client)' reconnected; closing its previous connection")
                previous.tls.cancel()
            }
            try tls.setTimeouts(read: 0.25, write: 60)
            return (connection, hello.pendingRound)
        } catch {
            log.write("connection \(peer): \(error); closing it")
            tls.close()
            return nil
        }
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

    /// Decodes one frame from `connection`'s client and feeds it to the engine; an update's tensor
    /// chunks and a masked input are held until the metrics report that completes them.
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
            try receiveChunk(try TensorChunk(frame: frame), from: connection)
        case .tensorsDone:
            let done = try TensorsDone(frame: frame)
            guard let receiver = connection.receiver else {
                throw FederationError.round(done.round, "end of an update that never started")
            }
            connection.receivedDelta = (done.round, try receiver.finish(done))
            connection.receiver = nil
        case .metrics:
            try receiveMetrics(try MetricsReport(frame: frame), from: connection)
        default:
            throw FederationError.peer(client, "unexpected \(frame.type) message")
        }
    }

    /// A chunk of a plain update; the first of a round must come from a client that round awaits.
    private func receiveChunk(_ chunk: TensorChunk, from connection: ClientConnection) throws {
        if connection.receiver?.round != chunk.round {
            guard engine.withLock({ $0.isActive(connection.client, round: chunk.round) }) else {
                throw FederationError.round(chunk.round, "update from '\(connection.client)', which is not in that round")
            }
            connection.receiver = TensorSetReceiver(round: chunk.round, kind: .update, layout: layout)
        }
        try connection.receiver!.add(chunk)
    }

    /// The figures that complete a masked input or a plain update of the same round.
    private func receiveMetrics(_ report: MetricsReport, from connection: ClientConnection) throws {
        let client = connection.client
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
        connection.receivedDelta = nil
        let update = ReceivedUpdate(delta: delta.tensors, metrics: report.metrics)
        perform(engine.withLock { $0.upload(client, round: report.round, update: update, now: Date()) })
    }
}
