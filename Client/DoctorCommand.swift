import ClientService
import CommandLineParsing
import Diagnostics
import Foundation

/// `doctor`: what on this machine would stop `join`, or will soon, and what to do about it.
struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "doctor", abstract: "Check this machine and state directory for what would stop 'join'.",
        help: """
        usage: conclave-client doctor --state DIR [--config F] [--cert CERT.pem] [--ca CA.pem]
                                      [--coordinator HOST:PORT] [--json]

          --state DIR              the client's state directory (from 'conclave-client init'): its key
          --config F               the configuration 'join' runs with: its model is checksummed
          --cert CERT.pem          this client's certificate (default: DIR/client.pem when it is there)
          --ca CA.pem              the federation's CA certificate (default: DIR/ca.pem when it is there)
          --coordinator HOST:PORT  the coordinator 'join' connects to: tried with a TCP connection
          --json                   print {"ok", "worst", "checks": [{"name", "status", "detail"}]}

        One line per check, each OK, WARN or FAIL with what to fix: the CPU's kernel tier; the model's
        SHA-256 (compared with the published one for SmolLM2-135M-Instruct.Q4_1.gguf); the certificate's
        validity and days left (WARN under 30); the clock against its notBefore; that DIR/client.key is
        the certificate's key and the CA issued it; and that the coordinator's port answers. What is not
        given is a WARN saying so. Exits 1 when a check fails, 0 otherwise. Nothing is changed, and
        nothing but a TCP connection (no TLS, no message) reaches the coordinator.

        examples:
          conclave-client doctor --state me --config Config/client.json --cert me.pem --ca ca.pem \\
              --coordinator coordinator.example.org:7443
          conclave-client doctor --state me --json
        """)

    static var options: [Option<Self>] {
        [
            .required("--state", \.state), .option("--config", \.configPath), .option("--cert", \.cert), .option("--ca", \.ca),
            .option("--coordinator", \.coordinator), .flag("--json", \.json),
        ]
    }

    var state = ""
    var configPath: String?
    var cert: String?
    var ca: String?
    var coordinator: String?
    var json = false

    func validate() throws {
        try PathCheck.inputDirectory("--state", state, expected: "the client's state directory",
                                     fix: "Create it with 'conclave-client init --state DIR --name ID'.")
        if let configPath { try PathCheck.inputFile("--config", configPath, expected: "the client's JSON configuration (see Config/)") }
        if let cert { try PathCheck.inputFile("--cert", cert, expected: "this client's certificate (PEM) from 'conclave-coordinator enroll'") }
        if let ca { try PathCheck.inputFile("--ca", ca, expected: "the federation's CA certificate (PEM), ca.pem from the coordinator") }
        if let coordinator { _ = try CoordinatorAddress.parse(coordinator) }
    }

    func run() throws -> Int32 {
        let paths = ClientPaths(path: state)
        var checks = [Doctor.kernelTier()]
        if let configPath {
            checks.append(Doctor.model(path: try ClientConfiguration.load(URL(fileURLWithPath: configPath)).model))
        } else {
            checks.append(HealthCheck("model", .warn, "not checked: give --config F to checksum the model 'join' loads"))
        }
        checks += identityChecks(paths)
        if let coordinator {
            let (host, port) = try CoordinatorAddress.parse(coordinator)
            checks.append(Doctor.portReachable(host: host, port: port))
        } else {
            checks.append(HealthCheck("coordinator", .warn, "not checked: give --coordinator HOST:PORT to try reaching it"))
        }
        let report = HealthReport(checks)
        if json {
            try JSONOutput.print(report.json)
        } else {
            try StandardOutput.write(Data(report.text.utf8))
        }
        return report.worst == .fail ? 1 : 0
    }

    /// The certificate's validity and the clock, then key, certificate and CA against each other.
    private func identityChecks(_ paths: ClientPaths) -> [HealthCheck] {
        let fallback = { (name: String) in
            FileManager.default.fileExists(atPath: paths.root.appendingPathComponent(name).path)
                ? paths.root.appendingPathComponent(name).path : nil
        }
        guard let certificate = cert ?? fallback("client.pem") else {
            return [HealthCheck("client certificate", .warn, "not checked: give --cert CERT.pem (from 'conclave-coordinator enroll')")]
        }
        let renew = "ask the coordinator's operator to enrol this client again ('conclave-coordinator enroll' of DIR/client.csr)"
        var checks = Doctor.certificate("client certificate", path: certificate, renew: renew)
        guard let caPath = ca ?? fallback("ca.pem") else {
            return checks + [HealthCheck("client identity", .warn, "not checked against a CA: give --ca CA.pem")]
        }
        checks.append(Doctor.identity("client identity", keyPath: paths.key.path, certificatePath: certificate, caPath: caPath,
                                      fix: "give --cert the certificate 'enroll' issued for this state directory's client.csr, "
                                      + "and --ca the ca.pem of the federation that enrolled it"))
        return checks
    }
}
