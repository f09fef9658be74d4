import Audit
import CommandLineParsing
import CoordinatorService
import FederationProtocol
import Foundation
import Reports
import SystemIO

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
                         "max_length", "rank", "alpha", "targets", "metrics_noise_multiplier"? (20), "metrics_loss_clip"? (6)},
                         "update_clip"?, "neighbour_degree"?, plain rounds only: "aggregator"? ("mean" (default),
                         "trimmed_mean" or "median"), "trim_fraction"? (0.2), "update_norm_clip"? (update_clip·√P)},
                         "server_learning_rate"?}; see Config/
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
        let configuration = try CoordinatorConfiguration.load(URL(fileURLWithPath: configPath),
                                                              secureAggregation: secureAggregation)
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
                                                 [--dry-run --config F]

          --state DIR   the running coordinator's state directory (its control socket is DIR/control.sock)
          --count N     rounds to run one after another (default 1)
          --wait        return when they have ended (committed or aborted), printing each
          --timeout S   with --wait, give up after S seconds (default 3600)
          --json        print {"queued", "first_round"} (with --wait also "rounds": [{"round", "status",
                        "participants", "eval_loss_before", "eval_loss_after", "max_epsilon", "seconds"}])
          --dry-run     start nothing: print the privacy preview of 'rounds plan' for the N rounds of the
                        plan in --config F (the coordinator's configuration), with --json its object

        examples:
          conclave-coordinator rounds start --state coord --count 3 --wait
          conclave-coordinator rounds start --state coord --wait --timeout 600 --json
          conclave-coordinator rounds start --state coord --dry-run --config Config/coordinator.json
        """)

    static var options: [Option<Self>] {
        [
            .required("--state", \.state), .option("--count", .int(in: 1...10_000), \.count), .flag("--wait", \.wait),
            .option("--timeout", .double(in: 1...1e7), \.timeout), .flag("--json", \.json),
            .flag("--dry-run", \.dryRun), .option("--config", \.configPath),
        ]
    }

    var state = ""
    var count = 1
    var wait = false
    var timeout = 3600.0
    var json = false
    var dryRun = false
    var configPath: String?

    func validate() throws {
        try CoordinatorCommands.checkState(state)
        guard dryRun else {
            if configPath != nil { throw UsageError("--config is read only with --dry-run (a running coordinator has its own)") }
            return
        }
        guard let configPath else { throw UsageError("--dry-run needs --config F, the configuration whose plan to preview") }
        if wait { throw UsageError("--dry-run starts nothing, so there is nothing to --wait for") }
        try RoundsPlanCommand.checkConfig(configPath)
    }

    func run() throws -> Int32 {
        if dryRun, let configPath {
            try RoundsPlanCommand.preview(state: state, configPath: configPath, count: count, json: json)
            return 0
        }
        let control = CoordinatorControl(paths: CoordinatorPaths(path: state))
        let first = try control.startRounds(count).firstRound
        var output: [String: Any] = ["queued": count, "first_round": first]
        if !json { print("queued \(count) round\(count == 1 ? "" : "s"), starting with round \(first)") }
        if wait {
            let records = try control.waitForRounds(
                first: first, count: count, timeout: timeout,
                recorded: { if !json { try? StandardOutput.write(Data((RoundSummary($0).line + "\n").utf8)) } },
                polled: { if !json { StandardError.write("  \($0)\n") } })
            output["rounds"] = try JSONOutput.value(encoding: records.map(RoundSummary.init))
        }
        if json { try JSONOutput.print(output) }
        return 0
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
        let status = try CoordinatorControl(paths: CoordinatorPaths(path: state)).status()
        if json {
            try JSONOutput.print(encoding: status)
            return 0
        }
        let rounds = status.rounds
        print("coordinator '\(status.name)' on port \(status.port)")
        print("phase: \(rounds.phase.rawValue)" + (rounds.inFlight.map { ", round \($0.round)" } ?? "")
              + ", queued rounds: \(rounds.queuedRounds), next round: \(rounds.nextRound)")
        if let round = rounds.inFlight {
            print("cohort: \(round.cohort.joined(separator: ", "))")
            print("accepted: \(round.accepted.joined(separator: ", "))")
            print("uploaded: \(round.uploaded.joined(separator: ", "))")
            for entry in round.declined { print("declined: \(entry.client): \(entry.reason)") }
            for entry in round.dropped { print("dropped: \(entry.client): \(entry.reason)") }
        }
        print("connected (\(rounds.connected.count)): \(rounds.connected.joined(separator: ", "))")
        print("global adapter: round \(status.globalRound), \(status.adapter)")
        return 0
    }
}
