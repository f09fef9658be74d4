import CommandLineParsing
import FineTuning
import Foundation
import Kernels
import LanguageModel
import Privacy
import Reports
import SystemIO

/// `train` and `budget`: local fine-tuning with DP-SGD, and the privacy ledger it charges.
enum TrainCommands {
    static let train = Command(
        name: "train", abstract: "Fine-tune a LoRA adapter on local data, optionally with DP-SGD.",
        help: """
        usage: conclave-client train --model M --data D.jsonl --out ADAPTER_DIR [--eval-data E.jsonl] [--state DIR]
                                     [--rank r] [--alpha a] [--targets q_proj,k_proj,...] [--steps N | --epochs E]
                                     [--batch-size B] [--gradient-accumulation K] [--lr X] [--warmup N]
                                     [--schedule constant|linear|cosine] [--weight-decay W] [--max-length L]
                                     [--dp] [--noise-multiplier σ | --target-epsilon ε] [--clip C] [--delta δ]
                                     [--accountant rdp|pld] [--budget-epsilon E] [--seed S] [--precision P]
                                     [--threads N] [--json]

          --model M                 a .gguf file or an HF directory (the frozen base, used as stored)
          --data D                  JSONL training records (one line is one record for privacy)
          --out DIR                 where the PEFT adapter is written (adapter_config.json, adapter_model.safetensors)
          --eval-data E             held-out JSONL scored before and after training
          --state DIR               the client's state directory; with --dp its privacy ledger is charged
                                    before the first noisy gradient
          --rank r, --alpha a       LoRA rank (default 8) and alpha (default 16)
          --targets LIST            comma-separated modules (default q_proj,k_proj,v_proj,o_proj)
          --steps N | --epochs E    optimizer steps, or passes over the data (default 1 epoch)
          --batch-size B            expected records per step (Poisson sampling, rate q = B·K/N; default 8)
          --gradient-accumulation K records per step multiplied by K (default 1)
          --lr X                    peak learning rate (default 0.002); --warmup N steps (default 0);
          --schedule S              decay after warm-up: constant, linear (default) or cosine
          --max-length L            refuse records longer than L tokens (default 256)
          --dp                      DP-SGD: per-record clipping to --clip C (default 1.0) and Gaussian noise
          --noise-multiplier σ      noise standard deviation σ·C; or --target-epsilon ε to calibrate σ
          --delta δ                 δ of the guarantee (default 1e-5); --accountant rdp (default) or pld
          --budget-epsilon E        create the ledger in --state with this ε budget (at δ) if it has none
          --seed S                  seed of the adapter's public initialisation (default 0)
        \(ModelCommands.precisionHelp)
        \(ModelCommands.threadsHelp)
          --json                    print {"steps", "tokens", "train_loss", "eval_loss", "eval_loss_before",
                                    "epsilon", "delta", "noise_multiplier", "clip_norm", "sampling_rate",
                                    "tokens_per_second", "seconds", "peak_rss_bytes", "adapter", "ledger"}
        Progress (step, loss, tokens/s, ε so far, ETA) goes to standard error.
        """) { arguments in
        let modelPath = try arguments.required("--model")
        let dataPath = try arguments.required("--data")
        let outPath = try arguments.required("--out")
        let evalPath = try arguments.option("--eval-data")
        let statePath = try arguments.option("--state")
        var configuration = TrainingConfiguration()
        configuration.rank = try arguments.int("--rank", in: 1...256) ?? 8
        configuration.alpha = try arguments.double("--alpha", in: 1e-6...1e6) ?? 16
        if let list = try arguments.option("--targets") {
            configuration.targets = try list.split(separator: ",").map { name in
                guard let module = ProjectionModule(rawValue: String(name)) else {
                    throw UsageError("--targets: unknown module '\(name)'; choose from "
                                     + ProjectionModule.allCases.map(\.rawValue).joined(separator: ", "))
                }
                return module
            }
            guard !configuration.targets.isEmpty else { throw UsageError("--targets is empty") }
        }
        let steps = try arguments.int("--steps", in: 1...10_000_000)
        let epochs = try arguments.double("--epochs", in: 1e-6...1e6)
        if steps != nil && epochs != nil { throw UsageError("give either --steps or --epochs, not both") }
        configuration.steps = steps
        configuration.epochs = epochs ?? 1
        configuration.batchSize = try arguments.int("--batch-size", in: 1...1_000_000) ?? 8
        configuration.gradientAccumulation = try arguments.int("--gradient-accumulation", in: 1...1_000_000) ?? 1
        configuration.learningRate = try arguments.double("--lr", in: 1e-12...10) ?? 2e-3
        configuration.warmupSteps = try arguments.int("--warmup", in: 0...10_000_000) ?? 0
        if let schedule = try arguments.choice("--schedule", among: LearningRateSchedule.Decay.allCases.map(\.rawValue)) {
            configuration.decay = LearningRateSchedule.Decay(rawValue: schedule)!
        }
        configuration.weightDecay = try arguments.double("--weight-decay", in: 0...10) ?? 0
        let maxLength = try arguments.int("--max-length", in: 2...1_000_000) ?? 256
        let dp = arguments.flag("--dp")
        let noiseMultiplier = try arguments.double("--noise-multiplier", in: 1e-6...1e6)
        let targetEpsilon = try arguments.double("--target-epsilon", in: 1e-6...1e6)
        let clip = try arguments.double("--clip", in: 1e-9...1e9) ?? 1
        let delta = try arguments.double("--delta", in: 1e-300...0.999_999) ?? 1e-5
        let accountant = AccountantKind(rawValue: try arguments.choice("--accountant",
                                                                       among: AccountantKind.allCases.map(\.rawValue)) ?? "rdp")!
        let budgetEpsilon = try arguments.double("--budget-epsilon", in: 1e-6...1e6)
        configuration.initializationSeed = try arguments.option("--seed").map { text in
            guard let seed = UInt64(text) else { throw UsageError("--seed expects a non-negative integer, got '\(text)'") }
            return seed
        } ?? 0
        let precision = try ClientOptions.precision(&arguments)
        let threads = try arguments.int("--threads", in: 1...256)
        let json = arguments.flag("--json")
        try arguments.finish()
        if !dp && (noiseMultiplier != nil || targetEpsilon != nil) {
            throw UsageError("--noise-multiplier and --target-epsilon need --dp")
        }
        if dp && (noiseMultiplier == nil) == (targetEpsilon == nil) {
            throw UsageError("--dp needs exactly one of --noise-multiplier and --target-epsilon")
        }

        let loaded = try ModelLoader.load(path: modelPath, threads: threads)
        let model = loaded.model
        model.precision = precision
        let c = model.configuration
        let examples = try Dataset.load(URL(fileURLWithPath: dataPath), tokenizer: loaded.tokenizer, maxLength: maxLength,
                                        vocabularySize: c.vocabSize)
        let evalExamples = try evalPath.map {
            try Dataset.load(URL(fileURLWithPath: $0), tokenizer: loaded.tokenizer, maxLength: maxLength, vocabularySize: c.vocabSize)
        }

        // The plan's privacy: σ given, or calibrated to the target ε for this run.
        if dp {
            let probe = try LoRATrainer(model: model, examples: examples, configuration: configuration)
            let sigma = try noiseMultiplier ?? PrivacyAccounting.noiseMultiplier(
                targetEpsilon: targetEpsilon!, samplingRate: probe.samplingRate, steps: probe.totalSteps, delta: delta,
                accountant: accountant)
            configuration.privacy = DifferentialPrivacy(noiseMultiplier: sigma, clipNorm: clip, delta: delta,
                                                        accountant: accountant)
        }
        let trainer = try LoRATrainer(model: model, examples: examples, configuration: configuration)

        // Charge the ledger durably before the first noisy gradient: a crash can overcount, never undercount.
        var ledgerPath: String?
        if let statePath, let mechanism = trainer.mechanism, let privacy = configuration.privacy {
            let directory = URL(fileURLWithPath: statePath)
            let exists = FileManager.default.fileExists(atPath: directory.appendingPathComponent(PrivacyLedger.fileName).path)
            let budget = exists ? nil : budgetEpsilon.map {
                PrivacyBudget(epsilon: $0, delta: privacy.delta, accountant: privacy.accountant)
            }
            if !exists && budget == nil {
                throw UsageError("no privacy ledger in \(statePath): give --budget-epsilon to create one")
            }
            var ledger = try PrivacyLedger(directory: directory, creatingWith: budget)
            guard ledger.budget.delta == privacy.delta else {
                throw UsageError("--delta \(privacy.delta) differs from the ledger's δ \(ledger.budget.delta) in \(statePath)")
            }
            let entry = try ledger.charge(purpose: "run:\(UUID().uuidString.lowercased())", samplingRate: mechanism.samplingRate,
                                          noiseMultiplier: mechanism.noiseMultiplier, clipNorm: privacy.clipNorm,
                                          steps: mechanism.steps)
            ledgerPath = ledger.fileURL.path
            if !json {
                StandardError.write(String(format: "ledger %@: charged this run, ε spent %.4f of %.4f (δ %g)\n",
                                           ledger.fileURL.path, entry.cumulativeEpsilon, ledger.budget.epsilon,
                                           ledger.budget.delta))
            }
        } else if dp && statePath == nil && !json {
            StandardError.write("note: --dp without --state: this run's privacy is not recorded in any ledger\n")
        }

        var evalBefore: Double?
        if let evalExamples {
            model.setAdapter(trainer.lora.adapter())
            evalBefore = try Evaluator.evaluate(model: model, examples: evalExamples).loss
            if !json { StandardError.write(String(format: "held-out loss before: %.4f\n", evalBefore!)) }
        }

        // Progress: ε so far by RDP (cheap) every step it prints.
        let progress = ProgressReporter(label: "train", total: trainer.totalSteps, enabled: !json)
        if !json, let p = configuration.privacy {
            StandardError.write(String(format: "DP-SGD: q %.5f, σ %.4f, C %g, %d steps, δ %g (%@)\n", trainer.samplingRate,
                                       p.noiseMultiplier, p.clipNorm, trainer.totalSteps, p.delta, p.accountant.rawValue))
        }
        let result = try trainer.train(progress: progress)
        let adapter = result.lora.adapter()
        try adapter.write(to: URL(fileURLWithPath: outPath), baseModel: modelPath)

        var evalAfter: Double?
        if let evalExamples {
            model.setAdapter(adapter)
            evalAfter = try Evaluator.evaluate(model: model, examples: evalExamples).loss
        }
        let report: [String: Any] = [
            "steps": result.steps, "tokens": result.tokens, "train_loss": result.trainLoss,
            "eval_loss": evalAfter ?? NSNull(), "eval_loss_before": evalBefore ?? NSNull(),
            "epsilon": result.epsilon ?? NSNull(), "delta": configuration.privacy?.delta ?? NSNull(),
            "noise_multiplier": configuration.privacy?.noiseMultiplier ?? NSNull(),
            "clip_norm": configuration.privacy?.clipNorm ?? NSNull(), "sampling_rate": result.samplingRate,
            "tokens_per_second": result.tokensPerSecond, "seconds": result.seconds,
            "peak_rss_bytes": ProcessStatistics.peakResidentBytes(), "adapter": outPath, "ledger": ledgerPath ?? NSNull(),
        ]
        if json {
            try JSONOutput.print(report)
        } else {
            var line = String(format: "%d steps, %d tokens, train loss %.4f, %.0f tokens/s", result.steps, result.tokens,
                              result.trainLoss, result.tokensPerSecond)
            if let evalBefore, let evalAfter { line += String(format: "; held-out loss %.4f → %.4f", evalBefore, evalAfter) }
            if let epsilon = result.epsilon, let p = configuration.privacy {
                line += String(format: "; ε %.3f at δ %g", epsilon, p.delta)
            }
            print(line)
            print("adapter written to \(outPath)")
        }
        return 0
    }

    static let budget = Command(
        name: "budget", abstract: "Show (or set) the privacy budget and what this client has spent.",
        help: """
        usage: conclave-client budget --state DIR [--set-epsilon E --delta δ [--accountant rdp|pld]] [--json] [--html F]

          --state DIR        the client's state directory (its privacy-ledger.json)
          --set-epsilon E    create the ledger with budget E, or change the budget of an existing one
          --delta δ          δ of the budget (required with --set-epsilon)
          --json             print {"epsilon_spent", "epsilon_budget", "epsilon_left", "delta", "accountant",
                             "entries": [{"purpose", "date", "sampling_rate", "noise_multiplier", "clip_norm",
                             "steps", "cumulative_epsilon"}]}
          --html F           also write the ledger as a self-contained HTML page to F: cumulative ε per charge
                             against the budget, and every charge's parameters
        """) { arguments in
        let statePath = try arguments.required("--state")
        let setEpsilon = try arguments.double("--set-epsilon", in: 1e-6...1e6)
        let delta = try arguments.double("--delta", in: 1e-300...0.999_999)
        let accountant = try arguments.choice("--accountant", among: AccountantKind.allCases.map(\.rawValue))
        let json = arguments.flag("--json")
        let htmlPath = try arguments.option("--html")
        try arguments.finish()
        let directory = URL(fileURLWithPath: statePath)
        var ledger: PrivacyLedger
        if let setEpsilon {
            guard let delta else { throw UsageError("--set-epsilon needs --delta") }
            let budget = PrivacyBudget(epsilon: setEpsilon, delta: delta,
                                       accountant: AccountantKind(rawValue: accountant ?? "rdp")!)
            let exists = FileManager.default.fileExists(atPath: directory.appendingPathComponent(PrivacyLedger.fileName).path)
            if exists {
                ledger = try PrivacyLedger(directory: directory)
                try ledger.updateBudget(budget)
            } else {
                ledger = try PrivacyLedger(directory: directory, creatingWith: budget)
            }
        } else {
            ledger = try PrivacyLedger(directory: directory)
        }
        if let htmlPath {
            let page = LedgerReport.html(budget: ledger.budget, entries: ledger.entries, ledgerPath: ledger.fileURL.path,
                                         generated: Date())
            do { try Data(page.utf8).write(to: URL(fileURLWithPath: htmlPath), options: .atomic) } catch {
                throw UsageError("cannot write \(htmlPath): \(error.localizedDescription)")
            }
        }
        let formatter = ISO8601DateFormatter()
        if json {
            try JSONOutput.print([
                "epsilon_spent": ledger.spentEpsilon, "epsilon_budget": ledger.budget.epsilon,
                "epsilon_left": ledger.remainingEpsilon, "delta": ledger.budget.delta,
                "accountant": ledger.budget.accountant.rawValue, "ledger": ledger.fileURL.path,
                "entries": ledger.entries.map { entry -> [String: Any] in
                    ["purpose": entry.purpose, "date": formatter.string(from: entry.date),
                     "sampling_rate": entry.samplingRate, "noise_multiplier": entry.noiseMultiplier,
                     "clip_norm": entry.clipNorm, "steps": entry.steps, "delta": entry.delta,
                     "accountant": entry.accountant.rawValue, "cumulative_epsilon": entry.cumulativeEpsilon]
                },
            ])
        } else {
            print(String(format: "%@: ε spent %.4f of %.4f (left %.4f) at δ %g, %@ accountant, %d entries",
                         ledger.fileURL.path, ledger.spentEpsilon, ledger.budget.epsilon, ledger.remainingEpsilon,
                         ledger.budget.delta, ledger.budget.accountant.rawValue, ledger.entries.count))
            for entry in ledger.entries {
                print(String(format: "  %@  %@  q %.5f  σ %.4f  C %g  %d steps  → ε %.4f", formatter.string(from: entry.date),
                             entry.purpose, entry.samplingRate, entry.noiseMultiplier, entry.clipNorm, entry.steps,
                             entry.cumulativeEpsilon))
            }
        }
        return 0
    }
}

/// `privacy epsilon` and `privacy noise`: the accountants from the command line.
enum PrivacyCommands {
    static let epsilon = Command(
        name: "epsilon", abstract: "ε spent by DP-SGD with the given sampling rate, noise and steps.",
        help: """
        usage: conclave-client privacy epsilon --sampling-rate q --noise-multiplier σ --steps T --delta δ
                                               [--accountant rdp|pld] [--json]
        Poisson-subsampled Gaussian mechanism under add/remove adjacency. RDP: Mironov, Talwar and Zhang
        (2019) over Opacus' orders, converted with Balle et al. (2020); PLD: privacy loss distributions
        composed by FFT with pessimistic discretisation (an upper bound).
          --json   print {"epsilon", "delta", "accountant"} (plus "order" for RDP)
        """) { arguments in
        let q = try arguments.double("--sampling-rate", in: 0...1) ?? { throw UsageError("missing --sampling-rate") }()
        let sigma = try arguments.double("--noise-multiplier", in: 1e-9...1e9) ?? { throw UsageError("missing --noise-multiplier") }()
        let steps = try arguments.int("--steps", in: 0...100_000_000) ?? { throw UsageError("missing --steps") }()
        let delta = try arguments.double("--delta", in: 1e-300...0.999_999) ?? { throw UsageError("missing --delta") }()
        let accountant = AccountantKind(rawValue: try arguments.choice("--accountant",
                                                                       among: AccountantKind.allCases.map(\.rawValue)) ?? "rdp")!
        let json = arguments.flag("--json")
        try arguments.finish()
        var result: [String: Any] = ["delta": delta, "accountant": accountant.rawValue]
        switch accountant {
        case .rdp:
            var rdp = RDPAccountant()
            try rdp.add(samplingRate: q, noiseMultiplier: sigma, steps: steps)
            let (epsilon, order) = try rdp.epsilon(delta: delta)
            result["epsilon"] = epsilon
            result["order"] = order
        case .pld:
            var pld = PLDAccountant()
            try pld.add(samplingRate: q, noiseMultiplier: sigma, steps: steps)
            result["epsilon"] = try pld.epsilon(delta: delta)
        }
        if json {
            try JSONOutput.print(result)
        } else {
            var line = String(format: "ε = %.6f at δ = %g (%@)", result["epsilon"] as! Double, delta, accountant.rawValue)
            if let order = result["order"] as? Double { line += String(format: ", best order %g", order) }
            print(line)
        }
        return 0
    }

    static let noise = Command(
        name: "noise", abstract: "The smallest noise multiplier that keeps ε at or below a target.",
        help: """
        usage: conclave-client privacy noise --target-epsilon ε --sampling-rate q --steps T --delta δ
                                             [--accountant rdp|pld] [--json]
        The smallest σ on a 0.001 grid whose ε (by the chosen accountant) is at most the target.
          --json   print {"noise_multiplier", "epsilon", "target_epsilon", "delta", "accountant"}
        """) { arguments in
        let target = try arguments.double("--target-epsilon", in: 1e-9...1e9) ?? { throw UsageError("missing --target-epsilon") }()
        let q = try arguments.double("--sampling-rate", in: 0...1) ?? { throw UsageError("missing --sampling-rate") }()
        let steps = try arguments.int("--steps", in: 1...100_000_000) ?? { throw UsageError("missing --steps") }()
        let delta = try arguments.double("--delta", in: 1e-300...0.999_999) ?? { throw UsageError("missing --delta") }()
        let accountant = AccountantKind(rawValue: try arguments.choice("--accountant",
                                                                       among: AccountantKind.allCases.map(\.rawValue)) ?? "rdp")!
        let json = arguments.flag("--json")
        try arguments.finish()
        let sigma = try PrivacyAccounting.noiseMultiplier(targetEpsilon: target, samplingRate: q, steps: steps, delta: delta,
                                                          accountant: accountant)
        let epsilon = try PrivacyAccounting.epsilon(steps: [MechanismSteps(samplingRate: q, noiseMultiplier: sigma, steps: steps)],
                                                    delta: delta, accountant: accountant)
        if json {
            try JSONOutput.print(["noise_multiplier": sigma, "epsilon": epsilon, "target_epsilon": target, "delta": delta,
                                  "accountant": accountant.rawValue])
        } else {
            print(String(format: "σ = %.3f gives ε = %.6f ≤ %g at δ = %g (%@)", sigma, epsilon, target, delta, accountant.rawValue))
        }
        return 0
    }

    static let group = CommandGroup(name: "privacy", abstract: "Privacy accounting: ε from a plan, or the noise for a target ε.",
                                    commands: [epsilon, noise])
}
