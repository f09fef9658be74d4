import ClientService
import CommandLineParsing
import FederationProtocol
import Foundation
import Privacy
import Wire

/// `privacy plan`: what N rounds of a plan would spend from this client's own ledger, before any runs.
struct PrivacyPlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "plan", abstract: "Preview N rounds of a plan against this client's ledger and policy: ε after each, the first refused.",
        help: """
        usage: conclave-client privacy plan --config F --state DIR --rounds N --sampling-rate q
                                            --noise-multiplier σ --steps T --delta δ
                                            [--metrics-noise-multiplier z] [--json]
        The plan's parameters are those of 'privacy epsilon' (one round is T steps at q and σ); the policy
        comes from the join configuration and the ledger from DIR (when DIR has none yet, the one 'join'
        would create: the policy's max_epsilon at its δ). Each round is checked as 'join' charges it: ε of
        the ledger's entries and the rounds before, composed by the ledger's accountant at the ledger's δ,
        must stay within the ledger's budget and the policy's max_epsilon. A refused round spends nothing,
        so every later one is refused too. Each round also charges its held-out metrics release (the
        Gaussian mechanism at the plan's metrics_noise_multiplier z), as 'join' does. Nothing is written.
          --config F   the client's join configuration (its "policy")
          --state DIR  the client's state directory (its privacy ledger)
          --rounds N   how many rounds to preview
          --metrics-noise-multiplier z
                       the plan's metrics_noise_multiplier (default 20)
          --json       print {"rounds": [{"round", "epsilon", "refused"}], "first_refused_round" (null when
                       all fit), "round_epsilon" (one round alone at the plan's δ), "spent_epsilon",
                       "budget_epsilon", "ceiling_epsilon", "delta", "accountant", "policy_objection"}

        examples:
          conclave-client privacy plan --config Config/client.json --state me --rounds 10 \\
              --sampling-rate 0.02 --noise-multiplier 1.1 --steps 40 --delta 1e-5
          conclave-client privacy plan --config Config/client.json --state me --rounds 3 \\
              --sampling-rate 0.02 --noise-multiplier 1.1 --steps 40 --delta 1e-5 --json
        """)

    static var options: [Option<Self>] {
        [
            .required("--config", \.configPath), .required("--state", \.state), .required("--rounds", .int(in: 1...100_000), \.rounds),
            .required("--sampling-rate", .double(in: 0...1), \.q), .required("--noise-multiplier", .double(in: 1e-9...1e9), \.sigma),
            .required("--steps", .int(in: 1...100_000_000), \.steps), .required("--delta", .double(in: 1e-300...0.999_999), \.delta),
            .option("--metrics-noise-multiplier", .double(in: 0.01...1e9), \.metricsNoise),
            .flag("--json", \.json),
        ]
    }

    // Required: parsing always replaces these initial values.
    var configPath = ""
    var state = ""
    var rounds = 0
    var q = 0.0
    var sigma = 0.0
    var steps = 0
    var delta = 0.0
    var metricsNoise = TrainingPlan.defaultMetricsNoiseMultiplier
    var json = false

    func validate() throws {
        try PathCheck.inputFile("--config", configPath, expected: "the client's JSON configuration (see Config/)")
        try PathCheck.inputDirectory("--state", state, expected: "the client's state directory",
                                     fix: "Create it with 'conclave-client init --state DIR --name ID'.")
    }

    func run() throws -> Int32 {
        let policy = try ClientConfiguration.load(URL(fileURLWithPath: configPath)).policy
        let directory = URL(fileURLWithPath: state)
        let hasLedger = FileManager.default.fileExists(atPath: directory.appendingPathComponent(PrivacyLedger.fileName).path)
        // As `join` opens it: the existing ledger, else a fresh one with the policy's budget (not written here).
        let spent = hasLedger ? try PrivacyLedger(directory: directory).entries.map(\.mechanism) : []
        let budget = hasLedger ? try PrivacyLedger(directory: directory).budget
            : PrivacyBudget(epsilon: policy.maxEpsilon, delta: policy.delta, accountant: .rdp)
        let mechanism = MechanismSteps.dpsgd(samplingRate: q, noiseMultiplier: sigma, steps: steps)
        let release = MetricsRelease.mechanism(noiseMultiplier: metricsNoise)
        let projection = try PrivacyPlanProjection.project(mechanism, releases: [release], rounds: rounds, after: spent,
                                                           budget: budget, ceiling: policy.maxEpsilon)
        let roundEpsilon = try PrivacyAccounting.epsilon(steps: [mechanism, release], delta: delta, accountant: budget.accountant)
        let objection = policy.objection(to: planShape(unit: policy.privacyUnit))
        if json {
            try JSONOutput.print(jsonObject(projection, roundEpsilon: roundEpsilon, objection: objection))
        } else {
            printText(projection, roundEpsilon: roundEpsilon, objection: objection, hasLedger: hasLedger)
        }
        return 0
    }

    /// The parts of a training plan the policy judges (privacy, δ, steps); the rest does not bear on ε. The
    /// unit is the policy's own: q is then the rate of that unit (records or users), as its rounds would use it.
    private func planShape(unit: PrivacyUnit) -> TrainingPlan {
        TrainingPlan(steps: steps, learningRate: 0, samplingRate: q, noiseMultiplier: sigma, clipNorm: 1, delta: delta,
                     maxLength: 0, rank: 0, alpha: 0, targets: [], privacyUnit: unit)
    }

    private func jsonObject(_ projection: PrivacyPlanProjection, roundEpsilon: Double, objection: String?) -> [String: Any] {
        [
            "rounds": projection.rounds.map { ["round": $0.round, "epsilon": $0.epsilon, "refused": $0.refused] as [String: Any] },
            "first_refused_round": projection.firstRefusedRound ?? NSNull(), "round_epsilon": roundEpsilon,
            "spent_epsilon": projection.spentEpsilon, "budget_epsilon": projection.budget.epsilon,
            "ceiling_epsilon": projection.ceiling ?? NSNull(), "delta": projection.budget.delta,
            "accountant": projection.budget.accountant.rawValue, "policy_objection": objection ?? NSNull(),
        ]
    }

    private func printText(_ projection: PrivacyPlanProjection, roundEpsilon: Double, objection: String?, hasLedger: Bool) {
        let budget = projection.budget
        print(String(format: "%@: ε spent %.4f of %.4f at δ %g (%@)%@; policy max_epsilon %.4f", hasLedger ? state : "\(state) (no ledger yet)",
                     projection.spentEpsilon, budget.epsilon, budget.delta, budget.accountant.rawValue,
                     hasLedger ? "" : ", the budget join would create", projection.ceiling ?? budget.epsilon))
        print(String(format: "one round: %d steps at q %g, σ %g → ε %.6f at the plan's δ %g", steps, q, sigma, roundEpsilon, delta))
        if let objection { print("every round would be declined: \(objection)") }
        // Rounds after the first refused one repeat it (nothing was charged): one line for them.
        for round in projection.rounds.prefix(projection.firstRefusedRound ?? rounds) {
            print(String(format: "  round %d  ε %.6f%@", round.round, round.epsilon, round.refused ? "  refused" : ""))
        }
        if let first = projection.firstRefusedRound, first < rounds {
            print("  rounds \(first + 1)-\(rounds) refused as well")
        }
        if let first = projection.firstRefusedRound {
            print("round \(first) is the first this client's budget would refuse; \(first - 1) of \(rounds) fit")
        } else {
            print("all \(rounds) rounds fit")
        }
    }
}
