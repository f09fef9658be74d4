#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Synchronization
import SystemIO

/// Unauthenticated peers that never finish a TLS handshake: `count` TCP connections from `addresses`
/// loopback source addresses (127.0.1.1, 127.0.1.2, ...), each sending a TLS record header and then
/// one byte a second, on one thread. A connection the coordinator closes is opened again at once, so
/// the pressure stays constant; `reopened` counts those closings (the coordinator's evictions,
/// refusals and deadlines).
final class TricklingFlood: @unchecked Sendable {
    let count: Int
    let addresses: Int
    private let port: UInt16
    private let running = Atomic<Bool>(false)
    private let reopenedCount = Atomic<Int>(0)
    private let finished = DispatchSemaphore(value: 0)

    init(count: Int, addresses: Int, port: UInt16) {
        self.count = count
        self.addresses = addresses
        self.port = port
    }

    var reopened: Int { reopenedCount.load(ordering: .relaxed) }

    func start() {
        running.store(true, ordering: .relaxed)
        Thread { [self] in
            var sockets = (0..<count).map { (descriptor: open(index: $0), sent: 0) }
            while running.load(ordering: .relaxed) {
                for index in sockets.indices {
                    if sockets[index].descriptor < 0 || !trickle(sockets[index].descriptor, sent: &sockets[index].sent) {
                        if sockets[index].descriptor >= 0 { close(sockets[index].descriptor) }
                        sockets[index] = (open(index: index), 0)
                        reopenedCount.add(1, ordering: .relaxed)
                    }
                }
                Thread.sleep(forTimeInterval: 1)
            }
            for socket in sockets where socket.descriptor >= 0 { close(socket.descriptor) }
            finished.signal()
        }.start()
    }

    func stop() {
        guard running.exchange(false, ordering: .relaxed) else { return }
        _ = finished.wait(timeout: .now() + 30)
    }

    /// A non-blocking connection from 127.0.1.(1 + index % addresses) with a TLS record header sent; -1 on failure.
    private func open(index: Int) -> Int32 {
        let descriptor = PortableSocket.open(family: AF_INET, nonBlocking: true)
        guard descriptor >= 0 else { return -1 }
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        inet_pton(AF_INET, "127.0.1.\(1 + index % addresses)", &local.sin_addr)
        var remote = sockaddr_in()
        remote.sin_family = sa_family_t(AF_INET)
        remote.sin_port = port.bigEndian
        inet_pton(AF_INET, "127.0.0.1", &remote.sin_addr)
        let size = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, size) } }
        let connected = withUnsafePointer(to: &remote) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, size) }
        }
        guard bound == 0, connected == 0 || errno == EINPROGRESS else {
            close(descriptor)
            return -1
        }
        return descriptor
    }

    /// Sends the next byte (a TLS record header announcing 512 bytes, then filler); false when the
    /// coordinator has closed the connection.
    private func trickle(_ descriptor: Int32, sent: inout Int) -> Bool {
        var byte: UInt8 = 0
        let peeked = recv(descriptor, &byte, 1, Int32(MSG_DONTWAIT))
        if peeked == 0 || (peeked < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOTCONN) { return false }
        let header: [UInt8] = [0x16, 0x03, 0x01, 0x02, 0x00]
        var next: UInt8 = sent < header.count ? header[sent] : 0x01
        let result = send(descriptor, &next, 1, PortableSocket.sendNoSignal | Int32(MSG_DONTWAIT))
        if result == 1 { sent += 1 }
        return result == 1 || (result < 0 && (errno == EAGAIN || errno == ENOTCONN || errno == EINPROGRESS))
    }
}
