import Audit
import CommandLineParsing
import CoordinatorService
import Diagnostics
import Foundation

/// `doctor`: what on this machine would stop the coordinator, or will soon, and what to do about it.
struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "doctor", abstract: "Check this machine and state directory for what would stop the coordinator.",
        help: """
        usage: conclave-coordinator doctor --state DIR [--config F] [--json]

          --state DIR   the coordinator's state directory (made by 'conclave-coordinator init')
          --config F    the configuration 'serve' runs with: its model is checksummed and its "listen"
                        address is the one whose port is tried (default: the host 'init' was given)
          --json        print {"ok", "worst", "checks": [{"name", "status", "detail"}]}

        One line per check, each OK, WARN or FAIL with what to fix: the CPU's kernel tier; the model's
        SHA-256 (compared with the published one for SmolLM2-135M-Instruct.Q4_1.gguf); the CA and server
        certificates' validity and days left (WARN under 30); the clock against the server
        certificate's notBefore; that server.key is server.pem's key and ca.pem issued it; and that
        the coordinator's port can be listened on (it cannot while 'serve' runs). Exits 1 when a check
        fails, 0 otherwise. Nothing is changed.

        examples:
          conclave-coordinator doctor --state coord --config Config/coordinator.json
          conclave-coordinator doctor --state coord --json
        """)

    static var options: [Option<Self>] {
        [.required("--state", \.state), .option("--config", \.configPath), .flag("--json", \.json)]
    }

    var state = ""
    var configPath: String?
    var json = false

    func validate() throws {
        try CoordinatorCommands.checkState(state)
        if let configPath {
            try PathCheck.inputFile("--config", configPath, expected: "the coordinator's JSON configuration (see Config/)")
        }
    }

    func run() throws -> Int32 {
        let paths = CoordinatorPaths(path: state)
        let configuration = try configPath.map { try CoordinatorConfiguration.load(URL(fileURLWithPath: $0)) }
        let settings = try CoordinatorSettings.load(paths: paths)
        let renew = "issue new certificates with 'conclave-coordinator init' in a new state directory and enrol the clients again"
        var checks = [Doctor.kernelTier()]
        if let configuration {
            checks.append(Doctor.model(path: configuration.model))
        } else {
            checks.append(HealthCheck("model", .warn, "not checked: give --config F to checksum the model 'serve' loads"))
        }
        checks += Doctor.certificate("ca certificate", path: paths.caCertificate.path, renew: renew).filter { $0.name != "clock" }
        checks += Doctor.certificate("server certificate", path: paths.serverCertificate.path, renew: renew)
        checks.append(Doctor.identity("server identity", keyPath: paths.serverKey.path, certificatePath: paths.serverCertificate.path,
                                      caPath: paths.caCertificate.path,
                                      fix: "the state directory's files do not belong together; restore them from the same 'init'"))
        checks.append(Doctor.portBindable(host: configuration?.listen ?? settings.host, port: UInt16(clamping: settings.port)))
        let report = HealthReport(checks)
        if json {
            try JSONOutput.print(report.json)
        } else {
            try StandardOutput.write(Data(report.text.utf8))
        }
        return report.worst == .fail ? 1 : 0
    }
}
