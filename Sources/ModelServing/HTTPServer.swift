#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import SystemIO

/// A listening socket that could not be set up, naming the address and the system's reason.
public struct ServingError: Error, CustomStringConvertible {
    public let description: String
}

/// A small blocking HTTP/1.1 server: one thread per connection (at most `maxConnections`; more wait in the
/// listen queue), one request per connection, every length bounded by `HTTPLimits` before it is read.
public final class HTTPServer: @unchecked Sendable {
    public let host: String
    /// The bound port (the one the system chose when asked for port 0).
    public let port: UInt16
    let limits: HTTPLimits
    let handler: @Sendable (HTTPRequest, any HTTPResponseWriter) -> Void
    private let descriptor: Int32
    private let slots: DispatchSemaphore
    /// Seconds a client may take to send its request or accept a write before its connection is dropped.
    static let ioTimeout: Int = 60

    public init(host: String, port: UInt16, limits: HTTPLimits = HTTPLimits(), maxConnections: Int = 16,
                handler: @escaping @Sendable (HTTPRequest, any HTTPResponseWriter) -> Void) throws {
        self.host = host
        self.limits = limits
        self.handler = handler
        self.slots = DispatchSemaphore(value: maxConnections)
        (descriptor, self.port) = try Self.openListeningSocket(host: host, port: port)
    }

    deinit { close(descriptor) }

    static func reason() -> String { String(cString: strerror(errno)) }

    /// Binds `host:port` (numeric addresses or names, no wildcard unless asked for) and listens.
    static func openListeningSocket(host: String, port: UInt16) throws -> (Int32, UInt16) {
        var hints = addrinfo()
        hints.ai_socktype = PortableSocket.stream
        hints.ai_flags = AI_NUMERICSERV
        var results: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &results)
        guard status == 0, let entry = results else {
            throw ServingError(description: "cannot resolve --host \(host): \(String(cString: gai_strerror(status)))")
        }
        defer { freeaddrinfo(results) }
        let fd = PortableSocket.open(family: entry.pointee.ai_family)
        guard fd >= 0 else { throw ServingError(description: "socket for \(host):\(port): \(reason())") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard bind(fd, entry.pointee.ai_addr, entry.pointee.ai_addrlen) == 0, listen(fd, 64) == 0 else {
            let why = reason()
            close(fd)
            throw ServingError(description: "cannot listen on \(host):\(port): \(why); choose another --port")
        }
        var address = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) == 0 ? $0 : nil }
        }
        guard bound != nil else { throw ServingError(description: "getsockname on \(host):\(port): \(reason())") }
        // sin_port and sin6_port sit at the same offset, in network byte order.
        let boundPort = withUnsafeBytes(of: &address) { UInt16(bigEndian: $0.load(fromByteOffset: 2, as: UInt16.self)) }
        return (fd, boundPort)
    }

    /// Accepts connections until the process ends; each is served on its own thread.
    public func run() -> Never {
        while true {
            slots.wait()
            let connection = accept(descriptor, nil, nil)
            guard connection >= 0 else {
                slots.signal()
                if errno != EINTR && errno != ECONNABORTED { usleep(100_000) }
                continue
            }
            let thread = Thread { [self] in
                serve(connection)
                close(connection)
                slots.signal()
            }
            thread.start()
        }
    }

    /// Reads one request within the limits and hands it to the handler; a refused request gets its error.
    func serve(_ connection: Int32) {
        var timeout = timeval(tv_sec: Self.ioTimeout, tv_usec: 0)
        setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(connection, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let writer = SocketResponseWriter(connection)
        var parser = HTTPRequestParser(limits: limits)
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var continued = false
        while true {
            do {
                if let request = try parser.next() {
                    handler(request, writer)
                    return
                }
            } catch {
                writer.respond(OpenAIService.errorResponse(error))
                return
            }
            if parser.expectsContinue && !continued {
                continued = true
                _ = writer.write(Array("HTTP/1.1 100 Continue\r\n\r\n".utf8))
            }
            let wanted = min(buffer.count, parser.bytesWanted)
            let n = buffer.withUnsafeMutableBytes { recv(connection, $0.baseAddress, wanted, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return }
            parser.append(buffer[..<n])
        }
    }
}

/// Sends a response on a connection; failed writes (a client that left) are noted, never fatal.
final class SocketResponseWriter: HTTPResponseWriter {
    let connection: Int32
    private(set) var failed = false

    init(_ connection: Int32) {
        self.connection = connection
    }

    @discardableResult
    func write(_ bytes: [UInt8]) -> Bool {
        guard !failed else { return false }
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes {
                send(connection, $0.baseAddress! + sent, bytes.count - sent, PortableSocket.sendNoSignal)
            }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                failed = true
                return false
            }
            sent += n
        }
        return true
    }

    func respond(_ response: HTTPResponse) { write(response.serialized()) }
    func startStream() { write(HTTPResponse.eventStreamHead) }
    func sendChunk(_ bytes: [UInt8]) -> Bool { write(HTTPResponse.chunk(bytes)) }
    func endStream() { write(HTTPResponse.endOfChunks) }
}
