import Audit
import CommandLineParsing
import CoordinatorService
import FederationProtocol
import Foundation

/// `rounds plan`: the privacy of the configured plan over N rounds, before any runs.
struct RoundsPlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "plan", abstract: "Preview the configured plan's privacy over N rounds and what is known of each client's decision.",
        help: """
        usage: conclave-coordinator rounds plan --state DIR --config F [--count N] [--json]

          --state DIR   the coordinator's state directory (its registry of enrolled clients)
          --config F    the coordinator's configuration (its "rounds": the plan and the aggregation)
          --count N     rounds to preview (default 1)
          --json        print {"accountant", "delta", "sampling_rate", "noise_multiplier", "steps_per_round",
                        "round_epsilon", "total_epsilon" (both null without privacy), "rounds": [{"round",
                        "epsilon"}], "clients": [{"id", "policy", "would_decline", "reason"}], "aggregation":
                        {"strategy", "secure_aggregation", "aggregator", "trim_fraction", "update_clip",
                        "update_norm_clip" (null: the default update_clip·√P, P the adapter's parameter count)},
                        "noise_placement" and "privacy_unit" (distributed and client-level plans only),
                        "adaptive_clipping": {"initial_clip_norm", "target_quantile", "learning_rate",
                        "count_noise_multiplier", "update_noise_multiplier"} (client-level with it only)}

        ε is the RDP accountant's at the plan's δ for a client in every round: one round is "steps"
        compositions of the Poisson-subsampled Gaussian at the plan's q and σ, N rounds N×steps (the
        figures of 'conclave-client privacy epsilon'). Clients keep their policies to themselves, so
        for an enrolled client the coordinator says so ("would_decline": null) instead of guessing; each
        client's operator previews its own ledger with 'conclave-client privacy plan'. Needs no running
        coordinator; starts nothing. The aggregation line says what bounds one client's part in a round:
        in plain rounds the coordinator clips each update to an L2 norm and combines them by the mean, the
        trimmed mean or the median; in secure rounds each client clips its own values, unchecked. A
        client-level plan shows the federation's client-level ε instead, and with adaptive clipping the
        update's noise multiplier that pays for the noised count (the ε is the same).

        examples:
          conclave-coordinator rounds plan --state coord --config Config/coordinator.json --count 10
          conclave-coordinator rounds plan --state coord --config Config/coordinator.json --json
        """)

    static var options: [Option<Self>] {
        [
            .required("--state", \.state), .required("--config", \.configPath), .option("--count", .int(in: 1...10_000), \.count),
            .flag("--json", \.json),
        ]
    }

    var state = ""
    var configPath = ""
    var count = 1
    var json = false

    func validate() throws {
        try CoordinatorCommands.checkState(state)
        try Self.checkConfig(configPath)
    }

    static func checkConfig(_ path: String) throws {
        try PathCheck.inputFile("--config", path, expected: "the coordinator's JSON configuration (see Config/)")
    }

    func run() throws -> Int32 {
        try Self.preview(state: state, configPath: configPath, count: count, json: json)
        return 0
    }

    /// Prints the preview of `count` rounds (also `rounds start --dry-run`).
    static func preview(state: String, configPath: String, count: Int, json: Bool) throws {
        let configuration = try CoordinatorConfiguration.load(URL(fileURLWithPath: configPath))
        let registry = try ClientRegistry(paths: CoordinatorPaths(path: state))
        let enrolled = registry.clients.filter { $0.status == .active }.map(\.id)
        let preview = try PlanPreview(policy: configuration.rounds, count: count, enrolled: enrolled)
        if json {
            try JSONOutput.print(encoding: preview)
        } else {
            print(preview.text)
        }
    }
}
