import ClientService
import CommandLineParsing
import FederationProtocol
import Foundation
import SystemIO
import Wire

/// `join`: the client's agent, next to its private data.
struct JoinCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "join", abstract: "Run the client agent: take part in a coordinator's rounds under this client's policy.",
        help: """
        usage: conclave-client join --state DIR --coordinator HOST:PORT --ca CA.pem --cert CERT.pem --config F
                                    [--rounds N] [--events FILE|-]

          --state DIR              the client's state directory (from 'conclave-client init'): its key, its
                                   privacy ledger, the latest global adapter (DIR/global-adapter)
          --coordinator HOST:PORT  the coordinator; HOST must be the name or address in its certificate
          --ca CA.pem              the federation's CA certificate (from the coordinator's operator)
          --cert CERT.pem          this client's certificate (signed by 'conclave-coordinator enroll')
          --config F               JSON: {"model", "data", "eval_data", "threads"?, "policy": {"max_epsilon",
                                   "delta", "max_steps_per_round", "require_privacy"?, "privacy_unit"?,
                                   "assume_honest"?}, "canaries"?: {"count", "digits", "repetitions",
                                   "phrase"?}}; see Config/
          --rounds N               exit after N rounds have ended for this client (default: run until stopped)
          --events FILE|-          also write one JSON object per round event, one a line, appended to FILE
                                   ('-': standard output), for monitoring tools: {"time", "event", "round",
                                   ...} with event invited, declined (reason, code), charged (epsilon spent, delta,
                                   budget_epsilon), accepted, uploaded, committed or round_over (reason).
                                   They stay on this machine: nothing more is sent to the coordinator

        For each invitation the agent checks the plan against the policy (differential privacy required,
        δ, steps per round) and the ledger (the budget is the policy's max_epsilon at its δ), charges the
        ledger before training, trains with DP-SGD from the global adapter, evaluates on the held-out data
        before and after, and uploads only the change to the adapter. It reconnects with backoff.
        Progress and the log go to standard error.

        A plan with noise_placement distributed (secure aggregation only) is one DP-SGD step over the
        cohort's data: the client sums its sampled records' clipped gradients at the global adapter and
        masks the sum with its share of discrete Gaussian noise. It is charged the ε that holds if
        "assume_honest" of the cohort (itself included; default 1, trusting no one) are honest, and
        declines with code distributed_trust when that passes its budget.

        With "canaries", the client plants that many secret canaries (the phrase, default "My account
        number is", then random digits), each "repetitions" times, in its training data; every copy is
        one more record to DP-SGD and the ledger. The secrets are made once and kept in DIR/canaries.json
        (mode 0600), never logged or sent. Each round, before training, it measures their exposure
        (Carlini et al. 2019) on the global adapter it received, exactly for up to 1000 candidate secrets
        and from 500 sampled candidates beyond, and reports only the mean and largest exposure.

        examples:
          conclave-client join --state me --coordinator coordinator.example.org:7443 --ca ca.pem \\
              --cert clinic-berlin.pem --config Config/client.json
          conclave-client join --state me --coordinator localhost:7443 --ca ca.pem --cert me.pem \\
              --config Config/client.json --rounds 1   # one round, then exit
          conclave-client join --state me --coordinator localhost:7443 --ca ca.pem --cert me.pem \\
              --config Config/client.json --events -   # round events on standard output
        """)

    static var options: [Option<Self>] {
        [
            .required("--state", \.state), .required("--coordinator", \.coordinator), .required("--ca", \.ca),
            .required("--cert", \.cert), .required("--config", \.configPath), .option("--rounds", .int(in: 1...1_000_000), \.rounds),
            .option("--events", \.events),
        ]
    }

    var state = ""
    var coordinator = ""
    var ca = ""
    var cert = ""
    var configPath = ""
    var rounds: Int?
    /// Where round events go, one JSON line each ("-": standard output).
    var events: String?

    func validate() throws {
        try PathCheck.inputDirectory("--state", state, expected: "the client's state directory",
                                     fix: "Create it with 'conclave-client init --state DIR --name ID'.")
        try PathCheck.inputFile("--ca", ca, expected: "the federation's CA certificate (PEM), ca.pem from the coordinator")
        try PathCheck.inputFile("--cert", cert, expected: "this client's certificate (PEM) from 'conclave-coordinator enroll'")
        try PathCheck.inputFile("--config", configPath, expected: "the client's JSON configuration (see Config/)")
        // The paths the configuration names, checked now rather than when the first round needs them.
        let configuration = try ClientConfiguration.load(URL(fileURLWithPath: configPath))
        try PathCheck.model("\(configPath): \"model\"", configuration.model)
        for (field, path) in [("data", configuration.data), ("eval_data", configuration.evalData)] {
            try PathCheck.inputFile("\(configPath): \"\(field)\"", path, expected: ModelCommands.datasetFile)
        }
        if let events, events != "-" {
            try PathCheck.outputFile("--events", events, expected: "a file to append round events to (JSON lines)")
        }
    }

    func run() throws -> Int32 {
        let (host, port) = try CoordinatorAddress.parse(coordinator)
        let configuration = try ClientConfiguration.load(URL(fileURLWithPath: configPath))
        let paths = ClientPaths(path: state)
        let runner = try ClientRunner(paths: paths, configuration: configuration,
                                      address: CoordinatorAddress(host: host, port: port, caPath: ca, certificatePath: cert),
                                      maximumRounds: rounds, log: OperatorLog(url: nil),
                                      events: try events.map { try EventLog(destination: $0) })
        try runner.run()
        return 0
    }
}
