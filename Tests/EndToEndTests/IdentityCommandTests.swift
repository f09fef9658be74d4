import Foundation
import Transport
import XCTest

/// `conclave-coordinator init/enroll/revoke/clients` and `conclave-client init`, run as processes.
final class IdentityCommandTests: XCTestCase {
    private var directory: URL!
    private var coordinatorState: String { directory.appendingPathComponent("coordinator").path }
    private var clientState: String { directory.appendingPathComponent("clinic-1").path }

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("conclave-identity-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    func testInitEnrolRevokeAndList() throws {
        try initialiseCoordinator()
        let csrPath = try initialiseClient()
        let certificatePath = directory.appendingPathComponent("clinic-1.pem").path
        let enrolled = try enrol(csrPath: csrPath, certificatePath: certificatePath)
        let fingerprint = try XCTUnwrap(enrolled["fingerprint"] as? String)

        // The registry file records the same fingerprint, and `clients` lists it.
        let stored = try registryRecords()
        XCTAssertEqual(stored.count, 1)
        XCTAssertEqual(stored.first?["fingerprint"] as? String, fingerprint)
        XCTAssertEqual(stored.first?["status"] as? String, "active")
        XCTAssertEqual(stored.first?["not_after"] as? String, enrolled["not_after"] as? String)
        let listed = try coordinator(["clients", "--state", coordinatorState, "--json"]).json()
        XCTAssertEqual(listed["running"] as? Bool, false)
        let listedClients = try XCTUnwrap(listed["clients"] as? [[String: Any]])
        XCTAssertEqual(listedClients.first?["id"] as? String, "clinic-1")
        XCTAssertEqual(listedClients.first?["fingerprint"] as? String, fingerprint)
        XCTAssertEqual(listedClients.first?["status"] as? String, "active")
        XCTAssertTrue(listedClients.first?["revoked"] is NSNull)
        let table = try coordinator(["clients", "--state", coordinatorState]).stdout
        XCTAssertTrue(table.contains("clinic-1") && table.contains(fingerprint), table)

        // Enrolling the same id again is refused while it is active, and spends nothing.
        let again = try run(Executables.coordinator, ["enroll", "--state", coordinatorState, "--csr", csrPath,
                                                      "--out", certificatePath + ".2"])
        XCTAssertEqual(again.status, 1)
        XCTAssertTrue(again.stderr.contains("client 'clinic-1': already enrolled and active"), again.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: certificatePath + ".2"))
        XCTAssertEqual(try registryRecords().count, 1)

        try revokeAndEnrolAgain(csrPath: csrPath, certificatePath: certificatePath, fingerprint: fingerprint)
    }

    /// Issue 14, item 6: `init --ca-key F` keeps the CA key out of the state directory `serve` runs from,
    /// and `enroll --ca-key F` signs with it; without the flag, `enroll` says where to look. Failed before:
    /// neither command knew the flag, and the key always sat in the state directory.
    func testCAKeyKeptOutsideTheStateDirectory() throws {
        let outside = directory.appendingPathComponent("offline")
        try FileManager.default.createDirectory(at: outside, withIntermediateDirectories: true)
        let caKey = outside.appendingPathComponent("ca.key").path
        let initialised = try coordinator(["init", "--state", coordinatorState, "--name", "Test Federation",
                                           "--host", "127.0.0.1", "--ca-key", caKey, "--json"]).json()
        XCTAssertEqual(initialised["ca_key"] as? String, caKey)
        XCTAssertEqual(try mode(caKey), 0o600)
        XCTAssertFalse(FileManager.default.fileExists(atPath: coordinatorState + "/ca.key"), "the CA key is in the state directory")
        let csrPath = try initialiseClient()
        let certificatePath = directory.appendingPathComponent("clinic-1.pem").path
        let refused = try run(Executables.coordinator, ["enroll", "--state", coordinatorState, "--csr", csrPath,
                                                        "--out", certificatePath])
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.stderr.contains("\(coordinatorState)/ca.key") && refused.stderr.contains("--ca-key FILE"),
                      refused.stderr)
        let enrolled = try coordinator(["enroll", "--state", coordinatorState, "--csr", csrPath, "--out", certificatePath,
                                        "--ca-key", caKey, "--json"]).json()
        XCTAssertEqual(enrolled["client_id"] as? String, "clinic-1")
        // The certificate verifies against the federation's CA.
        let authority = try CertificateAuthority(certificatePEM: PEMFile.readCertificate(at: coordinatorState + "/ca.pem"),
                                                 keyPEM: PEMFile.readPrivateKey(at: caKey))
        XCTAssertEqual(try CertificateAuthority.commonName(certificatePEM: PEMFile.readCertificate(at: certificatePath)), "clinic-1")
        withExtendedLifetime(authority) {}
        // A second init may not overwrite an existing key file.
        let again = try run(Executables.coordinator, ["init", "--state", directory.appendingPathComponent("second").path,
                                                      "--name", "F", "--host", "127.0.0.1", "--ca-key", caKey])
        XCTAssertEqual(again.status, 64, again.stderr)
        XCTAssertTrue(again.stderr.contains("--ca-key"), again.stderr)
    }

    /// `init --json`: the CA and server certificate for the host, the audit signing key, private modes.
    private func initialiseCoordinator() throws {
        let initialised = try coordinator(["init", "--state", coordinatorState, "--name", "Test Federation",
                                           "--host", "127.0.0.1", "--port", "7600", "--json"]).json()
        XCTAssertEqual(initialised["port"] as? Int, 7600)
        let caPath = coordinatorState + "/ca.pem"
        XCTAssertEqual(initialised["ca_certificate"] as? String, caPath)
        XCTAssertEqual(initialised["ca_fingerprint"] as? String,
                       try CertificateAuthority.fingerprint(certificatePEM: PEMFile.readCertificate(at: caPath)))
        let signingPublic = try String(contentsOfFile: coordinatorState + "/signing.pub", encoding: .utf8)
        XCTAssertEqual(signingPublic, (initialised["signing_public_key"] as? String ?? "?") + "\n")
        XCTAssertEqual(signingPublic.count, 65)
        XCTAssertEqual(try mode(coordinatorState), 0o700)
        for key in ["ca.key", "server.key", "signing.key"] {
            XCTAssertEqual(try mode(coordinatorState + "/" + key), 0o600, key)
        }
        XCTAssertEqual(try mode(coordinatorState + "/signing.pub"), 0o644)
        // The server certificate chains to the CA and carries the host.
        _ = try TLSServerContext(caPEM: PEMFile.readCertificate(at: caPath),
                                 certificatePEM: PEMFile.readCertificate(at: coordinatorState + "/server.pem"),
                                 keyPEM: PEMFile.readPrivateKey(at: coordinatorState + "/server.key"))
        XCTAssertEqual(try CertificateAuthority.commonName(
            certificatePEM: PEMFile.readCertificate(at: coordinatorState + "/server.pem")), "127.0.0.1")
    }

    /// `conclave-client init --json`: a private key kept 0600 and a CSR for the client's name. Returns the CSR's path.
    private func initialiseClient() throws -> String {
        let client = try run(Executables.client, ["init", "--state", clientState, "--name", "clinic-1", "--json"]).json()
        XCTAssertEqual(client["client_id"] as? String, "clinic-1")
        XCTAssertEqual(try mode(clientState), 0o700)
        XCTAssertEqual(try mode(clientState + "/client.key"), 0o600)
        let csrPath = clientState + "/client.csr"
        XCTAssertEqual(try CertificateAuthority.commonName(csrPEM: PEMFile.readRequest(at: csrPath)), "clinic-1")
        return csrPath
    }

    /// `enroll --json` for 30 days: a certificate for the name that works with the key the client
    /// kept. Returns the JSON.
    private func enrol(csrPath: String, certificatePath: String) throws -> [String: Any] {
        let caPath = coordinatorState + "/ca.pem"
        let enrolled = try coordinator(["enroll", "--state", coordinatorState, "--csr", csrPath, "--out", certificatePath,
                                        "--days", "30", "--json"]).json()
        let certificate = try PEMFile.readCertificate(at: certificatePath)
        XCTAssertEqual(enrolled["client_id"] as? String, "clinic-1")
        XCTAssertEqual(enrolled["fingerprint"] as? String, try CertificateAuthority.fingerprint(certificatePEM: certificate))
        XCTAssertEqual(enrolled["serial"] as? Int, 3)
        XCTAssertEqual(enrolled["certificate"] as? String, certificatePath)
        XCTAssertEqual(enrolled["ca_certificate"] as? String, caPath)
        XCTAssertEqual(try CertificateAuthority.commonName(certificatePEM: certificate), "clinic-1")
        // The certificate works with the key the client kept: a TLS client context accepts the pair.
        _ = try TLSClientContext(caPEM: PEMFile.readCertificate(at: caPath), certificatePEM: certificate,
                                 keyPEM: PEMFile.readPrivateKey(at: clientState + "/client.key"), expectedHost: "127.0.0.1")
        let notAfter = try XCTUnwrap((enrolled["not_after"] as? String).flatMap { ISO8601DateFormatter().date(from: $0) })
        XCTAssertEqual(notAfter.timeIntervalSinceNow, 30 * 86_400 - CertificateAuthority.backdatingSeconds, accuracy: 120)
        return enrolled
    }

    /// `revoke`: once, not twice, not an unknown id; then the id may enrol again with a new serial and certificate.
    private func revokeAndEnrolAgain(csrPath: String, certificatePath: String, fingerprint: String) throws {
        let revoked = try coordinator(["revoke", "--state", coordinatorState, "--client", "clinic-1", "--json"]).json()
        XCTAssertEqual(revoked["fingerprint"] as? String, fingerprint)
        XCTAssertEqual(try registryRecords().first?["status"] as? String, "revoked")
        let twice = try run(Executables.coordinator, ["revoke", "--state", coordinatorState, "--client", "clinic-1"])
        XCTAssertEqual(twice.status, 1)
        XCTAssertTrue(twice.stderr.contains("client 'clinic-1': already revoked"), twice.stderr)
        let unknown = try run(Executables.coordinator, ["revoke", "--state", coordinatorState, "--client", "nobody"])
        XCTAssertEqual(unknown.status, 1)
        XCTAssertTrue(unknown.stderr.contains("client 'nobody': not enrolled in \(coordinatorState)/clients.json"),
                      unknown.stderr)

        let renewed = try coordinator(["enroll", "--state", coordinatorState, "--csr", csrPath,
                                       "--out", certificatePath + ".2", "--json"]).json()
        XCTAssertEqual(renewed["serial"] as? Int, 4)
        XCTAssertNotEqual(renewed["fingerprint"] as? String, fingerprint)
        XCTAssertEqual(try registryRecords().map { $0["status"] as? String }, ["revoked", "active"])
    }

    func testRefusals() throws {
        _ = try coordinator(["init", "--state", coordinatorState, "--name", "Test Federation", "--host", "localhost"])
        let settingsBefore = try Data(contentsOf: URL(fileURLWithPath: coordinatorState + "/coordinator.json"))

        let reinit = try run(Executables.coordinator, ["init", "--state", coordinatorState, "--name", "Other",
                                                       "--host", "localhost"])
        XCTAssertEqual(reinit.status, 1)
        XCTAssertTrue(reinit.stderr.contains("\(coordinatorState)/coordinator.json: already exists"), reinit.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: coordinatorState + "/coordinator.json")), settingsBefore)

        let badCSR = directory.appendingPathComponent("garbage.csr").path
        try Data("not a request\n".utf8).write(to: URL(fileURLWithPath: badCSR))
        let bad = try run(Executables.coordinator, ["enroll", "--state", coordinatorState, "--csr", badCSR,
                                                    "--out", directory.appendingPathComponent("x.pem").path])
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stderr.contains(badCSR), bad.stderr)
        let missing = directory.appendingPathComponent("missing.csr").path
        let absent = try run(Executables.coordinator, ["enroll", "--state", coordinatorState, "--csr", missing,
                                                       "--out", directory.appendingPathComponent("x.pem").path])
        XCTAssertEqual(absent.status, 64)
        XCTAssertTrue(absent.stderr.contains("--csr '\(missing)' does not exist"), absent.stderr)

        _ = try run(Executables.client, ["init", "--state", clientState, "--name", "clinic-1"])
        let keyBefore = try Data(contentsOf: URL(fileURLWithPath: clientState + "/client.key"))
        let clientAgain = try run(Executables.client, ["init", "--state", clientState, "--name", "clinic-1"])
        XCTAssertEqual(clientAgain.status, 1)
        XCTAssertTrue(clientAgain.stderr.contains("\(clientState)/client.key: already exists"), clientAgain.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: clientState + "/client.key")), keyBefore)

        let badName = try run(Executables.client, ["init", "--state", directory.appendingPathComponent("x").path,
                                                   "--name", "clinic 2"])
        XCTAssertEqual(badName.status, 1)
        XCTAssertTrue(badName.stderr.contains("character ' ' at position 7"), badName.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory.appendingPathComponent("x").path))

        let notInitialised = try run(Executables.coordinator, ["clients", "--state", directory.path])
        XCTAssertEqual(notInitialised.status, 1)
        XCTAssertTrue(notInitialised.stderr.contains("\(directory.path)/coordinator.json: missing"), notInitialised.stderr)

        let badHost = try run(Executables.coordinator, ["init", "--state", directory.appendingPathComponent("c2").path,
                                                        "--name", "N", "--host", "bad host!"])
        XCTAssertEqual(badHost.status, 1)
        XCTAssertTrue(badHost.stderr.contains("bad host!"), badHost.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory.appendingPathComponent("c2").path),
                       "nothing is written before the identity is generated")
    }

    func testHelp() throws {
        for (executable, command) in [(Executables.coordinator, "init"), (Executables.coordinator, "enroll"),
                                      (Executables.coordinator, "revoke"), (Executables.coordinator, "clients"),
                                      (Executables.client, "init")] {
            let help = try run(executable, [command, "--help"])
            XCTAssertEqual(help.status, 0, help.stderr)
            XCTAssertTrue(help.stdout.contains("usage: \(executable.lastPathComponent) \(command) --state DIR"), help.stdout)
        }
        let usage = try run(Executables.coordinator, ["enroll", "--state", coordinatorState])
        XCTAssertEqual(usage.status, 64)
        XCTAssertTrue(usage.stderr.contains("missing --csr"), usage.stderr)
    }

    // MARK: Helpers

    private func run(_ executable: URL, _ arguments: [String]) throws -> Executables.Result {
        try Executables.run(executable, arguments)
    }

    /// Runs the coordinator and requires success.
    private func coordinator(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws
        -> Executables.Result
    {
        let result = try run(Executables.coordinator, arguments)
        XCTAssertEqual(result.status, 0, "\(arguments.first ?? ""): \(result.stderr)", file: file, line: line)
        return result
    }

    private func registryRecords() throws -> [[String: Any]] {
        let data = try Data(contentsOf: URL(fileURLWithPath: coordinatorState + "/clients.json"))
        let object = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        return try XCTUnwrap(object?["clients"] as? [[String: Any]])
    }

    private func mode(_ path: String) throws -> Int {
        try XCTUnwrap(FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int)
    }
}
