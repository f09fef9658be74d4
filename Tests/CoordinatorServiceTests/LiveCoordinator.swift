#if canImport(Glibc)
import Glibc
#endif
import Audit
import ClientService
@testable import CoordinatorService
import FederationProtocol
import Foundation
import SecureCrypto
import SystemIO
import TestSupport
import Transport
import Wire
import XCTest

/// A real `CoordinatorServer` on loopback, in this process (the tiny fixture model's shape), with
/// enrolled clients whose TLS contexts the tests connect with.
final class LiveCoordinator: @unchecked Sendable {
    let directory: URL
    let paths: CoordinatorPaths
    let server: CoordinatorServer
    let port: UInt16
    private var contexts: [String: TLSClientContext] = [:]
    private let runner: Thread

    init(clients: [String], limits: ConnectionAdmission.Limits, minClients: Int = 1) throws {
        directory = try Fixtures.temporaryDirectory("live-coordinator")
        paths = CoordinatorPaths(root: directory.appendingPathComponent("coordinator"))
        port = try freeLoopbackPort()
        try CoordinatorSetup.initialize(paths: paths, name: "Live", host: "127.0.0.1", port: Int(port), validityDays: 30)
        let caPEM = try PEMFile.readCertificate(at: paths.caCertificate.path)
        for name in clients {
            let client = ClientPaths(root: directory.appendingPathComponent(name))
            let request = try ClientSetup.initialize(paths: client, name: name)
            let enrolment = try CoordinatorSetup.enroll(paths: paths, csrPEM: request, validityDays: 30)
            contexts[name] = try TLSClientContext(caPEM: caPEM, certificatePEM: enrolment.certificatePEM,
                                                  keyPEM: PEMFile.readPrivateKey(at: client.key.path), expectedHost: "127.0.0.1")
        }
        let plan = TrainingPlan(steps: 2, learningRate: 0.01, samplingRate: 0.25, noiseMultiplier: 1.0, clipNorm: 1.0,
                                delta: 1e-5, maxLength: 64, rank: 2, alpha: 4, targets: ["q_proj", "v_proj"])
        let configuration = CoordinatorConfiguration(
            model: Fixtures.url("tiny-llama").path, listen: "127.0.0.1",
            rounds: RoundPolicy(minClients: minClients, maxClients: clients.count, fraction: 1.0, aggregation: .fedavg,
                                secureAggregation: false, inviteTimeout: 20, roundTimeout: 60, waitForClients: 30, plan: plan))
        server = try CoordinatorServer(paths: paths, configuration: configuration,
                                       log: OperatorLog(url: directory.appendingPathComponent("serve.log")),
                                       admissionLimits: limits)
        let server = server
        runner = Thread { try? server.run() }
        runner.start()
        try Self.waitUntil("the coordinator listens", timeout: 20) { server.port != 0 }
    }

    deinit {
        server.stop()
        try? FileManager.default.removeItem(at: directory)
    }

    var serveLog: String {
        (try? String(contentsOf: directory.appendingPathComponent("serve.log"), encoding: .utf8)) ?? ""
    }

    /// Whether the engine has `client` connected (its hello accepted).
    func isConnected(_ client: String) -> Bool {
        server.engine.withLock { $0.connected[client] != nil }
    }

    /// A TLS connection as `client`, handshake done, nothing sent.
    func connect(as client: String) throws -> TLSConnection {
        try TLSConnection.connect(host: "127.0.0.1", port: port, context: contexts[client]!, timeout: 5)
    }

    /// Connects as `client` and sends its hello.
    func logIn(as client: String) throws -> TLSConnection {
        let connection = try connect(as: client)
        try connection.setTimeouts(read: 5, write: 5)
        let hello = Hello(client: client, software: "test", pendingRound: 0, signingKey: SigningKeyPair().publicKey.bytes)
        try connection.write(try hello.frame().encoded())
        return connection
    }

    /// Seconds until `connection` is closed by the coordinator (a read ends or fails), at most `limit`; nil
    /// if it is still open then. Bytes the coordinator sends meanwhile are skipped.
    static func secondsUntilClosed(_ connection: TLSConnection, limit: TimeInterval) -> TimeInterval? {
        let start = Date()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while Date().timeIntervalSince(start) < limit {
            try? connection.setTimeouts(read: max(0.05, limit - Date().timeIntervalSince(start)), write: 5)
            do {
                let n = try buffer.withUnsafeMutableBytes { try connection.read(into: $0) }
                if n == 0 { return Date().timeIntervalSince(start) }
            } catch TransportError.timedOut {
                continue
            } catch {
                return Date().timeIntervalSince(start)
            }
        }
        return nil
    }

    static func waitUntil(_ what: String, timeout: TimeInterval, _ condition: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try condition() { return }
            Thread.sleep(forTimeInterval: 0.02)
        }
        XCTFail("timed out waiting until \(what)")
        throw NSError(domain: "LiveCoordinator", code: 1, userInfo: [NSLocalizedDescriptionKey: "timed out: \(what)"])
    }
}

/// A plain TCP socket from a chosen loopback source address (127.0.0.0/8 is all local on Linux), for
/// peers that never finish a handshake.
final class RawPeer {
    let descriptor: Int32

    init(from source: String, to port: UInt16) throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        inet_pton(AF_INET, source, &local.sin_addr)
        var remote = sockaddr_in()
        remote.sin_family = sa_family_t(AF_INET)
        remote.sin_port = port.bigEndian
        inet_pton(AF_INET, "127.0.0.1", &remote.sin_addr)
        let bound = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        let connected = withUnsafePointer(to: &remote) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, connected == 0 else {
            close(descriptor)
            throw NSError(domain: "RawPeer", code: Int(errno), userInfo: [NSLocalizedDescriptionKey: "cannot connect from \(source)"])
        }
        var interval = timeval(tv_sec: 0, tv_usec: 1000)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &interval, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(descriptor) }

    /// Sends `bytes`; false when the coordinator has closed the connection.
    @discardableResult
    func send(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == bytes.count
    }

    /// Whether the coordinator has closed (or reset) the connection: a read sees end of stream or an error.
    var isClosedByPeer: Bool {
        var byte: UInt8 = 0
        let n = recv(descriptor, &byte, 1, Int32(MSG_DONTWAIT))
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
    }
}
