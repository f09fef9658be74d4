import ClientService
import CommandLineParsing
import FederationProtocol
import Foundation
import SystemIO
import Wire

/// `init`: the client's identity, a key that stays here and a certificate request for the coordinator.
struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "init", abstract: "Create this client's key and a certificate request to send to the coordinator.",
        help: """
        usage: conclave-client init --state DIR --name ID [--json]

          --state DIR   the client's state directory, created 0700 (also holds its privacy ledger)
          --name ID     the client id: 1 to 64 of A-Z a-z 0-9 . _ - (not starting with '.' or '-')
          --json        print {"client_id", "state", "key", "signing_key", "request", "settings"}
        Writes client.key (0600, never leaves this machine), signing.key (0600, Ed25519, signs the
        client's secure-aggregation keys; the coordinator pins its public half at the first
        connection), client.csr and client.json; refuses a
        directory that already holds a key. Send client.csr to the coordinator's operator, who runs
        'conclave-coordinator enroll' and gives back a certificate and the federation's CA.

        examples:
          conclave-client init --state me --name clinic-berlin   # then send me/client.csr
        """)

    static var options: [Option<Self>] {
        [.required("--state", \.statePath), .required("--name", \.name), .flag("--json", \.json)]
    }

    var statePath = ""
    var name = ""
    var json = false

    func validate() throws {
        try PathCheck.outputDirectory("--state", statePath, expected: "the client's state directory, created when missing")
    }

    func run() throws -> Int32 {
        let paths = ClientPaths(path: statePath)
        try ClientSetup.initialize(paths: paths, name: name)
        if json {
            try JSONOutput.print(["client_id": name, "state": paths.root.path, "key": paths.key.path,
                                  "signing_key": paths.signingKey.path, "request": paths.request.path, "settings": paths.settings.path])
        } else {
            print("created client '\(name)' in \(paths.root.path)")
            print("  key (stays here)   \(paths.key.path)")
            print("  signing key        \(paths.signingKey.path)")
            print("Send \(paths.request.path) to the coordinator's operator for 'conclave-coordinator enroll'.")
        }
        return 0
    }
}
