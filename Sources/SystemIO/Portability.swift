#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// The few system-call spellings that differ between Glibc and Darwin, in one place, so that the modules
// above SystemIO compile on Linux (x86_64, aarch64) and macOS alike. ArchitectureTests' portability rule
// fails on a Linux-only spelling (`Glibc.` calls, `SOCK_STREAM.rawValue`, `SOCK_CLOEXEC`, `MSG_NOSIGNAL`,
// `st_mtim`, ...) outside an `#if os(Linux)` or `#if canImport(Glibc)` branch (paths such as `/proc` are read at run
// time and fail softly elsewhere; they are not a build matter).

/// Stream sockets as both systems spell them.
public enum PortableSocket {
    /// `SOCK_STREAM` as the `Int32` that `addrinfo.ai_socktype` and `socket(2)` take.
    public static var stream: Int32 {
        #if os(Linux)
        return Int32(SOCK_STREAM.rawValue)
        #else
        return SOCK_STREAM
        #endif
    }

    /// A stream socket of `family`, closed on exec; on Darwin, where `send` has no `MSG_NOSIGNAL`, it also
    /// never raises SIGPIPE (`SO_NOSIGPIPE`). -1 with `errno` set when the system refuses.
    public static func open(family: Int32, nonBlocking: Bool = false) -> Int32 {
        #if os(Linux)
        let flags = Int32(SOCK_CLOEXEC.rawValue) | (nonBlocking ? Int32(SOCK_NONBLOCK.rawValue) : 0)
        return socket(family, stream | flags, 0)
        #else
        let descriptor = socket(family, stream, 0)
        guard descriptor >= 0 else { return descriptor }
        _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
        if nonBlocking { _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK) }
        var one: Int32 = 1
        _ = setsockopt(descriptor, SOL_SOCKET, SO_NOSIGPIPE, &one, socklen_t(MemoryLayout<Int32>.size))
        return descriptor
        #endif
    }

    /// The TCP option for the idle time before the first keep-alive probe (Darwin calls it TCP_KEEPALIVE).
    public static var keepAliveIdleOption: Int32 {
        #if os(Linux)
        return TCP_KEEPIDLE
        #else
        return TCP_KEEPALIVE
        #endif
    }

    /// Flags for `send(2)` so that a vanished peer is an error (EPIPE), not a SIGPIPE (on Darwin the socket
    /// carries `SO_NOSIGPIPE` instead, set by `open`).
    public static var sendNoSignal: Int32 {
        #if os(Linux)
        return Int32(MSG_NOSIGNAL)
        #else
        return 0
        #endif
    }
}

/// The system calls whose names are also method names in the types that use them (`close`, `read`,
/// `listen`, `accept`, `connect`, `shutdown`), callable without naming the C library's module.
public enum SystemCall {
    @inlinable @discardableResult public static func close(_ descriptor: Int32) -> Int32 { systemClose(descriptor) }
    @inlinable @discardableResult public static func read(_ descriptor: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int) -> Int {
        systemRead(descriptor, buffer, count)
    }
    @inlinable @discardableResult public static func listen(_ descriptor: Int32, _ backlog: Int32) -> Int32 {
        systemListen(descriptor, backlog)
    }
    @inlinable @discardableResult public static func accept(_ descriptor: Int32, _ address: UnsafeMutablePointer<sockaddr>?,
                                         _ length: UnsafeMutablePointer<socklen_t>?) -> Int32 {
        systemAccept(descriptor, address, length)
    }
    @inlinable @discardableResult public static func connect(_ descriptor: Int32, _ address: UnsafePointer<sockaddr>?,
                                          _ length: socklen_t) -> Int32 {
        systemConnect(descriptor, address, length)
    }
    @inlinable @discardableResult public static func shutdown(_ descriptor: Int32, _ how: Int32) -> Int32 {
        systemShutdown(descriptor, how)
    }
}

// Top-level trampolines: inside `SystemCall`, `close(_:)` would name the method itself.
@usableFromInline func systemClose(_ descriptor: Int32) -> Int32 { close(descriptor) }
@usableFromInline func systemRead(_ descriptor: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int) -> Int {
    read(descriptor, buffer, count)
}
@usableFromInline func systemListen(_ descriptor: Int32, _ backlog: Int32) -> Int32 { listen(descriptor, backlog) }
@usableFromInline func systemAccept(_ descriptor: Int32, _ address: UnsafeMutablePointer<sockaddr>?,
                                    _ length: UnsafeMutablePointer<socklen_t>?) -> Int32 {
    accept(descriptor, address, length)
}
@usableFromInline func systemConnect(_ descriptor: Int32, _ address: UnsafePointer<sockaddr>?, _ length: socklen_t) -> Int32 {
    connect(descriptor, address, length)
}
@usableFromInline func systemShutdown(_ descriptor: Int32, _ how: Int32) -> Int32 { shutdown(descriptor, how) }
