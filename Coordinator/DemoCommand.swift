import Audit
import CommandLineParsing
import CoordinatorService
import Foundation
import SystemIO
import Transport
import Wire

/// `demo`: a whole federation on this machine, with real processes over real TLS.
struct DemoCommand: ParsableCommand {
    static let specialties = ["cardiology", "dermatology", "pediatrics", "psychiatry", "orthopedics", "endocrinology"]

    static let configuration = CommandConfiguration(
        name: "demo", abstract: "Run a federation on this machine: a coordinator and N client processes over mutual TLS.",
        help: """
        usage: conclave-coordinator demo [--clients N] [--rounds R] [--model M] [--records K] [--dir DIR]
                                         [--aggregation fedavg|fedadam] [--secure-aggregation on|off]
                                         [--canaries N] [--json]

          --clients N     client processes (default 3), each with synthetic clinic notes of its own specialty
          --rounds R      rounds to run (default 3)
          --model M       the base model (default models/SmolLM2-135M-Instruct.Q4_1.gguf)
          --records K     synthetic notes per client, a tenth held out (default 120)
          --dir DIR       where the federation is built (default: a new folder under the temporary directory);
                          it is kept so that 'audit' and 'report' can be pointed at DIR/coordinator
          --aggregation A fedavg (default) or fedadam
          --secure-aggregation on|off
                          mask every update so the coordinator learns only the round's sum (default on;
                          needs at least 2 clients)
          --canaries N    plant N secret canaries (3 digits, each 4 times) in the first client's notes; it
                          reports their exposure on the global adapter every round, scored exactly over
                          all 1000 secrets (default 5, about 3 s a round on the default model; 0: none)
          --json          print {"rounds": [{"round", "participants", "eval_loss_before", "eval_loss_after",
                          "max_epsilon", "seconds", "canary_exposure"?: {"client", "mean_bits", "max_bits",
                          "space_size"}}], "audit_verified", "adapter", "state"}

        Every step is the real thing: a CA and enrolment by CSR, 'conclave-coordinator serve', and one
        'conclave-client join' per client training with DP-SGD and charging its own ledger. The logs are
        in DIR (serve.log, client-*/join.log).

        examples:
          conclave-coordinator demo
          conclave-coordinator demo --clients 2 --rounds 1 --records 40 --canaries 0 --dir out/demo --json
        """)

    static var options: [Option<Self>] {
        [
            .option("--clients", .int(in: 1...64), \.clients), .option("--rounds", .int(in: 1...1000), \.rounds),
            .option("--model", .string, \.model), .option("--records", .int(in: 20...100_000), \.records),
            .option("--dir", \.directory), .option("--aggregation", .oneOf(["fedavg", "fedadam"]), \.aggregation),
            .option("--secure-aggregation", .onOff, \.secureAggregation),
            .option("--canaries", .int(in: 0...Demo.maximumCanaries), \.canaries), .flag("--json", \.json),
        ]
    }

    var clients = 3
    var rounds = 3
    var model = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    var records = 120
    var directory: String?
    var aggregation = "fedavg"
    var secureAggregation = true
    var canaries = Demo.defaultCanaries
    var json = false

    func validate() throws {
        if secureAggregation && clients < 2 {
            throw UsageError("--secure-aggregation on needs at least 2 clients (got --clients \(clients)); use --secure-aggregation off")
        }
        guard FileManager.default.fileExists(atPath: model) else {
            throw UsageError("--model: no model at '\(model)' (run 'make model' to fetch the default)")
        }
        try PathCheck.model("--model", model)
    }

    func run() throws -> Int32 {
        let demo = try Demo(clients: clients, rounds: rounds, model: URL(fileURLWithPath: model).standardizedFileURL.path,
                            records: records, directory: directory, aggregation: aggregation,
                            secureAggregation: secureAggregation, canaries: canaries, quiet: json)
        return try demo.run(json: json)
    }
}

/// The demo's steps, each a real command.
final class Demo {
    let clients: Int
    let rounds: Int
    let model: String
    let records: Int
    let root: URL
    let aggregation: String
    /// Whether rounds mask updates (secure aggregation).
    let secureAggregation: Bool
    /// Secret canaries planted in the first client's data (0: none).
    let canaries: Int
    /// The demo's canaries: 3-digit secrets (|R| = 1000, scored exactly), each planted 4 times.
    static let canaryDigits = 3
    static let canaryRepetitions = 4
    /// Half of the 1000 secrets: more would leave too few other candidates to rank against.
    static let maximumCanaries = 500
    /// On by default: exact exposure over 1000 secrets costs about 3 s a round on SmolLM2-135M (one thread).
    static let defaultCanaries = 5
    let quiet: Bool
    let coordinatorBinary: URL
    let clientBinary: URL
    var coordinatorState: URL { root.appendingPathComponent("coordinator") }
    private var processes: [Process] = []

    init(clients: Int, rounds: Int, model: String, records: Int, directory: String?, aggregation: String,
         secureAggregation: Bool, canaries: Int = 0, quiet: Bool) throws {
        self.secureAggregation = secureAggregation
        self.canaries = canaries
        self.clients = clients
        self.rounds = rounds
        self.model = model
        self.records = records
        self.aggregation = aggregation
        self.quiet = quiet
        if let directory {
            root = URL(fileURLWithPath: directory).standardizedFileURL
            if FileManager.default.fileExists(atPath: root.path),
               !(try FileManager.default.contentsOfDirectory(atPath: root.path)).isEmpty {
                throw UsageError("--dir: '\(directory)' exists and is not empty")
            }
            try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        } else {
            var template = Array((NSTemporaryDirectory() + "/conclave-demo-XXXXXX").utf8CString)
            guard let made = mkdtemp(&template) else { throw UsageError("cannot create a temporary directory") }
            root = URL(fileURLWithPath: String(cString: made))
        }
        let me = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        coordinatorBinary = me
        clientBinary = me.deletingLastPathComponent().appendingPathComponent("conclave-client")
        guard FileManager.default.isExecutableFile(atPath: clientBinary.path) else {
            throw UsageError("conclave-client is not beside this executable (\(clientBinary.path))")
        }
    }

    private func say(_ line: String) {
        // Written straight to the descriptor, so each line shows at once even through a pipe.
        if !quiet { try? StandardOutput.write(Data((line + "\n").utf8)) } else { StandardError.write(line + "\n") }
    }

    /// Runs a command to completion; its output is returned, a failure throws with its stderr.
    @discardableResult
    private func run(_ binary: URL, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        nonisolated(unsafe) var errData = Data()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async {
            errData = err.fileHandleForReading.readDataToEndOfFile()
            group.leave()
        }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw UsageError("\(binary.lastPathComponent) \(arguments.joined(separator: " ")) failed "
                             + "(exit \(process.terminationStatus)): \(String(decoding: errData, as: UTF8.self))")
        }
        return String(decoding: outData, as: UTF8.self)
    }

    /// Starts a long-running command with its standard error in `log`.
    private func spawn(_ binary: URL, _ arguments: [String], log: URL) throws -> Process {
        guard FileManager.default.createFile(atPath: log.path, contents: nil) else {
            throw UsageError("cannot create the log file \(log.path)")
        }
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = try FileHandle(forWritingTo: log)
        try process.run()
        processes.append(process)
        return process
    }


    func run(json: Bool) throws -> Int32 {
        defer { stopAll() }
        let start = Date()
        let state = coordinatorState.path
        let port = try freeLoopbackPort()
        say("Conclave demo: \(clients) clients, \(rounds) rounds, model \(URL(fileURLWithPath: model).lastPathComponent)")
        say("federation in \(root.path)")
        try run(coordinatorBinary, ["init", "--state", state, "--name", "demo", "--host", "127.0.0.1", "--port", "\(port)"])
        say("  coordinator initialised: CA, server certificate for 127.0.0.1:\(port), audit signing key")

        // Each client: its own key (never leaves its directory), a CSR, a certificate, private notes.
        let training = "Private notes never leave the client's folder."
        var clientNames: [String] = []
        for index in 0..<clients {
            let specialty = DemoCommand.specialties[index % DemoCommand.specialties.count]
            let name = "clinic-\(index + 1)-\(specialty)"
            clientNames.append(name)
            let directory = root.appendingPathComponent("client-\(index + 1)")
            try run(clientBinary, ["init", "--state", directory.path, "--name", name])
            try run(coordinatorBinary, ["enroll", "--state", state, "--csr", directory.appendingPathComponent("client.csr").path,
                                        "--out", directory.appendingPathComponent("client.pem").path])
            let notes = directory.appendingPathComponent("notes.jsonl")
            try run(clientBinary, ["synth", "--kind", "clinic-notes", "--specialty", specialty, "--records", "\(records)",
                                   "--seed", "\(index + 1)", "--out", notes.path, "--held-out", "0.05"])
            var config: [String: Any] = [
                "model": model, "data": notes.path,
                "eval_data": directory.appendingPathComponent("notes.heldout.jsonl").path, "threads": 1,
                "policy": ["max_epsilon": 10.0, "delta": 1e-5, "max_steps_per_round": 100, "require_privacy": true],
            ]
            if index == 0, canaries > 0 {
                config["canaries"] = ["count": canaries, "digits": Demo.canaryDigits, "repetitions": Demo.canaryRepetitions]
            }
            try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
                .write(to: directory.appendingPathComponent("config.json"))
            say("  \(name): key and CSR made locally, certificate signed, \(records) synthetic \(specialty) notes"
                + (index == 0 && canaries > 0 ? " and \(canaries) secret canaries × \(Demo.canaryRepetitions)" : ""))
        }
        _ = training

        // The plan: DP-SGD at q = 0.05 with σ chosen so that the demo's rounds fit in each client's ε budget.
        let plan: [String: Any] = [
            "steps": 4, "learning_rate": 0.01, "sampling_rate": 0.06, "noise_multiplier": 0.7, "clip_norm": 1.0,
            "delta": 1e-5, "max_length": 512, "rank": 8, "alpha": 16, "targets": ["q_proj", "v_proj"],
        ]
        let configuration: [String: Any] = [
            "model": model, "listen": "127.0.0.1",
            "rounds": ["min_clients": max(1, clients - 1), "max_clients": clients, "fraction": 1.0,
                       "aggregation": aggregation, "secure_aggregation": secureAggregation, "invite_timeout": 60,
                       "round_timeout": 900, "wait_for_clients": 120, "plan": plan],
        ]
        let configURL = root.appendingPathComponent("coordinator.json")
        try JSONSerialization.data(withJSONObject: configuration, options: [.prettyPrinted, .sortedKeys]).write(to: configURL)

        _ = try spawn(coordinatorBinary, ["serve", "--state", state, "--config", configURL.path],
                      log: root.appendingPathComponent("serve.stderr.log"))
        let paths = CoordinatorPaths(path: state)
        let deadline = Date().addingTimeInterval(60)
        while (try? ControlRequest.send(paths, ["command": "status"], timeout: 2)) == nil {
            guard Date() < deadline else { throw UsageError("the coordinator did not start; see \(root.path)/serve.stderr.log") }
            Thread.sleep(forTimeInterval: 0.2)
        }
        say("  coordinator serving on 127.0.0.1:\(port); plan: DP-SGD q \(plan["sampling_rate"]!), σ \(plan["noise_multiplier"]!), "
            + "C \(plan["clip_norm"]!), \(plan["steps"]!) steps per round; secure aggregation \(secureAggregation ? "on" : "off"); "
            + "each client's budget ε 10 at δ 1e-5")
        for index in 0..<clients {
            let directory = root.appendingPathComponent("client-\(index + 1)")
            _ = try spawn(clientBinary, ["join", "--state", directory.path, "--coordinator", "127.0.0.1:\(port)",
                                         "--ca", paths.caCertificate.path,
                                         "--cert", directory.appendingPathComponent("client.pem").path,
                                         "--config", directory.appendingPathComponent("config.json").path],
                          log: directory.appendingPathComponent("join.log"))
        }
        // Wait until every client is connected, so that the first round invites them all.
        let connectDeadline = Date().addingTimeInterval(120)
        while ((try? ControlRequest.send(paths, ["command": "status"]))?["connected"] as? [String])?.count ?? 0 < clients {
            guard Date() < connectDeadline else { throw UsageError("clients did not connect; see \(root.path)/client-*/join.log") }
            Thread.sleep(forTimeInterval: 0.2)
        }
        say("  \(clients) clients connected over mutual TLS 1.3")
        say("")
        let response = try ControlRequest.send(paths, ["command": "start", "count": rounds])
        let first = (response["first_round"] as? NSNumber)?.uint64Value ?? 1
        let summaries = try ServeCommands.waitForRounds(paths, first: first, count: rounds, timeout: 3600, quiet: false,
                                                        report: { [self] line in say("  " + line) })

        let key = try AuditLog.verifyingKey(in: paths)
        let verification = try AuditLog.verify(url: paths.auditLog, publicKey: key)
        let status = try ControlRequest.send(paths, ["command": "status"])
        let adapter = status["adapter"] as? String ?? ""
        // The canary client's exposure per round, as the audit records carry it.
        var exposures: [UInt64: (client: String, summary: CanaryExposureSummary)] = [:]
        for record in verification.records {
            if let client = record.clients.first(where: { $0.canaryExposure != nil }), let summary = client.canaryExposure {
                exposures[record.round] = (client.client, summary)
            }
        }
        if json {
            try JSONOutput.print([
                "rounds": summaries.map { summary -> [String: Any] in
                    var row = RoundSummary.json(summary)
                    row["status"] = summary.status
                    if let exposure = exposures[summary.round] {
                        row["canary_exposure"] = ["client": exposure.client, "mean_bits": exposure.summary.meanBits,
                                                  "max_bits": exposure.summary.maxBits, "space_size": exposure.summary.spaceSize]
                    }
                    return row
                },
                "audit_verified": verification.verified, "adapter": adapter, "state": state,
                "seconds": Date().timeIntervalSince(start),
            ])
        } else {
            print("round  status     clients  held-out loss before → after   max ε   seconds")
            for s in summaries {
                print(String(format: "%5llu  %@  %7d  %@ → %@   %@  %7.1f", s.round, s.status.padding(toLength: 9, withPad: " ", startingAt: 0),
                             s.participants, RoundSummary.format(s.evalLossBefore).leftPadded(20),
                             RoundSummary.format(s.evalLossAfter).leftPadded(7), RoundSummary.format(s.maxEpsilon, "%.2f").leftPadded(6),
                             s.seconds))
            }
            if !exposures.isEmpty {
                print("")
                print("canary exposure on the global adapter each round received (bits; chance ≈ 1.44, at most "
                      + String(format: "%.2f", log2(Double(exposures.values.first!.summary.spaceSize))) + ")")
                for round in exposures.keys.sorted() {
                    let (client, summary) = exposures[round]!
                    print(String(format: "%5llu  %@  mean %.2f  max %.2f  (%d canaries × %d, %@, %.1f s)", round, client,
                                 summary.meanBits, summary.maxBits, summary.canaries, summary.repetitions,
                                 summary.exact ? "exact" : "estimated", summary.seconds))
                }
            }
            print("")
            print("audit chain: " + (verification.verified ? "verified (\(verification.records.count) records, Ed25519-signed, BLAKE2b-chained)"
                                     : "FAILED at record \(verification.failure!.record): \(verification.failure!.reason)"))
            print("final global adapter (PEFT): \(adapter)")
            print("coordinator state: \(state)")
            print("  conclave-coordinator audit --state \(state)")
            print(String(format: "demo took %.0f s", Date().timeIntervalSince(start)))
        }
        return verification.verified && summaries.allSatisfy({ $0.status == "committed" }) ? 0 : 1
    }

    private func stopAll() {
        for process in processes.reversed() where process.isRunning {
            process.terminate()
        }
        for process in processes { process.waitUntilExit() }
    }
}

extension String {
    func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}
