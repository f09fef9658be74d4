import Foundation
import XCTest
@testable import Transport

/// The local checks `join` makes before it connects, and the handshake's account of a server
/// certificate it refused: the names an operator needs to see which file is wrong (issue 15).
final class IdentityChecksTests: XCTestCase {
    private struct Authority {
        let ca: CertificateAuthority
        init(_ name: String) throws {
            let (pem, key) = try CertificateAuthority.create(name: name, validityDays: 30)
            ca = try CertificateAuthority(certificatePEM: pem, keyPEM: key)
        }
        func client(_ id: String, serial: UInt64) throws -> (certificate: String, key: PrivateKeyPEM) {
            let (key, csr) = try CertificateAuthority.makeKeyAndCSR(commonName: id)
            return (try ca.sign(csrPEM: csr, asClient: id, validityDays: 30, serial: serial), key)
        }
        func server(serial: UInt64) throws -> (certificate: String, key: PrivateKeyPEM) {
            let (key, csr) = try CertificateAuthority.makeKeyAndCSR(commonName: "127.0.0.1")
            return (try ca.sign(csrPEM: csr, asServer: ["127.0.0.1"], validityDays: 30, serial: serial), key)
        }
    }

    func testKeyMatchesOnlyItsOwnCertificate() throws {
        let federation = try Authority("Federation CA")
        let mine = try federation.client("clinic-1", serial: 2), other = try federation.client("clinic-2", serial: 3)
        XCTAssertTrue(try IdentityChecks.keyMatches(certificatePEM: mine.certificate, keyPEM: mine.key))
        XCTAssertFalse(try IdentityChecks.keyMatches(certificatePEM: mine.certificate, keyPEM: other.key))
        XCTAssertThrowsError(try IdentityChecks.keyMatches(certificatePEM: "not a certificate", keyPEM: mine.key))
    }

    func testNamesAndIssuanceAcrossTwoAuthorities() throws {
        let federation = try Authority("Federation CA"), stranger = try Authority("Stranger CA")
        let mine = try federation.client("clinic-1", serial: 2)
        let names = try IdentityChecks.names(certificatePEM: mine.certificate)
        XCTAssertEqual(names.subject, "clinic-1")
        XCTAssertEqual(names.issuer, "Federation CA")
        XCTAssertEqual(try IdentityChecks.names(certificatePEM: federation.ca.certificatePEM).subject, "Federation CA")
        XCTAssertTrue(try IdentityChecks.isIssued(certificatePEM: mine.certificate, byAnyOf: federation.ca.certificatePEM))
        XCTAssertFalse(try IdentityChecks.isIssued(certificatePEM: mine.certificate, byAnyOf: stranger.ca.certificatePEM))
        // A bundle with the right CA in it is enough.
        XCTAssertTrue(try IdentityChecks.isIssued(certificatePEM: mine.certificate,
                                                  byAnyOf: stranger.ca.certificatePEM + federation.ca.certificatePEM))
        // An impostor CA with the same name but another key: the signature decides, not the name.
        let twin = try Authority("Federation CA")
        XCTAssertFalse(try IdentityChecks.isIssued(certificatePEM: mine.certificate, byAnyOf: twin.ca.certificatePEM))
    }

    /// A client trusting another CA refuses the server with `.serverCertificateRejected`, carrying the
    /// server's name and its issuer's; the message still names the peer and OpenSSL's reason.
    func testServerFromAnotherAuthorityIsRejectedWithBothNames() throws {
        let federation = try Authority("Federation CA"), impostor = try Authority("Impostor CA")
        let server = try impostor.server(serial: 2)
        let listener = try TLSListener(host: "127.0.0.1", port: 0, context: TLSServerContext(
            caPEM: impostor.ca.certificatePEM, certificatePEM: server.certificate, keyPEM: server.key))
        let accepted = DispatchSemaphore(value: 0)
        Thread { _ = try? listener.accept(); accepted.signal() }.start()
        let identity = try federation.client("clinic-1", serial: 3)
        let context = try TLSClientContext(caPEM: federation.ca.certificatePEM, certificatePEM: identity.certificate,
                                           keyPEM: identity.key, expectedHost: "127.0.0.1")
        XCTAssertThrowsError(try TLSConnection.connect(host: "127.0.0.1", port: listener.port, context: context, timeout: 5)) { error in
            guard case let TransportError.serverCertificateRejected(peer, subject, issuer, reason)? = error as? TransportError else {
                return XCTFail("expected serverCertificateRejected, got \(error)")
            }
            XCTAssertEqual(peer, "server 127.0.0.1:\(listener.port)")
            XCTAssertEqual(subject, "127.0.0.1")
            XCTAssertEqual(issuer, "Impostor CA")
            XCTAssertTrue(reason.contains("failed verification"), reason)
            XCTAssertTrue("\(error)".contains("TLS handshake with server 127.0.0.1:\(listener.port) failed"), "\(error)")
        }
        XCTAssertEqual(accepted.wait(timeout: .now() + 10), .success)
    }

    /// The right CA but the wrong name: also refused as a certificate error (no retry can fix it).
    func testServerWithAnotherNameIsRejectedAsACertificateError() throws {
        let federation = try Authority("Federation CA")
        let server = try federation.server(serial: 2)
        let listener = try TLSListener(host: "127.0.0.1", port: 0, context: TLSServerContext(
            caPEM: federation.ca.certificatePEM, certificatePEM: server.certificate, keyPEM: server.key))
        let accepted = DispatchSemaphore(value: 0)
        Thread { _ = try? listener.accept(); accepted.signal() }.start()
        let identity = try federation.client("clinic-1", serial: 3)
        let context = try TLSClientContext(caPEM: federation.ca.certificatePEM, certificatePEM: identity.certificate,
                                           keyPEM: identity.key, expectedHost: "localhost")
        XCTAssertThrowsError(try TLSConnection.connect(host: "127.0.0.1", port: listener.port, context: context, timeout: 5)) { error in
            guard case let TransportError.serverCertificateRejected(_, subject, issuer, _)? = error as? TransportError else {
                return XCTFail("expected serverCertificateRejected, got \(error)")
            }
            XCTAssertEqual(subject, "127.0.0.1")
            XCTAssertEqual(issuer, "Federation CA")
        }
        XCTAssertEqual(accepted.wait(timeout: .now() + 10), .success)
    }
}
