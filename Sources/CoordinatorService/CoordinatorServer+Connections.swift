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

/// The connections that have not logged in yet: the admission bounds and each one's pending TLS
/// connection, by ticket, so that an evicted one can be woken and closed.
struct PreLoginState {
    var admission: ConnectionAdmission
    var waiting: [UInt64: PendingTLSConnection] = [:]
}

extension CoordinatorServer {
    /// Admits or refuses a connection just accepted (`ConnectionAdmission`): an admitted one gets its own
    /// thread (and may evict the oldest one still waiting to log in); a refused one is closed at once,
    /// without a thread.
    func admit(_ pending: PendingTLSConnection) {
        let (arrival, evicted) = preLogin.withLock { state -> (ConnectionAdmission.Arrival, PendingTLSConnection?) in
            let arrival = state.admission.arrive(peerAddress: pending.peerAddress)
            switch arrival {
            case let .admit(ticket):
                state.waiting[ticket] = pending
                return (arrival, nil)
            case let .admitEvicting(ticket, evicted):
                state.waiting[ticket] = pending
                return (arrival, state.waiting.removeValue(forKey: evicted))
            case .refuse:
                return (arrival, nil)
            }
        }
        if let evicted {
            log.write("closing \(evicted.peerAddress): not logged in, and \(admissionLimits.waiting) connections wait to")
            evicted.cancel()
        }
        switch arrival {
        case let .refuse(reason):
            log.write("refused \(pending.peerAddress): \(reason)")
        case let .admit(ticket), let .admitEvicting(ticket, _):
            let thread = Thread { [self] in serve(pending, ticket: ticket) }
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    /// One client's connection, on its own thread: handshake and hello (within the login deadline),
    /// then its frames until it closes, is revoked, or the coordinator stops.
    func serve(_ pending: PendingTLSConnection, ticket: UInt64) {
        defer {
            preLogin.withLock { state in
                state.admission.leave(ticket)
                state.waiting[ticket] = nil
            }
        }
        let tls: TLSConnection
        do {
            tls = try pending.handshake()
        } catch {
            log.write("refused \(pending.peerAddress): \(error)")
            return
        }
        guard preLogin.withLock({ $0.admission.identified(ticket, as: tls.peerCommonName) }) else {
            log.write("refused \(tls.peerDescription): its certificate already holds \(admissionLimits.perIdentity) "
                      + "connections, or it waited too long to log in")
            tls.close()
            return
        }
        let peer = tls.peerDescription
        var reader = FrameReader(maximumPayload: admissionLimits.helloBytes)
        let deadline = pending.accepted.addingTimeInterval(admissionLimits.loginSeconds)
        guard let (connection, pendingRound) = greet(tls, reader: &reader, deadline: deadline, ticket: ticket) else { return }
        reader.maximumPayload = WireProtocol.defaultMaximumPayload
        perform(stepWithAdmittedClients { engine in
            engine.connect(connection.client, now: Date(), signingKey: connection.signingKey, pendingRound: pendingRound)
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

    /// Reads the hello (at most `admissionLimits.helloBytes`, complete before `deadline`), checks it names
    /// the certificate's client and pins its signing key, and makes the connection that client's current
    /// one (closing any previous one). Nil, with the connection closed, when the hello is missing, late or
    /// refused; else the connection and the round the client asks about (0: none).
    private func greet(_ tls: TLSConnection, reader: inout FrameReader, deadline: Date,
                       ticket: UInt64) -> (ClientConnection, UInt64)? {
        let peer = tls.peerDescription
        let late = FederationError.peer(peer, "sent no complete hello within \(admissionLimits.loginSeconds) s of connecting")
        do {
            let read: (UnsafeMutableRawBufferPointer) throws -> Int = { buffer in
                // Each read waits only for what is left of the deadline, so trickled bytes cannot extend it.
                let left = deadline.timeIntervalSinceNow
                guard left > 0 else { throw late }
                try tls.setTimeouts(read: left, write: 60)
                return try tls.read(into: buffer)
            }
            let first: Frame?
            do { first = try reader.nextFrame(reading: read) } catch TransportError.timedOut { throw late }
            guard let first else {
                throw FederationError.peer(peer, "closed the connection before its hello")
            }
            let hello = try Hello(frame: first)
            guard hello.client == tls.peerCommonName else {
                throw FederationError.peer(peer, "says it is '\(PeerText.printable(hello.client))' but its certificate names '\(tls.peerCommonName)'")
            }
            let connection = ClientConnection(client: hello.client, tls: tls, layout: layout)
            connection.signingKey = try pinSigningKey(hello)
            let admitted = preLogin.withLock { state -> Bool in
                state.waiting[ticket] = nil
                return state.admission.loggedIn(ticket)
            }
            guard admitted else { throw FederationError.peer(peer, "was closed to make room before its hello was accepted") }
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

    /// Runs `body` on the engine after closing the connections of clients the registry no longer admits
    /// (revoked, expired, or an unreadable registry) and telling the engine they left, in one step under
    /// the engine's lock: a cohort `body` draws holds only clients that pass the check at that moment.
    func withAdmittedClients<T>(_ body: (inout RoundEngine) -> T) -> (actions: [RoundEngine.Action], result: T) {
        engine.withLock { engine in
            var actions: [RoundEngine.Action] = []
            let live = connections.withLock { Array($0.values) }
            let refused = Set(authorization.refused(live.map { ($0.client, $0.tls.peerCertificateFingerprint) }))
            for connection in live where refused.contains(connection.client) {
                let removed = connections.withLock { table -> Bool in
                    guard table[connection.client] === connection else { return false }
                    table[connection.client] = nil
                    return true
                }
                guard removed else { continue }
                log.write("client '\(connection.client)': its certificate is no longer admitted (revoked or expired); "
                          + "closing its connection")
                connection.tls.cancel()
                actions += engine.disconnect(connection.client, now: Date())
            }
            if configuration.rounds.plan.isClientLevel { engine.setPopulation(authorization.activeClients()) }
            let result = body(&engine)
            return (actions, result)
        }
    }

    /// `withAdmittedClients` for a step that returns actions: the closings' actions, then the step's.
    func stepWithAdmittedClients(_ body: (inout RoundEngine) -> [RoundEngine.Action]) -> [RoundEngine.Action] {
        let (actions, more) = withAdmittedClients(body)
        return actions + more
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
        case let .decline(round, code):
            events.emit("declined", round: round, who.merging(["code": .string(code.name)]) { a, _ in a })
        case let .withdraw(round, code):
            events.emit("withdrew", round: round, who.merging(["code": .string(code.name)]) { a, _ in a })
        case let .upload(round, _):
            events.emit("uploaded", round: round, who)
        case let .secureMaskedInput(input, _):
            events.emit("uploaded", round: input.round, who.merging(["secure": .bool(true)]) { a, _ in a })
        case .secureAdvertise, .secureShares, .secureConsistency, .secureUnmask:
            break
        }
    }
}
