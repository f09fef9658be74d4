#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import SystemIO

/// Plain blocking POSIX TCP sockets: every call goes through here and failures become
/// `TransportError.socket` naming the peer or address and the system's reason.
enum TCPSocket {
    static func reason(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }

    /// Resolves `host:port` numerically or through DNS.
    static func resolve(host: String, port: UInt16, passive: Bool) throws -> [(family: Int32, address: [UInt8])] {
        var hints = addrinfo()
        hints.ai_socktype = PortableSocket.stream
        hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0)
        var results: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &results)
        guard status == 0 else {
            throw TransportError.socket(peer: "\(host):\(port)", operation: "resolve",
                                        reason: String(cString: gai_strerror(status)))
        }
        defer { freeaddrinfo(results) }
        var addresses: [(Int32, [UInt8])] = []
        var cursor = results
        while let entry = cursor {
            if let address = entry.pointee.ai_addr {
                let bytes = UnsafeRawBufferPointer(start: address, count: Int(entry.pointee.ai_addrlen))
                addresses.append((entry.pointee.ai_family, Array(bytes)))
            }
            cursor = entry.pointee.ai_next
        }
        guard !addresses.isEmpty else {
            throw TransportError.socket(peer: "\(host):\(port)", operation: "resolve", reason: "no addresses")
        }
        return addresses
    }

    /// A NUL-terminated C buffer as text.
    static func text(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// "host:port" (IPv6 in brackets) for a socket address.
    static func describe(_ address: UnsafePointer<sockaddr>, length: socklen_t) -> String {
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        var service = [CChar](repeating: 0, count: Int(NI_MAXSERV))
        guard getnameinfo(address, length, &host, socklen_t(host.count), &service, socklen_t(service.count),
                          NI_NUMERICHOST | NI_NUMERICSERV) == 0
        else { return "(unknown address)" }
        let hostText = text(host)
        return (hostText.contains(":") ? "[\(hostText)]" : hostText) + ":" + text(service)
    }

    /// Connects to the first address of `host:port` that answers within `timeout` seconds.
    static func connect(host: String, port: UInt16, timeout: TimeInterval) throws -> (descriptor: Int32, peer: String) {
        var lastError: TransportError?
        for (family, address) in try resolve(host: host, port: port, passive: false) {
            let peer = address.withUnsafeBytes {
                describe($0.baseAddress!.assumingMemoryBound(to: sockaddr.self), length: socklen_t($0.count))
            }
            let descriptor = PortableSocket.open(family: family)
            guard descriptor >= 0 else {
                lastError = .socket(peer: peer, operation: "socket", reason: reason())
                continue
            }
            do {
                try connect(descriptor, to: address, peer: peer, timeout: timeout)
                try setNoDelay(descriptor, peer: peer)
                return (descriptor, peer)
            } catch let error as TransportError {
                SystemCall.close(descriptor)
                lastError = error
            }
        }
        throw lastError ?? TransportError.socket(peer: "\(host):\(port)", operation: "connect", reason: "no addresses")
    }

    /// A non-blocking connect bounded by poll(2), then back to blocking mode.
    private static func connect(_ descriptor: Int32, to address: [UInt8], peer: String, timeout: TimeInterval) throws {
        let flags = fcntl(descriptor, F_GETFL)
        guard flags >= 0, fcntl(descriptor, F_SETFL, flags | O_NONBLOCK) == 0 else {
            throw TransportError.socket(peer: peer, operation: "fcntl(O_NONBLOCK)", reason: reason())
        }
        let status = address.withUnsafeBytes {
            SystemCall.connect(descriptor, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t($0.count))
        }
        if status != 0 {
            guard errno == EINPROGRESS else { throw TransportError.socket(peer: peer, operation: "connect", reason: reason()) }
            var entry = pollfd(fd: descriptor, events: Int16(POLLOUT), revents: 0)
            let milliseconds = Int32(clamping: Int((timeout * 1000).rounded(.up)))
            var ready: Int32
            repeat { ready = poll(&entry, 1, milliseconds) } while ready < 0 && errno == EINTR
            guard ready > 0 else {
                throw TransportError.socket(peer: peer, operation: "connect",
                                            reason: ready == 0 ? "no answer within \(timeout) s" : reason())
            }
            var pending: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            guard getsockopt(descriptor, SOL_SOCKET, SO_ERROR, &pending, &length) == 0 else {
                throw TransportError.socket(peer: peer, operation: "getsockopt(SO_ERROR)", reason: reason())
            }
            guard pending == 0 else { throw TransportError.socket(peer: peer, operation: "connect", reason: reason(pending)) }
        }
        guard fcntl(descriptor, F_SETFL, flags) == 0 else {
            throw TransportError.socket(peer: peer, operation: "fcntl(blocking)", reason: reason())
        }
    }

    static func setNoDelay(_ descriptor: Int32, peer: String) throws {
        var one: Int32 = 1
        guard setsockopt(descriptor, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            throw TransportError.socket(peer: peer, operation: "setsockopt(TCP_NODELAY)", reason: reason())
        }
    }

    /// TCP keepalive: after `idle` seconds of silence the kernel probes the peer every `interval` seconds
    /// and, after `count` unanswered probes, fails the connection, so a read on a half-open connection
    /// (peer gone without a FIN: power loss, a dropped NAT entry) ends with an error instead of hanging.
    static func setKeepAlive(_ descriptor: Int32, idle: Int32 = 60, interval: Int32 = 10, count: Int32 = 6,
                             peer: String) throws {
        func set(_ level: Int32, _ option: Int32, _ value: Int32, _ name: String) throws {
            var value = value
            guard setsockopt(descriptor, level, option, &value, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
                throw TransportError.socket(peer: peer, operation: "setsockopt(\(name))", reason: reason())
            }
        }
        try set(SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE")
        try set(Int32(IPPROTO_TCP), PortableSocket.keepAliveIdleOption, idle, "TCP_KEEPIDLE")
        try set(Int32(IPPROTO_TCP), TCP_KEEPINTVL, interval, "TCP_KEEPINTVL")
        try set(Int32(IPPROTO_TCP), TCP_KEEPCNT, count, "TCP_KEEPCNT")
    }

    /// Reads an integer socket option (for `TLSConnection.keepAlive`).
    static func integerOption(_ descriptor: Int32, level: Int32, option: Int32) -> Int32? {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(descriptor, level, option, &value, &length) == 0 ? value : nil
    }

    /// Switches O_NONBLOCK on or off.
    static func setNonBlocking(_ descriptor: Int32, _ on: Bool, peer: String) throws {
        let flags = fcntl(descriptor, F_GETFL)
        guard flags >= 0, fcntl(descriptor, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK) == 0 else {
            throw TransportError.socket(peer: peer, operation: "fcntl(O_NONBLOCK)", reason: reason())
        }
    }

    /// Waits until `descriptor` is readable (or writable) or `deadline` passes; false when it passed.
    /// A hang-up or error counts as ready, so the next call on the socket reports it.
    static func wait(_ descriptor: Int32, writable: Bool, until deadline: Date) -> Bool {
        while true {
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { return false }
            var entry = pollfd(fd: descriptor, events: Int16(writable ? POLLOUT : POLLIN), revents: 0)
            let ready = poll(&entry, 1, Int32(clamping: Int((left * 1000).rounded(.up))))
            if ready > 0 { return true }
            if ready < 0 && errno != EINTR { return true }
        }
    }

    /// SO_RCVTIMEO / SO_SNDTIMEO; nil or zero means wait forever.
    static func setTimeout(_ descriptor: Int32, option: Int32, seconds: TimeInterval?, peer: String) throws {
        let value = max(seconds ?? 0, 0)
        var interval = timeval(tv_sec: Int(value.rounded(.down)),
                               tv_usec: Int(((value - value.rounded(.down)) * 1_000_000).rounded()))
        if value > 0 && interval.tv_sec == 0 && interval.tv_usec == 0 { interval.tv_usec = 1 }
        guard setsockopt(descriptor, SOL_SOCKET, option, &interval, socklen_t(MemoryLayout<timeval>.size)) == 0 else {
            throw TransportError.socket(peer: peer, operation: option == SO_RCVTIMEO ? "setsockopt(SO_RCVTIMEO)"
                                            : "setsockopt(SO_SNDTIMEO)", reason: reason())
        }
    }

    /// A listening socket bound to `host:port` (port 0: the system picks); returns it and the port.
    static func listen(host: String, port: UInt16, backlog: Int32) throws -> (descriptor: Int32, port: UInt16) {
        let (family, address) = try resolve(host: host, port: port, passive: true)[0]
        let name = "\(host):\(port)"
        let descriptor = PortableSocket.open(family: family)
        guard descriptor >= 0 else { throw TransportError.socket(peer: name, operation: "socket", reason: reason()) }
        do {
            var one: Int32 = 1
            guard setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
                throw TransportError.socket(peer: name, operation: "setsockopt(SO_REUSEADDR)", reason: reason())
            }
            let bound = address.withUnsafeBytes {
                bind(descriptor, $0.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t($0.count))
            }
            guard bound == 0 else { throw TransportError.socket(peer: name, operation: "bind", reason: reason()) }
            guard SystemCall.listen(descriptor, backlog) == 0 else {
                throw TransportError.socket(peer: name, operation: "listen", reason: reason())
            }
            var storage = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let named = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
            }
            guard named == 0 else { throw TransportError.socket(peer: name, operation: "getsockname", reason: reason()) }
            let family = Int32(storage.ss_family)
            let boundPort = withUnsafePointer(to: &storage) { pointer -> UInt16 in
                if family == AF_INET6 {
                    return pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) }
                }
                return pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
            }
            return (descriptor, boundPort)
        } catch {
            SystemCall.close(descriptor)
            throw error
        }
    }

    /// Closes a socket whose handshake failed so that the peer can still read our alert: a close with
    /// unread input sends a TCP reset, which discards the alert on the peer's side. So: FIN first,
    /// then discard what the peer still sends (at most 64 KiB, at most 250 ms), then close.
    static func closeAfterDraining(_ descriptor: Int32) {
        _ = SystemCall.shutdown(descriptor, Int32(SHUT_WR))
        var interval = timeval(tv_sec: 0, tv_usec: 250_000)
        _ = setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &interval, socklen_t(MemoryLayout<timeval>.size))
        var buffer = [UInt8](repeating: 0, count: 4096)
        var discarded = 0
        let deadline = Date().addingTimeInterval(0.25)
        while discarded < 65_536 && Date() < deadline {
            let n = buffer.withUnsafeMutableBytes { SystemCall.read(descriptor, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            discarded += n
        }
        SystemCall.close(descriptor)
    }

    /// accept(2), retried on EINTR; returns the descriptor and the peer's "host:port".
    static func accept(_ listener: Int32, name: String) throws -> (descriptor: Int32, peer: String) {
        while true {
            var storage = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let descriptor = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { SystemCall.accept(listener, $0, &length) }
            }
            if descriptor < 0 && (errno == EINTR || errno == ECONNABORTED) { continue }
            guard descriptor >= 0 else { throw TransportError.socket(peer: name, operation: "accept", reason: reason()) }
            _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
            let peer = withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { describe($0, length: length) }
            }
            return (descriptor, peer)
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel's choice for port 0), for tests
/// and the demo, which start a coordinator on loopback. Another process may take it before use.
public func freeLoopbackPort() throws -> UInt16 {
    let (descriptor, port) = try TCPSocket.listen(host: "127.0.0.1", port: 0, backlog: 1)
    SystemCall.close(descriptor)
    return port
}

/// Whether a TCP port can be used, for `doctor`: listened on here (the coordinator's), or reached
/// (a client's coordinator). Nothing is sent; the socket is closed at once.
public enum PortProbe {
    /// Binds and listens on `host:port`, then closes. Throws `TransportError.socket` (EADDRINUSE when
    /// another process listens there, EADDRNOTAVAIL for an address not on this machine).
    public static func listen(host: String, port: UInt16) throws {
        let (descriptor, _) = try TCPSocket.listen(host: host, port: port, backlog: 1)
        SystemCall.close(descriptor)
    }

    /// Opens a TCP connection to `host:port` within `timeout` seconds, then closes it.
    public static func connect(host: String, port: UInt16, timeout: TimeInterval) throws {
        let (descriptor, _) = try TCPSocket.connect(host: host, port: port, timeout: timeout)
        SystemCall.close(descriptor)
    }
}
