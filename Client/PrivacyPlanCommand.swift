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
                                            [--metrics-noise-multiplier z] [--heldout-interval k]
                                            [--accuracy-noise-multiplier z] [--accuracy-interval k] [--json]
                                            [--distributed --cohort N --threshold T --assume-honest H
                                             --dimension D --contributions K [--clip-norm C]
                                             [--fractional-bits F]]
        The plan's parameters are those of 'privacy epsilon' (one round is T steps at q and σ); the policy
        comes from the join configuration and the ledger from DIR (when DIR has none yet, the one 'join'
        would create: the policy's max_epsilon at its δ). Each round is checked as 'join' charges it: ε of
        the ledger's entries and the rounds before, composed by the ledger's accountant at the ledger's δ,
        must stay within the ledger's budget and the policy's max_epsilon. A refused round spends nothing,
        so every later one is refused too. Each round that asks for them also charges its held-out metrics
        release (the Gaussian mechanism at the plan's metrics_noise_multiplier z), as 'join' does, and, for a
        client whose held-out records carry conditions, its condition accuracy release
        (--accuracy-noise-multiplier). Nothing is written.
          --config F   the client's join configuration (its "policy")
          --state DIR  the client's state directory (its privacy ledger)
          --rounds N   how many rounds to preview
          --metrics-noise-multiplier z
                       the plan's metrics_noise_multiplier (default 20)
          --heldout-interval k
                       the coordinator's heldout_interval: the held-out loss release is charged in rounds
                       1, 1 + k, 1 + 2k, ... only (default 1: every round)
          --accuracy-noise-multiplier z
                       the plan's accuracy_noise_multiplier (5 unless the plan says otherwise), for a client
                       whose held-out records carry conditions and a plan with accuracy_records above 0;
                       absent: no condition accuracy release is charged
          --accuracy-interval k
                       the coordinator's accuracy_interval: that release in rounds 1, 1 + k, ... only
          --json       print {"rounds": [{"round", "epsilon", "refused"}], "first_refused_round" (null when
                       all fit), "round_epsilon" (one round alone at the plan's δ), "spent_epsilon",
                       "budget_epsilon", "ceiling_epsilon", "delta", "accountant", "policy_objection"}
        Distributed DP (--distributed, as a plan with noise_placement distributed runs): each of the cohort's N
        clients adds a share N_Z(0, σ²/T) of discrete Gaussian noise to its integer vector, σ = z·Δ₂ with z
        the --noise-multiplier and Δ₂ the clip norm on the grid after conditional rounding (Kairouz, Liu,
        Steinke 2021); the client relies only on honest survivors' shares: max(1, H − (N − T)) of them when H
        of the cohort, itself included, are honest. Rounds are charged at the ε under that assumption; the
        ε if it trusted no one (its own share: local DP) is printed beside it. The grid 2^-F is the finest
        at which a step's sum of K clipped vectors and N shares wraps 32-bit words with
        probability at most 1e-9 (ModularWrap; that probability is taken from δ).
          --cohort N, --threshold T, --assume-honest H
                       clients per round, secure aggregation's threshold, honest clients assumed (≥ 1)
          --dimension D  trainable parameters (the vector's length)
          --contributions K  the most clipped vectors one step's sum can hold: the cohort N when each
                       client sends one clipped update (client level); for records or users, the most the
                       whole cohort can sample in one step (no default: too small a K understates the
                       chance of a wrap, which is taken from δ)
          --clip-norm C  the clip norm (default 1)
          --fractional-bits F  the grid 2^-F instead of the chosen one
          --json adds "distributed": {"cohort", "threshold", "assume_honest", "relied_shares",
                       "fractional_bits", "wrap_probability", "share_sigma", "sensitivity_l2",
                       "round_epsilon_assumed", "round_epsilon_trusting_no_one", "epsilon_assumed",
                       "epsilon_trusting_no_one" (the N rounds alone)}

        examples:
          conclave-client privacy plan --config Config/client.json --state me --rounds 10 \\
              --sampling-rate 0.02 --noise-multiplier 1.1 --steps 40 --delta 1e-5
          conclave-client privacy plan --config Config/client.json --state me --rounds 3 \\
              --sampling-rate 0.02 --noise-multiplier 1.1 --steps 40 --delta 1e-5 --json
          conclave-client privacy plan --config Config/client.json --state me --rounds 50 \\
              --sampling-rate 0.02 --noise-multiplier 1.1 --steps 1 --delta 1e-5 \\
              --distributed --cohort 8 --threshold 6 --assume-honest 4 --dimension 1000000
        """)

    static var options: [Option<Self>] {
        [
            .required("--config", \.configPath), .required("--state", \.state), .required("--rounds", .int(in: 1...100_000), \.rounds),
            .required("--sampling-rate", .double(in: 0...1), \.q), .required("--noise-multiplier", .double(in: 1e-9...1e9), \.sigma),
            .required("--steps", .int(in: 1...100_000_000), \.steps), .required("--delta", .double(in: 1e-300...0.999_999), \.delta),
            .option("--metrics-noise-multiplier", .double(in: 0.01...1e9), \.metricsNoise),
            .option("--heldout-interval", .int(in: 1...100_000), \.heldOutInterval),
            .option("--accuracy-noise-multiplier", .double(in: 0.1...1000), \.accuracyNoise),
            .option("--accuracy-interval", .int(in: 1...100_000), \.accuracyInterval),
            .flag("--json", \.json),
            .flag("--distributed", \.distributed), .option("--cohort", .int(in: 1...100_000), \.cohort),
            .option("--threshold", .int(in: 1...100_000), \.threshold), .option("--assume-honest", .int(in: 1...100_000), \.assumeHonest),
            .option("--dimension", .int(in: 1...(1 << 40)), \.dimension), .option("--clip-norm", .double(in: 1e-12...1e12), \.clipNorm),
            .option("--contributions", .int(in: 1...1_000_000_000), \.contributions),
            .option("--fractional-bits", .int(in: -62...62), \.fractionalBits),
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
    var heldOutInterval: Int?
    var accuracyNoise: Double?
    var accuracyInterval: Int?
    var json = false
    var distributed = false
    var cohort: Int?
    var threshold: Int?
    var assumeHonest: Int?
    var dimension: Int?
    var clipNorm: Double?
    var contributions: Int?
    var fractionalBits: Int?

    func validate() throws {
        let distributedOptions: [Any?] = [cohort, threshold, assumeHonest, dimension, clipNorm, contributions, fractionalBits]
        if !distributed && distributedOptions.contains(where: { $0 != nil }) {
            throw UsageError("--cohort, --threshold, --assume-honest, --dimension, --clip-norm, --contributions and --fractional-bits need --distributed")
        }
        if distributed && (cohort == nil || threshold == nil || assumeHonest == nil || dimension == nil || contributions == nil) {
            throw UsageError("--distributed needs --cohort, --threshold, --assume-honest, --dimension and --contributions "
                             + "(the most clipped vectors one step's sum can hold: the cohort for client-level DP, the most "
                             + "records or users the whole cohort can sample in one step otherwise)")
        }
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
        let preview = try distributedPreview()
        // Distributed: the ledger is charged the ε under the client's assumption (its zCDP stand-in).
        let mechanism = preview?.assumed.ledgerMechanism ?? MechanismSteps.dpsgd(samplingRate: q, noiseMultiplier: sigma, steps: steps)
        // What round r releases besides its training, on the coordinator's schedules (as its invitations ask).
        func releases(inRound round: Int) -> [MechanismSteps] {
            (ReleaseSchedule(interval: heldOutInterval).asks(round: UInt64(round))
                ? [MetricsRelease.mechanism(noiseMultiplier: metricsNoise)] : [])
            + (ReleaseSchedule(interval: accuracyInterval).asks(round: UInt64(round))
                ? accuracyNoise.map { [MetricsRelease.mechanism(noiseMultiplier: $0)] } ?? [] : [])
        }
        let projection = try PrivacyPlanProjection.project(mechanism, releasesInRound: releases(inRound:), rounds: rounds,
                                                           after: spent, budget: budget, ceiling: policy.maxEpsilon)
        let roundEpsilon = try PrivacyAccounting.epsilon(steps: [mechanism] + releases(inRound: 1), delta: delta,
                                                         accountant: budget.accountant)
        let objection = policy.objection(to: planShape(unit: policy.privacyUnit))
        let summary = try preview.map { try distributedSummary($0) }
        if json {
            var object = jsonObject(projection, roundEpsilon: roundEpsilon, objection: objection)
            if let summary { object["distributed"] = summary }
            try JSONOutput.print(object)
        } else {
            printText(projection, roundEpsilon: roundEpsilon, objection: objection, hasLedger: hasLedger)
            if let summary { printDistributed(summary) }
        }
        return 0
    }

    /// The distributed-DP preview of the plan, nil without --distributed.
    private func distributedPreview() throws -> DistributedPlanPreview? {
        guard distributed, let cohort, let threshold, let assumeHonest, let dimension, let contributions else { return nil }
        let trust = try NoiseTrust(cohort: cohort, threshold: threshold, assumeHonest: assumeHonest)
        return try DistributedPlanPreview(samplingRate: q, noiseMultiplier: sigma, stepsPerRound: steps, clipNorm: clipNorm ?? 1,
                                          dimension: dimension, trust: trust, contributions: contributions,
                                          fractionalBits: fractionalBits)
    }

    private func distributedSummary(_ preview: DistributedPlanPreview) throws -> [String: Any] {
        let one = try preview.epsilons(rounds: 1, delta: delta), all = try preview.epsilons(rounds: rounds, delta: delta)
        return [
            "cohort": preview.trust.cohort, "threshold": preview.trust.threshold, "assume_honest": preview.trust.assumeHonest,
            "relied_shares": preview.assumed.shares, "fractional_bits": preview.fractionalBits,
            "wrap_probability": preview.wrapProbability, "share_sigma": preview.shareSigma, "sensitivity_l2": preview.sensitivity.l2,
            "round_epsilon_assumed": one.assumed, "round_epsilon_trusting_no_one": one.trustingNoOne,
            "epsilon_assumed": all.assumed, "epsilon_trusting_no_one": all.trustingNoOne,
        ]
    }

    private func printDistributed(_ summary: [String: Any]) {
        func number(_ key: String) -> Double { summary[key] as? Double ?? Double(summary[key] as? Int ?? 0) }
        print(String(format: "distributed: cohort %d, threshold %d, assume_honest %d → %d honest share(s) relied on; grid 2^-%d, "
                     + "share σ %.4g grid units, Δ₂ %.6g, wrap probability ≤ %.3g per step (taken from δ)",
                     Int(number("cohort")), Int(number("threshold")), Int(number("assume_honest")), Int(number("relied_shares")),
                     Int(number("fractional_bits")), number("share_sigma"), number("sensitivity_l2"), number("wrap_probability")))
        print(String(format: "  one round: ε %.6f under the assumption, %.6f trusting no one (local DP)",
                     number("round_epsilon_assumed"), number("round_epsilon_trusting_no_one")))
        print(String(format: "  %d rounds alone: ε %.6f under the assumption, %.6f trusting no one", rounds,
                     number("epsilon_assumed"), number("epsilon_trusting_no_one")))
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
