import CommandLineParsing
import FineTuning
import Foundation
import LanguageModel
import Privacy
import SystemIO

// The point of DP, measured: LoRA fine-tuning of a model on synthetic clinic notes with secret canaries
// planted, with DP-SGD (ε from the accountant) and without, over several seeds. For each run it prints
// the mean exposure of the repeated canaries (Carlini et al. 2019) and the one-run empirical lower bound
// on ε (Steinke, Nasr and Jagielski 2023) from audit canaries planted once each with probability 1/2,
// beside the accountant's ε and the audit's power (the largest bound its canaries and guesses could
// show; a claimed ε at or above it cannot be tested). Audit scores are each canary's loss after training
// minus its loss on the base model. The seed fixes the notes and the adapter's initialisation; secrets,
// inclusion bits, sampling and noise come from libsodium's generator and differ on every run.

var arguments = Arguments(Array(CommandLine.arguments.dropFirst()))
if arguments.helpRequested {
    print("""
    usage: conclave-bench-privacy-audit --model M [--steps N] [--batch B] [--repetitions K] [--canaries C]
             [--digits D] [--samples S] [--audit-canaries A] [--guesses G] [--records R] [--max-length L] [--seeds N]
             [--epsilon E] [--delta D] [--clip C] [--learning-rate LR] [--rank R] [--threads T] [--json]

    Trains LoRA on R synthetic cardiology notes (each cut to L tokens) plus C canaries repeated K times
    and the included half of A audit canaries, for N steps at expected batch B, once without DP and once
    with DP-SGD calibrated to (E, D) by the RDP accountant, for each seed 1...N.
      --digits D       secret length; the candidate space has 10^D secrets (default 4)
      --samples S      estimate exposure from S sampled candidates instead of scoring all 10^D
      --guesses G      the audit guesses "in" on the G/2 lowest scores and "out" on the G/2 highest
                       (even; default all audit canaries)
    Defaults: steps 200, batch 8, repetitions 8, canaries 10, audit-canaries 200, records 400,
    max-length 96, seeds 3, epsilon 8, delta 1e-5, clip 1, learning-rate 2e-3, rank 8, threads 2.
    """)
    exit(0)
}

struct Run {
    var seed: UInt64
    var privacy: Bool
    var accountantEpsilon: Double?
    var noiseMultiplier: Double?
    var exposures: [Exposure]
    var baseExposures: [Exposure]
    var audit: OneRunAudit
    var trainLoss: Double
    var seconds: Double

    var meanExposure: Double { exposures.map(\.bits).reduce(0, +) / Double(exposures.count) }
    var meanBaseExposure: Double { baseExposures.map(\.bits).reduce(0, +) / Double(baseExposures.count) }
}

do {
    let modelPath = try arguments.required("--model")
    let steps = try arguments.int("--steps", in: 1...1_000_000) ?? 200
    let batch = try arguments.int("--batch", in: 1...4096) ?? 8
    let repetitions = try arguments.int("--repetitions", in: 1...10_000) ?? 8
    let canaryCount = try arguments.int("--canaries", in: 1...10_000) ?? 10
    let digits = try arguments.int("--digits", in: 1...CanarySet.maximumDigits) ?? 4
    let samples = try arguments.int("--samples", in: 1...10_000_000)
    let auditCount = try arguments.int("--audit-canaries", in: 2...100_000) ?? 200
    let guesses = try arguments.int("--guesses", in: 2...100_000)
    let records = try arguments.int("--records", in: SyntheticNotes.recordRange) ?? 400
    let maxLength = try arguments.int("--max-length", in: 8...8192) ?? 96
    let seeds = try arguments.int("--seeds", in: 1...100) ?? 3
    let targetEpsilon = try arguments.double("--epsilon", in: 0.01...1000) ?? 8
    let delta = try arguments.double("--delta", in: 1e-12...0.5) ?? 1e-5
    let clip = try arguments.double("--clip", in: 1e-6...1e6) ?? 1
    let learningRate = try arguments.double("--learning-rate", in: 1e-8...10) ?? 2e-3
    let rank = try arguments.int("--rank", in: 1...256) ?? 8
    let threads = try arguments.int("--threads", in: 1...256) ?? 2
    let json = arguments.flag("--json")
    try arguments.finish()
    if let guesses, guesses % 2 != 0 || guesses > auditCount {
        throw UsageError("--guesses \(guesses) must be even and at most --audit-canaries \(auditCount)")
    }
    if samples == nil, CanarySet.spaceSize(digits: digits) > Exposure.maximumExactSpace {
        throw UsageError("10^\(digits) candidates are too many to score exactly; pass --samples")
    }

    let loaded = try ModelLoader.load(path: modelPath, threads: threads)
    let model = loaded.model
    let tokenizer = try ModelLoader.requireTokenizer(loaded, path: modelPath)
    let tokenization = try CanaryTokenization.text(phrase: CanarySet.defaultPhrase, tokenizer: tokenizer)
    StandardError.write("canary layout: prefix \(tokenization.prefix.count) tokens, digit pieces "
                        + "\(tokenization.digitPieces.map(\.count)) tokens\n")

    func exposures(_ set: CanarySet) throws -> [Exposure] {
        if let samples { return try Exposure.estimated(model: model, tokenization: tokenization, set: set, samples: samples) }
        return try Exposure.exact(model: model, tokenization: tokenization, set: set)
    }

    var runs: [Run] = []
    for seed in 1...UInt64(seeds) {
        let notes = SyntheticNotes.generate(specialty: .cardiology, records: records, seed: seed)
        let noteExamples = notes.enumerated().map { index, note -> TokenizedExample in
            let ids = Array(tokenizer.encode(note.text).prefix(maxLength))
            return TokenizedExample(ids: ids, labels: ids, line: index + 1)
        }
        let canaries = try CanarySet.generate(count: canaryCount, digits: digits, repetitions: repetitions)
        let audit = try CanaryAudit.generate(count: auditCount, digits: digits)
        var data = canaries.planted(into: noteExamples, tokenization: tokenization)
        data += audit.examples(tokenization: tokenization, firstLine: data.count)
        model.setAdapter(nil)
        let baseExposures = try exposures(canaries)
        let auditBase = try audit.losses(model: model, tokenization: tokenization)

        for privacy in [false, true] {
            var configuration = TrainingConfiguration()
            configuration.steps = steps
            configuration.batchSize = batch
            configuration.learningRate = learningRate
            configuration.rank = rank
            configuration.alpha = Double(2 * rank)
            configuration.initializationSeed = seed
            var sigma: Double?
            if privacy {
                let q = Double(batch) / Double(data.count)
                sigma = try PrivacyAccounting.noiseMultiplier(targetEpsilon: targetEpsilon, samplingRate: q, steps: steps,
                                                              delta: delta, accountant: .rdp, noise: .discreteGaussian)
                configuration.privacy = DifferentialPrivacy(noiseMultiplier: sigma!, clipNorm: clip, delta: delta)
            }
            model.setAdapter(nil)
            let trainer = try LoRATrainer(model: model, examples: data, configuration: configuration)
            let progress = ProgressReporter(label: "seed \(seed) \(privacy ? "DP" : "no DP")", total: trainer.totalSteps)
            let result = try trainer.train(progress: progress)
            model.setAdapter(result.lora.adapter())
            let exposure = try exposures(canaries)
            let bound = try audit.audit(model: model, tokenization: tokenization, baseLosses: auditBase, guesses: guesses,
                                        delta: delta)
            model.setAdapter(nil)
            let run = Run(seed: seed, privacy: privacy, accountantEpsilon: result.epsilon, noiseMultiplier: sigma,
                          exposures: exposure, baseExposures: baseExposures, audit: bound, trainLoss: result.trainLoss,
                          seconds: result.seconds)
            runs.append(run)
            StandardError.write(String(format: "seed %llu %@: exposure %.2f bits (base %.2f), audit %d/%d right, ε ≥ %.3f (power %.3f)\n",
                                       seed, privacy ? "DP" : "no DP", run.meanExposure, run.meanBaseExposure,
                                       bound.correct, bound.guesses, bound.epsilonLowerBound, bound.power))
        }
    }

    let space = CanarySet.spaceSize(digits: digits)
    if json {
        try JSONOutput.print([
            "model": modelPath, "steps": steps, "batch": batch, "repetitions": repetitions, "canaries": canaryCount,
            "digits": digits, "space_size": space, "samples": samples as Any? ?? NSNull(), "audit_canaries": auditCount,
            "records": records, "max_length": maxLength, "target_epsilon": targetEpsilon, "delta": delta,
            "runs": runs.map { run -> [String: Any] in
                ["seed": run.seed, "dp": run.privacy, "accountant_epsilon": run.accountantEpsilon ?? NSNull(),
                 "noise_multiplier": run.noiseMultiplier ?? NSNull(), "mean_exposure_bits": run.meanExposure,
                 "exposure_bits": run.exposures.map(\.bits), "base_mean_exposure_bits": run.meanBaseExposure,
                 "audit_guesses": run.audit.guesses, "audit_correct": run.audit.correct,
                 "epsilon_lower_bound": run.audit.epsilonLowerBound, "audit_power": run.audit.power,
                 "audit_verdict": run.audit.verdict(claimedEpsilon: run.accountantEpsilon ?? .infinity).rawValue,
                 "train_loss": run.trainLoss, "seconds": run.seconds]
            },
        ])
    } else {
        let method = samples.map { "estimated from \($0) sampled candidates" } ?? "exact"
        print("""
        Privacy audit: \(modelPath)
        \(records) notes (≤ \(maxLength) tokens), \(canaryCount) canaries × \(repetitions), |R| = 10^\(digits) (exposure \(method), chance ≈ 1.44 bits, max \(String(format: "%.2f", log2(Double(space))))),
        \(auditCount) audit canaries (each in with probability 1/2, once; \(guesses.map(String.init) ?? "all") guesses, scores relative to the base model), \(steps) steps at batch \(batch), δ = \(delta), β = 0.05

        | seed | training | σ | exposure before (bits) | exposure after (bits) | audit right | ε lower bound | power | accountant ε | verdict |
        |---|---|---|---|---|---|---|---|---|---|
        """)
        for run in runs {
            let verdict = run.accountantEpsilon.map { run.audit.verdict(claimedEpsilon: $0).rawValue } ?? "–"
            print(String(format: "| %llu | %@ | %@ | %.2f | %.2f | %d/%d | %.3f | %.3f | %@ | %@ |", run.seed,
                         run.privacy ? "DP-SGD" : "plain",
                         run.noiseMultiplier.map { String(format: "%.3f", $0) } ?? "–", run.meanBaseExposure, run.meanExposure,
                         run.audit.correct, run.audit.guesses, run.audit.epsilonLowerBound, run.audit.power,
                         run.accountantEpsilon.map { String(format: "%.2f", $0) } ?? "∞", verdict))
        }
        for privacy in [false, true] {
            let chosen = runs.filter { $0.privacy == privacy }
            let mean = chosen.map(\.meanExposure).reduce(0, +) / Double(chosen.count)
            let bound = chosen.map(\.audit.epsilonLowerBound).max() ?? 0
            print(String(format: "%@: mean exposure %.2f bits over %d seeds; largest ε lower bound %.3f",
                         privacy ? "DP-SGD" : "plain", mean, chosen.count, bound))
        }
    }
} catch {
    StandardError.write("conclave-bench-privacy-audit: \(error)\n")
    exit(1)
}
