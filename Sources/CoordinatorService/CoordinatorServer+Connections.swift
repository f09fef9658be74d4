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
    /// What the client's frames mean, upload by upload (read only by this connection's thread).
    var uplink: ClientUplink
    /// The Ed25519 key the client presented and the registry pinned.
    var signingKey: SigningPublicKey?

    init(client: String, tls: TLSConnection, layout: AdapterLayout) {
        self.client = client
        self.tls = tls
        uplink = ClientUplink(client: client, layout: layout)
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
            let connection = ClientConnection(client: hello.client, tls: tls, layout: layout)
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

    /// Decodes one frame from `connection`'s client and feeds what it completes to the engine.
    private func handle(_ frame: Frame, from connection: ClientConnection) throws {
        let client = connection.client
        let event = try connection.uplink.receive(frame) { round in
            engine.withLock { $0.isActive(client, round: round) }
        }
        guard let event else { return }
        if let events { emit(event, from: client, to: events) }
        perform(engine.withLock { $0.handle(event, from: client, now: Date()) })
    }

    /// A client's answer as a monitoring event: accepted, declined (with its reason), withdrew, uploaded.
    private func emit(_ event: ClientUplink.Event, from client: String, to events: EventLog) {
        let who: [String: EventValue] = ["client": .string(client)]
        switch event {
        case let .accept(round):
            events.emit("accepted", round: round, who)
        case let .decline(round, reason):
            events.emit("declined", round: round, who.merging(["reason": .string(reason),
                                                               "code": .string(DeclineCode.code(of: reason))]) { a, _ in a })
        case let .withdraw(round, reason):
            events.emit("withdrew", round: round, who.merging(["reason": .string(reason)]) { a, _ in a })
        case let .upload(round, update):
            events.emit("uploaded", round: round, who.merging(["examples": .int(update.metrics.examples)]) { a, _ in a })
        case let .secureMaskedInput(input, _):
            events.emit("uploaded", round: input.round, who.merging(["secure": .bool(true)]) { a, _ in a })
        case .secureAdvertise, .secureShares, .secureUnmask:
            break
        }
    }
}
