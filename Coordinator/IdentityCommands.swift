import Audit
import CommandLineParsing
import CoordinatorService
import Foundation
import SystemIO
import Transport
import Wire

/// `init`: a new federation, its certificate authority, server certificate and audit signing key.
struct InitCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "init", abstract: "Create a federation: its CA, the server certificate and the audit signing key.",
        help: """
        usage: conclave-coordinator init --state DIR --name N --host H [--port P] [--days D] [--ca-key F] [--json]

          --state DIR   the coordinator's state directory, created 0700; refused if already initialised
          --name N      the federation's name (the CA certificate's common name, 1 to 64 bytes)
          --host H      the DNS name or IP address clients connect to (put in the server certificate)
          --port P      the port 'serve' listens on (default \(CoordinatorSettings.defaultPort))
          --days D      validity of the CA and server certificates in days (default \(CoordinatorSetup.defaultValidityDays))
          --ca-key F    write the CA's private key to F (0600, must not exist) instead of DIR/ca.key: 'serve'
                        never reads it, so keep it off the machine that serves and give it to 'enroll --ca-key'
          --json        print {"state", "name", "host", "port", "ca_certificate", "ca_fingerprint", "ca_key",
                        "server_certificate", "server_fingerprint", "signing_public_key"}
        Writes ca.pem, ca.key (0600), server.pem, server.key (0600), signing.key (0600), signing.pub,
        coordinator.json and an empty clients.json. Give ca.pem to every client.

        examples:
          conclave-coordinator init --state coord --name clinics --host coordinator.example.org --port 7443
          conclave-coordinator init --state coord --name clinics --host coordinator.example.org --ca-key /mnt/ca/ca.key
        """)

    static var options: [Option<Self>] {
        [
            .required("--state", \.statePath), .required("--name", \.name), .required("--host", \.host),
            .option("--port", .int(in: 1...65_535), \.port), .option("--days", .int(in: 1...10_000), \.days),
            .option("--ca-key", \.caKeyPath), .flag("--json", \.json),
        ]
    }

    var statePath = ""
    var name = ""
    var host = ""
    var port = CoordinatorSettings.defaultPort
    var days = CoordinatorSetup.defaultValidityDays
    var caKeyPath: String?
    var json = false

    func validate() throws {
        try PathCheck.outputDirectory("--state", statePath, expected: "the coordinator's state directory, created when missing")
        if let caKeyPath {
            try PathCheck.outputFile("--ca-key", caKeyPath, expected: "a new file for the CA's private key", replacing: false)
        }
    }

    func run() throws -> Int32 {
        let paths = CoordinatorPaths(path: statePath)
        let caKey = caKeyPath.map { URL(fileURLWithPath: $0) }
        let identity = try CoordinatorSetup.initialize(paths: paths, name: name, host: host, port: port, validityDays: days,
                                                       caKeyOutput: caKey)
        if json {
            try JSONOutput.print([
                "state": paths.root.path, "name": identity.settings.name, "host": identity.settings.host,
                "port": identity.settings.port, "ca_certificate": paths.caCertificate.path,
                "ca_key": (caKey ?? paths.caKey).path,
                "ca_fingerprint": identity.caFingerprint, "server_certificate": paths.serverCertificate.path,
                "server_fingerprint": identity.serverFingerprint, "signing_public_key": identity.signingPublicKey,
            ])
        } else {
            print("initialised federation '\(identity.settings.name)' in \(paths.root.path)")
            print("  server        \(identity.settings.host):\(identity.settings.port)")
            print("  CA            \(paths.caCertificate.path) (sha256 \(identity.caFingerprint))")
            print("  CA key        \((caKey ?? paths.caKey).path)")
            print("  audit key     \(paths.signingPublicKey.path) (\(identity.signingPublicKey))")
            print("Give \(paths.caCertificate.path) to each client; enrol them with 'conclave-coordinator enroll'.")
        }
        return 0
    }
}

/// `enroll`: a client admitted by signing its certificate request.
struct EnrollCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "enroll", abstract: "Sign a client's certificate request and admit the client.",
        help: """
        usage: conclave-coordinator enroll --state DIR --csr F --out CERT [--days D] [--ca-key F] [--json]

          --state DIR   the coordinator's state directory (made by 'init')
          --csr F       the client's certificate signing request (client.csr from 'conclave-client init');
                        its common name becomes the client id, which must not already be active
          --out CERT    where the signed client certificate is written
          --days D      validity of the client certificate in days (default \(CoordinatorSetup.defaultClientValidityDays))
          --ca-key F    the CA's private key (default DIR/ca.key; where 'init --ca-key' wrote it)
          --json        print {"client_id", "fingerprint", "serial", "not_after", "certificate", "ca_certificate"}
        Give the client CERT and the CA certificate DIR/ca.pem; its key never leaves its machine.

        examples:
          conclave-coordinator enroll --state coord --csr client.csr --out clinic-berlin.pem
          conclave-coordinator enroll --state coord --csr client.csr --out clinic-berlin.pem --days 90 --json
          conclave-coordinator enroll --state coord --csr client.csr --out clinic-berlin.pem --ca-key /mnt/ca/ca.key
        """)

    static var options: [Option<Self>] {
        [
            .required("--state", \.statePath), .required("--csr", \.csrPath), .required("--out", \.outPath),
            .option("--days", .int(in: 1...10_000), \.days), .option("--ca-key", \.caKeyPath), .flag("--json", \.json),
        ]
    }

    var statePath = ""
    var csrPath = ""
    var outPath = ""
    var days = CoordinatorSetup.defaultClientValidityDays
    var caKeyPath: String?
    var json = false

    func validate() throws {
        try CoordinatorCommands.checkState(statePath)
        try PathCheck.inputFile("--csr", csrPath, expected: "the client's certificate request (client.csr from 'conclave-client init')")
        try PathCheck.outputFile("--out", outPath, expected: "the client certificate (PEM) to write")
        if let caKeyPath {
            try PathCheck.inputFile("--ca-key", caKeyPath, expected: "the CA's private key (written by 'init --ca-key')")
        }
    }

    func run() throws -> Int32 {
        let paths = CoordinatorPaths(path: statePath)
        let request = try PEMFile.readRequest(at: csrPath)
        let enrolment = try CoordinatorSetup.enroll(paths: paths, csrPEM: request, validityDays: days,
                                                    certificateOutput: URL(fileURLWithPath: outPath),
                                                    caKey: caKeyPath.map { URL(fileURLWithPath: $0) })
        let notAfter = ISO8601DateFormatter().string(from: enrolment.notAfter)
        if json {
            try JSONOutput.print([
                "client_id": enrolment.id, "fingerprint": enrolment.fingerprint, "serial": enrolment.serial,
                "not_after": notAfter, "certificate": outPath, "ca_certificate": paths.caCertificate.path,
            ])
        } else {
            print("enrolled client '\(enrolment.id)' (serial \(enrolment.serial), valid until \(notAfter))")
            print("  certificate sha256 \(enrolment.fingerprint)")
            print("Give the client these files:")
            print("  \(outPath)")
            print("  \(paths.caCertificate.path)")
        }
        return 0
    }
}

/// `revoke`: a client refused from its next handshake.
struct RevokeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "revoke", abstract: "Revoke a client: a running server refuses it from its next handshake.",
        help: """
        usage: conclave-coordinator revoke --state DIR --client ID [--json]

          --state DIR   the coordinator's state directory
          --client ID   the client id to revoke (as listed by 'clients')
          --json        print {"client_id", "fingerprint", "serial", "revoked"}
        The id can be enrolled again later with a new certificate request.

        examples:
          conclave-coordinator revoke --state coord --client clinic-berlin
        """)

    static var options: [Option<Self>] {
        [.required("--state", \.statePath), .required("--client", \.id), .flag("--json", \.json)]
    }

    var statePath = ""
    var id = ""
    var json = false

    func validate() throws { try CoordinatorCommands.checkState(statePath) }

    func run() throws -> Int32 {
        let revoked = try CoordinatorSetup.revoke(paths: CoordinatorPaths(path: statePath), id: id)
        let date = revoked.revoked.map { ISO8601DateFormatter().string(from: $0) } ?? ""
        if json {
            try JSONOutput.print(["client_id": revoked.id, "fingerprint": revoked.fingerprint, "serial": revoked.serial,
                                  "revoked": date])
        } else {
            print("revoked client '\(revoked.id)' (serial \(revoked.serial), sha256 \(revoked.fingerprint)) at \(date)")
        }
        return 0
    }
}

/// `clients`: every certificate issued, with live connections when the coordinator runs.
struct ClientsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "clients", abstract: "List enrolled clients, their certificates and, when the coordinator runs, their connections.",
        help: """
        usage: conclave-coordinator clients --state DIR [--json]

          --state DIR   the coordinator's state directory
          --json        print {"running", "clients": [{"id", "status", "serial", "fingerprint", "enrolled",
                        "not_after", "revoked", "connected", "address", "connected_since"}]}; status is active,
                        revoked or expired; the connection fields appear when the coordinator is running
        Asks a running coordinator through its control socket (DIR/control.sock); when none runs, reads
        clients.json. Every certificate ever issued is listed, newest last.

        examples:
          conclave-coordinator clients --state coord
          conclave-coordinator clients --state coord --json
        """)

    static var options: [Option<Self>] {
        [.required("--state", \.statePath), .flag("--json", \.json)]
    }

    var statePath = ""
    var json = false

    func validate() throws { try CoordinatorCommands.checkState(statePath) }

    func run() throws -> Int32 {
        let paths = CoordinatorPaths(path: statePath)
        _ = try CoordinatorSettings.load(paths: paths)
        let registry = try ClientRegistry(paths: paths)
        // The live view when a coordinator is running; the registry alone otherwise.
        let live = try? CoordinatorControl(paths: paths).clients(timeout: 5)
        if json {
            try JSONOutput.print(["running": live != nil, "clients": try JSONOutput.value(encoding: live ?? registry.listing())])
            return 0
        }
        print(registry.table())
        if let live {
            let connected = live.filter { $0.connected == true }
            print("")
            print("connected now (\(connected.count)): " + connected.map { "\($0.id) from \($0.address ?? "?")" }.joined(separator: ", "))
        } else {
            print("")
            print("(no coordinator is running on this state directory: connections not shown)")
        }
        return 0
    }
}
