#if canImport(Glibc)
import Glibc
#endif
import Foundation
import TestSupport
import XCTest
@testable import Transport

/// Collects the server's log lines.
private final class LogLines: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func append(_ line: String) { lock.withLock { lines.append(line) } }
    var all: [String] { lock.withLock { lines } }

    /// Waits up to `timeout` for a line containing `text`.
    func waitFor(_ text: String, timeout: TimeInterval = 5) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if all.contains(where: { $0.contains(text) }) { return true }
            usleep(10_000)
        }
        return false
    }
}

/// Counts handler calls in flight and the most seen at once.
private final class Concurrency: @unchecked Sendable {
    private let lock = NSLock()
    private var current = 0
    private(set) var maximum = 0
    func enter() { lock.withLock { current += 1; maximum = max(maximum, current) } }
    func leave() { lock.withLock { current -= 1 } }
    var peak: Int { lock.withLock { maximum } }
}

final class ControlSocketTests: XCTestCase {
    private var directory: URL!
    private var path: String { directory.appendingPathComponent("control.sock").path }

    override func setUpWithError() throws {
        // Short: sun_path holds 107 bytes.
        directory = URL(fileURLWithPath: "/tmp/cs-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    private func startServer(ioTimeout: TimeInterval = 5, log: LogLines = LogLines(),
                             handler: @escaping @Sendable ([UInt8]) -> [UInt8]) throws -> ControlSocketServer
    {
        let server = try ControlSocketServer(path: path, ioTimeout: ioTimeout, log: { log.append($0) }, handler: handler)
        server.start()
        return server
    }

    private func message(_ body: () throws -> Any) -> String? {
        do {
            _ = try body()
            return nil
        } catch {
            return "\(error)"
        }
    }

    func testRoundTrip() throws {
        let server = try startServer { Array($0.reversed()) + [0xFF] }
        defer { server.close() }
        XCTAssertEqual(try ControlSocketClient.request(path: path, [1, 2, 3], timeout: 5), [3, 2, 1, 0xFF])
        XCTAssertEqual(try ControlSocketClient.request(path: path, [], timeout: 5), [0xFF])
        let large = (0..<ControlSocketLimits.maximumRequest).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        XCTAssertEqual(try ControlSocketClient.request(path: path, large, timeout: 10), Array(large.reversed()) + [0xFF])
    }

    func testSeveralConcurrentClientsEachGetTheirOwnAnswer() throws {
        let concurrency = Concurrency()
        let server = try startServer { request in
            concurrency.enter()
            defer { concurrency.leave() }
            usleep(200_000)
            return Array("answer to ".utf8) + request
        }
        defer { server.close() }
        let count = 8
        let results = ResultsBox(count: count)
        let group = DispatchGroup()
        for index in 0..<count {
            group.enter()
            let path = self.path
            let thread = Thread {
                results.set(index, Result { try ControlSocketClient.request(path: path, Array("client \(index)".utf8), timeout: 10) })
                group.leave()
            }
            thread.start()
        }
        XCTAssertEqual(group.wait(timeout: .now() + 20), .success)
        for index in 0..<count {
            XCTAssertEqual(try results.get(index).get(), Array("answer to client \(index)".utf8))
        }
        XCTAssertGreaterThan(concurrency.peak, 1, "connections were served one at a time")
    }

    func testSocketIsOwnerOnly0600() throws {
        let server = try startServer { $0 }
        defer { server.close() }
        var status = stat()
        XCTAssertEqual(lstat(path, &status), 0)
        XCTAssertEqual(status.st_mode & S_IFMT, S_IFSOCK)
        XCTAssertEqual(status.st_mode & 0o7777, 0o600)
    }

    func testSecondServerOnALivePathIsRefusedAndTheFirstKeepsServing() throws {
        let server = try startServer { _ in [1] }
        defer { server.close() }
        XCTAssertThrowsError(try ControlSocketServer(path: path) { _ in [2] }) { error in
            XCTAssertEqual(error as? TransportError,
                           .controlSocket(path: path, reason: "a coordinator is already running (\(path))"))
        }
        XCTAssertEqual(try ControlSocketClient.request(path: path, [], timeout: 5), [1])
    }

    func testStaleSocketIsReplaced() throws {
        try makeStaleSocket()
        XCTAssertEqual(message { try ControlSocketClient.request(path: path, [], timeout: 5) },
                       "no coordinator is running (stale socket at \(path))")
        let server = try startServer { _ in [7] }
        defer { server.close() }
        XCTAssertEqual(try ControlSocketClient.request(path: path, [], timeout: 5), [7])
    }

    func testSomethingOtherThanASocketIsNeverRemoved() throws {
        try Data("keep me".utf8).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try ControlSocketServer(path: path) { $0 }) { error in
            XCTAssertEqual("\(error)", "\(path) exists and is not a socket; not removing it")
        }
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), "keep me")
    }

    func testOversizedRequestIsRefusedWithoutKillingTheServer() throws {
        let log = LogLines()
        let server = try startServer(log: log) { _ in [42] }
        defer { server.close() }
        // A raw client announcing one byte over the limit: the server hangs up without reading on.
        let descriptor = try UnixSocket.connect(path, timeout: 5)
        defer { close(descriptor) }
        var header = UInt32(ControlSocketLimits.maximumRequest + 1).bigEndian
        XCTAssertEqual(send(descriptor, &header, 4, Int32(MSG_NOSIGNAL)), 4)
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var byte: UInt8 = 0
        XCTAssertEqual(recv(descriptor, &byte, 1, 0), 0, "the server should close the connection")
        XCTAssertTrue(log.waitFor("request of \(ControlSocketLimits.maximumRequest + 1) bytes exceeds the \(ControlSocketLimits.maximumRequest)-byte limit"),
                      "log: \(log.all)")
        XCTAssertEqual(try ControlSocketClient.request(path: path, [], timeout: 5), [42])
        // The client refuses to send such a request at all.
        let oversized = [UInt8](repeating: 0, count: ControlSocketLimits.maximumRequest + 1)
        XCTAssertEqual(message { try ControlSocketClient.request(path: path, oversized, timeout: 5) },
                       "request of \(ControlSocketLimits.maximumRequest + 1) bytes exceeds the \(ControlSocketLimits.maximumRequest)-byte limit of \(path)")
    }

    func testSilentClientIsTimedOutByTheServer() throws {
        let log = LogLines()
        let server = try startServer(ioTimeout: 0.3, log: log) { _ in [5] }
        defer { server.close() }
        let descriptor = try UnixSocket.connect(path, timeout: 5)
        defer { close(descriptor) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let started = Date()
        var byte: UInt8 = 0
        XCTAssertEqual(recv(descriptor, &byte, 1, 0), 0)
        XCTAssertLessThan(Date().timeIntervalSince(started), 4)
        XCTAssertTrue(log.waitFor("read request length timed out"), "log: \(log.all)")
        XCTAssertEqual(try ControlSocketClient.request(path: path, [], timeout: 5), [5])
    }

    func testClientTimesOutOnASlowServer() throws {
        let server = try startServer { _ in
            usleep(1_500_000)
            return [1]
        }
        defer { server.close() }
        let started = Date()
        XCTAssertThrowsError(try ControlSocketClient.request(path: path, [], timeout: 0.3)) { error in
            XCTAssertEqual(error as? TransportError,
                           .timedOut(peer: "coordinator control socket \(path)", operation: "read response length"))
        }
        XCTAssertLessThan(Date().timeIntervalSince(started), 1.2)
    }

    func testOversizedResponseIsRefusedByTheClient() throws {
        // A fake server that announces one byte more than a client accepts.
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(listener, 0)
        defer { close(listener) }
        XCTAssertEqual(UnixSocket.withAddress(try UnixSocket.address(path)) { bind(listener, $0, $1) }, 0)
        XCTAssertEqual(listen(listener, 1), 0)
        let done = DispatchSemaphore(value: 0)
        Thread {
            let client = accept(listener, nil, nil)
            var header = UInt32(ControlSocketLimits.maximumResponse + 1).bigEndian
            _ = send(client, &header, 4, Int32(MSG_NOSIGNAL))
            done.wait()
            close(client)
        }.start()
        defer { done.signal() }
        XCTAssertEqual(message { try ControlSocketClient.request(path: path, [1], timeout: 5) },
                       "response of \(ControlSocketLimits.maximumResponse + 1) bytes from \(path) exceeds the \(ControlSocketLimits.maximumResponse)-byte limit")
    }

    func testNoServerSaysSo() throws {
        XCTAssertEqual(message { try ControlSocketClient.request(path: path, [1], timeout: 1) },
                       "no coordinator is running (no control socket at \(path))")
    }

    func testCloseRemovesTheSocketAndStopsServing() throws {
        let server = try startServer { $0 }
        XCTAssertEqual(try ControlSocketClient.request(path: path, [9], timeout: 5), [9])
        XCTAssertTrue(server.isAccepting)
        server.close()
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
        let deadline = Date().addingTimeInterval(2)
        while server.isAccepting && Date() < deadline { usleep(10_000) }
        XCTAssertFalse(server.isAccepting, "the accept loop did not end after close()")
        XCTAssertEqual(message { try ControlSocketClient.request(path: path, [1], timeout: 1) },
                       "no coordinator is running (no control socket at \(path))")
        // A new server can take the path at once.
        let next = try startServer { _ in [3] }
        defer { next.close() }
        XCTAssertEqual(try ControlSocketClient.request(path: path, [], timeout: 5), [3])
    }

    /// A socket file with nobody listening, as a killed server leaves behind.
    private func makeStaleSocket() throws {
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(descriptor, 0)
        XCTAssertEqual(UnixSocket.withAddress(try UnixSocket.address(path)) { bind(descriptor, $0, $1) }, 0)
        close(descriptor)
        XCTAssertTrue(FileManager.default.fileExists(atPath: path))
    }
}

/// One slot per client thread.
private final class ResultsBox: @unchecked Sendable {
    private let lock = NSLock()
    private var results: [Result<[UInt8], Error>?]
    init(count: Int) { results = Array(repeating: nil, count: count) }
    func set(_ index: Int, _ result: Result<[UInt8], Error>) { lock.withLock { results[index] = result } }
    func get(_ index: Int) throws -> Result<[UInt8], Error> {
        guard let result = lock.withLock({ results[index] }) else { throw TransportError.connectionClosed(peer: "slot \(index)") }
        return result
    }
}
