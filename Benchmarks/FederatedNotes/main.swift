import Audit
import CommandLineParsing
import FederationDemo
import FederationProtocol
import FineTuning
import Foundation
import LanguageModel
import ModelFormats
import Privacy
import SystemIO
import Wire

// Issue 17's federated notes benchmark: how useful private training is, regime by regime, on the demo's
// federation of real processes.

let usage = """
usage: conclave-bench-notes [--model M] [--clients N] [--records R] [--rounds T] [--per-client B] [--local-steps S]
                            [--epsilon E] [--modes LIST] [--eval-notes K] [--monitor-notes M] [--clip C]
                            [--server-lr H] [--client-rate Q] [--client-clip S] [--round-timeout W] [--dir D]
                            [--json] [--plans-only]

The demo's federation (conclave-coordinator serve and one conclave-client join per client, mutual TLS, secure
aggregation, the audit log) with N clients of different specialties, R synthetic clinic notes each in the task
form (note -> assessment; 5% held out, by patient), run once per privacy regime at the same number of gradient
evaluations: B notes per client and round, T rounds.
  nonprivate   FedAvg of S local steps of B/S notes each, no noise
  local        the same with each client's own DP-SGD noise: sigma such that its epsilon after T rounds, with
               its held-out metrics releases, is E at delta 1e-5
  distributed  one DP-SGD step a round over the union of the cohort's notes, each client adding its share of
               discrete Gaussian noise under secure aggregation, FedAdam; z such that a client assuming half the
               cohort honest spends E after T rounds
  client-level DP-FedAvg (McMahan et al. 2018): the coordinator Poisson-samples clients at rate Q, each sampled client
               runs S local steps of B/(S·Q) notes without noise (the same gradient evaluations in expectation), clips its
               whole update to S and adds its noise share under secure aggregation; the sum over the fixed q·N, FedAdam;
               z such that the federation's accountant (client-level-accountant.json's) reaches E after T rounds. With
               few clients amplification by sampling is poor: Q is the rate, of N/2..N over N, whose z puts the least
               noise on the estimate (z/(Q·N) per unit of S), unless given
The clients' own per-round releases score only their first M held-out notes and generate no assessments (the
clients charge the loss release; E includes it); the benchmark scores every held-out note itself at the end.
Each regime's final adapter is scored here, exactly, on every client's held-out notes (the benchmark made the
data; no client sends it): the mean loss and the token accuracy of the assessments, and the fraction of notes
whose greedy assessment names the note's condition. Seconds per regime include building its federation.
  --model M        default models/SmolLM2-135M-Instruct.Q4_1.gguf
  --clients N      default 8          --records R      default 1000     --rounds T     default 10
  --per-client B   default 20         --local-steps S  default 4        --epsilon E    default 8
  --modes LIST     comma-separated, default nonprivate,local,distributed,client-level
  --eval-notes K   held-out notes per client whose assessment is generated (default 25)
  --monitor-notes M  held-out notes each client scores in its per-round release (default 4)
  --clip C         distributed: each note's gradient clip (default 1)
  --server-lr H    distributed and client-level: FedAdam's η (default the demo's, 0.02)
  --client-rate Q  client-level: the client sampling rate (default: chosen as above)
  --client-clip S  client-level: the clip of a client's whole round update (default 0.1)
  --round-timeout W  seconds a round may take before the coordinator aborts it (default 3600; the demo's 900 is
                   too short for 8 clients on a loaded 2-core machine)
  --dir D          where the federations are built, one folder per regime (default: a new temporary folder)
  --json           one JSON object on standard output instead of the table
  --plans-only     write each regime's plan, aggregation and calibrated ε as JSON and stop (nothing runs)
"""

/// The regimes compared.
enum Mode: String, CaseIterable {
    case nonprivate, local, distributed
    case clientLevel = "client-level"
}

/// The benchmark's settings, from the command line.
struct Settings {
    var model = "models/SmolLM2-135M-Instruct.Q4_1.gguf"
    var clients = 8, records = 1000, rounds = 10, perClient = 20, localSteps = 4, evalNotes = 25, monitorNotes = 4
    var epsilon = 8.0
    var clipNorm = 1.0, serverLearningRate = Demo.serverLearningRate, clientClip = 0.1
    var clientRate: Double?
    var roundTimeout = 3600.0
    var modes: [Mode] = Mode.allCases
    var directory: String?
    var json = false, plansOnly = false
    static let delta = 1e-5
    static let maxLength = 320
    /// The local regimes' learning rate (AdamW on each client, as the local demo's plan).
    static let localLearningRate = 0.01

    /// Notes a client trains on: the 95% the split keeps (`DemoConfiguration.trainingRecords`).
    var trainingRecords: Double { (Double(records) * 0.95).rounded(.down) }
}

func parseSettings() throws -> Settings {
    var arguments = Arguments(Array(CommandLine.arguments.dropFirst()))
    if arguments.helpRequested {
        print(usage)
        exit(0)
    }
    var s = Settings()
    // Absolute: the coordinator and clients run in the federation's folders (`make notes-bench` passes models/...).
    s.model = URL(fileURLWithPath: try arguments.option("--model") ?? s.model).standardizedFileURL.path
    s.clients = try arguments.int("--clients", in: 2...64) ?? s.clients
    s.records = try arguments.int("--records", in: 40...1_000_000) ?? s.records
    s.rounds = try arguments.int("--rounds", in: 1...10_000) ?? s.rounds
    s.perClient = try arguments.int("--per-client", in: 1...100_000) ?? s.perClient
    s.localSteps = try arguments.int("--local-steps", in: 1...1000) ?? s.localSteps
    s.evalNotes = try arguments.int("--eval-notes", in: 0...100_000) ?? s.evalNotes
    s.epsilon = try arguments.double("--epsilon", in: 0.01...1000) ?? s.epsilon
    s.monitorNotes = try arguments.int("--monitor-notes", in: 1...100_000) ?? s.monitorNotes
    s.clipNorm = try arguments.double("--clip", in: 1e-6...1e6) ?? s.clipNorm
    s.serverLearningRate = try arguments.double("--server-lr", in: 1e-6...10) ?? s.serverLearningRate
    s.clientRate = try arguments.double("--client-rate", in: 1e-6...1)
    s.clientClip = try arguments.double("--client-clip", in: 1e-6...1e6) ?? s.clientClip
    s.roundTimeout = try arguments.double("--round-timeout", in: 60...86_400) ?? s.roundTimeout
    if let list = try arguments.option("--modes") {
        s.modes = try list.split(separator: ",").map { name in
            guard let mode = Mode(rawValue: String(name)) else {
                throw UsageError("--modes: '\(name)' is not one of \(Mode.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return mode
        }
    }
    s.directory = try arguments.option("--dir")
    s.json = arguments.flag("--json")
    s.plansOnly = arguments.flag("--plans-only")
    try arguments.finish()
    guard s.perClient % s.localSteps == 0 else {
        throw UsageError("--per-client \(s.perClient) must be a multiple of --local-steps \(s.localSteps) (notes per local step)")
    }
    return s
}

// MARK: Plans, each regime's noise calibrated to the same ε

/// The smallest noise multiplier in [0.3, 200] at which `epsilon(z)` is at most `target`, by bisection (ε falls as z
/// grows); nil when even 200 is not enough.
func calibrate(target: Double, _ epsilon: (Double) throws -> Double) throws -> Double? {
    var low = 0.3, high = 200.0
    guard try epsilon(high) <= target else { return nil }
    if try epsilon(low) <= target { return low }
    for _ in 0..<60 {
        let middle = (low + high) / 2
        if try epsilon(middle) <= target { high = middle } else { low = middle }
    }
    return high
}

/// What a regime runs: its plan, the clients' policy, the aggregation and server learning rate, and the ε each
/// client is expected to have spent after every round (nil without privacy).
struct Regime: Encodable {
    var mode: Mode
    var plan: TrainingPlan
    var policy: ClientPolicy
    var aggregation: AggregationKind
    var serverLearningRate: Double?
    var expectedEpsilon: Double?

    enum CodingKeys: String, CodingKey {
        case mode, plan, policy, aggregation
        case serverLearningRate = "server_learning_rate", expectedEpsilon = "expected_epsilon"
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(mode.rawValue, forKey: .mode)
        try c.encode(plan, forKey: .plan)
        try c.encode(policy, forKey: .policy)
        try c.encode(aggregation, forKey: .aggregation)
        try c.encodeIfPresent(serverLearningRate, forKey: .serverLearningRate)
        try c.encodeIfPresent(expectedEpsilon, forKey: .expectedEpsilon)
    }
}

/// The local plans: S steps of B/S notes a round, FedAvg; `noise` nil for the non-private run.
func localRegime(_ s: Settings, private isPrivate: Bool) throws -> Regime {
    let rate = Double(s.perClient / s.localSteps) / s.trainingRecords
    var plan = TrainingPlan(steps: s.localSteps, learningRate: Settings.localLearningRate, samplingRate: rate, noiseMultiplier: 0,
                            clipNorm: 1, delta: Settings.delta, maxLength: Settings.maxLength, rank: 4, alpha: 8,
                            targets: ["q_proj", "v_proj"], accuracyRecords: 0)
    guard isPrivate else {
        return Regime(mode: .nonprivate, plan: plan, policy: ClientPolicy(maxEpsilon: s.epsilon, delta: Settings.delta,
                                                                          maxStepsPerRound: 1000, requirePrivacy: false),
                      aggregation: .fedavg, serverLearningRate: nil, expectedEpsilon: nil)
    }
    func epsilon(_ z: Double) throws -> Double {
        var candidate = plan
        candidate.noiseMultiplier = z
        return try PrivacyAccounting.epsilon(
            steps: [.dpsgd(samplingRate: rate, noiseMultiplier: z, steps: s.localSteps * s.rounds)]
                + releases(candidate, rounds: s.rounds), delta: Settings.delta, accountant: .rdp)
    }
    guard let z = try calibrate(target: s.epsilon * (1 - 1e-6), epsilon) else {
        throw UsageError("local DP: no noise multiplier up to 200 keeps ε at \(s.epsilon) over \(s.rounds) rounds")
    }
    plan.noiseMultiplier = z
    return Regime(mode: .local, plan: plan, policy: ClientPolicy(maxEpsilon: s.epsilon, delta: Settings.delta, maxStepsPerRound: 1000),
                  aggregation: .fedavg, serverLearningRate: nil, expectedEpsilon: try epsilon(z))
}

/// What each round releases besides its training, as the client's ledger charges it: the held-out losses, and the
/// condition accuracy when the plan asks for it (the notes carry their conditions; the benchmark's plans do not ask).
func releases(_ plan: TrainingPlan, rounds: Int) -> [MechanismSteps] {
    [MetricsRelease.mechanism(plan: plan, rounds: rounds)]
        + (plan.accuracyRecords > 0 ? [MetricsRelease.accuracyMechanism(plan: plan, rounds: rounds)] : [])
}

/// The distributed plan: one step a round at an expected B notes per client, FedAdam (the demo's η), z such that a
/// client assuming half the cohort honest spends E: its ledger's mechanism for the round's shares
/// (`DistributedRound`, the cohort's secure-aggregation threshold as the coordinator will choose it) and releases.
func distributedRegime(_ s: Settings, configuration: LlamaConfiguration) throws -> Regime {
    let rate = min(1, Double(s.perClient) / s.trainingRecords)
    let expected = rate * s.trainingRecords * Double(s.clients)
    let contributions = Int((4 * expected).rounded(.up)) + 32
    var plan = TrainingPlan(steps: 1, learningRate: 1, samplingRate: rate, noiseMultiplier: 1, clipNorm: s.clipNorm,
                            delta: Settings.delta, maxLength: Settings.maxLength, rank: 4, alpha: 8, targets: ["q_proj", "v_proj"],
                            noisePlacement: .distributed, expectedBatch: expected, maxContributions: contributions,
                            accuracyRecords: 0)
    let honest = max(1, s.clients / 2)
    let demo = demoConfiguration(s, regime: Regime(mode: .distributed, plan: plan, policy: ClientPolicy(
        maxEpsilon: s.epsilon, delta: Settings.delta, maxStepsPerRound: 1000, assumeHonest: honest),
        aggregation: .fedadam, serverLearningRate: s.serverLearningRate), directory: nil)
    let threshold = try demo.coordinator.rounds.secureAggregationGraph(cohortSize: s.clients).1
    let dimension = try AdapterLayout(configuration: configuration, plan: plan).shapes.values.reduce(0) { $0 + $1.reduce(1, *) }
    func epsilon(_ z: Double) throws -> Double {
        var candidate = plan
        candidate.noiseMultiplier = z
        var round = try DistributedRound(samplingRate: rate, noiseMultiplier: z, clipNorm: s.clipNorm, dimension: dimension,
                                         cohort: s.clients, threshold: threshold, assumeHonest: honest,
                                         contributions: contributions).ledgerMechanism
        round.steps *= s.rounds
        return try PrivacyAccounting.epsilon(steps: [round] + releases(candidate, rounds: s.rounds), delta: Settings.delta,
                                             accountant: .rdp)
    }
    guard let z = try calibrate(target: s.epsilon * (1 - 1e-6), epsilon) else {
        throw UsageError("distributed DP: no z up to 200 keeps ε at \(s.epsilon) over \(s.rounds) rounds")
    }
    plan.noiseMultiplier = z
    return Regime(mode: .distributed, plan: plan, policy: ClientPolicy(maxEpsilon: s.epsilon, delta: Settings.delta,
                                                                      maxStepsPerRound: 1000, assumeHonest: honest),
                  aggregation: .fedadam, serverLearningRate: s.serverLearningRate, expectedEpsilon: try epsilon(z))
}

/// The federation's client-level ε at δ after T rounds at client sampling rate q and noise multiplier z: the
/// coordinator's accountant (`ClientLevelDP.FederationAccountant`, as `client-level-accountant.json` keeps it).
func clientLevelEpsilon(_ s: Settings, rate: Double, noiseMultiplier z: Double) throws -> Double {
    try ClientLevelDP.FederationAccountant(epsilonBudget: .greatestFiniteMagnitude, delta: Settings.delta)
        .epsilon(after: [ClientLevelDP.Round](repeating: ClientLevelDP.Round(samplingRate: rate, noiseMultiplier: z), count: s.rounds))
}

/// The client-level rate when none is given: of k/N for k = ⌈N/2⌉...N (an expected cohort of at least half, so that a
/// round is seldom skipped for a sample of fewer than 2), the one whose calibrated z puts the least noise on the
/// fixed-denominator estimate, z·S/(q·N) (`ClientLevelDP.FixedDenominatorEstimator`). Each candidate is written to
/// standard error: with few clients sampling buys little, and the figures say how little.
func clientLevelRate(_ s: Settings) throws -> Double {
    var best: (rate: Double, noise: Double)?
    for k in (s.clients + 1) / 2...s.clients {
        let rate = Double(k) / Double(s.clients)
        guard let z = try calibrate(target: s.epsilon * (1 - 1e-6), { try clientLevelEpsilon(s, rate: rate, noiseMultiplier: $0) }) else {
            continue
        }
        let noise = z / (rate * Double(s.clients))
        StandardError.write(String(format: "client-level: q %d/%d needs z %.4f for ε %g after %d rounds: noise on the estimate "
                                   + "%.4f·S a coordinate\n", k, s.clients, z, s.epsilon, s.rounds, noise))
        if best.map({ noise < $0.noise }) ?? true { best = (rate, noise) }
    }
    guard let best else { throw UsageError("client-level DP: no z up to 200 keeps ε at \(s.epsilon) over \(s.rounds) rounds") }
    return best.rate
}

/// Client-level DP-FedAvg at the same gradient evaluations in expectation: each sampled client runs S local steps of
/// B/(S·q) notes (non-private, AdamW as the local regimes), clips its whole update to `--client-clip` and adds its noise
/// share under secure aggregation; FedAdam at the distributed regime's η (Adam's step does not scale with S); z such
/// that the federation's accountant reaches E after T rounds (the budget the coordinator refuses rounds past).
/// Each client's own ledger charges every participation without amplification (q = 1, its share under its trust:
/// SECURITY.md), a bound the federation's ε does not use: its policy allows that charge (budget 1000) and the
/// benchmark reports the largest one beside the federation's ε.
func clientLevelRegime(_ s: Settings) throws -> Regime {
    let q = try s.clientRate ?? clientLevelRate(s)
    let rate = Double(s.perClient) / q / Double(s.localSteps) / s.trainingRecords
    guard rate <= 1 else {
        throw UsageError("client-level DP: \(s.perClient) notes a round at q \(q) is more notes than a client holds")
    }
    guard let z = try calibrate(target: s.epsilon * (1 - 1e-6), { try clientLevelEpsilon(s, rate: q, noiseMultiplier: $0) }) else {
        throw UsageError("client-level DP: no z up to 200 keeps ε at \(s.epsilon) over \(s.rounds) rounds at q \(q)")
    }
    let plan = TrainingPlan(steps: s.localSteps, learningRate: Settings.localLearningRate, samplingRate: rate, noiseMultiplier: z,
                            clipNorm: s.clientClip, delta: Settings.delta, maxLength: Settings.maxLength, rank: 4, alpha: 8,
                            targets: ["q_proj", "v_proj"], privacyUnit: .client, noisePlacement: .distributed,
                            clientSamplingRate: q, accuracyRecords: 0)
    return Regime(mode: .clientLevel, plan: plan, policy: ClientPolicy(maxEpsilon: 1000, delta: Settings.delta, maxStepsPerRound: 1000,
                                                                     assumeHonest: max(1, s.clients / 2)),
                  aggregation: .fedadam, serverLearningRate: s.serverLearningRate,
                  expectedEpsilon: try clientLevelEpsilon(s, rate: q, noiseMultiplier: z))
}

/// The demo's configuration for `regime`: N clients, R notes in the task form, T rounds, no canaries, no probe.
func demoConfiguration(_ s: Settings, regime: Regime, directory: String?) -> DemoConfiguration {
    var c = DemoConfiguration(clients: s.clients, rounds: s.rounds, model: s.model, records: s.records, directory: directory,
                              aggregation: regime.aggregation, secureAggregation: true, canaries: 0,
                              distributedNoise: regime.plan.isDistributed, probe: false)
    c.planOverride = regime.plan
    c.policyOverride = regime.policy
    c.serverLearningRateOverride = regime.serverLearningRate
    c.formOverride = .task
    c.clientEpsilonBudgetOverride = regime.plan.isClientLevel ? s.epsilon : nil
    c.monitoredHeldOutOverride = s.monitorNotes
    c.roundTimeoutOverride = s.roundTimeout
    return c
}

// MARK: Scoring on the clients' held-out notes

/// One adapter's figures over every client's held-out notes, pooled (loss and token accuracy weighted by tokens).
struct Scores: Encodable {
    var notes = 0, tokens = 0
    var loss = 0.0, tokenAccuracy = 0.0
    /// Notes whose assessment was generated, and how many named the note's condition.
    var generated = 0, named = 0
    var conditionAccuracy: Double? { generated > 0 ? Double(named) / Double(generated) : nil }

    enum CodingKeys: String, CodingKey {
        case notes, tokens, loss, generated, named
        case tokenAccuracy = "token_accuracy", conditionAccuracy = "condition_accuracy"
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(notes, forKey: .notes)
        try c.encode(tokens, forKey: .tokens)
        try c.encode(loss, forKey: .loss)
        try c.encode(tokenAccuracy, forKey: .tokenAccuracy)
        try c.encode(generated, forKey: .generated)
        try c.encode(named, forKey: .named)
        try c.encode(conditionAccuracy, forKey: .conditionAccuracy)
    }
}

/// Scores `adapter` (nil: the base model) on the held-out files: every note's loss and token accuracy, and whether the
/// greedy assessment of the first `generate` labelled notes of each file names its condition (`ConditionAccuracy`, as
/// the clients' own release scores them).
func score(_ loaded: LoadedModel, adapter: String?, files: [URL], generate: Int) throws -> Scores {
    let tokenizer = try ModelLoader.requireTokenizer(loaded, path: "the model")
    loaded.model.setAdapter(try adapter.map { try ModelLoader.loadAdapter(path: $0, for: loaded.model) })
    var scores = Scores(), weightedLoss = 0.0, weightedAccuracy = 0.0
    for file in files {
        let examples = try Dataset.load(file, tokenizer: tokenizer, maxLength: Settings.maxLength,
                                        vocabularySize: loaded.model.configuration.vocabSize)
        let evaluation = try Evaluator.evaluate(model: loaded.model, examples: examples)
        scores.notes += evaluation.examples
        scores.tokens += evaluation.tokens
        weightedLoss += evaluation.loss * Double(evaluation.tokens)
        weightedAccuracy += evaluation.tokenAccuracy * Double(evaluation.tokens)
        let chosen = ConditionAccuracy.scored(examples, limit: generate)
        let correct = try ConditionAccuracy.correct(model: loaded.model, tokenizer: tokenizer, examples: examples, indices: chosen)
        scores.generated += correct.count
        scores.named += correct.filter { $0 }.count
    }
    scores.loss = scores.tokens > 0 ? weightedLoss / Double(scores.tokens) : .nan
    scores.tokenAccuracy = scores.tokens > 0 ? weightedAccuracy / Double(scores.tokens) : .nan
    return scores
}

// MARK: The runs

/// One regime's result.
struct Result: Encodable {
    var mode: String
    var plan: TrainingPlan
    /// ε each client was expected to spend (the calibration; client-level: the federation's), and the largest finite ε
    /// any client's ledger reported (nil in the non-private regime, whose ledgers record ε = ∞).
    var expectedEpsilon: Double?
    var chargedEpsilon: Double?
    /// Client-level: the federation's ε after the rounds its accountant charged (`client-level-accountant.json`).
    var federationEpsilon: Double?
    var aggregation: AggregationKind
    var serverLearningRate: Double?
    var roundsCommitted: Int
    var scores: Scores
    var seconds: Double

    enum CodingKeys: String, CodingKey {
        case mode, plan, scores, seconds, aggregation
        case expectedEpsilon = "expected_epsilon", chargedEpsilon = "charged_epsilon", roundsCommitted = "rounds_committed"
        case federationEpsilon = "federation_epsilon", serverLearningRate = "server_learning_rate"
    }
}

/// `--json`: the settings, the base model's scores and each regime's result.
struct Report: Encodable {
    var clients: Int, records: Int, rounds: Int, perClient: Int, localSteps: Int, monitorNotes: Int
    var epsilon: Double, delta: Double
    var directory: String
    var base: Scores
    var regimes: [Result]

    enum CodingKeys: String, CodingKey {
        case clients, records, rounds, epsilon, delta, directory, base, regimes
        case perClient = "per_client", localSteps = "local_steps", monitorNotes = "monitor_notes"
    }
}

func clock(_ seconds: Double) -> String {
    let s = Int(seconds.rounded())
    return String(format: "%d:%02d", s / 60, s % 60)
}

/// Runs `regime`'s federation in `folder` and scores its final adapter.
func run(_ regime: Regime, _ s: Settings, folder: URL, loaded: LoadedModel, executables: FederationExecutables,
         heldOut: (URL) -> [URL]) throws -> Result {
    let started = Date()
    let demo = try Demo(demoConfiguration(s, regime: regime, directory: folder.path), executables: executables,
                        narrate: { StandardError.write("  [\(regime.mode.rawValue)] \($0)\n") },
                        progress: { StandardError.write("  [\(regime.mode.rawValue)] \($0)\n") })
    let outcome = try demo.run()
    let committed = outcome.rounds.filter { $0.summary.status == "committed" }.count
    StandardError.write("[\(regime.mode.rawValue)] \(committed) of \(s.rounds) rounds committed in \(clock(-started.timeIntervalSinceNow)); "
                        + "scoring the final adapter on the held-out notes\n")
    let scores = try score(loaded, adapter: committed > 0 ? outcome.adapter : nil, files: heldOut(folder), generate: s.evalNotes)
    return Result(mode: regime.mode.rawValue, plan: regime.plan, expectedEpsilon: regime.expectedEpsilon,
                  chargedEpsilon: outcome.rounds.compactMap(\.summary.maxEpsilon).filter(\.isFinite).max(),
                  federationEpsilon: regime.plan.isClientLevel ? try federationEpsilon(coordinator: outcome.state) : nil,
                  aggregation: regime.aggregation, serverLearningRate: regime.serverLearningRate, roundsCommitted: committed,
                  scores: scores, seconds: -started.timeIntervalSinceNow)
}

/// The federation's client-level ε as its coordinator's accountant left it: every round it charged, skipped ones too.
func federationEpsilon(coordinator: String) throws -> Double {
    let file = CoordinatorPaths(path: coordinator).clientLevelAccountant
    guard let (data, _) = try StateFile.read(file, maximumBytes: 1 << 24) else {
        throw UsageError("\(file.path) is missing: the client-level federation charged no round")
    }
    let state = try StateFile.decode(ClientLevelAccountantState.self, from: data, path: file.path)
    return try ClientLevelDP.FederationAccountant(epsilonBudget: state.epsilonBudget, delta: state.delta, rounds: state.rounds).epsilon()
}

func table(base: Scores, results: [Result], settings s: Settings) -> String {
    var lines = [String(format: "%d clients × %d notes, %d rounds of %d notes per client (%d gradient evaluations), ε %g at δ %g",
                        s.clients, s.records, s.rounds, s.perClient, s.clients * s.rounds * s.perClient, s.epsilon, Settings.delta),
                 "regime        ε expected  ε charged  rounds  held-out loss (vs base)  token acc.  condition acc.    time"]
    func right(_ text: String, _ width: Int) -> String { String(repeating: " ", count: max(0, width - text.count)) + text }
    func row(_ name: String, _ e: Double?, _ c: Double?, _ rounds: String, _ x: Scores, _ time: String) -> String {
        let condition = x.conditionAccuracy.map { String(format: "%.1f%% (%d/%d)", 100 * $0, x.named, x.generated) } ?? "-"
        return name.padding(toLength: 14, withPad: " ", startingAt: 0)
            + right(e.map { String(format: "%.3f", $0) } ?? "-", 10) + right(c.map { String(format: "%.3f", $0) } ?? "-", 11)
            + right(rounds, 8) + right(String(format: "%.4f (%+.1f%%)", x.loss, 100 * (x.loss / base.loss - 1)), 24)
            + right(String(format: "%.1f%%", 100 * x.tokenAccuracy), 12) + right(condition, 16) + right(time, 8)
    }
    lines.append(row("base model", nil, nil, "-", base, "-"))
    for r in results {
        lines.append(row(r.mode, r.expectedEpsilon, r.federationEpsilon ?? r.chargedEpsilon, "\(r.roundsCommitted)", r.scores,
                         clock(r.seconds)))
    }
    for r in results where r.federationEpsilon != nil {
        lines.append(String(format: "%@: ε is the federation's (client unit, its coordinator's accountant); the clients' own ledgers, "
                            + "which charge each participation without amplification, reached at most %@", r.mode,
                            r.chargedEpsilon.map { String(format: "%.3f", $0) } ?? "-"))
    }
    lines.append("held-out notes scored: \(base.notes) (\(base.tokens) assessment tokens); assessments generated: \(base.generated)")
    return lines.joined(separator: "\n")
}

do {
    let s = try parseSettings()
    let executables = try FederationExecutables.beside(
        coordinator: URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("conclave-coordinator"))
    let loaded = try ModelLoader.load(path: s.model, threads: 2)
    var regimes: [Regime] = []
    for mode in s.modes {
        switch mode {
        case .nonprivate: regimes.append(try localRegime(s, private: false))
        case .local: regimes.append(try localRegime(s, private: true))
        case .distributed: regimes.append(try distributedRegime(s, configuration: loaded.model.configuration))
        case .clientLevel: regimes.append(try clientLevelRegime(s))
        }
    }
    if s.plansOnly {
        struct Plans: Encodable { var regimes: [Regime] }
        try JSONOutput.print(encoding: Plans(regimes: regimes))
        exit(0)
    }
    let root: URL
    if let directory = s.directory {
        root = URL(fileURLWithPath: directory)
    } else {
        var template = Array((NSTemporaryDirectory() + "/conclave-bench-notes-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw UsageError("cannot create a temporary directory") }
        root = URL(fileURLWithPath: String(cString: made))
    }
    let heldOut: (URL) -> [URL] = { folder in
        (1...s.clients).map { folder.appendingPathComponent("client-\($0)/notes.heldout.jsonl") }
    }
    var results: [Result] = []
    var base: Scores?
    let started = Date()
    for (index, regime) in regimes.enumerated() {
        let folder = root.appendingPathComponent(regime.mode.rawValue)
        StandardError.write(String(format: "[%d/%d] %@ in %@ (%@ elapsed%@)\n", index + 1, regimes.count, regime.mode.rawValue, folder.path,
                                   clock(-started.timeIntervalSinceNow),
                                   index > 0 ? ", about " + clock(-started.timeIntervalSinceNow / Double(index) * Double(regimes.count - index)) + " left" : ""))
        let result = try run(regime, s, folder: folder, loaded: loaded, executables: executables, heldOut: heldOut)
        let baseScores = try base ?? score(loaded, adapter: nil, files: heldOut(folder), generate: s.evalNotes)
        base = baseScores
        results.append(result)
        // Each regime's figures as soon as they are known, so that a run stopped later keeps them.
        try writeFileAtomically(try JSONEncoder().encode(result), to: folder.appendingPathComponent("result.json"))
        StandardError.write(table(base: baseScores, results: [result], settings: s) + "\n")
    }
    guard let base else { throw UsageError("--modes is empty") }
    if s.json {
        try JSONOutput.print(encoding: Report(clients: s.clients, records: s.records, rounds: s.rounds, perClient: s.perClient,
                                              localSteps: s.localSteps, monitorNotes: s.monitorNotes, epsilon: s.epsilon,
                                              delta: Settings.delta, directory: root.path, base: base, regimes: results))
    } else {
        print(table(base: base, results: results, settings: s))
        print("federations kept in \(root.path)")
    }
} catch {
    StandardError.write("conclave-bench-notes: \(error)\n")
    exit(1)
}
