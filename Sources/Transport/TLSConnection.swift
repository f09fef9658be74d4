#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import COpenSSL
import Foundation
import SystemIO

/// An established, mutually authenticated TLS 1.3 connection over a blocking TCP socket.
///
/// Reads and writes must come from one thread at a time (an OpenSSL `SSL` object is not safe for
/// concurrent use). `cancel()` may be called from any thread to wake a blocked read or write, which
/// then throws; `close()` must not race with a read or write in progress.
///
/// A TLS 1.3 client finishes its handshake before the server has judged the client's certificate,
/// so a client the server refuses learns it on its first read (the server's alert), not in `connect`.
public final class TLSConnection: @unchecked Sendable {
    /// Which side of the connection this is.
    public enum Role: Sendable { case client, server }

    /// The peer's numeric address, "host:port".
    public let peerAddress: String
    /// The common name of the peer's verified certificate (a client id, or the coordinator's host).
    public let peerCommonName: String
    /// SHA-256 of the peer's certificate (DER), 64 lowercase hex digits.
    public let peerCertificateFingerprint: String
    /// This side's role.
    public let role: Role

    private var ssl: OpaquePointer?
    private let descriptor: Int32
    private let lock = NSLock()
    private var cancelled = false

    /// The negotiated protocol, e.g. "TLSv1.3".
    public var protocolVersion: String {
        lock.withLock { ssl.map { String(cString: SSL_get_version($0)) } ?? "closed" }
    }

    /// "client 'clinic-1' at 127.0.0.1:51234": how errors and logs name the peer.
    public var peerDescription: String {
        "\(role == .server ? "client" : "server") '\(peerCommonName)' at \(peerAddress)"
    }

    init(ssl: OpaquePointer, descriptor: Int32, role: Role, peerAddress: String, commonName: String, fingerprint: String) {
        self.ssl = ssl
        self.descriptor = descriptor
        self.role = role
        self.peerAddress = peerAddress
        self.peerCommonName = commonName
        self.peerCertificateFingerprint = fingerprint
    }

    deinit {
        if let ssl { SSL_free(ssl) }
        SystemCall.close(descriptor)
    }

    /// Connects to the coordinator at `host:port` and completes the TLS 1.3 handshake, verifying the
    /// server's certificate against the CA and `context.expectedHost`.
    /// - Parameters:
    ///   - timeout: bound on the TCP connect and on each read or write of the handshake, in seconds.
    /// - Throws: `TransportError.socket` if TCP fails, `.serverCertificateRejected` when the server's
    ///   certificate fails verification, `.handshake` naming the server and the reason otherwise.
    public static func connect(host: String, port: UInt16, context: TLSClientContext,
                               timeout: TimeInterval = 10) throws -> TLSConnection
    {
        let (descriptor, address) = try TCPSocket.connect(host: host, port: port, timeout: timeout)
        let connection = try establish(descriptor: descriptor, role: .client, peerAddress: address,
                                       context: context.context, timeout: timeout, authorize: nil) { ssl in
            let expected = context.expectedHost
            let configured: Bool
            switch try Names.classifyHost(expected) {
            case .ip:
                configured = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), expected) == 1
            case .dns:
                configured = SSL_set1_host(ssl, expected) == 1 && conclave_SSL_set_tlsext_host_name(ssl, expected) == 1
            }
            guard configured else { throw OpenSSLErrors.error("setting the expected server name \(expected)") }
            return SSL_connect(ssl)
        }
        return connection
    }

    /// Takes ownership of `descriptor`: creates the SSL, runs the whole handshake before `timeout`
    /// seconds have passed (one deadline for all its reads and writes, so a peer trickling bytes cannot
    /// stretch it), and either returns the connection (which then owns both) or frees the SSL, hands the
    /// descriptor to `release` and throws. Both ends get TCP keepalive.
    static func establish(descriptor: Int32, role: Role, peerAddress: String, context: OpaquePointer,
                          timeout: TimeInterval, authorize: ClientAuthorization?,
                          release: ((Int32) -> Void)? = nil,
                          step: (OpaquePointer) throws -> Int32) throws -> TLSConnection
    {
        let peer = "\(role == .server ? "client" : "server") \(peerAddress)"
        let deadline = Date().addingTimeInterval(timeout)
        var ssl: OpaquePointer?
        let connection: TLSConnection
        do {
            try TCPSocket.setNoDelay(descriptor, peer: peer)
            try TCPSocket.setKeepAlive(descriptor, peer: peer)
            try TCPSocket.setNonBlocking(descriptor, true, peer: peer)
            OpenSSLErrors.clear()
            ssl = SSL_new(context)
            guard let ssl else { throw OpenSSLErrors.error("SSL_new") }
            connection = try handshake(ssl: ssl, descriptor: descriptor, role: role, peerAddress: peerAddress,
                                       authorize: authorize, deadline: deadline, timeout: timeout, step: step)
            try TCPSocket.setNonBlocking(descriptor, false, peer: peer)
        } catch {
            if let ssl { SSL_free(ssl) }
            if let release {
                release(descriptor)
            } else if role == .server {
                TCPSocket.closeAfterDraining(descriptor)
            } else {
                SystemCall.close(descriptor)
            }
            throw error
        }
        // From here the connection owns the SSL and the socket; its deinit frees them.
        try connection.setTimeouts(read: nil, write: nil)
        return connection
    }

    /// Runs `step` (SSL_accept or SSL_connect) on a fresh SSL over a non-blocking socket, waiting for
    /// the socket between steps until `deadline`, then checks what verification recorded. On failure
    /// the caller frees `ssl` and closes `descriptor`.
    static func handshake(ssl: OpaquePointer, descriptor: Int32, role: Role, peerAddress: String,
                          authorize: ClientAuthorization?, deadline: Date, timeout: TimeInterval,
                          step: (OpaquePointer) throws -> Int32) throws -> TLSConnection
    {
        let peer = "\(role == .server ? "client" : "server") \(peerAddress)"
        let state = HandshakeState(authorize: authorize)
        guard SSL_set_fd(ssl, descriptor) == 1 else { throw OpenSSLErrors.error("SSL_set_fd") }
        // The ex-data slot holds an unretained pointer: `state` lives until this function returns,
        // and the slot is cleared before then.
        SSL_set_ex_data(ssl, HandshakeState.exDataIndex, Unmanaged.passUnretained(state).toOpaque())
        defer { SSL_set_ex_data(ssl, HandshakeState.exDataIndex, nil) }
        OpenSSLErrors.clear()
        var result = try withExtendedLifetime(state) { try step(ssl) }
        var code = result == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl, result)
        var systemError = errno
        while code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE {
            guard TCPSocket.wait(descriptor, writable: code == SSL_ERROR_WANT_WRITE, until: deadline) else { break }
            OpenSSLErrors.clear()
            result = try withExtendedLifetime(state) { try step(ssl) }
            code = result == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl, result)
            systemError = errno
        }
        if result != 1 {
            var reasons: [String] = []
            if let refusal = state.refusal { reasons.append(refusal) }
            let queue = OpenSSLErrors.drain(fallback: "")
            if !queue.isEmpty { reasons.append(queue) }
            if code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE {
                reasons.append("handshake not finished within \(String(format: "%.3g", timeout)) s")
            } else if code == SSL_ERROR_SYSCALL {
                reasons.append(systemError == 0 ? "connection closed by peer during the handshake"
                                                : TCPSocket.reason(systemError))
            }
            let reason = reasons.isEmpty ? "SSL error \(code)" : reasons.joined(separator: "; ")
            if role == .client, let names = state.rejectedNames {
                throw TransportError.serverCertificateRejected(peer: peer, subject: names.subject, issuer: names.issuer,
                                                               reason: reason)
            }
            throw TransportError.handshake(peer: peer, reason: reason)
        }
        let verification = SSL_get_verify_result(ssl)
        guard verification == Int(X509_V_OK) else {
            throw TransportError.handshake(
                peer: peer, reason: "peer certificate failed verification: \(String(cString: X509_verify_cert_error_string(verification)))")
        }
        guard let name = state.peerCommonName, let fingerprint = state.peerFingerprint else {
            throw TransportError.handshake(peer: peer, reason: "peer presented no certificate")
        }
        return TLSConnection(ssl: ssl, descriptor: descriptor, role: role, peerAddress: peerAddress,
                             commonName: name, fingerprint: fingerprint)
    }

    /// Whether TCP keepalive is on for this connection, and its idle time in seconds before the first probe.
    public var keepAlive: (enabled: Bool, idleSeconds: Int) {
        let enabled = TCPSocket.integerOption(descriptor, level: SOL_SOCKET, option: SO_KEEPALIVE) ?? 0
        let idle = TCPSocket.integerOption(descriptor, level: Int32(IPPROTO_TCP), option: PortableSocket.keepAliveIdleOption) ?? 0
        return (enabled != 0, Int(idle))
    }

    /// Bounds each read and each write (SO_RCVTIMEO / SO_SNDTIMEO); nil waits forever. A write that
    /// times out leaves the connection unusable (part of a record may have gone), so close it.
    public func setTimeouts(read: TimeInterval?, write: TimeInterval?) throws {
        try TCPSocket.setTimeout(descriptor, option: SO_RCVTIMEO, seconds: read, peer: peerDescription)
        try TCPSocket.setTimeout(descriptor, option: SO_SNDTIMEO, seconds: write, peer: peerDescription)
    }

    /// Reads what is available, up to `buffer.count` bytes, blocking until at least one arrives.
    /// - Returns: the number of bytes read; 0 when the peer closed the connection cleanly.
    /// - Throws: `.timedOut`, `.io` (with OpenSSL's reason, e.g. the server's refusal alert), or
    ///   `.connectionClosed` after `close()`/`cancel()`.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard let ssl = liveSSL() else { throw TransportError.connectionClosed(peer: peerDescription) }
        guard buffer.count > 0, let base = buffer.baseAddress else { return 0 }
        while true {
            OpenSSLErrors.clear()
            let n = SSL_read(ssl, base, Int32(clamping: buffer.count))
            if n > 0 { return Int(n) }
            let code = SSL_get_error(ssl, n)
            let systemError = errno
            switch code {
            case SSL_ERROR_ZERO_RETURN:
                return 0
            case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
                if systemError == EINTR { continue }
                throw isCancelled ? TransportError.connectionClosed(peer: peerDescription)
                                  : TransportError.timedOut(peer: peerDescription, operation: "read")
            default:
                throw failure("read", code: code, systemError: systemError)
            }
        }
    }

    /// Exactly `count` bytes, or an error: `.closedByPeer` says how many had arrived.
    public func readExactly(count: Int) throws -> [UInt8] {
        precondition(count >= 0, "readExactly count must not be negative, got \(count)")
        var bytes = [UInt8](repeating: 0, count: count)
        var received = 0
        try bytes.withUnsafeMutableBytes { buffer in
            while received < count {
                let n = try read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[received...]))
                guard n > 0 else { throw TransportError.closedByPeer(peer: peerDescription, expected: count, received: received) }
                received += n
            }
        }
        return bytes
    }

    /// Writes all of `bytes`, blocking until they are handed to the kernel.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard let ssl = liveSSL() else { throw TransportError.connectionClosed(peer: peerDescription) }
        guard let base = bytes.baseAddress else { return }
        var written = 0
        while written < bytes.count {
            OpenSSLErrors.clear()
            let n = SSL_write(ssl, base + written, Int32(clamping: bytes.count - written))
            if n > 0 {
                written += Int(n)
                continue
            }
            let code = SSL_get_error(ssl, n)
            let systemError = errno
            switch code {
            case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
                if systemError == EINTR { continue }
                throw isCancelled ? TransportError.connectionClosed(peer: peerDescription)
                                  : TransportError.timedOut(peer: peerDescription, operation: "write")
            default:
                throw failure("write", code: code, systemError: systemError)
            }
        }
    }

    /// Writes all of `bytes`.
    public func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    /// Wakes any read or write blocked on this connection (shutdown(2)); safe from any thread.
    public func cancel() {
        lock.withLock {
            guard !cancelled else { return }
            cancelled = true
            _ = SystemCall.shutdown(descriptor, Int32(SHUT_RDWR))
        }
    }

    /// Sends close_notify (without waiting for the peer's) and releases the connection.
    public func close() {
        lock.withLock {
            guard let ssl else { return }
            if !cancelled { _ = SSL_shutdown(ssl) }
            SSL_free(ssl)
            self.ssl = nil
            cancelled = true
            _ = SystemCall.shutdown(descriptor, Int32(SHUT_RDWR))
        }
    }

    private var isCancelled: Bool { lock.withLock { cancelled } }

    private func liveSSL() -> OpaquePointer? {
        lock.withLock { cancelled ? nil : ssl }
    }

    private func failure(_ operation: String, code: Int32, systemError: Int32) -> TransportError {
        if isCancelled { return .connectionClosed(peer: peerDescription) }
        if code == SSL_ERROR_SYSCALL {
            let reason = OpenSSLErrors.drain(fallback: systemError == 0 ? "connection closed without close_notify"
                                                                        : TCPSocket.reason(systemError))
            return .io(peer: peerDescription, operation: operation, reason: reason)
        }
        return .io(peer: peerDescription, operation: operation, reason: OpenSSLErrors.drain(fallback: "SSL error \(code)"))
    }
}

/// A listening TCP socket that completes a TLS 1.3 handshake with each client it accepts.
public final class TLSListener: @unchecked Sendable {
    /// The port listened on (the system's choice when 0 was asked for).
    public let port: UInt16
    /// The address listened on, as given.
    public let host: String
    /// Bound on each read or write during a handshake, so a silent client cannot hold `accept`.
    public let handshakeTimeout: TimeInterval

    private let context: TLSServerContext
    private let descriptor: Int32
    private let lock = NSLock()
    private var closed = false

    /// Listens on `host:port` (default all IPv4 interfaces; port 0 picks a free port).
    public init(host: String = "0.0.0.0", port: UInt16, context: TLSServerContext,
                handshakeTimeout: TimeInterval = 10, backlog: Int32 = 512) throws
    {
        (descriptor, self.port) = try TCPSocket.listen(host: host, port: port, backlog: backlog)
        self.host = host
        self.context = context
        self.handshakeTimeout = handshakeTimeout
    }

    deinit { SystemCall.close(descriptor) }

    /// Accepts the next client and completes the handshake. A client that fails the handshake or is
    /// refused makes this throw `TransportError.handshake` naming it and the reason; its socket is
    /// closed and the listener stays ready for the next call.
    public func accept() throws -> TLSConnection {
        try acceptSocket().handshake()
    }

    /// Accepts the next TCP connection without the handshake, so that a server can run handshakes
    /// on worker threads while this thread goes on accepting.
    public func acceptSocket() throws -> PendingTLSConnection {
        let name = "listener \(host):\(port)"
        guard !lock.withLock({ closed }) else { throw TransportError.connectionClosed(peer: name) }
        let (client, address) = try TCPSocket.accept(descriptor, name: name)
        return PendingTLSConnection(descriptor: client, peerAddress: address, context: context, timeout: handshakeTimeout)
    }

    /// Stops listening: a thread blocked in `accept` wakes and throws.
    public func close() {
        lock.withLock {
            guard !closed else { return }
            closed = true
            _ = SystemCall.shutdown(descriptor, Int32(SHUT_RDWR))
        }
    }
}

/// An accepted TCP connection whose TLS handshake has not run yet.
public final class PendingTLSConnection: @unchecked Sendable {
    /// The client's numeric address, "host:port".
    public let peerAddress: String
    /// When the connection was accepted: the handshake's deadline counts from here.
    public let accepted: Date
    private let context: TLSServerContext
    private let timeout: TimeInterval
    private let lock = NSLock()
    /// Owned here until the handshake starts.
    private var descriptor: Int32?
    /// The descriptor while the handshake runs on it (what `cancel` shuts down).
    private var handshaking: Int32?
    private var established: TLSConnection?
    private var cancelled = false

    init(descriptor: Int32, peerAddress: String, context: TLSServerContext, timeout: TimeInterval) {
        self.descriptor = descriptor
        self.peerAddress = peerAddress
        self.context = context
        self.timeout = timeout
        accepted = Date()
    }

    deinit { if let descriptor { SystemCall.close(descriptor) } }

    /// Runs the server side of the handshake: TLS 1.3, the client's certificate verified against the
    /// federation CA, then the context's `authorize`, all within the listener's handshake timeout of
    /// `accepted`. Call at most once.
    /// - Throws: `TransportError.handshake` naming the client's address and why it was refused.
    public func handshake() throws -> TLSConnection {
        let (descriptor, wasCancelled) = lock.withLock { () -> (Int32?, Bool) in
            defer { self.descriptor = nil }
            if !cancelled { handshaking = self.descriptor }
            return (self.descriptor, cancelled)
        }
        guard let descriptor else { preconditionFailure("PendingTLSConnection.handshake called twice for \(peerAddress)") }
        if wasCancelled {
            SystemCall.close(descriptor)
            throw TransportError.handshake(peer: "client \(peerAddress)", reason: "closed by the server before its handshake")
        }
        let left = max(accepted.addingTimeInterval(timeout).timeIntervalSinceNow, 0.001)
        let connection = try TLSConnection.establish(
            descriptor: descriptor, role: .server, peerAddress: peerAddress, context: context.context, timeout: left,
            authorize: context.authorize, release: { [self] descriptor in
                lock.withLock { handshaking = nil }
                TCPSocket.closeAfterDraining(descriptor)
            }) { SSL_accept($0) }
        let cancelNow = lock.withLock { () -> Bool in
            handshaking = nil
            established = connection
            return cancelled
        }
        if cancelNow { connection.cancel() }
        return connection
    }

    /// Wakes the handshake (or, once it is done, any read or write of the connection it made) so that it
    /// fails; safe from any thread, at any time. The server uses it to evict a connection that has not
    /// logged in when too many wait.
    public func cancel() {
        let connection = lock.withLock { () -> TLSConnection? in
            cancelled = true
            if let handshaking { _ = SystemCall.shutdown(handshaking, Int32(SHUT_RDWR)) }
            return established
        }
        connection?.cancel()
    }
}
