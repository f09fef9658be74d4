import FederationProtocol
import Foundation
import SystemIO
import Wire

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

    /// The latest signed head of the coordinator's audit log this client received (`ClientAuditHead`),
    /// for `conclave-coordinator audit --verify --head FILE`.
    public var auditHead: URL { file("audit-head.json") }

    private func file(_ name: String) -> URL { root.appendingPathComponent(name) }
}
