import Audit
import ClientService
import CoordinatorService
import FederationProtocol
import Foundation
import SystemIO
import TestSupport
import Transport
import XCTest

/// Issue 14, item 6: a coordinator that goes silent after the hello (to a reader, a half-open connection
/// looks the same until keepalive gives up) no longer hangs the client: after `silenceLimit` seconds
/// without a byte it connects again. Failed before: `join` read with no timeout and waited forever.
final class ClientSilenceTests: XCTestCase {
    func testClientReconnectsAfterTheCoordinatorFallsSilent() throws {
        let directory = try Fixtures.temporaryDirectory("client-silence")
        defer { try? FileManager.default.removeItem(at: directory) }
        let coordinator = CoordinatorPaths(root: directory.appendingPathComponent("coordinator"))
        try CoordinatorSetup.initialize(paths: coordinator, name: "Silent", host: "127.0.0.1", validityDays: 30)
        let client = ClientPaths(root: directory.appendingPathComponent("clinic-1"))
        let request = try ClientSetup.initialize(paths: client, name: "clinic-1")
        let certificate = directory.appendingPathComponent("clinic-1.pem")
        _ = try CoordinatorSetup.enroll(paths: coordinator, csrPEM: request, validityDays: 30, certificateOutput: certificate)
        let context = try TLSServerContext(caPEM: PEMFile.readCertificate(at: coordinator.caCertificate.path),
                                           certificatePEM: PEMFile.readCertificate(at: coordinator.serverCertificate.path),
                                           keyPEM: PEMFile.readPrivateKey(at: coordinator.serverKey.path))
        let listener = try TLSListener(host: "127.0.0.1", port: 0, context: context)
        defer { listener.close() }
        let accepted = AcceptCounter(listener: listener)

        let configuration = ClientConfiguration(model: Fixtures.url("tiny-llama").path, data: "train.jsonl",
                                                evalData: "eval.jsonl", threads: 1,
                                                policy: ClientPolicy(maxEpsilon: 8, delta: 1e-5, maxStepsPerRound: 10))
        let address = CoordinatorAddress(host: "127.0.0.1", port: listener.port, caPath: coordinator.caCertificate.path,
                                         certificatePath: certificate.path)
        let logFile = directory.appendingPathComponent("join.log")
        let runner = try ClientRunner(paths: client, configuration: configuration, address: address, maximumRounds: nil,
                                      log: OperatorLog(url: logFile))
        runner.silenceLimit = 1
        Thread { try? runner.run() }.start()

        XCTAssertTrue(accepted.wait(for: 1, timeout: 20), "the client never connected")
        let firstAt = Date()
        XCTAssertTrue(accepted.wait(for: 2, timeout: 8), "the client waited on a silent coordinator for 8 s")
        XCTAssertLessThan(Date().timeIntervalSince(firstAt), 4)
        let log = (try? String(contentsOf: logFile, encoding: .utf8)) ?? ""
        XCTAssertTrue(log.contains("sent nothing for 1 s; reconnecting"), log)
    }
}

/// Accepts connections on a thread, reads each one's first bytes (its hello) and then says nothing,
/// keeping them open; counts them.
private final class AcceptCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var held: [TLSConnection] = []

    init(listener: TLSListener) {
        Thread { [self] in
            while let connection = try? listener.accept() {
                _ = try? connection.readExactly(count: 12)
                lock.withLock { held.append(connection) }
            }
        }.start()
    }

    func wait(for count: Int, timeout: TimeInterval) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if lock.withLock({ held.count }) >= count { return true }
            Thread.sleep(forTimeInterval: 0.02)
        }
        return false
    }
}
