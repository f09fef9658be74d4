#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import ModelFormats
import SecureCrypto
import Transport
import FederationProtocol
import Audit
import Wire
import SystemIO

/// What `CoordinatorSetup.initialize` created, for the operator to note.
public struct CoordinatorIdentity: Sendable {
    public let settings: CoordinatorSettings
    /// SHA-256 of the CA certificate (lower-case hex): clients can compare it with the `ca.pem` they got.
    public let caFingerprint: String
    /// SHA-256 of the server certificate (lower-case hex).
    public let serverFingerprint: String
    /// The audit signing key's public half (lower-case hex), as in `signing.pub`.
    public let signingPublicKey: String
}

/// A client certificate the coordinator has just signed and recorded.
public struct Enrolment: Sendable {
    /// The client id (the request's common name).
    public let id: String
    public let certificatePEM: String
    /// SHA-256 of the certificate (lower-case hex), as the registry stores it.
    public let fingerprint: String
    public let serial: UInt64
    /// The end of the certificate's validity, as the registry stores it.
    public let notAfter: Date
}

/// Creating a coordinator's identity and enrolling and revoking clients, on its state directory.
public enum CoordinatorSetup {
    /// Validity of the CA and server certificates when `init` is given none (about ten years).
    public static let defaultValidityDays = 3650
    /// Validity of a client certificate when `enroll` is given none.
    public static let defaultClientValidityDays = 365

    /// The CA certificate is serial 1 and the server certificate 2; clients get 3 onwards.
    static let serverSerial: UInt64 = 2

    /// Creates a coordinator state directory: the directory (0700); a CA (`ca.pem`, and `ca.key` 0600 at
    /// `caKeyOutput`, by default in the directory: `serve` never reads it, so it can live elsewhere); a
    /// server key and certificate for `host` (DNS name or IP address in subjectAltName); the Ed25519
    /// audit signing key (`signing.key` 0600, `signing.pub`); the settings and an empty registry.
    /// Everything is generated in memory before the first file is written.
    /// - Throws: `FederationError.state` naming the first existing state file if the directory is
    ///   already initialised; `.configuration` for a bad port; `TransportError` for a bad name or host.
    @discardableResult
    public static func initialize(paths: CoordinatorPaths, name: String, host: String,
                                  port: Int = CoordinatorSettings.defaultPort,
                                  validityDays: Int = defaultValidityDays, caKeyOutput: URL? = nil,
                                  now: Date = Date()) throws -> CoordinatorIdentity
    {
        let settings = CoordinatorSettings(name: name, host: host, port: port, nextSerial: serverSerial + 1, created: now)
        try settings.validate(path: paths.settings.path)
        try refuseExistingState(paths)

        let notBefore = StateFile.wholeSeconds(now.addingTimeInterval(-CertificateAuthority.backdatingSeconds))
        let (caPEM, caKey) = try CertificateAuthority.create(name: name, validityDays: validityDays, notBefore: notBefore)
        let authority = try CertificateAuthority(certificatePEM: caPEM, keyPEM: caKey)
        let (serverKey, serverRequest) = try CertificateAuthority.makeKeyAndCSR(commonName: host)
        let serverPEM = try authority.sign(csrPEM: serverRequest, asServer: [host], validityDays: validityDays,
                                           serial: serverSerial, notBefore: notBefore)
        let signing = SigningKeyPair()
        let signingPublic = Hex.encode(signing.publicKey.bytes)

        try createPrivateDirectory(paths.root)
        let lock = try StateDirectoryLock(paths.root)
        defer { withExtendedLifetime(lock) {} }
        try refuseExistingState(paths)
        try PEMFile.writePrivateKey(caKey, to: (caKeyOutput ?? paths.caKey).path)
        try PEMFile.writePublic(caPEM, to: paths.caCertificate.path, replacingExisting: false)
        try PEMFile.writePrivateKey(serverKey, to: paths.serverKey.path)
        try PEMFile.writePublic(serverPEM, to: paths.serverCertificate.path, replacingExisting: false)
        try signing.writeSecretKeyFile(path: paths.signingKey.path)
        do {
            try writeFileAtomically(Data((signingPublic + "\n").utf8), to: paths.signingPublicKey, permissions: 0o644)
        } catch {
            throw FederationError.state(path: paths.signingPublicKey.path, "cannot write: \(error)")
        }
        var registry = try ClientRegistry(paths: paths)
        try registry.save()
        // The settings go last: their presence marks a complete initialisation.
        try settings.save(to: paths.settings)
        return CoordinatorIdentity(settings: settings,
                                   caFingerprint: try CertificateAuthority.fingerprint(certificatePEM: caPEM),
                                   serverFingerprint: try CertificateAuthority.fingerprint(certificatePEM: serverPEM),
                                   signingPublicKey: signingPublic)
    }

    /// Signs a client's certificate signing request and records the client as active. The client id
    /// is the request's common name; the certificate gets the next serial number.
    /// - Parameters:
    ///   - certificateOutput: if given, the certificate is written there (0644) before the registry
    ///     records it, so a failed write never leaves an enrolled client without its certificate.
    /// - Throws: `FederationError.client` for a bad or already active id; `TransportError` for a
    ///   request that does not parse or verify; `FederationError.state` for missing or bad state.
    ///   - caKey: the CA's private key (default `ca.key` in the state directory; `init --ca-key` may have put it elsewhere).
    public static func enroll(paths: CoordinatorPaths, csrPEM: String, validityDays: Int = defaultClientValidityDays,
                              certificateOutput: URL? = nil, caKey: URL? = nil, now: Date = Date()) throws -> Enrolment
    {
        let lock = try StateDirectoryLock(paths.root)
        defer { withExtendedLifetime(lock) {} }
        var settings = try CoordinatorSettings.load(paths: paths)
        var registry = try ClientRegistry(paths: paths)
        let id = try CertificateAuthority.commonName(csrPEM: csrPEM)
        try ClientID.validate(id: id)
        if let existing = registry.activeClient(id: id) {
            throw FederationError.client(id, "already enrolled and active (certificate sha256 \(existing.fingerprint), "
                                             + "serial \(existing.serial)); revoke it first to enrol it again")
        }
        let authority = try CertificateAuthority(certificatePEM: PEMFile.readCertificate(at: paths.caCertificate.path),
                                                 keyPEM: try readCAKey(caKey ?? paths.caKey, isDefault: caKey == nil))
        let serial = settings.nextSerial
        // notBefore is fixed here so that notAfter is known exactly: the CA adds whole days to it.
        let notBefore = StateFile.wholeSeconds(now.addingTimeInterval(-CertificateAuthority.backdatingSeconds))
        let certificatePEM = try authority.sign(csrPEM: csrPEM, asClient: id, validityDays: validityDays, serial: serial,
                                                notBefore: notBefore)
        let notAfter = notBefore.addingTimeInterval(TimeInterval(validityDays) * 86_400)
        let fingerprint = try CertificateAuthority.fingerprint(certificatePEM: certificatePEM)
        // The serial is spent before anything else is written: a crash can skip a serial, never reuse one.
        settings.nextSerial = serial + 1
        try settings.save(to: paths.settings)
        if let certificateOutput {
            try PEMFile.writePublic(certificatePEM, to: certificateOutput.path)
        }
        try registry.enroll(id: id, fingerprint: fingerprint, serial: serial, notAfter: notAfter, now: now)
        try registry.save()
        return Enrolment(id: id, certificatePEM: certificatePEM, fingerprint: fingerprint, serial: serial,
                         notAfter: notAfter)
    }

    /// Revokes the active certificate of `id`; a running server refuses it from its next handshake.
    /// - Throws: `FederationError.client` when `id` is unknown or already revoked.
    @discardableResult
    public static func revoke(paths: CoordinatorPaths, id: String, now: Date = Date()) throws -> EnrolledClient {
        let lock = try StateDirectoryLock(paths.root)
        defer { withExtendedLifetime(lock) {} }
        _ = try CoordinatorSettings.load(paths: paths)
        var registry = try ClientRegistry(paths: paths)
        let revoked = try registry.revoke(id: id, now: now)
        try registry.save()
        return revoked
    }

    /// Refuses a directory holding any file `initialize` would create, naming the first one found.
    /// The CA key for `enroll`; a missing default one says where else it may be.
    private static func readCAKey(_ url: URL, isDefault: Bool) throws -> PrivateKeyPEM {
        var status = stat()
        if isDefault && lstat(url.path, &status) != 0 && errno == ENOENT {
            throw FederationError.state(path: url.path, "no CA key here: if 'init --ca-key FILE' kept it elsewhere, "
                                                        + "pass that file with --ca-key FILE")
        }
        return try PEMFile.readPrivateKey(at: url.path)
    }

    private static func refuseExistingState(_ paths: CoordinatorPaths) throws {
        let files = [paths.settings, paths.caCertificate, paths.caKey, paths.serverCertificate, paths.serverKey,
                     paths.signingKey, paths.signingPublicKey, paths.clients]
        for file in files {
            var status = stat()
            if lstat(file.path, &status) == 0 {
                throw FederationError.state(path: file.path, "already exists: \(paths.root.path) is already an initialised "
                                                             + "coordinator state directory (refusing to overwrite it)")
            }
        }
    }
}
