import Audit
import FederationProtocol
import Foundation
import SystemIO
import Transport
import Wire

/// One certificate the coordinator issued to a client, and whether it still admits that client.
public struct EnrolledClient: Codable, Sendable, Equatable {
    /// Whether the certificate admits its client.
    public enum Status: String, Codable, Sendable {
        case active, revoked
    }

    /// The client id: the certificate's common name.
    public var id: String
    /// SHA-256 of the certificate's DER encoding, 64 lower-case hex digits.
    public var fingerprint: String
    /// The certificate's serial number.
    public var serial: UInt64
    /// When the coordinator signed the certificate.
    public var enrolled: Date
    /// The end of the certificate's validity.
    public var notAfter: Date
    public var status: Status
    /// When the certificate was revoked (nil while active).
    public var revoked: Date?
    /// The Ed25519 key (64 lower-case hex digits) the client presented in its first hello under this
    /// certificate, pinned then; a hello with another key is refused. Nil until the first hello.
    public var signingKey: String?
}

/// The coordinator's enrolled clients (`clients.json`): which certificate, by fingerprint, admits
/// which client id. The TLS layer checks the chain to the CA; this registry decides, at each
/// handshake, whether that certificate is still one the coordinator accepts.
///
/// A revoked id may enrol again with a new certificate; at most one certificate per id is active.
public struct ClientRegistry: Sendable {
    /// The registry file.
    public let file: URL
    /// Every certificate issued, in enrolment order (revoked ones stay as a record).
    public private(set) var clients: [EnrolledClient]
    private var stamp: FileStamp?

    /// Version of the file format this code reads and writes.
    public static let formatVersion = 1
    /// Largest registry file read (a record is about 300 bytes).
    public static let maximumFileBytes = 16 << 20

    struct RegistryFile: Codable {
        var version: Int
        var clients: [EnrolledClient]
    }

    /// Reads the registry at `file`; a missing file is an empty registry.
    /// - Throws: `FederationError.state` naming the file and, for bad content, the field.
    public init(file: URL) throws {
        self.file = file
        clients = []
        try reload()
    }

    /// The registry in a coordinator's state directory (`clients.json`).
    public init(paths: CoordinatorPaths) throws {
        try self.init(file: paths.clients)
    }

    /// Re-reads the file if its inode, size or modification time changed since the last read, so a
    /// running server sees a `revoke` by another process at the next handshake.
    /// - Returns: true when the file was read again.
    /// - Throws: `FederationError.state` when the new content is malformed; the registry keeps its
    ///   previous clients then.
    @discardableResult
    public mutating func reloadIfChanged() throws -> Bool {
        guard try FileStamp.of(file) != stamp else { return false }
        try reload()
        return true
    }

    private mutating func reload() throws {
        guard let (data, newStamp) = try StateFile.read(file, maximumBytes: Self.maximumFileBytes) else {
            clients = []
            stamp = nil
            return
        }
        let decoded = try StateFile.decode(RegistryFile.self, from: data, path: file.path)
        guard decoded.version == Self.formatVersion else {
            throw FederationError.state(path: file.path,
                                        "field 'version': unsupported value \(decoded.version) (expected \(Self.formatVersion))")
        }
        try Self.validate(decoded.clients, path: file.path)
        clients = decoded.clients
        stamp = newStamp
    }

    /// Checks what Codable cannot: ids, fingerprints, dates, one active certificate per id.
    private static func validate(_ clients: [EnrolledClient], path: String) throws {
        var active = Set<String>()
        var serials = Set<UInt64>()
        for (index, client) in clients.enumerated() {
            let field = "clients[\(index)]"
            do { try ClientID.validate(id: client.id) } catch let FederationError.client(_, reason) {
                throw FederationError.state(path: path, "field '\(field).id': \(reason)")
            }
            guard isFingerprint(client.fingerprint) else {
                throw FederationError.state(path: path, "field '\(field).fingerprint': not 64 lower-case hex digits")
            }
            guard client.serial >= 1 else {
                throw FederationError.state(path: path, "field '\(field).serial': must be at least 1")
            }
            guard serials.insert(client.serial).inserted else {
                throw FederationError.state(path: path, "field '\(field).serial': serial \(client.serial) appears twice")
            }
            if let key = client.signingKey, !isFingerprint(key) {
                throw FederationError.state(path: path, "field '\(field).signing_key': not 64 lower-case hex digits")
            }
            guard client.notAfter > client.enrolled else {
                throw FederationError.state(path: path, "field '\(field).not_after': not after the enrolment date")
            }
            switch client.status {
            case .active:
                guard client.revoked == nil else {
                    throw FederationError.state(path: path, "field '\(field).revoked': set on an active client")
                }
                guard active.insert(client.id).inserted else {
                    throw FederationError.state(path: path,
                                                "field '\(field).status': a second active certificate for '\(client.id)'")
                }
            case .revoked:
                guard client.revoked != nil else {
                    throw FederationError.state(path: path, "field '\(field).revoked': missing on a revoked client")
                }
            }
        }
    }


    /// The certificate that currently admits `id`, if any.
    public func activeClient(id: String) -> EnrolledClient? {
        clients.last { $0.id == id && $0.status == .active }
    }

    /// Records a newly signed certificate for `id` (call `save()` to make it durable).
    /// - Throws: `FederationError.client` for a bad id, an id that is already active, a malformed
    ///   fingerprint, a serial already used, or a not-after date that is not in the future.
    public mutating func enroll(id: String, fingerprint: String, serial: UInt64, notAfter: Date,
                                now: Date = Date()) throws {
        try ClientID.validate(id: id)
        if let existing = activeClient(id: id) {
            throw FederationError.client(id, "already enrolled and active (certificate sha256 \(existing.fingerprint), "
                                             + "serial \(existing.serial)); revoke it first to enrol it again")
        }
        guard Self.isFingerprint(fingerprint) else {
            throw FederationError.client(id, "fingerprint '\(PeerText.printable(fingerprint))' is not 64 lower-case hex digits")
        }
        guard serial >= 1, !clients.contains(where: { $0.serial == serial }) else {
            throw FederationError.client(id, "serial \(serial) is already used or invalid")
        }
        let enrolled = StateFile.wholeSeconds(now)
        let expiry = StateFile.wholeSeconds(notAfter)
        guard expiry > enrolled else {
            throw FederationError.client(id, "certificate not-after \(ISO8601DateFormatter().string(from: expiry)) is not in the future")
        }
        clients.append(EnrolledClient(id: id, fingerprint: fingerprint, serial: serial, enrolled: enrolled,
                                      notAfter: expiry, status: .active, revoked: nil))
    }

    /// Marks the active certificate of `id` revoked (call `save()` to make it durable).
    /// - Returns: the revoked record.
    /// - Throws: `FederationError.client` when `id` was never enrolled or is already revoked.
    @discardableResult
    public mutating func revoke(id: String, now: Date = Date()) throws -> EnrolledClient {
        guard let index = clients.lastIndex(where: { $0.id == id && $0.status == .active }) else {
            if clients.contains(where: { $0.id == id }) {
                throw FederationError.client(PeerText.printable(id), "already revoked")
            }
            throw FederationError.client(PeerText.printable(id), "not enrolled in \(file.path)")
        }
        clients[index].status = .revoked
        clients[index].revoked = StateFile.wholeSeconds(now)
        return clients[index]
    }

    /// Pins `key` (64 lower-case hex digits) as the signing key of `id`'s active certificate if it has
    /// none yet (call `save()` then), or checks it against the pinned one.
    /// - Returns: true when the key was newly pinned.
    /// - Throws: `FederationError.client` if `id` has no active certificate or a different pinned key.
    public mutating func pinSigningKey(id: String, key: String) throws -> Bool {
        guard let index = clients.lastIndex(where: { $0.id == id && $0.status == .active }) else {
            throw FederationError.client(PeerText.printable(id), "has no active certificate to pin a signing key to")
        }
        guard Self.isFingerprint(key) else {
            throw FederationError.client(PeerText.printable(id), "signing key '\(PeerText.printable(key))' is not 64 lower-case hex digits")
        }
        if let pinned = clients[index].signingKey {
            guard pinned == key else {
                throw FederationError.client(id, "presented signing key \(key), but \(pinned) is pinned for its certificate "
                                                 + "(revoke and enrol it again to change keys)")
            }
            return false
        }
        clients[index].signingKey = key
        return true
    }

    /// Whether a TLS peer may connect: `commonName` has an active certificate whose fingerprint is
    /// exactly `fingerprint` (public values, so a plain comparison) and which has not expired at `now`.
    public func authorizes(commonName: String, fingerprint: String, now: Date = Date()) -> Bool {
        guard let client = activeClient(id: commonName) else { return false }
        return client.fingerprint == fingerprint && now < client.notAfter
    }

    /// Writes the registry atomically (temporary file, fsync, rename, fsync of the directory).
    public mutating func save() throws {
        try StateFile.write(RegistryFile(version: Self.formatVersion, clients: clients), to: file)
        stamp = try FileStamp.of(file)
    }

    // MARK: Listing

    /// The registry as a table for `clients`: one line per certificate, newest last.
    public func table(now: Date = Date()) -> String {
        let formatter = ISO8601DateFormatter()
        let header = ["ID", "STATUS", "SERIAL", "ENROLLED", "NOT AFTER", "SHA256 FINGERPRINT"]
        let rows = clients.map { client in
            [client.id, Self.listedStatus(client, now: now).rawValue, String(client.serial), formatter.string(from: client.enrolled),
             formatter.string(from: client.notAfter), client.fingerprint]
        }
        guard !rows.isEmpty else { return "no clients enrolled (\(file.path))" }
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        return ([header] + rows).map { row in
            row.enumerated().map { column, cell in
                column == row.count - 1 ? cell : cell.padding(toLength: widths[column] + 2, withPad: " ", startingAt: 0)
            }.joined()
        }.joined(separator: "\n")
    }

    /// The registry as `clients` lists it (JSON for `clients --json` and the control socket's answer):
    /// one entry per certificate, newest last, with no connection fields.
    public func listing(now: Date = Date()) -> [ClientListing] {
        let formatter = ISO8601DateFormatter()
        return clients.map { client in
            ClientListing(id: client.id, status: Self.listedStatus(client, now: now), serial: client.serial,
                          fingerprint: client.fingerprint, enrolled: formatter.string(from: client.enrolled),
                          notAfter: formatter.string(from: client.notAfter),
                          revoked: client.revoked.map { formatter.string(from: $0) }, signingKey: client.signingKey)
        }
    }

    /// Expired for an active certificate past its not-after date, otherwise the stored status.
    private static func listedStatus(_ client: EnrolledClient, now: Date) -> ClientListing.Status {
        switch client.status {
        case .revoked: return .revoked
        case .active: return now >= client.notAfter ? .expired : .active
        }
    }

    // MARK: Helpers

    static func isFingerprint(_ text: String) -> Bool {
        text.utf8.count == 64 && text.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }

}

/// A `ClientAuthorization` for the coordinator's TLS server, backed by the registry file: each
/// handshake re-reads `clients.json` if it changed, so a revocation applies from the next handshake, and
/// the server asks `refused` about its live connections, so a revocation closes them too.
/// If the file becomes unreadable or malformed, every client is refused until it is fixed.
public final class RegistryAuthorization: @unchecked Sendable {
    private var registry: ClientRegistry
    private var failure: Error?
    private let lock = NSLock()
    private let report: @Sendable (String) -> Void

    /// - Parameters:
    ///   - registry: the registry as loaded at start-up.
    ///   - report: told (once per distinct failure) why the registry could not be re-read.
    public init(registry: ClientRegistry, report: @escaping @Sendable (String) -> Void = { _ in }) {
        self.registry = registry
        self.report = report
    }

    /// Whether the peer is an active, unexpired client with exactly this certificate.
    public func authorize(commonName: String, fingerprint: String, now: Date = Date()) -> Bool {
        refused([(commonName, fingerprint)], now: now).isEmpty
    }

    /// The ids among `peers` (id, certificate fingerprint) that the registry no longer admits, after one
    /// re-read of the file if it changed: what a running server closes when a client is revoked.
    public func refused(_ peers: [(id: String, fingerprint: String)], now: Date = Date()) -> [String] {
        lock.withLock {
            do {
                try registry.reloadIfChanged()
                failure = nil
            } catch {
                if failure.map({ "\($0)" }) != "\(error)" { report("refusing all clients: \(error)") }
                failure = error
            }
            return peers.filter { failure != nil || !registry.authorizes(commonName: $0.id, fingerprint: $0.fingerprint, now: now) }
                .map(\.id)
        }
    }

    /// The ids of every active, unexpired client, after one re-read of the file if it changed (none while it is
    /// unreadable): the population a client-level round samples from.
    public func activeClients(now: Date = Date()) -> [String] {
        lock.withLock {
            do { try registry.reloadIfChanged() } catch { return [] }
            return Array(Set(registry.clients.filter { $0.status == .active && now < $0.notAfter }.map(\.id))).sorted()
        }
    }

    /// The closure `TLSServerContext` takes.
    public var hook: ClientAuthorization {
        { [self] commonName, fingerprint in authorize(commonName: commonName, fingerprint: fingerprint) }
    }
}
