#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import ModelFormats
import SecureCrypto
import Transport
import Wire
import SystemIO
import FederationProtocol

/// A client's settings (`client.json`): the id it asked to be enrolled under.
public struct ClientSettings: Codable, Sendable, Equatable {
    /// The client id, also the common name of its certificate request.
    public var name: String

    public init(name: String) { self.name = name }

    /// Largest settings file read.
    public static let maximumFileBytes = 64 << 10

    /// Reads and checks `client.json`.
    public static func load(paths: ClientPaths) throws -> ClientSettings {
        guard let (data, _) = try StateFile.read(paths.settings, maximumBytes: maximumFileBytes) else {
            throw FederationError.state(path: paths.settings.path,
                                        "missing: not an initialised client state directory (run 'conclave-client init')")
        }
        let settings = try StateFile.decode(ClientSettings.self, from: data, path: paths.settings.path)
        do { try ClientID.validate(id: settings.name) } catch let FederationError.client(_, reason) {
            throw FederationError.configuration(path: paths.settings.path, field: "name", reason)
        }
        return settings
    }
}

/// Creating a client's identity.
public enum ClientSetup {
    /// The client's secure-aggregation signing key, made (0600) if the state directory predates it.
    public static func signingKey(paths: ClientPaths) throws -> SigningKeyPair {
        if !FileManager.default.fileExists(atPath: paths.signingKey.path) {
            try SigningKeyPair().writeSecretKeyFile(path: paths.signingKey.path)
        }
        return try SigningKeyPair.readSecretKeyFile(path: paths.signingKey.path)
    }

    /// Creates a client state directory (0700) with a fresh Ed25519 key (`client.key`, 0600), a
    /// certificate signing request for `name` (`client.csr`, to send to the coordinator's operator),
    /// a second Ed25519 key that signs its secure-aggregation advertisements (`signing.key`, 0600),
    /// and `client.json`. The keys never leave the directory.
    /// - Returns: the certificate signing request (PEM).
    /// - Throws: `FederationError.client` for a bad id; `.state` naming `client.key` if it already exists.
    @discardableResult
    public static func initialize(paths: ClientPaths, name: String) throws -> String {
        try ClientID.validate(id: name)
        var status = stat()
        if lstat(paths.key.path, &status) == 0 {
            throw FederationError.state(path: paths.key.path,
                                        "already exists: this directory already holds a client key (refusing to replace it)")
        }
        let (key, request) = try CertificateAuthority.makeKeyAndCSR(commonName: name)
        try createPrivateDirectory(paths.root)
        try PEMFile.writePrivateKey(key, to: paths.key.path)
        try PEMFile.writePublic(request, to: paths.request.path)
        try SigningKeyPair().writeSecretKeyFile(path: paths.signingKey.path)
        try StateFile.write(ClientSettings(name: name), to: paths.settings)
        return request
    }
}
