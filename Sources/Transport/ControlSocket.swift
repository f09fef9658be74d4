#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import SystemIO

/// The local control channel of a running coordinator: an AF_UNIX stream socket in the state
/// directory (`control.sock`), through which `rounds start`, `status` and `clients` reach `serve`.
///
/// One exchange per connection: the client sends one request framed as a UInt32 big-endian length
/// and that many bytes, the server answers with one response framed the same way, then closes. What
/// the bytes mean is the caller's business.
///
/// Only the owner of the coordinator may talk to it: the socket is created 0600 (bound under a umask
/// of 0o177, so it is never reachable by others, then chmod-ed to be sure), and every connection's
/// peer uid (SO_PEERCRED) must equal the server's effective uid.
public enum ControlSocketLimits {
    /// Largest request a server reads (checked against the length prefix before allocation).
    public static let maximumRequest = 1 << 20
    /// Largest response a client reads (checked against the length prefix before allocation).
    public static let maximumResponse = 16 << 20
}

/// Serves the control socket: accepts on a background thread and answers each connection on a
/// thread of its own with `handler`.
public final class ControlSocketServer: @unchecked Sendable {
    /// The socket's path.
    public let path: String
    /// Bound on receiving a whole request and on sending a whole response.
    public let ioTimeout: TimeInterval

    private let handler: @Sendable ([UInt8]) -> [UInt8]
    private let log: @Sendable (String) -> Void
    private let descriptor: Int32
    /// Device and inode of the socket we bound, so `close()` never unlinks a successor's socket.
    private let boundFile: (device: UInt64, inode: UInt64)
    private let lock = NSLock()
    private var started = false
    private var closed = false
    private var accepting = false

    /// Most connections served at once; more are closed at once (and logged).
    static let maximumConcurrentConnections = 32
    private var activeConnections = 0

    /// Binds and listens at `path` (not yet accepting: call `start()`).
    ///
    /// - Parameters:
    ///   - path: the socket's path; at most 107 bytes (the `sun_path` limit).
    ///   - ioTimeout: bound on reading a request and on writing a response (default 5 s).
    ///   - log: where refused connections and per-connection failures are reported (default: stderr).
    ///   - handler: turns a request into a response; runs on the connection's thread, possibly
    ///     concurrently with other connections.
    /// - Throws: `TransportError.controlSocket` when a server already answers at `path` or `path` is
    ///   something other than a socket; `.socket` for failing system calls.
    public init(path: String, ioTimeout: TimeInterval = 5,
                log: @escaping @Sendable (String) -> Void = ControlSocketServer.logToStandardError,
                handler: @escaping @Sendable ([UInt8]) -> [UInt8]) throws
    {
        precondition(ioTimeout > 0, "control socket ioTimeout must be positive, got \(ioTimeout)")
        self.path = path
        self.ioTimeout = ioTimeout
        self.handler = handler
        self.log = log
        let address = try UnixSocket.address(path)
        try Self.removeStaleSocket(at: path)

        let descriptor = PortableSocket.open(family: AF_UNIX)
        guard descriptor >= 0 else { throw TransportError.socket(peer: path, operation: "socket", reason: TCPSocket.reason()) }
        do {
            // umask is per process: the narrow mask lasts only for the bind, so the socket file is
            // born 0600 and there is no moment at which another user could connect.
            let previousMask = umask(0o177)
            let bound = UnixSocket.withAddress(address) { bind(descriptor, $0, $1) }
            let bindError = errno
            umask(previousMask)
            guard bound == 0 else {
                throw TransportError.socket(peer: path, operation: "bind", reason: TCPSocket.reason(bindError))
            }
            guard chmod(path, 0o600) == 0 else {
                let reason = TCPSocket.reason()
                unlink(path)
                throw TransportError.socket(peer: path, operation: "chmod 0600", reason: reason)
            }
            var status = stat()
            guard lstat(path, &status) == 0 else {
                let reason = TCPSocket.reason()
                unlink(path)
                throw TransportError.socket(peer: path, operation: "stat", reason: reason)
            }
            boundFile = (UInt64(status.st_dev), UInt64(status.st_ino))
            guard SystemCall.listen(descriptor, 64) == 0 else {
                let reason = TCPSocket.reason()
                unlink(path)
                throw TransportError.socket(peer: path, operation: "listen", reason: reason)
            }
        } catch {
            SystemCall.close(descriptor)
            throw error
        }
        self.descriptor = descriptor
    }

    deinit { close() }

    /// Writes one line to standard error, prefixed with "control socket: ".
    public static let logToStandardError: @Sendable (String) -> Void = { message in
        StandardError.write("control socket: \(message)\n")
    }

    /// Starts the accept loop on a background thread. Calling it again, or after `close()`, does nothing.
    public func start() {
        let proceed = lock.withLock { () -> Bool in
            guard !started && !closed else { return false }
            started = true
            accepting = true
            return true
        }
        guard proceed else { return }
        let thread = Thread { [self] in acceptLoop() }
        thread.name = "control socket \(path)"
        thread.start()
    }

    /// Stops accepting and removes the socket file (if it is still the one this server bound).
    /// Connections already accepted finish their exchange. Safe to call more than once.
    public func close() {
        // (first call, descriptor still ours to close here because the accept loop never started)
        let (first, releaseHere) = lock.withLock { () -> (Bool, Bool) in
            guard !closed else { return (false, false) }
            closed = true
            // Wakes a thread blocked in accept(2); that thread then closes the descriptor.
            _ = SystemCall.shutdown(descriptor, Int32(SHUT_RDWR))
            return (true, !started)
        }
        guard first else { return }
        if releaseHere { SystemCall.close(descriptor) }
        var status = stat()
        if lstat(path, &status) == 0, UInt64(status.st_dev) == boundFile.device, UInt64(status.st_ino) == boundFile.inode {
            unlink(path)
        }
    }

    private var isClosed: Bool { lock.withLock { closed } }

    /// Whether the accept loop is running (it ends soon after `close()`).
    var isAccepting: Bool { lock.withLock { accepting } }

    private func acceptLoop() {
        defer {
            SystemCall.close(descriptor)
            lock.withLock { accepting = false }
        }
        while !isClosed {
            let client = SystemCall.accept(descriptor, nil, nil)
            if client >= 0 { _ = fcntl(client, F_SETFD, FD_CLOEXEC) }
            if client < 0 {
                let code = errno
                if isClosed { return }
                if code == EINTR || code == ECONNABORTED { continue }
                log("\(path): accept failed: \(TCPSocket.reason(code))")
                // EMFILE and the like: wait a little rather than spin.
                usleep(100_000)
                continue
            }
            let admitted = lock.withLock { () -> Bool in
                guard activeConnections < Self.maximumConcurrentConnections else { return false }
                activeConnections += 1
                return true
            }
            guard admitted else {
                log("\(path): refused a connection: \(Self.maximumConcurrentConnections) already in progress")
                SystemCall.close(client)
                continue
            }
            let thread = Thread { [self] in
                serve(client)
                SystemCall.close(client)
                lock.withLock { activeConnections -= 1 }
            }
            thread.name = "control connection"
            thread.start()
        }
    }

    /// One exchange: check the peer, read the request, answer, and let the caller close.
    private func serve(_ client: Int32) {
        do {
            let peer = try UnixSocket.peerCredentials(client, path: path)
            let owner = geteuid()
            guard peer.uid == owner else {
                log("\(path): refused a connection from uid \(peer.uid) (pid \(peer.pid)): only uid \(owner) may control this coordinator")
                return
            }
            let name = "control client pid \(peer.pid) on \(path)"
            let deadline = Date().addingTimeInterval(ioTimeout)
            let request = try UnixSocket.readFrame(client, limit: ControlSocketLimits.maximumRequest, what: "request",
                                                   peer: name, deadline: deadline)
            let response = handler(request)
            guard response.count <= ControlSocketLimits.maximumResponse else {
                log("\(name): response of \(response.count) bytes exceeds the \(ControlSocketLimits.maximumResponse)-byte limit; not sent")
                return
            }
            try UnixSocket.writeFrame(client, response, peer: name, deadline: Date().addingTimeInterval(ioTimeout))
        } catch {
            log("\(error)")
        }
    }

    /// Refuses when a server answers at `path`; removes a socket nobody answers on.
    private static func removeStaleSocket(at path: String) throws {
        var status = stat()
        guard lstat(path, &status) == 0 else {
            let code = errno
            if code == ENOENT { return }
            throw TransportError.socket(peer: path, operation: "stat", reason: TCPSocket.reason(code))
        }
        guard status.st_mode & S_IFMT == S_IFSOCK else {
            throw TransportError.controlSocket(path: path, reason: "\(path) exists and is not a socket; not removing it")
        }
        switch UnixSocket.probe(path) {
        case .answered:
            throw TransportError.controlSocket(path: path, reason: "a coordinator is already running (\(path))")
        case .refused:
            guard unlink(path) == 0 || errno == ENOENT else {
                throw TransportError.socket(peer: path, operation: "unlink stale socket", reason: TCPSocket.reason())
            }
        case let .failed(reason):
            throw TransportError.socket(peer: path, operation: "connect (checking for a running coordinator)", reason: reason)
        }
    }
}

/// Sends one request to a running coordinator's control socket and returns its response.
public enum ControlSocketClient {
    /// One exchange with the server at `path`, all of it within `timeout` seconds.
    /// - Throws: `TransportError.controlSocket` when no coordinator is running (no socket, or a stale
    ///   one), the request is over 1 MiB or the response announces more than 16 MiB;
    ///   `.timedOut` when the server does not answer in time; `.closedByPeer` when it hangs up.
    public static func request(path: String, _ bytes: [UInt8], timeout: TimeInterval) throws -> [UInt8] {
        precondition(timeout > 0, "control socket timeout must be positive, got \(timeout)")
        guard bytes.count <= ControlSocketLimits.maximumRequest else {
            throw TransportError.controlSocket(path: path, reason:
                "request of \(bytes.count) bytes exceeds the \(ControlSocketLimits.maximumRequest)-byte limit of \(path)")
        }
        let deadline = Date().addingTimeInterval(timeout)
        let descriptor = try UnixSocket.connect(path, timeout: timeout)
        defer { SystemCall.close(descriptor) }
        let peer = "coordinator control socket \(path)"
        try UnixSocket.writeFrame(descriptor, bytes, peer: peer, deadline: deadline)
        do {
            return try UnixSocket.readFrame(descriptor, limit: ControlSocketLimits.maximumResponse, what: "response",
                                            peer: peer, deadline: deadline)
        } catch let TransportError.frameTooLarge(_, what, length, limit) {
            throw TransportError.controlSocket(path: path, reason:
                "\(what) of \(length) bytes from \(path) exceeds the \(limit)-byte limit")
        }
    }
}

/// AF_UNIX stream sockets: addresses, connect, peer credentials and deadline-bounded framed I/O.
enum UnixSocket {
    /// `sockaddr_un` bytes for `path`, or an error when the path does not fit.
    static func address(_ path: String) throws -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity, !bytes.contains(0) else {
            throw TransportError.socket(peer: path, operation: "address",
                                        reason: "a Unix socket path must be 1...\(capacity - 1) bytes without NUL, got \(bytes.count)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return address
    }

    static func withAddress<R>(_ address: sockaddr_un, _ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        var address = address
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }

    /// Connects to `path`, translating "nothing there" and "nobody listening" into the messages
    /// an operator needs.
    static func connect(_ path: String, timeout: TimeInterval) throws -> Int32 {
        let address = try address(path)
        let descriptor = PortableSocket.open(family: AF_UNIX)
        guard descriptor >= 0 else { throw TransportError.socket(peer: path, operation: "socket", reason: TCPSocket.reason()) }
        do {
            // A Unix-socket connect blocks only while the listen backlog is full; SO_SNDTIMEO bounds it.
            try TCPSocket.setTimeout(descriptor, option: SO_SNDTIMEO, seconds: timeout, peer: path)
            var status: Int32
            repeat { status = withAddress(address) { SystemCall.connect(descriptor, $0, $1) } } while status != 0 && errno == EINTR
            if status != 0 {
                let code = errno
                switch code {
                case ENOENT:
                    throw TransportError.controlSocket(path: path, reason: "no coordinator is running (no control socket at \(path))")
                case ECONNREFUSED:
                    throw TransportError.controlSocket(path: path,
                                                       reason: "no coordinator is running (stale socket at \(path))")
                case EAGAIN, EINPROGRESS, ETIMEDOUT:
                    throw TransportError.timedOut(peer: "coordinator control socket \(path)", operation: "connect")
                default:
                    throw TransportError.socket(peer: path, operation: "connect", reason: TCPSocket.reason(code))
                }
            }
            return descriptor
        } catch {
            SystemCall.close(descriptor)
            throw error
        }
    }

    enum Probe { case answered, refused, failed(String) }

    /// Whether a server accepts connections at `path` (the connection is closed at once).
    static func probe(_ path: String) -> Probe {
        do {
            let descriptor = try connect(path, timeout: 1)
            SystemCall.close(descriptor)
            return .answered
        } catch let TransportError.controlSocket(_, reason) {
            return reason.contains("stale socket") || reason.contains("no control socket") ? .refused : .failed(reason)
        } catch TransportError.timedOut {
            // A full backlog means a live, busy server.
            return .answered
        } catch {
            return .failed("\(error)")
        }
    }

    /// The connecting process's pid and uid: Linux's SO_PEERCRED, Darwin's getpeereid and LOCAL_PEERPID
    /// (pid -1 where the system does not say).
    static func peerCredentials(_ descriptor: Int32, path: String) throws -> (pid: Int32, uid: uid_t) {
        #if os(Linux)
        // Glibc's `struct ucred` is not visible to Swift, so its layout (pid_t pid; uid_t uid; gid_t gid:
        // three 32-bit fields) is read from the bytes.
        var raw = [UInt8](repeating: 0, count: 12)
        var length = socklen_t(raw.count)
        let status = raw.withUnsafeMutableBytes {
            getsockopt(descriptor, SOL_SOCKET, SO_PEERCRED, $0.baseAddress, &length)
        }
        guard status == 0 else {
            throw TransportError.socket(peer: path, operation: "getsockopt(SO_PEERCRED)", reason: TCPSocket.reason())
        }
        guard length == socklen_t(raw.count) else {
            throw TransportError.socket(peer: path, operation: "getsockopt(SO_PEERCRED)", reason: "answer of \(length) bytes, expected 12")
        }
        return raw.withUnsafeBytes { ($0.loadUnaligned(fromByteOffset: 0, as: Int32.self),
                                      $0.loadUnaligned(fromByteOffset: 4, as: uid_t.self)) }
        #else
        var uid: uid_t = 0
        var gid: gid_t = 0
        guard getpeereid(descriptor, &uid, &gid) == 0 else {
            throw TransportError.socket(peer: path, operation: "getpeereid", reason: TCPSocket.reason())
        }
        var pid: pid_t = -1
        var length = socklen_t(MemoryLayout<pid_t>.size)
        if getsockopt(descriptor, SOL_LOCAL, LOCAL_PEERPID, &pid, &length) != 0 { pid = -1 }
        return (pid, uid)
        #endif
    }

    /// Waits until `descriptor` is ready for `events` or the deadline passes.
    private static func wait(_ descriptor: Int32, events: Int32, peer: String, operation: String, deadline: Date) throws {
        while true {
            let remaining = deadline.timeIntervalSinceNow
            guard remaining > 0 else { throw TransportError.timedOut(peer: peer, operation: operation) }
            var entry = pollfd(fd: descriptor, events: Int16(events), revents: 0)
            let ready = poll(&entry, 1, Int32(clamping: Int((remaining * 1000).rounded(.up))))
            if ready > 0 { return }
            if ready == 0 { throw TransportError.timedOut(peer: peer, operation: operation) }
            if errno != EINTR { throw TransportError.io(peer: peer, operation: operation, reason: TCPSocket.reason()) }
        }
    }

    /// Fills `buffer` completely before the deadline.
    private static func readExactly(_ descriptor: Int32, into buffer: UnsafeMutableRawBufferPointer, peer: String,
                                    operation: String, deadline: Date) throws
    {
        var received = 0
        while received < buffer.count {
            try wait(descriptor, events: Int32(POLLIN), peer: peer, operation: operation, deadline: deadline)
            let n = recv(descriptor, buffer.baseAddress! + received, buffer.count - received, Int32(MSG_DONTWAIT))
            if n > 0 {
                received += n
            } else if n == 0 {
                throw TransportError.closedByPeer(peer: peer, expected: buffer.count, received: received)
            } else if errno != EINTR && errno != EAGAIN {
                throw TransportError.io(peer: peer, operation: operation, reason: TCPSocket.reason())
            }
        }
    }

    /// One frame: UInt32 big-endian length (checked against `limit` before allocation), then the bytes.
    static func readFrame(_ descriptor: Int32, limit: Int, what: String, peer: String, deadline: Date) throws -> [UInt8] {
        var header: UInt32 = 0
        try withUnsafeMutableBytes(of: &header) {
            try readExactly(descriptor, into: $0, peer: peer, operation: "read \(what) length", deadline: deadline)
        }
        let length = Int(UInt32(bigEndian: header))
        guard length <= limit else { throw TransportError.frameTooLarge(peer: peer, what: what, length: length, limit: limit) }
        var bytes = [UInt8](repeating: 0, count: length)
        if length > 0 {
            try bytes.withUnsafeMutableBytes {
                try readExactly(descriptor, into: $0, peer: peer, operation: "read \(what)", deadline: deadline)
            }
        }
        return bytes
    }

    /// Writes the length prefix and the bytes before the deadline (MSG_NOSIGNAL: a vanished peer is
    /// an error, not a SIGPIPE).
    static func writeFrame(_ descriptor: Int32, _ bytes: [UInt8], peer: String, deadline: Date) throws {
        precondition(bytes.count <= Int(UInt32.max), "frame of \(bytes.count) bytes does not fit a UInt32 length")
        var frame = [UInt8]()
        frame.reserveCapacity(4 + bytes.count)
        withUnsafeBytes(of: UInt32(bytes.count).bigEndian) { frame.append(contentsOf: $0) }
        frame.append(contentsOf: bytes)
        try frame.withUnsafeBytes { buffer in
            var sent = 0
            while sent < buffer.count {
                try wait(descriptor, events: Int32(POLLOUT), peer: peer, operation: "write", deadline: deadline)
                let n = send(descriptor, buffer.baseAddress! + sent, buffer.count - sent,
                             PortableSocket.sendNoSignal | Int32(MSG_DONTWAIT))
                if n >= 0 {
                    sent += n
                } else if errno != EINTR && errno != EAGAIN {
                    throw TransportError.io(peer: peer, operation: "write", reason: TCPSocket.reason())
                }
            }
        }
    }
}
