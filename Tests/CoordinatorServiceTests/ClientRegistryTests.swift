import Audit
import ClientService
import FederationProtocol
import Foundation
import SecureCrypto
import SystemIO
import TestSupport
import Wire
import XCTest
@testable import CoordinatorService

final class ClientRegistryTests: XCTestCase {
    private var directory: URL!
    private var file: URL { directory.appendingPathComponent("clients.json") }
    private let now = Date(timeIntervalSince1970: 1_750_000_000)
    private let fingerprintA = String(repeating: "a1", count: 32)
    private let fingerprintB = String(repeating: "0f", count: 32)

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("conclave-registry-\(UUID().uuidString)")
        try createPrivateDirectory(directory)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    func testMissingFileIsAnEmptyRegistry() throws {
        let registry = try ClientRegistry(file: file)
        XCTAssertTrue(registry.clients.isEmpty)
        XCTAssertFalse(registry.authorizes(commonName: "clinic-1", fingerprint: fingerprintA, now: now))
        XCTAssertTrue(registry.table().contains("no clients enrolled"))
    }

    func testEnrolSaveReloadAndAuthorize() throws {
        var registry = try ClientRegistry(file: file)
        try registry.enroll(id: "clinic-1", fingerprint: fingerprintA, serial: 3, notAfter: now + 86_400, now: now)
        try registry.enroll(id: "clinic_2.b", fingerprint: fingerprintB, serial: 4, notAfter: now + 86_400, now: now)
        try registry.save()
        let mode = try FileManager.default.attributesOfItem(atPath: file.path)[.posixPermissions] as? Int
        XCTAssertEqual(mode, 0o644)

        let reloaded = try ClientRegistry(file: file)
        XCTAssertEqual(reloaded.clients, registry.clients)
        XCTAssertEqual(reloaded.clients.map(\.id), ["clinic-1", "clinic_2.b"])
        XCTAssertEqual(reloaded.clients[0].enrolled, now)
        XCTAssertEqual(reloaded.clients[0].notAfter, now + 86_400)
        XCTAssertEqual(reloaded.clients[0].status, .active)
        XCTAssertNil(reloaded.clients[0].revoked)
        XCTAssertTrue(reloaded.authorizes(commonName: "clinic-1", fingerprint: fingerprintA, now: now + 10))
        XCTAssertTrue(reloaded.authorizes(commonName: "clinic_2.b", fingerprint: fingerprintB, now: now + 10))

        let records = reloaded.listing(now: now)
        XCTAssertEqual(records.count, 2)
        XCTAssertEqual(records[0].id, "clinic-1")
        XCTAssertEqual(records[0].fingerprint, fingerprintA)
        XCTAssertEqual(records[0].status, .active)
        XCTAssertEqual(records[0].serial, 3)
        XCTAssertNil(records[0].revoked)
        XCTAssertNil(records[0].connected)
        // As `clients --json` shows it: revoked and signing_key null, no connection fields.
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: JSONEncoder().encode(records[0])) as? [String: Any])
        XCTAssertEqual(Set(json.keys), ["id", "status", "serial", "fingerprint", "enrolled", "not_after", "revoked", "signing_key"])
        XCTAssertEqual(json["status"] as? String, "active")
        XCTAssertEqual(json["serial"] as? Int, 3)
        XCTAssertTrue(json["revoked"] is NSNull)
        XCTAssertTrue(json["signing_key"] is NSNull)
        let table = reloaded.table(now: now).split(separator: "\n")
        XCTAssertEqual(table.count, 3)
        XCTAssertTrue(table[1].hasPrefix("clinic-1 ") && table[1].contains("active") && table[1].hasSuffix(fingerprintA),
                      String(table[1]))
    }

    func testActiveIdIsRefusedUntilRevoked() throws {
        var registry = try ClientRegistry(file: file)
        try registry.enroll(id: "clinic-1", fingerprint: fingerprintA, serial: 3, notAfter: now + 86_400, now: now)
        XCTAssertThrowsError(try registry.enroll(id: "clinic-1", fingerprint: fingerprintB, serial: 4,
                                                 notAfter: now + 86_400, now: now)) { error in
            XCTAssertEqual(error as? FederationError, .client("clinic-1", "already enrolled and active (certificate sha256 "
                                                              + "\(self.fingerprintA), serial 3); revoke it first to enrol it again"))
        }
        XCTAssertThrowsError(try registry.enroll(id: "clinic-9", fingerprint: fingerprintB, serial: 3,
                                                 notAfter: now + 86_400, now: now)) { error in
            XCTAssertTrue("\(error)".contains("serial 3 is already used"), "\(error)")
        }
        let revoked = try registry.revoke(id: "clinic-1", now: now + 60)
        XCTAssertEqual(revoked.status, .revoked)
        XCTAssertEqual(revoked.revoked, now + 60)
        XCTAssertFalse(registry.authorizes(commonName: "clinic-1", fingerprint: fingerprintA, now: now + 61))
        // A revoked id may come back with a new certificate; the old one stays refused.
        try registry.enroll(id: "clinic-1", fingerprint: fingerprintB, serial: 4, notAfter: now + 86_400, now: now + 120)
        XCTAssertTrue(registry.authorizes(commonName: "clinic-1", fingerprint: fingerprintB, now: now + 121))
        XCTAssertFalse(registry.authorizes(commonName: "clinic-1", fingerprint: fingerprintA, now: now + 121))
        try registry.save()
        let reloaded = try ClientRegistry(file: file)
        XCTAssertEqual(reloaded.clients.map(\.status), [.revoked, .active])
        XCTAssertEqual(reloaded.activeClient(id: "clinic-1")?.serial, 4)
    }

    func testRevokeUnknownOrRevokedIdFails() throws {
        var registry = try ClientRegistry(file: file)
        XCTAssertThrowsError(try registry.revoke(id: "ghost")) { error in
            XCTAssertEqual(error as? FederationError, .client("ghost", "not enrolled in \(self.file.path)"))
        }
        try registry.enroll(id: "clinic-1", fingerprint: fingerprintA, serial: 3, notAfter: now + 86_400, now: now)
        try registry.revoke(id: "clinic-1", now: now)
        XCTAssertThrowsError(try registry.revoke(id: "clinic-1")) { error in
            XCTAssertEqual(error as? FederationError, .client("clinic-1", "already revoked"))
        }
    }

    func testExpiredCertificateIsRefused() throws {
        var registry = try ClientRegistry(file: file)
        try registry.enroll(id: "clinic-1", fingerprint: fingerprintA, serial: 3, notAfter: now + 100, now: now)
        XCTAssertTrue(registry.authorizes(commonName: "clinic-1", fingerprint: fingerprintA, now: now + 99))
        XCTAssertFalse(registry.authorizes(commonName: "clinic-1", fingerprint: fingerprintA, now: now + 100))
        XCTAssertFalse(registry.authorizes(commonName: "clinic-1", fingerprint: fingerprintA, now: now + 1_000))
        XCTAssertEqual(registry.listing(now: now + 100).first?.status, .expired)
        XCTAssertThrowsError(try registry.enroll(id: "clinic-2", fingerprint: fingerprintB, serial: 4,
                                                 notAfter: now, now: now)) { error in
            XCTAssertTrue("\(error)".contains("is not in the future"), "\(error)")
        }
    }

    func testWrongFingerprintOrNameIsRefused() throws {
        var registry = try ClientRegistry(file: file)
        try registry.enroll(id: "clinic-1", fingerprint: fingerprintA, serial: 3, notAfter: now + 86_400, now: now)
        try registry.enroll(id: "clinic-2", fingerprint: fingerprintB, serial: 4, notAfter: now + 86_400, now: now)
        XCTAssertFalse(registry.authorizes(commonName: "clinic-1", fingerprint: fingerprintB, now: now))
        XCTAssertFalse(registry.authorizes(commonName: "clinic-2", fingerprint: fingerprintA, now: now))
        XCTAssertFalse(registry.authorizes(commonName: "clinic-1", fingerprint: fingerprintA.uppercased(), now: now))
        XCTAssertFalse(registry.authorizes(commonName: "clinic-1", fingerprint: String(fingerprintA.dropLast()), now: now))
        XCTAssertFalse(registry.authorizes(commonName: "CLINIC-1", fingerprint: fingerprintA, now: now))
        XCTAssertFalse(registry.authorizes(commonName: "clinic-3", fingerprint: fingerprintA, now: now))
        XCTAssertThrowsError(try registry.enroll(id: "clinic-3", fingerprint: "AB" + String(fingerprintA.dropFirst(2)),
                                                 serial: 5, notAfter: now + 86_400, now: now)) { error in
            XCTAssertTrue("\(error)".contains("is not 64 lower-case hex digits"), "\(error)")
        }
    }

    func testBadIdsAreRefusedWithPreciseErrors() throws {
        let cases: [(String, String)] = [
            ("", "a client id must not be empty"),
            (String(repeating: "x", count: 65), "is 65 bytes long; a client id has at most 64"),
            ("clinic 1", "character ' ' at position 7 is not allowed"),
            ("../etc", "character '/' at position 3 is not allowed"),
            ("clinic\n", "character '\\n' at position 7 is not allowed"),
            ("clinïc", "character '\\u{00EF}' at position 5 is not allowed"),
            (".hidden", "must not start with '.'"),
            ("-rf", "must not start with '-'"),
        ]
        var registry = try ClientRegistry(file: file)
        for (id, expected) in cases {
            XCTAssertThrowsError(try ClientID.validate(id: id), id) { error in
                guard case let .client(_, reason)? = error as? FederationError else {
                    return XCTFail("not a client error: \(error)")
                }
                XCTAssertTrue(reason.contains(expected), "\(id.debugDescription): \(reason)")
            }
            XCTAssertThrowsError(try registry.enroll(id: id, fingerprint: fingerprintA, serial: 3,
                                                     notAfter: now + 86_400, now: now))
        }
        XCTAssertNoThrow(try ClientID.validate(id: String(repeating: "x", count: 64)))
        XCTAssertNoThrow(try ClientID.validate(id: "A.b_c-9"))
        XCTAssertTrue(registry.clients.isEmpty)
    }

    func testMalformedFilesNameTheFileAndField() throws {
        var registry = try ClientRegistry(file: file)
        try registry.enroll(id: "clinic-1", fingerprint: fingerprintA, serial: 3, notAfter: now + 86_400, now: now)
        try registry.save()
        let good = try String(contentsOf: file, encoding: .utf8)

        let cases: [(String, String)] = [
            ("{ not json", "not valid JSON"),
            (good.replacingOccurrences(of: "\"active\"", with: "\"suspended\""), "field 'clients[0].status'"),
            (good.replacingOccurrences(of: "\"not_after\"", with: "\"not_before\""), "field 'clients[0].not_after': missing"),
            (good.replacingOccurrences(of: "\"serial\" : 3", with: "\"serial\" : \"three\""), "field 'clients[0].serial'"),
            (good.replacingOccurrences(of: fingerprintA, with: "zz"), "field 'clients[0].fingerprint': not 64 lower-case hex"),
            (good.replacingOccurrences(of: "\"clinic-1\"", with: "\"../x\""), "field 'clients[0].id': character '/'"),
            (good.replacingOccurrences(of: "\"version\" : 1", with: "\"version\" : 2"), "field 'version': unsupported value 2"),
            ("", "file is empty"),
        ]
        for (text, expected) in cases {
            XCTAssertNotEqual(text, good, "the test's replacement did not apply for \(expected)")
            try Data(text.utf8).write(to: file)
            XCTAssertThrowsError(try ClientRegistry(file: file), expected) { error in
                // Validation errors are the federation's; unreadable or undecodable files are SystemIO's.
                let state: (path: String, reason: String)
                if case let .state(path, reason)? = error as? FederationError {
                    state = (path, reason)
                } else if let error = error as? SystemIOError {
                    state = (error.path, error.reason)
                } else {
                    return XCTFail("not a state error: \(error)")
                }
                let (path, reason) = state
                XCTAssertEqual(path, self.file.path)
                XCTAssertTrue(reason.contains(expected), "expected '\(expected)' in: \(reason)")
            }
        }

        // Two active certificates for one id cannot come from `enroll`; a hand edit is caught.
        var two = try ClientRegistry(file: directory.appendingPathComponent("other.json"))
        try two.enroll(id: "clinic-1", fingerprint: fingerprintA, serial: 3, notAfter: now + 86_400, now: now)
        try two.enroll(id: "clinic-2", fingerprint: fingerprintB, serial: 4, notAfter: now + 86_400, now: now)
        try two.save()
        let duplicated = try String(contentsOf: two.file, encoding: .utf8).replacingOccurrences(of: "clinic-2", with: "clinic-1")
        try Data(duplicated.utf8).write(to: file)
        XCTAssertThrowsError(try ClientRegistry(file: file)) { error in
            XCTAssertTrue("\(error)".contains("field 'clients[1].status': a second active certificate for 'clinic-1'"), "\(error)")
            XCTAssertTrue("\(error)".hasPrefix(self.file.path), "\(error)")
        }
    }

    func testOversizedFileIsRefusedBeforeReading() throws {
        let handle = try FileHandle(forWritingTo: { XCTAssertTrue(FileManager.default.createFile(atPath: file.path, contents: nil)); return file }())
        try handle.truncate(atOffset: UInt64(ClientRegistry.maximumFileBytes + 1))
        try handle.close()
        XCTAssertThrowsError(try ClientRegistry(file: file)) { error in
            XCTAssertEqual(error as? SystemIOError,
                           SystemIOError(path: self.file.path, "file is \(ClientRegistry.maximumFileBytes + 1) bytes, "
                                  + "over the \(ClientRegistry.maximumFileBytes)-byte limit"))
        }
    }

    func testReloadIfChangedSeesRevocationByAnotherWriter() throws {
        var writer = try ClientRegistry(file: file)
        try writer.enroll(id: "clinic-1", fingerprint: fingerprintA, serial: 3, notAfter: now + 86_400, now: now)
        try writer.save()
        var server = try ClientRegistry(file: file)
        XCTAssertFalse(try server.reloadIfChanged(), "unchanged file must not be read again")
        XCTAssertTrue(server.authorizes(commonName: "clinic-1", fingerprint: fingerprintA, now: now))

        var operator_ = try ClientRegistry(file: file)
        try operator_.revoke(id: "clinic-1", now: now)
        try operator_.save()
        XCTAssertTrue(server.authorizes(commonName: "clinic-1", fingerprint: fingerprintA, now: now), "not reloaded yet")
        XCTAssertTrue(try server.reloadIfChanged())
        XCTAssertFalse(server.authorizes(commonName: "clinic-1", fingerprint: fingerprintA, now: now))
        XCTAssertFalse(try server.reloadIfChanged())

        // A malformed replacement leaves the last good state and reports the file.
        try Data("{}".utf8).write(to: file)
        XCTAssertThrowsError(try server.reloadIfChanged()) { error in
            XCTAssertTrue("\(error)".contains(self.file.path) && "\(error)".contains("field 'version': missing"), "\(error)")
        }
        XCTAssertEqual(server.clients.map(\.status), [.revoked])
        // A removed file is an empty registry.
        try FileManager.default.removeItem(at: file)
        XCTAssertTrue(try server.reloadIfChanged())
        XCTAssertTrue(server.clients.isEmpty)
    }

    func testRegistryAuthorizationFollowsTheFileAndFailsClosed() throws {
        var writer = try ClientRegistry(file: file)
        let expiry = Date() + 86_400
        try writer.enroll(id: "clinic-1", fingerprint: fingerprintA, serial: 3, notAfter: expiry)
        try writer.save()
        let reports = ReportLog()
        let authorization = RegistryAuthorization(registry: try ClientRegistry(file: file)) { reports.append($0) }
        XCTAssertTrue(authorization.hook("clinic-1", fingerprintA))
        XCTAssertFalse(authorization.hook("clinic-1", fingerprintB))

        try Data("[1, 2".utf8).write(to: file)
        XCTAssertFalse(authorization.hook("clinic-1", fingerprintA), "a malformed registry must refuse everyone")
        XCTAssertFalse(authorization.hook("clinic-1", fingerprintA))
        XCTAssertEqual(reports.lines.count, 1, "\(reports.lines)")
        XCTAssertTrue(reports.lines.first?.contains(file.path) == true, "\(reports.lines)")

        try writer.save()
        XCTAssertTrue(authorization.hook("clinic-1", fingerprintA), "fixed file admits the client again")
        try writer.revoke(id: "clinic-1")
        try writer.save()
        XCTAssertFalse(authorization.hook("clinic-1", fingerprintA))
    }

    func testCoordinatorSettingsRoundTripAndFieldErrors() throws {
        let settingsFile = directory.appendingPathComponent("coordinator.json")
        XCTAssertThrowsError(try CoordinatorSettings.load(from: settingsFile)) { error in
            XCTAssertTrue("\(error)".hasPrefix("\(settingsFile.path): missing"), "\(error)")
        }
        let settings = CoordinatorSettings(name: "Test Federation", host: "coordinator.example", nextSerial: 3, created: now)
        XCTAssertEqual(settings.port, 7443)
        try settings.save(to: settingsFile)
        XCTAssertEqual(try CoordinatorSettings.load(from: settingsFile), settings)
        let good = try String(contentsOf: settingsFile, encoding: .utf8)
        let cases: [(String, any Error & Equatable)] = [
            (good.replacingOccurrences(of: "7443", with: "70000"),
             FederationError.configuration(path: settingsFile.path, field: "port", "70000 is outside 1...65535")),
            (good.replacingOccurrences(of: "\"next_serial\" : 3", with: "\"next_serial\" : 0"),
             FederationError.configuration(path: settingsFile.path, field: "next_serial", "must be at least 1")),
            (good.replacingOccurrences(of: "\"host\"", with: "\"hostname\""),
             SystemIOError(path: settingsFile.path, "field 'host': missing")),
        ]
        for (text, expected) in cases {
            XCTAssertNotEqual(text, good)
            try Data(text.utf8).write(to: settingsFile)
            XCTAssertThrowsError(try CoordinatorSettings.load(from: settingsFile)) { error in
                XCTAssertEqual(type(of: error as Any) == type(of: expected as Any) ? "\(error)" : "\(type(of: error)): \(error)",
                               "\(expected)")
            }
        }
    }

    // MARK: Signing keys

    /// The registry pins a client's signing key at first sight, keeps it across reloads, refuses
    /// another one, and a new certificate (after revocation) starts unpinned.
    func testSigningKeyIsPinnedAtFirstSightAndChangesRefused() throws {
        let directory = try Fixtures.temporaryDirectory("pin")
        let file = directory.appendingPathComponent("clients.json")
        var registry = try ClientRegistry(file: file)
        let fingerprint = String(repeating: "0a", count: 32)
        try registry.enroll(id: "ana", fingerprint: fingerprint, serial: 3, notAfter: Date().addingTimeInterval(86_400))
        let first = Hex.encode(SigningKeyPair().publicKey.bytes), second = Hex.encode(SigningKeyPair().publicKey.bytes)
        XCTAssertTrue(try registry.pinSigningKey(id: "ana", key: first))
        try registry.save()
        var reloaded = try ClientRegistry(file: file)
        XCTAssertEqual(reloaded.activeClient(id: "ana")?.signingKey, first)
        XCTAssertFalse(try reloaded.pinSigningKey(id: "ana", key: first), "the same key is accepted, not re-pinned")
        XCTAssertThrowsError(try reloaded.pinSigningKey(id: "ana", key: second)) { error in
            XCTAssertTrue("\(error)".contains("is pinned"), "\(error)")
        }
        XCTAssertThrowsError(try reloaded.pinSigningKey(id: "ana", key: "not hex"))
        XCTAssertThrowsError(try reloaded.pinSigningKey(id: "ben", key: first), "no active certificate")
        try reloaded.revoke(id: "ana")
        try reloaded.enroll(id: "ana", fingerprint: String(repeating: "0b", count: 32), serial: 4,
                            notAfter: Date().addingTimeInterval(86_400))
        XCTAssertTrue(try reloaded.pinSigningKey(id: "ana", key: second), "a new certificate starts unpinned")
        // The hello carries the key; a key of the wrong length is refused on decoding.
        let hello = Hello(client: "ana", software: "test", pendingRound: 0, signingKey: Array(repeating: 7, count: 32))
        XCTAssertEqual(try Hello(frame: hello.frame()), hello)
        var bad = hello
        bad.signingKey = [1, 2, 3]
        XCTAssertThrowsError(try Hello(frame: bad.frame()))
    }
}

/// Collects reports from another thread's point of view.
final class ReportLog: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [String] = []
    func append(_ line: String) { lock.withLock { stored.append(line) } }
    var lines: [String] { lock.withLock { stored } }
}
