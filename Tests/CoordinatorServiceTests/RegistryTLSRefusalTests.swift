import Audit
import ClientService
import CoordinatorService
import FederationProtocol
import Foundation
import SystemIO
import Transport
import Wire
import XCTest

/// The coordinator's real identity files and registry behind a TLS server: an enrolled client is
/// served, a certificate the CA signed but the registry does not know is refused, and a revocation by
/// another writer applies from the next handshake without restarting the server.
final class RegistryTLSRefusalTests: XCTestCase {
    private var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("conclave-registry-tls-\(UUID().uuidString)")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    func testRegistryDecidesAtEachHandshake() throws {
        let coordinator = CoordinatorPaths(root: directory.appendingPathComponent("coordinator"))
        try CoordinatorSetup.initialize(paths: coordinator, name: "Test Federation", host: "127.0.0.1", validityDays: 30)
        let client = ClientPaths(root: directory.appendingPathComponent("clinic-1"))
        let request = try ClientSetup.initialize(paths: client, name: "clinic-1")
        let enrolment = try CoordinatorSetup.enroll(paths: coordinator, csrPEM: request, validityDays: 30)
        let caPEM = try PEMFile.readCertificate(at: coordinator.caCertificate.path)

        // Signed by the federation's CA, so the chain verifies, but never recorded in the registry.
        let authority = try CertificateAuthority(certificatePEM: caPEM,
                                                 keyPEM: PEMFile.readPrivateKey(at: coordinator.caKey.path))
        let (strayKey, strayRequest) = try CertificateAuthority.makeKeyAndCSR(commonName: "clinic-stray")
        let strayCertificate = try authority.sign(csrPEM: strayRequest, asClient: "clinic-stray", validityDays: 30,
                                                  serial: 999)

        let reports = ReportLog()
        let authorization = RegistryAuthorization(registry: try ClientRegistry(paths: coordinator)) { reports.append($0) }
        let server = try TLSServerContext(caPEM: caPEM,
                                          certificatePEM: PEMFile.readCertificate(at: coordinator.serverCertificate.path),
                                          keyPEM: PEMFile.readPrivateKey(at: coordinator.serverKey.path),
                                          authorize: authorization.hook)
        let listener = try TLSListener(host: "127.0.0.1", port: 0, context: server)
        defer { listener.close() }
        let outcomes = AcceptLoop(listener: listener, count: 3)

        let enrolled = try TLSClientContext(caPEM: caPEM, certificatePEM: enrolment.certificatePEM,
                                            keyPEM: PEMFile.readPrivateKey(at: client.key.path), expectedHost: "127.0.0.1")
        XCTAssertNil(exchange(port: listener.port, context: enrolled), "the enrolled client must be served")

        let stray = try TLSClientContext(caPEM: caPEM, certificatePEM: strayCertificate, keyPEM: strayKey,
                                         expectedHost: "127.0.0.1")
        XCTAssertNotNil(exchange(port: listener.port, context: stray), "a certificate unknown to the registry was served")

        try CoordinatorSetup.revoke(paths: coordinator, id: "clinic-1")
        XCTAssertNotNil(exchange(port: listener.port, context: enrolled), "the revoked client was served")

        let results = outcomes.wait()
        XCTAssertEqual(results.count, 3)
        XCTAssertEqual(results.first, "served clinic-1 \(enrolment.fingerprint)")
        XCTAssertTrue(results.dropFirst().allSatisfy { $0.contains("not authorized") }, "\(results)")
        XCTAssertTrue(results[1].contains("'clinic-stray'"), results[1])
        XCTAssertTrue(results[2].contains("'clinic-1'") && results[2].contains(enrolment.fingerprint), results[2])
        XCTAssertTrue(reports.lines.isEmpty, "\(reports.lines)")
    }

    /// Connects, sends 5 bytes and reads them back; nil when served, else the error.
    private func exchange(port: UInt16, context: TLSClientContext) -> Error? {
        do {
            let connection = try TLSConnection.connect(host: "127.0.0.1", port: port, context: context, timeout: 5)
            defer { connection.close() }
            try connection.setTimeouts(read: 5, write: 5)
            try connection.write(Array("hello".utf8))
            guard try connection.readExactly(count: 5) == Array("hello".utf8) else {
                return TransportError.connectionClosed(peer: "echo mismatch")
            }
            return nil
        } catch {
            return error
        }
    }
}

/// Accepts `count` connections on a background thread, echoing 5 bytes; records "served NAME
/// FINGERPRINT" or the error for each.
private final class AcceptLoop: @unchecked Sendable {
    private let lock = NSLock()
    private var results: [String] = []
    private let finished = DispatchSemaphore(value: 0)

    init(listener: TLSListener, count: Int) {
        Thread { [self] in
            for _ in 0..<count {
                let result: String
                do {
                    let connection = try listener.accept()
                    defer { connection.close() }
                    try connection.setTimeouts(read: 5, write: 5)
                    try connection.write(connection.readExactly(count: 5))
                    result = "served \(connection.peerCommonName) \(connection.peerCertificateFingerprint)"
                } catch {
                    result = "\(error)"
                }
                lock.withLock { results.append(result) }
            }
            finished.signal()
        }.start()
    }

    func wait() -> [String] {
        if finished.wait(timeout: .now() + 20) == .timedOut { XCTFail("server thread did not finish") }
        return lock.withLock { results }
    }
}
