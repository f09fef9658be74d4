import CommandLineParsing
import FederationDemo
import FederationProtocol
import Foundation
import SystemIO

/// `demo`: a whole federation on this machine, with real processes over real TLS.
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "demo", abstract: "Run a federation on this machine: a coordinator and N client processes over mutual TLS.",
        help: """
        usage: conclave-coordinator demo [--clients N] [--rounds R] [--model M] [--records K] [--dir DIR]
                                         [--aggregation fedavg|fedadam] [--secure-aggregation on|off]
                                         [--canaries N] [--noise local|distributed] [--probe on|off] [--json]

          --clients N     client processes (default 3), each with synthetic clinic notes of its own specialty
          --rounds R      rounds to run (default \(Demo.distributedRounds) distributed, 3 local)
          --model M       the base model (default models/SmolLM2-135M-Instruct.Q4_1.gguf)
          --records K     synthetic notes per client, 5% held out (default \(Demo.distributedRecords) distributed, in the task form
                          note → assessment; 120 local, whole notes)
          --dir DIR       where the federation is built (default: a new folder under the temporary directory);
                          it is kept so that 'audit' and 'report' can be pointed at DIR/coordinator
          --aggregation A fedadam (default distributed) or fedavg (default local)
          --secure-aggregation on|off
                          mask every update so the coordinator learns only the round's sum (default on;
                          needs at least 2 clients)
          --canaries N    plant N secret canaries (3 digits, each 4 times) in the first client's notes; it
                          reports their exposure on the global adapter every round, scored exactly over
                          all 1000 secrets (default 5, about 3 s a round on the default model; 0: none)
          --noise P       distributed (default): each round is one DP-SGD step over all clients' notes, each
                          adding a share of the noise under secure aggregation (needs --aggregation fedadam),
                          each client assuming half the cohort honest; local: each client adds its own DP
                          noise to 4 DP-SGD steps a round
          --probe on|off  the coordinator's public probe (default on): a few fictional notes whose assessment
                          the model writes (greedy) before the rounds and with the final global adapter, and
                          the exact loss of both on \(DemoProbe.heldOutPerSpecialty) more public notes per probe specialty
                          (public-heldout.jsonl), shown here and kept for the report
                          (DIR/coordinator/public-probe.json)
          --json          print {"rounds": [{"round", "participants", "eval_loss_before", "eval_loss_after",
                          "max_epsilon", "seconds", "condition_accuracy_before"?, "condition_accuracy_after"?,
                          "condition_accuracy_standard_error"?, "canary_exposure"?: {"client", "mean_bits",
                          "max_bits", "space_size"}}], "audit_verified", "adapter", "state", "seconds", "probe"?:
                          {"adapter_round", "notes": [{"title", "prompt", "reference", "before", "after",
                          "condition"?, "named_before"?, "named_after"?}],
                          "held_out"?: {"notes", "tokens", "loss_before", "loss_after"}}}

        Every step is the real thing: a CA and enrolment by CSR, 'conclave-coordinator serve', and one
        'conclave-client join' per client training with DP-SGD and charging its own ledger. The logs are
        in DIR (serve.log, client-*/join.log).

        examples:
          conclave-coordinator demo
          conclave-coordinator demo --clients 2 --rounds 1 --records 40 --canaries 0 --probe off --dir out/demo --json
        """)

    static var options: [Option<Self>] {
        [
            .option("--clients", .int(in: 1...64), \.clients), .option("--rounds", .int(in: 1...1000), \.rounds),
            .option("--model", .string, \.model), .option("--records", .int(in: 20...100_000), \.records),
            .option("--dir", \.directory), .option("--aggregation", .oneOf(["fedavg", "fedadam"]), \.aggregation),
            .option("--secure-aggregation", .onOff, \.secureAggregation),
            .option("--canaries", .int(in: 0...Demo.maximumCanaries), \.canaries),
            .option("--noise", .oneOf(["local", "distributed"]), \.noise), .option("--probe", .onOff, \.probe),
            .flag("--json", \.json),
        ]
    }

    var clients = 3
    var rounds: Int?
    var model = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    var records: Int?
    var directory: String?
    var aggregation: String?
    var secureAggregation = true
    var canaries = Demo.defaultCanaries
    var noise = "distributed"
    var probe = true
    var json = false

    func validate() throws {
        if secureAggregation && clients < 2 {
            throw UsageError("--secure-aggregation on needs at least 2 clients (got --clients \(clients)); use --secure-aggregation off")
        }
        if noise == "distributed" && (!secureAggregation || (aggregation ?? "fedadam") != "fedadam") {
            throw UsageError("--noise distributed (the default) shares the noise inside secure aggregation's sum and takes "
                             + "the server's Adam step: use --secure-aggregation on and --aggregation fedadam, or --noise local")
        }
        guard FileManager.default.fileExists(atPath: model) else {
            throw UsageError("--model: no model at '\(model)' (run 'make model' to fetch the default)")
        }
        try PathCheck.model("--model", model)
    }

    func run() throws -> Int32 {
        let setup = DemoConfiguration(clients: clients, rounds: rounds, model: URL(fileURLWithPath: model).standardizedFileURL.path,
                                      records: records, directory: directory,
                                      aggregation: aggregation.flatMap(AggregationKind.init(rawValue:)),
                                      secureAggregation: secureAggregation, canaries: canaries,
                                      distributedNoise: noise == "distributed", probe: probe)
        let outcome: DemoOutcome
        do {
            // Each step's line is written straight to the descriptor, so it shows at once even through a pipe.
            outcome = try Demo(setup, executables: .beside(coordinator: URL(fileURLWithPath: CommandLine.arguments[0])),
                               narrate: json ? { StandardError.write($0 + "\n") }
                                             : { try? StandardOutput.write(Data(($0 + "\n").utf8)) }).run()
        } catch let error as LocalFederationError {
            throw UsageError("\(error)")
        }
        if json { try JSONOutput.print(encoding: outcome) } else { print(outcome.text) }
        return outcome.succeeded ? 0 : 1
    }
}
