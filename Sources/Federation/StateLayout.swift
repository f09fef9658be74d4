import Foundation

/// Where a coordinator keeps its state. The directory is created 0700; every file holding a key is
/// 0600. Everything durable is written atomically (temporary file, fsync, rename, fsync directory).
public struct CoordinatorPaths: Sendable {
    /// The state directory itself.
    public let root: URL

    public init(root: URL) { self.root = root }
    public init(path: String) { self.root = URL(fileURLWithPath: path) }

    /// The federation's CA certificate (PEM, public).
    public var caCertificate: URL { file("ca.pem") }
    /// The CA's private key (PEM, 0600).
    public var caKey: URL { file("ca.key") }
    /// The coordinator's TLS server certificate (PEM), signed by the CA for its host name or address.
    public var serverCertificate: URL { file("server.pem") }
    /// The server certificate's private key (PEM, 0600).
    public var serverKey: URL { file("server.key") }
    /// The coordinator's Ed25519 key that signs audit records (SecureCrypto key file, 0600).
    public var signingKey: URL { file("signing.key") }
    /// The audit signing key's public half: 64 lower-case hex digits and a newline (0644), for
    /// anyone who verifies the audit log.
    public var signingPublicKey: URL { file("signing.pub") }
    /// The coordinator's settings: name, host, port, next certificate serial (JSON).
    public var settings: URL { file("coordinator.json") }
    /// Enrolled clients: id, certificate fingerprint, status (JSON, `ClientRegistry`).
    public var clients: URL { file("clients.json") }
    /// The append-only, hash-chained, signed audit log (JSON lines, `AuditLog`).
    public var auditLog: URL { file("audit.jsonl") }
    /// The round in flight, written before its invitations go out and removed when it ends (JSON).
    public var roundInFlight: URL { file("round-in-flight.json") }
    /// The server optimiser's state between rounds (FedAdam moments, safetensors).
    public var optimizerState: URL { file("optimizer.safetensors") }
    /// Global adapters, one PEFT directory per committed round.
    public var adapters: URL { file("adapters") }
    /// The Unix socket through which `rounds start`, `status` and `clients` reach a running `serve`.
    public var controlSocket: URL { file("control.sock") }
    /// The running server's log lines (appended by `serve`).
    public var serverLog: URL { file("serve.log") }

    /// The PEFT directory of the global adapter committed by `round` (round 0 is the initial one).
    public func adapter(round: UInt64) -> URL {
        adapters.appendingPathComponent(String(format: "round-%06llu", round))
    }

    private func file(_ name: String) -> URL { root.appendingPathComponent(name) }
}

/// Where a client keeps its state: its key and certificate, the federation's CA, its privacy ledger
/// (`PrivacyLedger` files live directly in this directory), and the latest global adapter.
public struct ClientPaths: Sendable {
    public let root: URL

    public init(root: URL) { self.root = root }
    public init(path: String) { self.root = URL(fileURLWithPath: path) }

    /// The client's TLS private key (PEM, 0600). It never leaves this directory.
    public var key: URL { file("client.key") }
    /// The client's Ed25519 key (0600): signs its per-round secure-aggregation keys; the coordinator
    /// pins its public half at the first hello.
    public var signingKey: URL { file("signing.key") }
    /// The certificate signing request `init` writes, for the coordinator's operator to sign.
    public var request: URL { file("client.csr") }
    /// The client's settings: its name (JSON).
    public var settings: URL { file("client.json") }
    /// The latest global adapter received from the coordinator (PEFT directory).
    public var globalAdapter: URL { file("global-adapter") }
    /// The adapter trained locally in the latest round (PEFT directory), before aggregation.
    public var localAdapter: URL { file("local-adapter") }

    private func file(_ name: String) -> URL { root.appendingPathComponent(name) }
}

/// Creates `url` as a directory readable only by its owner (0700), or checks an existing one.
public func createPrivateDirectory(_ url: URL) throws {
    var isDirectory: ObjCBool = false
    if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) {
        guard isDirectory.boolValue else { throw FederationError.state(path: url.path, "exists and is not a directory") }
        chmod(url.path, 0o700)
        return
    }
    do {
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
    } catch {
        throw FederationError.state(path: url.path, "cannot create directory: \(error.localizedDescription)")
    }
}
