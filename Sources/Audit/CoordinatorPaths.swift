import Foundation
import SecureCrypto
import SystemIO
import Wire

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
    /// Client-level plans: the federation's accountant over client participations, every round charged before its
    /// sample (JSON, `ClientLevelDP.FederationAccountant`), written durably before the round's invitations.
    public var clientLevelAccountant: URL { file("client-level-accountant.json") }
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


