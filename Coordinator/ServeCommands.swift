import Audit
import CommandLineParsing
import CoordinatorService
import Foundation
import SystemIO
import Transport
import Wire

/// `serve`: the coordinator itself, until SIGINT or SIGTERM.
struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "serve", abstract: "Run the coordinator: accept enrolled clients over mutual TLS and run rounds.",
        help: """
        usage: conclave-coordinator serve --state DIR --config F [--secure-aggregation on|off] [--events FILE|-]

          --state DIR    the coordinator's state directory (made by 'conclave-coordinator init')
          --config F     the configuration (JSON): {"model", "listen"?, "rounds": {"min_clients",
                         "max_clients", "fraction", "aggregation": "fedavg"|"fedadam", "secure_aggregation" (default true),
                         "invite_timeout", "round_timeout", "wait_for_clients", "plan": {"steps",
                         "learning_rate", "sampling_rate", "noise_multiplier", "clip_norm", "delta",
                         "max_length", "rank", "alpha", "targets"}, "update_clip"?, "weight_bound"?,
                         "neighbour_degree"?}, "server_learning_rate"?}; see Config/
          --secure-aggregation on|off
                         overrides the configuration's "secure_aggregation": with it on, clients mask their
                         updates (Bonawitz et al. 2017, SecAgg+ graph for large cohorts) and the coordinator
                         learns only the sum of each round's surviving updates
          --events FILE|-
                         also write one JSON object per round event, one a line, appended to FILE ('-':
                         standard output), for monitoring tools: {"time", "event", "round", ...} with event
                         round_started (cohort), invited, accepted, declined (reason, code), withdrew, dropped
                         (reason), uploaded (client), committed (participants, max_epsilon, losses,
                         adapter_sha256) or aborted (reason)

        Rounds start when an operator asks ('conclave-coordinator rounds start --state DIR --count N').
        The log goes to standard error and to DIR/serve.log. SIGINT or SIGTERM stops the server; a round
        in flight is then aborted cleanly at the next start and its clients are told.

        examples:
          conclave-coordinator serve --state coord --config Config/coordinator.json
          conclave-coordinator serve --state coord --config Config/coordinator.json --secure-aggregation off
          conclave-coordinator serve --state coord --config Config/coordinator.json --events coord-events.jsonl
        """)

    static var options: [Option<Self>] {
        [
            .required("--state", \.state), .required("--config", \.configPath),
            .option("--secure-aggregation", .onOff, \.secureAggregation), .option("--events", \.events),
        ]
    }

    var state = ""
    var configPath = ""
    /// Overrides the configuration's `secure_aggregation` when given.
    var secureAggregation: Bool?
    /// Where round events go, one JSON line each ("-": standard output).
    var events: String?

    func validate() throws {
        try CoordinatorCommands.checkState(state)
        try PathCheck.inputFile("--config", configPath, expected: "the coordinator's JSON configuration (see Config/)")
        if let events, events != "-" {
            try PathCheck.outputFile("--events", events, expected: "a file to append round events to (JSON lines)")
        }
    }

    func run() throws -> Int32 {
        let paths = CoordinatorPaths(path: state)
        var configuration = try CoordinatorConfiguration.load(URL(fileURLWithPath: configPath))
        if let secureAggregation { configuration.rounds.secureAggregation = secureAggregation }
        let log = OperatorLog(url: paths.serverLog)
        let server = try CoordinatorServer(paths: paths, configuration: configuration, log: log,
                                           events: try events.map { try EventLog(destination: $0) })
        // SIGINT and SIGTERM stop the server. They are blocked in every thread (the mask is inherited
        // by the threads the server starts) and taken by one thread in sigwait: on Linux a dispatch
        // signal source never sees a signal that is merely ignored.
        var blocked = sigset_t()
        sigemptyset(&blocked)
        sigaddset(&blocked, SIGINT)
        sigaddset(&blocked, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &blocked, nil)
        let stopSignals = blocked
        let waiter = Thread {
            var set = stopSignals
            var received: Int32 = 0
            sigwait(&set, &received)
            log.write("received signal \(received); stopping")
            server.stop()
        }
        waiter.start()
        try server.run()
        return 0
    }
}

/// `rounds start`: more rounds queued on a running coordinator, optionally waiting for them to end.
struct StartRoundsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "start", abstract: "Ask a running coordinator for N more rounds.",
        help: """
        usage: conclave-coordinator rounds start --state DIR [--count N] [--wait] [--timeout S] [--json]

          --state DIR   the running coordinator's state directory (its control socket is DIR/control.sock)
          --count N     rounds to run one after another (default 1)
          --wait        return when they have ended (committed or aborted), printing each
          --timeout S   with --wait, give up after S seconds (default 3600)
          --json        print {"queued", "first_round"} (with --wait also "rounds": [{"round", "status",
                        "participants", "eval_loss_before", "eval_loss_after", "max_epsilon", "seconds"}])

        examples:
          conclave-coordinator rounds start --state coord --count 3 --wait
          conclave-coordinator rounds start --state coord --wait --timeout 600 --json
        """)

    static var options: [Option<Self>] {
        [
            .required("--state", \.state), .option("--count", .int(in: 1...10_000), \.count), .flag("--wait", \.wait),
            .option("--timeout", .double(in: 1...1e7), \.timeout), .flag("--json", \.json),
        ]
    }

    var state = ""
    var count = 1
    var wait = false
    var timeout = 3600.0
    var json = false

    func validate() throws { try CoordinatorCommands.checkState(state) }

    func run() throws -> Int32 {
        let paths = CoordinatorPaths(path: state)
        let response = try ControlRequest.send(paths, ["command": "start", "count": count])
        guard let first = (response["first_round"] as? NSNumber)?.uint64Value else {
            throw FederationError.state(path: paths.controlSocket.path, "unexpected response \(response)")
        }
        var output: [String: Any] = ["queued": count, "first_round": first]
        if !json { print("queued \(count) round\(count == 1 ? "" : "s"), starting with round \(first)") }
        if wait {
            let rounds = try ServeCommands.waitForRounds(paths, first: first, count: count, timeout: timeout, quiet: json)
            output["rounds"] = rounds.map(RoundSummary.json)
        }
        if json { try JSONOutput.print(output) }
        return 0
    }
}

/// What `rounds start --wait` and the demo share.
enum ServeCommands {
    /// Waits until rounds first..<first+count have audit records, printing each as it lands.
    static func waitForRounds(_ paths: CoordinatorPaths, first: UInt64, count: Int, timeout: Double,
                              quiet: Bool, report: ((String) -> Void)? = nil) throws -> [RoundSummary] {
        let report = report ?? { line in try? StandardOutput.write(Data((line + "\n").utf8)) }
        let deadline = Date().addingTimeInterval(timeout)
        let last = first + UInt64(count) - 1
        var printed = Set<UInt64>()
        var lastStatus = ""
        while true {
            let key = try AuditLog.verifyingKey(in: paths)
            let verification = try AuditLog.verify(url: paths.auditLog, publicKey: key)
            let records = verification.records.filter { $0.round >= first && $0.round <= last }
            for record in records where !printed.contains(record.round) {
                printed.insert(record.round)
                if !quiet { report(RoundSummary(record).line) }
            }
            if records.count >= count { return records.map(RoundSummary.init) }
            if Date() > deadline {
                throw FederationError.round(first, "timed out after \(Int(timeout)) s waiting for rounds \(first)...\(last)")
            }
            if let status = try? ControlRequest.send(paths, ["command": "status"]) {
                let line = "round \(status["round"] ?? "-"): \(status["phase"] ?? "?"), "
                    + "\((status["connected"] as? [String])?.count ?? 0) connected, "
                    + "uploaded \((status["uploaded"] as? [String])?.joined(separator: ",") ?? "-")"
                if line != lastStatus && !quiet { StandardError.write("  \(line)\n") }
                lastStatus = line
            }
            Thread.sleep(forTimeInterval: 0.5)
        }
    }
}

/// `status`: a running coordinator's round in flight and its connections.
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "status", abstract: "Show a running coordinator's round in flight and connected clients.",
        help: """
        usage: conclave-coordinator status --state DIR [--json]

          --state DIR   the running coordinator's state directory
          --json        print {"phase", "round", "cohort", "accepted", "uploaded", "declined", "dropped",
                        "connected", "queued_rounds", "next_round", "global_round", "adapter",
                        "adapter_sha256", "aggregation", "secure_aggregation", "name", "port"}

        examples:
          conclave-coordinator status --state coord
          conclave-coordinator status --state coord --json
        """)

    static var options: [Option<Self>] {
        [.required("--state", \.state), .flag("--json", \.json)]
    }

    var state = ""
    var json = false

    func validate() throws { try CoordinatorCommands.checkState(state) }

    func run() throws -> Int32 {
        let status = try ControlRequest.send(CoordinatorPaths(path: state), ["command": "status"])
        if json {
            try JSONOutput.print(status)
            return 0
        }
        print("coordinator '\(status["name"] ?? "?")' on port \(status["port"] ?? "?")")
        print("phase: \(status["phase"] ?? "?")" + ((status["round"]).map { ", round \($0)" } ?? "")
              + ", queued rounds: \(status["queued_rounds"] ?? 0), next round: \(status["next_round"] ?? "?")")
        if let cohort = status["cohort"] as? [String] {
            print("cohort: \(cohort.joined(separator: ", "))")
            print("accepted: \((status["accepted"] as? [String] ?? []).joined(separator: ", "))")
            print("uploaded: \((status["uploaded"] as? [String] ?? []).joined(separator: ", "))")
            for (label, key) in [("declined", "declined"), ("dropped", "dropped")] {
                for entry in status[key] as? [[String: Any]] ?? [] {
                    print("\(label): \(entry["client"] ?? "?"): \(entry["reason"] ?? "")")
                }
            }
        }
        let connected = status["connected"] as? [String] ?? []
        print("connected (\(connected.count)): \(connected.joined(separator: ", "))")
        print("global adapter: round \(status["global_round"] ?? "?"), \(status["adapter"] ?? "?")")
        return 0
    }
}

/// One request to a running coordinator over its control socket.
enum ControlRequest {
    static func send(_ paths: CoordinatorPaths, _ request: [String: Any], timeout: Double = 30) throws -> [String: Any] {
        let bytes = try JSONSerialization.data(withJSONObject: request)
        let response = try ControlSocketClient.request(path: paths.controlSocket.path, Array(bytes), timeout: timeout)
        guard let object = try JSONSerialization.jsonObject(with: Data(response)) as? [String: Any] else {
            throw FederationError.state(path: paths.controlSocket.path, "the coordinator answered something other than a JSON object")
        }
        if let error = object["error"] as? String {
            throw FederationError.state(path: paths.controlSocket.path, "the coordinator refused: \(error)")
        }
        return object
    }
}

/// A round as the demo and `rounds start --wait` print it.
struct RoundSummary {
    let round: UInt64
    let status: String
    let participants: Int
    let evalLossBefore: Double?
    let evalLossAfter: Double?
    let maxEpsilon: Double?
    let seconds: Double
    let reason: String?

    init(_ record: AuditRecord) {
        round = record.round
        status = record.status
        participants = record.participants.count
        evalLossBefore = record.evalLossBefore
        evalLossAfter = record.evalLossAfter
        maxEpsilon = record.maxEpsilon
        seconds = record.finished.timeIntervalSince(record.started)
        reason = record.abortReason
    }

    static func format(_ value: Double?, _ pattern: String = "%.4f") -> String {
        value.map { String(format: pattern, $0) } ?? "-"
    }

    var line: String {
        let base = String(format: "round %llu: %@, %d participants, held-out loss %@ → %@, max ε %@, %.1f s",
                          round, status, participants, Self.format(evalLossBefore), Self.format(evalLossAfter),
                          Self.format(maxEpsilon, "%.2f"), seconds)
        return reason.map { base + " (\($0))" } ?? base
    }

    static func json(_ summary: RoundSummary) -> [String: Any] {
        var object: [String: Any] = ["round": summary.round, "status": summary.status,
                                     "participants": summary.participants, "seconds": summary.seconds]
        object["eval_loss_before"] = summary.evalLossBefore ?? NSNull()
        object["eval_loss_after"] = summary.evalLossAfter ?? NSNull()
        object["max_epsilon"] = summary.maxEpsilon ?? NSNull()
        if let reason = summary.reason { object["abort_reason"] = reason }
        return object
    }
}
