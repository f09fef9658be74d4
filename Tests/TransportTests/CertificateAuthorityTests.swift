import COpenSSL
import Foundation
import XCTest
@testable import Transport

final class CertificateAuthorityTests: XCTestCase {
    private var directory: String!

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "conclave-pki-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func testCreatedCAIsSelfSignedCAWithItsName() throws {
        let (certificatePEM, keyPEM) = try CertificateAuthority.create(name: "Conclave Test CA", validityDays: 30)
        XCTAssertTrue(certificatePEM.hasPrefix("-----BEGIN CERTIFICATE-----"))
        XCTAssertEqual(try CertificateAuthority.commonName(certificatePEM: certificatePEM), "Conclave Test CA")
        let authority = try CertificateAuthority(certificatePEM: certificatePEM, keyPEM: keyPEM)
        XCTAssertEqual(authority.certificatePEM, certificatePEM)
        XCTAssertFalse(String(describing: keyPEM).contains("PRIVATE"), "key must never be printed")
        XCTAssertFalse(String(reflecting: keyPEM).contains("PRIVATE"))
    }

    func testCARefusesAKeyThatIsNotItsOwn() throws {
        let (certificatePEM, _) = try CertificateAuthority.create(name: "A", validityDays: 30)
        let (_, otherKey) = try CertificateAuthority.create(name: "B", validityDays: 30)
        XCTAssertThrowsError(try CertificateAuthority(certificatePEM: certificatePEM, keyPEM: otherKey)) { error in
            XCTAssertTrue("\(error)".contains("does not match the CA certificate"), "\(error)")
        }
    }

    func testLeafCertificateCannotActAsCA() throws {
        let authority = try makeAuthority()
        let (key, csr) = try CertificateAuthority.makeKeyAndCSR(commonName: "clinic-1")
        let certificate = try authority.sign(csrPEM: csr, asClient: "clinic-1", validityDays: 30, serial: 2)
        XCTAssertThrowsError(try CertificateAuthority(certificatePEM: certificate, keyPEM: key)) { error in
            XCTAssertTrue("\(error)".contains("not a CA certificate"), "\(error)")
        }
    }

    func testSignedClientCertificateCarriesIdAndVerifiesAgainstCA() throws {
        let authority = try makeAuthority()
        let (_, csr) = try CertificateAuthority.makeKeyAndCSR(commonName: "clinic-7")
        XCTAssertEqual(try CertificateAuthority.commonName(csrPEM: csr), "clinic-7")
        let certificate = try authority.sign(csrPEM: csr, asClient: "clinic-7", validityDays: 30, serial: 42)
        XCTAssertEqual(try CertificateAuthority.commonName(certificatePEM: certificate), "clinic-7")
        let text = try opensslText(certificate)
        XCTAssertTrue(text.contains("TLS Web Client Authentication"), text)
        XCTAssertFalse(text.contains("TLS Web Server Authentication"), text)
        XCTAssertTrue(text.contains("CA:FALSE"), text)
        XCTAssertTrue(text.contains("Serial Number: 42"), text)
        XCTAssertTrue(try verify(certificate, with: authority.certificatePEM, purpose: "sslclient"))
        // An unrelated CA does not vouch for it.
        let other = try makeAuthority(name: "Other CA")
        XCTAssertFalse(try verify(certificate, with: other.certificatePEM, purpose: "sslclient"))
    }

    func testServerCertificateHasServerAuthAndAlternativeNames() throws {
        let authority = try makeAuthority()
        let (_, csr) = try CertificateAuthority.makeKeyAndCSR(commonName: "coordinator.example")
        let certificate = try authority.sign(csrPEM: csr, asServer: ["coordinator.example", "127.0.0.1"],
                                             validityDays: 30, serial: 3)
        let text = try opensslText(certificate)
        XCTAssertTrue(text.contains("TLS Web Server Authentication"), text)
        XCTAssertTrue(text.contains("DNS:coordinator.example"), text)
        XCTAssertTrue(text.contains("IP Address:127.0.0.1"), text)
        XCTAssertTrue(try verify(certificate, with: authority.certificatePEM, purpose: "sslserver"))
    }

    func testSigningRefusesMismatchedNameBadHostsAndBadIds() throws {
        let authority = try makeAuthority()
        let (_, csr) = try CertificateAuthority.makeKeyAndCSR(commonName: "clinic-1")
        XCTAssertThrowsError(try authority.sign(csrPEM: csr, asClient: "clinic-2", validityDays: 30, serial: 2)) { error in
            XCTAssertTrue("\(error)".contains("asks for common name 'clinic-1' but is being signed for 'clinic-2'"), "\(error)")
        }
        let (_, badCSR) = try CertificateAuthority.makeKeyAndCSR(commonName: "../etc")
        XCTAssertThrowsError(try authority.sign(csrPEM: badCSR, asClient: "../etc", validityDays: 30, serial: 2)) { error in
            XCTAssertEqual(error as? TransportError, .invalidName(
                what: "client id", value: "../etc", reason: "only letters, digits, '.', '_' and '-' are allowed"))
        }
        let (_, hostCSR) = try CertificateAuthority.makeKeyAndCSR(commonName: "a,DNS:evil.example")
        XCTAssertThrowsError(try authority.sign(csrPEM: hostCSR, asServer: ["a,DNS:evil.example"], validityDays: 30, serial: 2)) { error in
            XCTAssertTrue("\(error)".contains("neither an IP address nor a DNS name"), "\(error)")
        }
        XCTAssertThrowsError(try authority.sign(csrPEM: csr, asClient: "clinic-1", validityDays: 0, serial: 2))
        XCTAssertThrowsError(try authority.sign(csrPEM: csr, asClient: "clinic-1", validityDays: 30, serial: 0))
    }

    func testTamperedRequestIsRefused() throws {
        let authority = try makeAuthority()
        let (_, csr) = try CertificateAuthority.makeKeyAndCSR(commonName: "clinic-1")
        // Flip one bit inside the base64 body of the request: either parsing or the self-signature fails.
        var lines = csr.split(separator: "\n").map(String.init)
        var body = Array(lines[2].utf8)
        body[10] = body[10] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        lines[2] = String(decoding: body, as: UTF8.self)
        let tampered = lines.joined(separator: "\n") + "\n"
        XCTAssertThrowsError(try authority.sign(csrPEM: tampered, asClient: "clinic-1", validityDays: 30, serial: 2))
        XCTAssertThrowsError(try authority.sign(csrPEM: "garbage", asClient: "clinic-1", validityDays: 30, serial: 2)) { error in
            guard case .invalidPEM(what: "certificate signing request", _)? = error as? TransportError else {
                return XCTFail("\(error)")
            }
        }
    }

    func testFingerprintMatchesOpenSSLCommandLine() throws {
        let authority = try makeAuthority()
        let (_, csr) = try CertificateAuthority.makeKeyAndCSR(commonName: "clinic-1")
        let certificate = try authority.sign(csrPEM: csr, asClient: "clinic-1", validityDays: 30, serial: 9)
        let fingerprint = try CertificateAuthority.fingerprint(certificatePEM: certificate)
        XCTAssertEqual(fingerprint.count, 64)
        let output = try runOpenSSL(["x509", "-noout", "-fingerprint", "-sha256"], input: certificate)
        let expected = output.split(separator: "=").last.map { $0.replacingOccurrences(of: ":", with: "") }?
            .trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
        XCTAssertEqual(fingerprint, expected)
    }

    func testKeyFileIsPrivateAtomicAndNotOverwritten() throws {
        let (key, csr) = try CertificateAuthority.makeKeyAndCSR(commonName: "clinic-1")
        let path = directory + "/client.key"
        try PEMFile.writePrivateKey(key, to: path)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        XCTAssertEqual((attributes[.posixPermissions] as? NSNumber)?.intValue, 0o600)
        let reread = try PEMFile.readPrivateKey(at: path)
        XCTAssertTrue(key.withUnsafeBytes { a in reread.withUnsafeBytes { b in a.elementsEqual(b) } })
        XCTAssertThrowsError(try PEMFile.writePrivateKey(key, to: path)) { error in
            XCTAssertTrue("\(error)".contains(path) && "\(error)".contains("must not exist"), "\(error)")
        }
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.contains(".tmp-") }
        XCTAssertEqual(leftovers, [])
        // The key still matches its request after the round trip through the file.
        let authority = try makeAuthority()
        let certificate = try authority.sign(csrPEM: csr, asClient: "clinic-1", validityDays: 30, serial: 5)
        let parsedKey = try PEMCodec.privateKey(reread, what: "key")
        let parsedCertificate = try PEMCodec.certificate(certificate, what: "certificate")
        XCTAssertEqual(X509_check_private_key(parsedCertificate.pointer, parsedKey.pointer), 1)
    }

    func testReadingRefusesOpenPermissionsMissingAndGarbageFilesNamingThem() throws {
        let (key, _) = try CertificateAuthority.makeKeyAndCSR(commonName: "clinic-1")
        let path = directory + "/client.key"
        try PEMFile.writePrivateKey(key, to: path)
        chmod(path, 0o640)
        XCTAssertThrowsError(try PEMFile.readPrivateKey(at: path)) { error in
            XCTAssertTrue("\(error)".contains(path) && "\(error)".contains("mode 640"), "\(error)")
        }
        XCTAssertThrowsError(try PEMFile.readCertificate(at: directory + "/missing.pem")) { error in
            XCTAssertTrue("\(error)".contains("missing.pem") && "\(error)".contains("No such file"), "\(error)")
        }
        let garbage = directory + "/garbage.pem"
        try PEMFile.writePublic("not a certificate\n", to: garbage)
        XCTAssertThrowsError(try PEMFile.readCertificate(at: garbage)) { error in
            XCTAssertTrue("\(error)".contains("garbage.pem"), "\(error)")
        }
        XCTAssertThrowsError(try PEMFile.readRequest(at: garbage)) { error in
            XCTAssertTrue("\(error)".contains("garbage.pem"), "\(error)")
        }
        let empty = directory + "/empty.pem"
        XCTAssertTrue(FileManager.default.createFile(atPath: empty, contents: Data()))
        XCTAssertThrowsError(try PEMFile.readCertificate(at: empty)) { error in
            XCTAssertTrue("\(error)".contains("empty.pem") && "\(error)".contains("size 0"), "\(error)")
        }
    }

    func testCertificateFilesRoundTrip() throws {
        let authority = try makeAuthority()
        let path = directory + "/ca.pem"
        try PEMFile.writePublic(authority.certificatePEM, to: path)
        XCTAssertEqual(try PEMFile.readCertificate(at: path), authority.certificatePEM)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        XCTAssertEqual((attributes[.posixPermissions] as? NSNumber)?.intValue, 0o644)
    }

    // MARK: Helpers

    private func makeAuthority(name: String = "Conclave Test CA") throws -> CertificateAuthority {
        let (certificatePEM, keyPEM) = try CertificateAuthority.create(name: name, validityDays: 30)
        return try CertificateAuthority(certificatePEM: certificatePEM, keyPEM: keyPEM)
    }

    /// `openssl x509 -text`: an independent reading of what we wrote.
    private func opensslText(_ certificate: String) throws -> String {
        try runOpenSSL(["x509", "-noout", "-text"], input: certificate)
    }

    /// `openssl verify`, the command-line tool's chain verification, with the given purpose.
    private func verify(_ certificate: String, with ca: String, purpose: String) throws -> Bool {
        let caPath = directory + "/verify-ca-\(UUID().uuidString).pem"
        try ca.write(toFile: caPath, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl", "verify", "-purpose", purpose, "-CAfile", caPath]
        let input = Pipe()
        process.standardInput = input
        process.standardOutput = Pipe()
        process.standardError = Pipe()
        try process.run()
        input.fileHandleForWriting.write(Data(certificate.utf8))
        try input.fileHandleForWriting.close()
        process.waitUntilExit()
        return process.terminationStatus == 0
    }

    private func runOpenSSL(_ arguments: [String], input: String) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        let stdin = Pipe(), stdout = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        try process.run()
        stdin.fileHandleForWriting.write(Data(input.utf8))
        try stdin.fileHandleForWriting.close()
        let output = stdout.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, "openssl \(arguments)")
        return String(decoding: output, as: UTF8.self)
    }
}
