import CommandLineParsing
import FineTuning
import Foundation
import Kernels
import LanguageModel
import Privacy
import Reports
import SystemIO

/// `train`: a LoRA adapter fine-tuned on local data, with DP-SGD on request; with `--state` the privacy
/// ledger is charged before the first gradient (a run without `--dp` as ε = ∞).
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "train", abstract: "Fine-tune a LoRA adapter on local data, optionally with DP-SGD.",
        help: """
        usage: conclave-client train --model M --data D.jsonl --out ADAPTER_DIR [--eval-data E.jsonl] [--state DIR]
                                     [--rank r] [--alpha a] [--targets q_proj,k_proj,...] [--steps N | --epochs E]
                                     [--batch-size B] [--gradient-accumulation K] [--lr X] [--warmup N]
                                     [--schedule constant|linear|cosine] [--weight-decay W] [--max-length L]
                                     [--dp] [--noise-multiplier σ | --target-epsilon ε] [--clip C] [--delta δ]
                                     [--accountant rdp|pld] [--privacy-unit record|user] [--budget-epsilon E]
                                     [--seed S] [--precision P] [--threads N] [--json]

          --model M                 a .gguf file or an HF directory (the frozen base, used as stored)
          --data D                  JSONL training records (one line is one record for privacy)
          --out DIR                 where the PEFT adapter is written (adapter_config.json, adapter_model.safetensors),
                                    replacing the adapter there in one step; a DIR holding other files is refused
          --eval-data E             held-out JSONL scored before and after training
          --state DIR               the client's state directory; its privacy ledger is charged before the
                                    first gradient (without --dp the run is recorded as ε = ∞, after which
                                    the ledger refuses every charge); without --state nothing is recorded
          --rank r, --alpha a       LoRA rank (default 8) and alpha (default 16)
          --targets LIST            comma-separated modules (default: the attention's, q_proj,k_proj,v_proj,o_proj;
                                    qkv_proj,o_proj on Phi-3, whose q, k, v are one projection)
          --steps N | --epochs E    optimizer steps, or passes over the data (default 1 epoch)
          --batch-size B            expected records (users, at --privacy-unit user) per step (Poisson sampling,
                                    rate q = B·K/N, N records or users; default 8)
          --gradient-accumulation K records per step multiplied by K (default 1)
          --lr X                    peak learning rate (default 0.002); --warmup N steps (default 0);
          --schedule S              decay after warm-up: constant, linear (default) or cosine
          --max-length L            cut records longer than L tokens to their first L (default 256)
          --dp                      DP-SGD: per-record clipping to --clip C (default 1.0) and Gaussian noise
          --noise-multiplier σ      noise standard deviation σ·C; or --target-epsilon ε to calibrate σ
          --delta δ                 δ of the guarantee (default 1e-5); --accountant rdp (default) or pld
          --privacy-unit U          whom ε protects: record (default, one JSONL line) or user (every record with
                                    the same "user" field, required on every line): users are sampled, and each
                                    sampled user's records (at most \(TrainingConfiguration.defaultRecordsPerUserPerStep) per step, drawn at random) give one
                                    summed gradient clipped to C; the ledger in --state must count the same unit
          --budget-epsilon E        create the ledger in --state with this ε budget (at δ) if it has none
          --seed S                  seed of the adapter's public initialisation (default 0)
        \(ModelCommands.precisionHelp)
        \(ModelCommands.threadsHelp)
          --json                    print {"steps", "tokens", "train_loss", "eval_loss", "eval_loss_before",
                                    "epsilon", "delta", "noise_multiplier", "clip_norm", "sampling_rate",
                                    "privacy_unit", "sampling_units", "tokens_per_second", "seconds",
                                    "peak_rss_bytes", "adapter", "ledger", "ledger_epsilon_spent",
                                    "ledger_epsilon_budget"}
        Progress (step, loss, tokens/s, ε so far, ETA; held-out evaluations with their ETA) goes to standard
        error, with --json too (the JSON alone goes to standard output). The summary gives this run's ε and,
        with --state, the ledger's ε spent of its budget.

        examples:
          conclave-client train --model models/SmolLM2-135M-Instruct.Q4_1.gguf --data cardio.jsonl --out adapter --steps 20
          conclave-client train --model models/SmolLM2-135M-Instruct.Q4_1.gguf --data cardio.jsonl --eval-data cardio.heldout.jsonl \\
              --out adapter --state me --budget-epsilon 10 --dp --target-epsilon 8 --steps 40 --batch-size 16
          conclave-client train --model models/SmolLM2-135M-Instruct.Q4_1.gguf --data patients.jsonl --out adapter \\
              --state me-users --budget-epsilon 10 --dp --noise-multiplier 1.1 --privacy-unit user --batch-size 4 --steps 20
        """)

    static var options: [Option<Self>] {
        [
            .required("--model", \.modelPath), .required("--data", \.dataPath), .required("--out", \.outPath),
            .option("--eval-data", \.evalPath), .option("--state", \.statePath),
            .option("--rank", .int(in: 1...256), \.rank), .option("--alpha", .double(in: 1e-6...1e6), \.alpha),
            .option("--targets", .converted(Self.projectionModules), \.targets),
            .option("--steps", .int(in: 1...10_000_000), \.steps), .option("--epochs", .double(in: 1e-6...1e6), \.epochs),
            .option("--batch-size", .int(in: 1...1_000_000), \.batchSize),
            .option("--gradient-accumulation", .int(in: 1...1_000_000), \.gradientAccumulation),
            .option("--lr", .double(in: 1e-12...10), \.learningRate), .option("--warmup", .int(in: 0...10_000_000), \.warmupSteps),
            .option("--schedule", .choice, \.schedule), .option("--weight-decay", .double(in: 0...10), \.weightDecay),
            .option("--max-length", .int(in: 2...1_000_000), \.maxLength), .flag("--dp", \.dp),
            .option("--noise-multiplier", .double(in: 1e-6...1e6), \.noiseMultiplier),
            .option("--target-epsilon", .double(in: 1e-6...1e6), \.targetEpsilon),
            .option("--clip", .double(in: 1e-9...1e9), \.clip), .option("--delta", .double(in: 1e-300...0.999_999), \.delta),
            .option("--accountant", .choice, \.accountant), .option("--privacy-unit", .choice, \.privacyUnit),
            .option("--budget-epsilon", .double(in: 1e-6...1e6), \.budgetEpsilon),
            .option("--seed", .unsigned, \.seed), .option("--precision", .choice, \.precision),
            .option("--threads", .int(in: 1...256), \.threads), .flag("--json", \.json),
        ]
    }

    var modelPath = ""
    var dataPath = ""
    var outPath = ""
    var evalPath: String?
    var statePath: String?
    var rank = 8
    var alpha = 16.0
    /// nil: the model family's attention projections (`defaultTargets`).
    var targets: [ProjectionModule]?
    var steps: Int?
    var epochs: Double?
    var batchSize = 8
    var gradientAccumulation = 1
    var learningRate = 2e-3
    var warmupSteps = 0
    var schedule = LearningRateSchedule.Decay.linear
    var weightDecay = 0.0
    var maxLength = 256
    var dp = false
    var noiseMultiplier: Double?
    var targetEpsilon: Double?
    var clip = 1.0
    var delta = 1e-5
    var accountant = AccountantKind.rdp
    var privacyUnit = PrivacyUnit.record
    var budgetEpsilon: Double?
    /// The adapter's public initialisation.
    var seed: UInt64 = 0
    var precision = ActivationPrecision.int8
    var threads: Int?
    var json = false

    /// `--targets q_proj,v_proj`: at least one module, each a projection the adapter can wrap.
    static func projectionModules(_ list: String) throws -> [ProjectionModule] {
        let modules = try list.split(separator: ",").map { name in
            guard let module = ProjectionModule(rawValue: String(name)) else {
                throw UsageError("--targets: unknown module '\(name)'; choose from "
                                 + ProjectionModule.allCases.map(\.rawValue).joined(separator: ", "))
            }
            return module
        }
        guard !modules.isEmpty else { throw UsageError("--targets is empty") }
        return modules
    }

    /// The options' combinations, then every path, before any work: nothing is charged for a run that cannot finish.
    func validate() throws {
        if privacyUnit == .client { throw UsageError(PrivacyUnit.clientIsAFederationsUnit) }
        if steps != nil && epochs != nil { throw UsageError("give either --steps or --epochs, not both") }
        if !dp && (noiseMultiplier != nil || targetEpsilon != nil) {
            throw UsageError("--noise-multiplier and --target-epsilon need --dp")
        }
        if dp && (noiseMultiplier == nil) == (targetEpsilon == nil) {
            throw UsageError("--dp needs exactly one of --noise-multiplier and --target-epsilon")
        }
        try ModelCommands.checkModel(modelPath, adapter: nil)
        try PathCheck.inputFile("--data", dataPath, expected: ModelCommands.datasetFile)
        if let evalPath { try PathCheck.inputFile("--eval-data", evalPath, expected: ModelCommands.datasetFile) }
        try PathCheck.outputDirectory("--out", outPath, expected: "a directory for the adapter (adapter_config.json, "
                                      + "adapter_model.safetensors), created when missing")
        // Before training, so a directory of other files is refused in seconds, not after the run.
        try AdapterOutput.checkReplaceable(URL(fileURLWithPath: outPath))
        if let statePath {
            try PathCheck.outputDirectory("--state", statePath, expected: "the client's state directory (its privacy ledger)")
        }
    }

    /// The trainer's configuration from the options, without privacy (which needs the data to calibrate).
    var trainingConfiguration: TrainingConfiguration {
        var configuration = TrainingConfiguration()
        configuration.rank = rank
        configuration.alpha = alpha
        if let targets { configuration.targets = targets }
        configuration.steps = steps
        configuration.epochs = epochs ?? 1
        configuration.batchSize = batchSize
        configuration.gradientAccumulation = gradientAccumulation
        configuration.learningRate = learningRate
        configuration.warmupSteps = warmupSteps
        configuration.decay = schedule
        configuration.weightDecay = weightDecay
        configuration.initializationSeed = seed
        configuration.privacyUnit = privacyUnit
        return configuration
    }

    func run() throws -> Int32 {
        let loaded = try ModelLoader.load(path: modelPath, threads: threads)
        let model = loaded.model
        model.precision = precision
        let c = model.configuration
        let examples = try Dataset.load(URL(fileURLWithPath: dataPath), tokenizer: loaded.tokenizer, maxLength: maxLength,
                                        vocabularySize: c.vocabSize, requireUser: privacyUnit == .user)
        try Dataset.requireLearnableTokens(examples, file: dataPath)
        let evalExamples = try evalPath.map {
            try Dataset.load(URL(fileURLWithPath: $0), tokenizer: loaded.tokenizer, maxLength: maxLength, vocabularySize: c.vocabSize)
        }

        // The plan's privacy: σ given, or calibrated to the target ε for this run.
        var configuration = trainingConfiguration
        if targets == nil { configuration.targets = c.defaultTargets }
        if dp {
            let probe = try LoRATrainer(model: model, examples: examples, configuration: configuration)
            let sigma = try noiseMultiplier ?? PrivacyAccounting.noiseMultiplier(
                targetEpsilon: targetEpsilon!, samplingRate: probe.samplingRate, steps: probe.totalSteps, delta: delta,
                accountant: accountant, noise: MechanismSteps.dpsgd(samplingRate: 0, noiseMultiplier: 1, steps: 0).noise)
            configuration.privacy = DifferentialPrivacy(noiseMultiplier: sigma, clipNorm: clip, delta: delta,
                                                        accountant: accountant)
        }
        let trainer = try LoRATrainer(model: model, examples: examples, configuration: configuration)

        var evalBefore: Double?
        if let evalExamples {
            model.setAdapter(trainer.lora.adapter())
            evalBefore = try Evaluator.evaluate(model: model, examples: evalExamples, progress: heldOutProgress(evalExamples, "before")).loss
            if !json { StandardError.write(String(format: "held-out loss before: %.4f\n", evalBefore!)) }
        }

        // The charge is the last step before the first noisy gradient: every path was checked in
        // validate() and every input is loaded and evaluated above, so what fails after it is training.
        let ledger = try chargeLedger(for: trainer, privacy: configuration.privacy)

        // Progress: ε so far by RDP (cheap) every step it prints.
        let progress = ProgressReporter(label: "train", total: trainer.totalSteps)
        if !json, let p = configuration.privacy {
            StandardError.write(String(format: "DP-SGD: q %.5f, σ %.4f, C %g, %d steps, δ %g (%@)\n", trainer.samplingRate,
                                       p.noiseMultiplier, p.clipNorm, trainer.totalSteps, p.delta, p.accountant.rawValue))
        }
        if !json && privacyUnit == .user {
            StandardError.write("privacy unit user: \(trainer.units.count) users (\(examples.count) records); each step samples "
                                + "users and clips each one's summed gradient, at most "
                                + "\(configuration.recordsPerUserPerStep) records per user per step\n")
        }
        let result = try trainer.train(progress: progress)
        let adapter = result.lora.adapter()
        try AdapterOutput.write(adapter, to: URL(fileURLWithPath: outPath), baseModel: modelPath)

        var evalAfter: Double?
        if let evalExamples {
            model.setAdapter(adapter)
            evalAfter = try Evaluator.evaluate(model: model, examples: evalExamples, progress: heldOutProgress(evalExamples, "after")).loss
        }
        try report(result, privacy: configuration.privacy, evalBefore: evalBefore, evalAfter: evalAfter, ledger: ledger)
        return 0
    }

    /// Progress of a held-out evaluation (records done, loss so far, ETA) on standard error: it takes seconds.
    func heldOutProgress(_ examples: [TokenizedExample], _ when: String) -> ProgressReporter {
        ProgressReporter(label: "held-out \(when)", total: examples.count)
    }

    /// The ledger this run charged: where it is, and its ε spent (this run included) and budget.
    struct ChargedLedger {
        let path: String
        let spent: Double
        let budget: Double
    }

    /// Charges the ledger in `--state` durably before the first gradient: a crash can overcount, never
    /// undercount. A run without `--dp` is charged too, as a run without noise (ε = ∞), after which the
    /// ledger refuses every charge. Returns the ledger as charged, or nil without `--state`, which says
    /// loudly on standard error that nothing is recorded (issue 13: such runs were silently unrecorded).
    func chargeLedger(for trainer: LoRATrainer, privacy: DifferentialPrivacy?) throws -> ChargedLedger? {
        guard let statePath else {
            StandardError.write(Self.unrecordedWarning(dp: privacy != nil))
            return nil
        }
        let delta = privacy?.delta ?? delta
        let directory = URL(fileURLWithPath: statePath)
        let exists = FileManager.default.fileExists(atPath: directory.appendingPathComponent(PrivacyLedger.fileName).path)
        let budget = exists ? nil : budgetEpsilon.map {
            PrivacyBudget(epsilon: $0, delta: delta, accountant: privacy?.accountant ?? accountant, unit: privacyUnit)
        }
        if !exists && budget == nil {
            throw UsageError("no privacy ledger in \(statePath): give --budget-epsilon to create one"
                             + (privacy == nil ? ", or leave out --state (this run without --dp is then recorded nowhere)" : ""))
        }
        var ledger = try PrivacyLedger(directory: directory, creatingWith: budget)
        if let privacy, ledger.budget.delta != privacy.delta {
            throw UsageError("--delta \(privacy.delta) differs from the ledger's δ \(ledger.budget.delta) in \(statePath)")
        }
        // A run without privacy is ε = ∞ at any unit: it is charged at the ledger's.
        if privacy != nil, ledger.budget.unit != privacyUnit {
            throw UsageError("--privacy-unit \(privacyUnit.rawValue) differs from the ledger's unit in \(statePath): it counts "
                             + "ε per \(ledger.budget.unit.rawValue); ε per record and ε per user do not compose in one ledger, "
                             + "so give --privacy-unit \(ledger.budget.unit.rawValue) or a --state of its own")
        }
        let mechanism = trainer.mechanism ?? .nonPrivate(samplingRate: trainer.samplingRate, steps: trainer.totalSteps)
        let receipt = try ledger.chargeBeforeTraining(mechanism, clipNorm: privacy?.clipNorm ?? 0,
                                                      purpose: "run:\(UUID().uuidString.lowercased())",
                                                      unit: privacy == nil ? ledger.budget.unit : privacyUnit).receipt()
        if privacy == nil {
            StandardError.write("WARNING: this run trains WITHOUT differential privacy (no --dp): ledger \(ledger.fileURL.path) "
                                + "records it as ε = ∞, and refuses every further charge\n")
        } else if !json {
            StandardError.write(String(format: "ledger %@: charged this run, ε spent %.4f of %.4f (δ %g, per %@)\n",
                                       ledger.fileURL.path, receipt.epsilon, ledger.budget.epsilon,
                                       ledger.budget.delta, ledger.budget.unit.rawValue))
        }
        return ChargedLedger(path: ledger.fileURL.path, spent: receipt.epsilon, budget: ledger.budget.epsilon)
    }

    /// What `train` without `--state` says on standard error, before the first gradient.
    static func unrecordedWarning(dp: Bool) -> String {
        let what = dp ? "this run's ε" : "this run WITHOUT differential privacy (ε = ∞)"
        return """
            WARNING: no --state: \(what) is NOT RECORDED in any privacy ledger. Nothing will count it against a
            budget, and later runs on this data will not know it happened. Give --state DIR to record it.

            """
    }

    /// Prints the run's outcome: the `--json` object, or a summary line and where the adapter was written.
    func report(_ result: TrainingResult, privacy: DifferentialPrivacy?, evalBefore: Double?, evalAfter: Double?,
                ledger: ChargedLedger?) throws {
        let report: [String: Any] = [
            "steps": result.steps, "tokens": result.tokens, "train_loss": result.trainLoss,
            "eval_loss": evalAfter ?? NSNull(), "eval_loss_before": evalBefore ?? NSNull(),
            "epsilon": result.epsilon ?? NSNull(), "delta": privacy?.delta ?? NSNull(),
            "noise_multiplier": privacy?.noiseMultiplier ?? NSNull(),
            "clip_norm": privacy?.clipNorm ?? NSNull(), "sampling_rate": result.samplingRate,
            "privacy_unit": result.privacyUnit.rawValue, "sampling_units": result.samplingUnits,
            "tokens_per_second": result.tokensPerSecond, "seconds": result.seconds,
            "peak_rss_bytes": ProcessStatistics.peakResidentBytes(), "adapter": outPath, "ledger": ledger?.path ?? NSNull(),
            "ledger_epsilon_spent": ledger?.spent ?? NSNull(), "ledger_epsilon_budget": ledger?.budget ?? NSNull(),
        ]
        if json {
            try JSONOutput.print(report)
        } else {
            var line = String(format: "%d steps, %d tokens, train loss %.4f, %.0f tokens/s", result.steps, result.tokens,
                              result.trainLoss, result.tokensPerSecond)
            if let evalBefore, let evalAfter { line += String(format: "; held-out loss %.4f → %.4f", evalBefore, evalAfter) }
            if let epsilon = result.epsilon, let p = privacy {
                line += String(format: "; ε %.3f at δ %g per %@", epsilon, p.delta, result.privacyUnit.rawValue)
            }
            if let ledger { line += String(format: "; ledger ε spent %.3f of %g", ledger.spent, ledger.budget) }
            print(line)
            print("adapter written to \(outPath)")
        }
    }
}

/// `budget`: the privacy ledger's budget and charges, and setting the budget.
struct BudgetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "budget", abstract: "Show (or set) the privacy budget and what this client has spent.",
        help: """
        usage: conclave-client budget --state DIR [--set-epsilon E --delta δ [--accountant rdp|pld]
                                     [--privacy-unit record|user]] [--json] [--html F]

          --state DIR        the client's state directory (its privacy-ledger.json)
          --set-epsilon E    create the ledger with budget E, or change the budget of an existing one
          --delta δ          δ of the budget (required with --set-epsilon)
          --privacy-unit U   whom the ledger's ε protects, record (default) or user; set when it is created
                             (a ledger with charges keeps its unit)
          --json             print {"epsilon_spent", "epsilon_budget", "epsilon_left", "delta", "accountant",
                             "unit", "non_private_runs", "refuses_every_charge", "entries": [{"purpose", "date",
                             "sampling_rate", "noise_multiplier", "clip_norm", "steps", "unit", "noise",
                             "cumulative_epsilon"}]}; ε that is infinite is null
          --html F           also write the ledger as a self-contained HTML page to F: cumulative ε per charge
                             against the budget, and every charge's parameters
        A run without differential privacy (a round under require_privacy: false, train without --dp) is
        recorded as ε = ∞ (noise "none"): from then on the ledger refuses every charge, and no new budget
        can undo it.

        examples:
          conclave-client budget --state me
          conclave-client budget --state me --set-epsilon 10 --delta 1e-5 --html ledger.html
        """)

    static var options: [Option<Self>] {
        [
            .required("--state", \.statePath), .option("--set-epsilon", .double(in: 1e-6...1e6), \.setEpsilon),
            .option("--delta", .double(in: 1e-300...0.999_999), \.delta), .option("--accountant", .choice, \.accountant),
            .option("--privacy-unit", .choice, \.privacyUnit), .flag("--json", \.json), .option("--html", \.htmlPath),
        ]
    }

    var statePath = ""
    var setEpsilon: Double?
    var delta: Double?
    var accountant = AccountantKind.rdp
    var privacyUnit: PrivacyUnit?
    var json = false
    var htmlPath: String?

    func validate() throws {
        if setEpsilon != nil && delta == nil { throw UsageError("--set-epsilon needs --delta") }
        if privacyUnit != nil && setEpsilon == nil { throw UsageError("--privacy-unit needs --set-epsilon (it is part of the budget)") }
        if privacyUnit == .client { throw UsageError(PrivacyUnit.clientIsAFederationsUnit) }
        try PathCheck.outputDirectory("--state", statePath, expected: "the client's state directory (its privacy-ledger.json)")
        if let htmlPath { try PathCheck.outputFile("--html", htmlPath, expected: "the HTML page to write") }
    }

    func run() throws -> Int32 {
        let directory = URL(fileURLWithPath: statePath)
        var ledger: PrivacyLedger
        if let setEpsilon, let delta {
            let exists = FileManager.default.fileExists(atPath: directory.appendingPathComponent(PrivacyLedger.fileName).path)
            if exists {
                ledger = try PrivacyLedger(directory: directory)
                try ledger.updateBudget(PrivacyBudget(epsilon: setEpsilon, delta: delta, accountant: accountant,
                                                      unit: privacyUnit ?? ledger.budget.unit))
            } else {
                ledger = try PrivacyLedger(directory: directory, creatingWith: PrivacyBudget(
                    epsilon: setEpsilon, delta: delta, accountant: accountant, unit: privacyUnit ?? .record))
            }
        } else {
            ledger = try PrivacyLedger(directory: directory)
        }
        if let htmlPath {
            let page = LedgerReport.html(budget: ledger.budget, entries: ledger.entries, ledgerPath: ledger.fileURL.path,
                                         generated: Date())
            do { try writeFileAtomically(Data(page.utf8), to: URL(fileURLWithPath: htmlPath)) } catch {
                throw UsageError("cannot write \(htmlPath): \(error)")
            }
        }
        let formatter = ISO8601DateFormatter()
        let nonPrivate = ledger.entries.filter(\.mechanism.isUnbounded).count
        if json {
            try JSONOutput.print([
                "epsilon_spent": ledger.spentEpsilon, "epsilon_budget": ledger.budget.epsilon,
                "epsilon_left": ledger.remainingEpsilon, "delta": ledger.budget.delta,
                "accountant": ledger.budget.accountant.rawValue, "unit": ledger.budget.unit.rawValue,
                "ledger": ledger.fileURL.path,
                "non_private_runs": nonPrivate, "refuses_every_charge": ledger.spentEpsilon == .infinity,
                "entries": ledger.entries.map { entry -> [String: Any] in
                    ["purpose": entry.purpose, "date": formatter.string(from: entry.date),
                     "sampling_rate": entry.samplingRate, "noise_multiplier": entry.noiseMultiplier,
                     "clip_norm": entry.clipNorm, "steps": entry.steps, "delta": entry.delta, "noise": entry.noise.rawValue,
                     "accountant": entry.accountant.rawValue, "unit": entry.unit.rawValue,
                     "cumulative_epsilon": entry.cumulativeEpsilon]
                },
            ])
        } else {
            print(String(format: "%@: ε spent %.4f of %.4f (left %.4f) at δ %g per %@, %@ accountant, %d entries",
                         ledger.fileURL.path, ledger.spentEpsilon, ledger.budget.epsilon, ledger.remainingEpsilon,
                         ledger.budget.delta, ledger.budget.unit.rawValue, ledger.budget.accountant.rawValue,
                         ledger.entries.count))
            if nonPrivate > 0 {
                print("WARNING: \(nonPrivate) run\(nonPrivate == 1 ? "" : "s") without differential privacy recorded: ε is "
                      + "unbounded (∞), and this ledger refuses every further charge")
            }
            for entry in ledger.entries {
                let noise = entry.noise == .none ? "  (no differential privacy)" : ""
                print(String(format: "  %@  %@  q %.5f  σ %.4f  C %g  %d steps  → ε %.4f%@", formatter.string(from: entry.date),
                             entry.purpose, entry.samplingRate, entry.noiseMultiplier, entry.clipNorm, entry.steps,
                             entry.cumulativeEpsilon, noise))
            }
        }
        return 0
    }
}

/// `privacy epsilon`, `privacy noise` and `privacy plan`: the accountants from the command line.
/// The noise kinds `privacy epsilon` and `privacy noise` account (`none` has no σ to speak of).
let noiseChoices = [MechanismNoise.discreteGaussian.rawValue, MechanismNoise.gaussian.rawValue]

enum PrivacyCommands {
    static let group = CommandGroup(name: "privacy",
                                    abstract: "Privacy accounting: ε from a plan, the noise for a target ε, N rounds against the ledger.",
                                    commands: [Command(EpsilonCommand.self), Command(NoiseCommand.self),
                                               Command(PrivacyPlanCommand.self)])
}

/// `privacy epsilon`: ε spent by a DP-SGD plan.
struct EpsilonCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "epsilon", abstract: "ε spent by DP-SGD with the given sampling rate, noise and steps.",
        help: """
        usage: conclave-client privacy epsilon --sampling-rate q --noise-multiplier σ --steps T --delta δ
                                               [--accountant rdp|pld] [--noise discrete_gaussian|gaussian] [--json]
        Poisson-subsampled Gaussian mechanism under add/remove adjacency. --noise: discrete_gaussian (the
        default, what DP-SGD here adds; RDP at integer orders, see SECURITY.md) or gaussian (continuous). RDP: Mironov, Talwar and Zhang
        (2019) over dp_accounting's orders extended to 4096, converted with Balle et al. (2020); PLD: privacy
        loss distributions composed by FFT with pessimistic discretisation and the FFT's rounding bounded
        (an upper bound at every δ), or RDP where that is the smaller upper bound.
          --json   print {"epsilon", "delta", "accountant", "noise", "method"} (plus "order" for RDP); "method" says
                   when the PLD accountant's answer came from RDP (the smaller of two sound bounds, e.g. at
                   very small δ or a noise multiplier too small for the PLD grid)

        examples:
          conclave-client privacy epsilon --sampling-rate 0.01 --noise-multiplier 1 --steps 10000 --delta 1e-5
          conclave-client privacy epsilon --sampling-rate 0.01 --noise-multiplier 1 --steps 10000 --delta 1e-5 \\
              --accountant pld --json
        """)

    static var options: [Option<Self>] {
        [
            .required("--sampling-rate", .double(in: 0...1), \.q), .required("--noise-multiplier", .double(in: 1e-9...1e9), \.sigma),
            .required("--steps", .int(in: 0...100_000_000), \.steps), .required("--delta", .double(in: 1e-300...0.999_999), \.delta),
            .option("--accountant", .choice, \.accountant), .option("--noise", .oneOf(noiseChoices), \.noise),
            .flag("--json", \.json),
        ]
    }

    // Required: parsing always replaces these initial values.
    var q = 0.0
    var sigma = 0.0
    var steps = 0
    var delta = 0.0
    var accountant = AccountantKind.rdp
    var noise = MechanismSteps.dpsgd(samplingRate: 0, noiseMultiplier: 1, steps: 0).noise.rawValue
    var json = false

    func run() throws -> Int32 {
        var result: [String: Any] = ["delta": delta, "accountant": accountant.rawValue, "noise": noise]
        let mechanism = MechanismSteps(samplingRate: q, noiseMultiplier: sigma, steps: steps,
                                       noise: MechanismNoise(rawValue: noise) ?? .discreteGaussian)
        switch accountant {
        case .rdp:
            var rdp = RDPAccountant()
            try rdp.add(mechanism)
            let (epsilon, order) = try rdp.epsilon(delta: delta)
            result["epsilon"] = epsilon
            result["order"] = order
            result["method"] = PrivacyEstimate.Method.rdp.rawValue
        case .pld:
            let estimate = try PrivacyAccounting.estimate(steps: [mechanism], delta: delta, accountant: .pld)
            result["epsilon"] = estimate.epsilon
            result["method"] = estimate.method.rawValue
        }
        if json {
            try JSONOutput.print(result)
        } else {
            let method = result["method"] as? String ?? accountant.rawValue
            var line = String(format: "ε = %.6f at δ = %g (%@)", result["epsilon"] as? Double ?? .nan, delta, method)
            if let order = result["order"] as? Double { line += String(format: ", best order %g", order) }
            print(line)
        }
        return 0
    }
}

/// `privacy noise`: the noise multiplier that meets a target ε.
struct NoiseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "noise", abstract: "The smallest noise multiplier that keeps ε at or below a target.",
        help: """
        usage: conclave-client privacy noise --target-epsilon ε --sampling-rate q --steps T --delta δ
                                             [--accountant rdp|pld] [--noise discrete_gaussian|gaussian] [--json]
        The smallest σ on a 0.001 grid whose ε (by the chosen accountant, for the --noise kind, by default
        the discrete Gaussian DP-SGD adds) is at most the target.
          --json   print {"noise_multiplier", "epsilon", "target_epsilon", "delta", "accountant", "noise", "method"}

        examples:
          conclave-client privacy noise --target-epsilon 8 --sampling-rate 0.02 --steps 40 --delta 1e-5
          conclave-client privacy noise --target-epsilon 1 --sampling-rate 0.01 --steps 1000 --delta 1e-5 \\
              --accountant pld --json
        """)

    static var options: [Option<Self>] {
        [
            .required("--target-epsilon", .double(in: 1e-9...1e9), \.target), .required("--sampling-rate", .double(in: 0...1), \.q),
            .required("--steps", .int(in: 1...100_000_000), \.steps), .required("--delta", .double(in: 1e-300...0.999_999), \.delta),
            .option("--accountant", .choice, \.accountant), .option("--noise", .oneOf(noiseChoices), \.noise),
            .flag("--json", \.json),
        ]
    }

    // Required: parsing always replaces these initial values.
    var noise = MechanismSteps.dpsgd(samplingRate: 0, noiseMultiplier: 1, steps: 0).noise.rawValue
    var target = 0.0
    var q = 0.0
    var steps = 0
    var delta = 0.0
    var accountant = AccountantKind.rdp
    var json = false

    func run() throws -> Int32 {
        let kind = MechanismNoise(rawValue: noise) ?? .discreteGaussian
        let sigma = try PrivacyAccounting.noiseMultiplier(targetEpsilon: target, samplingRate: q, steps: steps, delta: delta,
                                                          accountant: accountant, noise: kind)
        let estimate = try PrivacyAccounting.estimate(
            steps: [MechanismSteps(samplingRate: q, noiseMultiplier: sigma, steps: steps, noise: kind)], delta: delta,
            accountant: accountant)
        if json {
            try JSONOutput.print(["noise_multiplier": sigma, "epsilon": estimate.epsilon, "target_epsilon": target, "delta": delta,
                                  "accountant": accountant.rawValue, "noise": noise, "method": estimate.method.rawValue])
        } else {
            print(String(format: "σ = %.3f gives ε = %.6f ≤ %g at δ = %g (%@)", sigma, estimate.epsilon, target, delta,
                         estimate.method.rawValue))
        }
        return 0
    }
}

extension PrivacyUnit {
    /// Why `--privacy-unit client` is refused by `train` and `budget`.
    static let clientIsAFederationsUnit = "--privacy-unit client is a federation's plan unit (client-level DP-FedAvg, set by the "
        + "coordinator's plan); a local run and a ledger count ε per record or per user"
}
