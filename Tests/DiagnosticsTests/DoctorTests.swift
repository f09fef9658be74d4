import Diagnostics
import Foundation
import TestSupport
import Transport
import XCTest

/// `doctor`'s checks on identities made here: healthy, expired, expiring, not yet valid (the clock),
/// a key that is not the certificate's, a certificate from another CA, a damaged model, a taken port.
final class DoctorTests: XCTestCase {
    private var directory: URL!

    override func setUpWithError() throws { directory = try Fixtures.temporaryDirectory("doctor") }

    /// A CA, and a client key and certificate it signs (`notBefore`, `days`), written to files; returns their paths.
    private func identity(_ name: String, notBefore: Date? = nil, days: Int = 365,
                          ca: (certificatePEM: String, keyPEM: PrivateKeyPEM)? = nil) throws
        -> (ca: String, certificate: String, key: String, authority: (certificatePEM: String, keyPEM: PrivateKeyPEM))
    {
        let authority = try ca ?? CertificateAuthority.create(name: "federation \(name)", validityDays: 3650)
        let (key, csr) = try CertificateAuthority.makeKeyAndCSR(commonName: name)
        let signed = try CertificateAuthority(certificatePEM: authority.certificatePEM, keyPEM: authority.keyPEM)
            .sign(csrPEM: csr, asClient: name, validityDays: days, serial: 2, notBefore: notBefore)
        let paths = ["ca", "cert", "key"].map { directory.appendingPathComponent("\(name)-\($0).pem").path }
        try PEMFile.writePublic(authority.certificatePEM, to: paths[0])
        try PEMFile.writePublic(signed, to: paths[1])
        try PEMFile.writePrivateKey(key, to: paths[2])
        return (paths[0], paths[1], paths[2], authority)
    }

    func testAHealthyIdentityIsOK() throws {
        let id = try identity("clinic-a")
        let checks = Doctor.certificate("client certificate", path: id.certificate, renew: "enrol again")
            + [Doctor.identity("client identity", keyPath: id.key, certificatePath: id.certificate, caPath: id.ca, fix: "fix")]
        XCTAssertEqual(checks.map(\.status), [.ok, .ok, .ok], checks.map(\.line).joined(separator: "\n"))
        XCTAssertTrue(checks[0].detail.contains("364 days left"), checks[0].detail)
        XCTAssertEqual(HealthReport(checks).worst, .ok)
    }

    func testExpiredExpiringAndNotYetValidCertificates() throws {
        let now = Date()
        let expired = try identity("old", notBefore: now.addingTimeInterval(-40 * 86_400), days: 10)
        let checks = Doctor.certificate("client certificate", path: expired.certificate, renew: "enrol again", now: now)
        XCTAssertEqual(checks[0].status, .fail, checks[0].line)
        XCTAssertTrue(checks[0].detail.contains("expired on") && checks[0].detail.contains("enrol again"), checks[0].detail)

        let expiring = try identity("soon", days: 10)
        let soon = Doctor.certificate("client certificate", path: expiring.certificate, renew: "enrol again", now: now)
        XCTAssertEqual(soon[0].status, .warn, soon[0].line)
        XCTAssertTrue(soon[0].detail.contains("expires in 9 days"), soon[0].detail)

        // This machine's clock three days behind the certificate's start: TLS would refuse it.
        let future = try identity("future", notBefore: now.addingTimeInterval(3 * 86_400))
        let clock = Doctor.certificate("client certificate", path: future.certificate, renew: "enrol again", now: now)
        XCTAssertEqual(clock.map(\.name), ["client certificate", "clock"])
        XCTAssertEqual(clock[1].status, .fail, clock[1].line)
        XCTAssertTrue(clock[1].detail.contains("3 days before") && clock[1].detail.contains("NTP"), clock[1].detail)
        XCTAssertEqual(HealthReport(checks + soon).worst, .fail)
        XCTAssertEqual(HealthReport(checks + soon).json["ok"] as? Bool, false)
    }

    func testAKeyOfAnotherCertificateAndACertificateOfAnotherCA() throws {
        let a = try identity("clinic-a")
        let b = try identity("clinic-b", ca: a.authority)
        let swapped = Doctor.identity("client identity", keyPath: b.key, certificatePath: a.certificate, caPath: a.ca, fix: "FIX")
        XCTAssertEqual(swapped.status, .fail)
        XCTAssertTrue(swapped.detail.contains("is not the key of \(a.certificate)") && swapped.detail.hasSuffix("FIX"), swapped.detail)

        let other = try identity("clinic-c")
        let foreign = Doctor.identity("client identity", keyPath: a.key, certificatePath: a.certificate, caPath: other.ca, fix: "FIX")
        XCTAssertEqual(foreign.status, .fail)
        XCTAssertTrue(foreign.detail.contains("issued by 'federation clinic-a', but \(other.ca) is 'federation clinic-c'"),
                      foreign.detail)
    }

    func testModelChecksumAgainstThePublishedOne() throws {
        let damaged = directory.appendingPathComponent("SmolLM2-135M-Instruct.Q4_1.gguf")
        try Data("not the model".utf8).write(to: damaged)
        let check = Doctor.model(path: damaged.path)
        XCTAssertEqual(check.status, .fail, check.line)
        XCTAssertTrue(check.detail.contains("published as b179c952") && check.detail.contains("make model"), check.detail)

        let other = directory.appendingPathComponent("mine.gguf")
        try Data("abc".utf8).write(to: other)
        let unknown = Doctor.model(path: other.path)
        XCTAssertEqual(unknown.status, .ok)
        XCTAssertTrue(unknown.detail.contains("sha256 ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"), unknown.detail)
        XCTAssertEqual(Doctor.model(path: directory.appendingPathComponent("missing.gguf").path).status, .fail)
    }

    func testAPortInUseCannotBeListenedOnAndAFreeOneIsNotReached() throws {
        let port = try freeLoopbackPort()
        XCTAssertEqual(Doctor.portBindable(host: "127.0.0.1", port: port).status, .ok)
        let unreachable = Doctor.portReachable(host: "127.0.0.1", port: port, timeout: 2)
        XCTAssertEqual(unreachable.status, .fail, unreachable.line)
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        XCTAssertEqual(bound, 0)
        XCTAssertEqual(listen(listener, 1), 0)
        let taken = Doctor.portBindable(host: "127.0.0.1", port: port)
        XCTAssertEqual(taken.status, .fail, taken.line)
        XCTAssertTrue(taken.detail.contains("if 'serve' already runs there"), taken.detail)
        XCTAssertEqual(Doctor.portReachable(host: "127.0.0.1", port: port, timeout: 2).status, .ok)
    }

    func testTheKernelTierIsNamed() {
        let check = Doctor.kernelTier()
        XCTAssertTrue(["avx512vnni", "avx2", "generic"].contains { check.detail.hasPrefix($0) }, check.line)
    }
}
