import Foundation
import TestSupport
import Transport
import XCTest

/// `conclave-coordinator doctor` and `conclave-client doctor` on real state directories (issue 15):
/// healthy ones pass (exit 0, no FAIL); an expired certificate, another client's certificate and a
/// coordinator port already taken each FAIL with what to fix (exit 1).
final class DoctorCommandTests: XCTestCase {
    private func checks(_ result: Executables.Result) throws -> [String: (status: String, detail: String)] {
        let rows = try XCTUnwrap(try result.json()["checks"] as? [[String: String]], result.stdout)
        return Dictionary(rows.map { ($0["name"] ?? "?", ($0["status"] ?? "?", $0["detail"] ?? "")) }) { a, _ in a }
    }

    func testHealthyStateDirectoriesPassAndARunningServeHoldsThePort() throws {
        let federation = try OperatorFederation(name: "doctor")
        defer { federation.stopAll() }
        let client = try federation.addClient("clinic-a")
        let coordinatorDoctor = ["doctor", "--state", federation.coordinator.path, "--config", federation.configurationFile.path]
        let healthy = try Executables.run(Executables.coordinator, coordinatorDoctor + ["--json"])
        XCTAssertEqual(healthy.status, 0, healthy.stdout + healthy.stderr)
        let found = try checks(healthy)
        XCTAssertEqual(Set(found.keys), ["cpu kernels", "model", "ca certificate", "server certificate", "clock", "server identity", "port"])
        for name in ["model", "ca certificate", "server certificate", "clock", "server identity", "port"] {
            XCTAssertEqual(found[name]?.status, "OK", "\(name): \(found[name]?.detail ?? "missing")")
        }
        XCTAssertTrue(found["server certificate"]?.detail.contains("days left") ?? false)

        _ = try federation.start(Executables.coordinator, federation.serveArguments(), error: FileHandle.nullDevice)
        try OperatorFederation.waitUntil("the coordinator answers", timeout: 30) { federation.status() != nil }
        let clientDoctor = ["doctor", "--state", client.path, "--config", client.appendingPathComponent("config.json").path,
                            "--ca", federation.caFile.path, "--coordinator", "127.0.0.1:\(federation.port)"]
        let joined = try Executables.run(Executables.client, clientDoctor)
        XCTAssertEqual(joined.status, 0, joined.stdout + joined.stderr)
        for line in ["OK    client certificate: ", "OK    clock: ", "OK    client identity: ", "OK    coordinator: 127.0.0.1:"] {
            XCTAssertTrue(joined.stdout.contains(line), "no '\(line)' in:\n\(joined.stdout)")
        }
        XCTAssertFalse(joined.stdout.contains("FAIL"), joined.stdout)

        // With serve running, its port is taken: FAIL, exit 1, and the line says why that may be fine.
        let busy = try Executables.run(Executables.coordinator, coordinatorDoctor)
        XCTAssertEqual(busy.status, 1, busy.stdout + busy.stderr)
        XCTAssertTrue(busy.stdout.contains("FAIL  port: cannot listen on 127.0.0.1:\(federation.port)"), busy.stdout)
        XCTAssertTrue(busy.stdout.contains("if 'serve' already runs there"), busy.stdout)
    }

    func testAnExpiredCertificateAndAnotherClientsCertificateFail() throws {
        let federation = try OperatorFederation(name: "doctor")
        let client = try federation.addClient("clinic-a")
        let other = try federation.addClient("clinic-b")
        // clinic-a's own request, signed by the federation's CA 400 days ago for 30 days.
        let authority = try CertificateAuthority(
            certificatePEM: try PEMFile.readCertificate(at: federation.caFile.path),
            keyPEM: try PEMFile.readPrivateKey(at: federation.coordinator.appendingPathComponent("ca.key").path))
        let expired = try authority.sign(csrPEM: try PEMFile.readRequest(at: client.appendingPathComponent("client.csr").path),
                                         asClient: "clinic-a", validityDays: 30, serial: 900,
                                         notBefore: Date().addingTimeInterval(-400 * 86_400))
        let expiredFile = client.appendingPathComponent("expired.pem")
        try PEMFile.writePublic(expired, to: expiredFile.path)

        let base = ["doctor", "--state", client.path, "--ca", federation.caFile.path, "--json"]
        let old = try Executables.run(Executables.client, base + ["--cert", expiredFile.path])
        XCTAssertEqual(old.status, 1, old.stdout + old.stderr)
        XCTAssertEqual(try old.json()["ok"] as? Bool, false)
        let oldChecks = try checks(old)
        XCTAssertEqual(oldChecks["client certificate"]?.status, "FAIL")
        XCTAssertTrue(oldChecks["client certificate"]?.detail.contains("expired on") ?? false, "\(oldChecks)")
        XCTAssertTrue(oldChecks["client certificate"]?.detail.contains("enrol this client again") ?? false, "\(oldChecks)")
        XCTAssertEqual(oldChecks["client identity"]?.status, "OK", "the expired certificate is still this key's, from this CA")

        let swapped = try Executables.run(Executables.client, base + ["--cert", other.appendingPathComponent("client.pem").path])
        XCTAssertEqual(swapped.status, 1, swapped.stdout + swapped.stderr)
        let swappedChecks = try checks(swapped)
        XCTAssertEqual(swappedChecks["client identity"]?.status, "FAIL")
        XCTAssertTrue(swappedChecks["client identity"]?.detail.contains("client.key is not the key of") ?? false, "\(swappedChecks)")
        XCTAssertEqual(swappedChecks["client certificate"]?.status, "OK")
        XCTAssertEqual(swappedChecks["coordinator"]?.status, "WARN", "no --coordinator: said so, not a failure")
    }
}
