import Foundation
import LanguageModel
import Privacy
import SystemIO

/// Record-level differential privacy for one training run (DP-SGD, Abadi et al. 2016).
public struct DifferentialPrivacy: Sendable, Equatable {
    /// σ: the noise standard deviation is σ·C per coordinate of the summed clipped gradients (up to 1% more:
    /// the discrete Gaussian on `DPSGDGrid` adds σ·Δ, Δ the rounded sensitivity).
    public var noiseMultiplier: Double
    /// C: each example's gradient over all adapter tensors is clipped to this L2 norm.
    public var clipNorm: Double
    /// δ of the (ε, δ) guarantee.
    public var delta: Double
    public var accountant: AccountantKind
    /// Test seam for the privacy audit's positive control (internal: no command can reach it): the noise
    /// actually added is σ / this, while `mechanism`, the result's ε and every ledger keep claiming σ.
    /// 1 outside tests; a test sets 1000 to check that the audit catches the broken run.
    var auditTestNoiseDivisor = 1.0

    public init(noiseMultiplier: Double, clipNorm: Double, delta: Double, accountant: AccountantKind = .rdp) {
        self.noiseMultiplier = noiseMultiplier
        self.clipNorm = clipNorm
        self.delta = delta
        self.accountant = accountant
    }
}

/// What to train and how; validated by `LoRATrainer.init`.
public struct TrainingConfiguration: Sendable {
    public var rank = 8
    public var alpha = 16.0
    public var targets: [ProjectionModule] = [.qProj, .kProj, .vProj, .oProj]
    /// Optimizer steps; when nil, `epochs` passes over the data at the expected batch size.
    public var steps: Int?
    public var epochs = 1.0
    /// Expected sampling units per step (Poisson sampling with rate batchSize·accumulation / units): records,
    /// or users under `privacyUnit` `.user`.
    public var batchSize = 8
    /// A logical batch of `batchSize × gradientAccumulation` examples per optimizer step. Examples are
    /// processed one sequence at a time anyway, so this changes the step's batch, not memory.
    public var gradientAccumulation = 1
    public var learningRate = 2e-3
    public var warmupSteps = 0
    public var decay: LearningRateSchedule.Decay = .linear
    public var weightDecay = 0.0
    /// Seed of the adapter's public initialisation (A Kaiming-uniform, B zero).
    public var initializationSeed: UInt64 = 0
    /// nil trains without privacy.
    public var privacy: DifferentialPrivacy?
    /// The Poisson sampling rate q, when the caller fixes it (a federation's plan); otherwise
    /// q = batchSize · gradientAccumulation / N, N the number of sampling units (records or users).
    public var samplingRate: Double?
    /// Whom the privacy protects, which is what each step samples: records, or users (every record
    /// carries a `user`; a sampled user's records give one summed gradient, clipped to C as a whole).
    public var privacyUnit: PrivacyUnit = .record
    /// Under `.user`, the most records of one sampled user a step processes: a user with more has this
    /// many drawn uniformly (libsodium) at each step it is sampled. A public number that bounds the work
    /// per user; the sensitivity stays C, because the clip is on the user's sum, whatever it sums.
    public var recordsPerUserPerStep = TrainingConfiguration.defaultRecordsPerUserPerStep
    /// The default of `recordsPerUserPerStep`.
    public static let defaultRecordsPerUserPerStep = 16

    public init() {}
}

/// A training run's error: names the field or step.
public struct TrainingError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The numbers of a finished run.
public struct TrainingResult: Sendable {
    public var steps: Int
    /// Tokens whose loss was counted, over the whole run.
    public var tokens: Int
    /// Tokens processed (forward and backward), over the whole run.
    public var processedTokens: Int
    /// Mean loss over the last 10% of steps (at least one).
    public var trainLoss: Double
    public var losses: [Double]
    public var seconds: Double
    public var tokensPerSecond: Double { Double(processedTokens) / max(seconds, 1e-9) }
    public var samplingRate: Double
    /// What was sampled at `samplingRate`, and how many of them the data has.
    public var privacyUnit: PrivacyUnit
    public var samplingUnits: Int
    public var epsilon: Double?
    public var lora: TrainableLoRA
}

/// LoRA fine-tuning on a frozen (possibly quantized) base model, with or without DP-SGD.
///
/// With privacy, every step samples each unit (a record, or a user with all their records)
/// independently with probability q (Poisson sampling, the accountant's assumption, from libsodium's
/// generator), computes each sampled unit's gradient (a user's: the sum of its records' gradients, at
/// most `recordsPerUserPerStep` of them), clips it to norm C, rounds it onto the fixed-point grid and
/// sums exactly, adds discrete Gaussian noise of σ·Δ per coordinate (exact, from libsodium bits; see
/// `DPSGDGrid`, `DiscreteGaussian`), and divides the decoded sum by the expected batch size q·N.
/// Without privacy, the same sampling feeds the plain mean of the records' gradients. Per-example
/// gradients are exact, not estimated: the backward pass runs one sequence at a time.
public final class LoRATrainer {
    public let model: LlamaModel
    public let examples: [TokenizedExample]
    public let configuration: TrainingConfiguration
    public let totalSteps: Int
    /// The sampling units: indices into `examples`, one record each, or each user's records in file order.
    public let units: [[Int]]
    /// q = expected logical batch / N, N = `units.count`.
    public let samplingRate: Double
    /// The fixed-point grid and discrete Gaussian noise of DP-SGD (nil without privacy).
    public let dpsgdGrid: DPSGDGrid?
    public private(set) var lora: TrainableLoRA

    public init(model: LlamaModel, examples: [TokenizedExample], configuration: TrainingConfiguration,
                initial: TrainableLoRA? = nil) throws {
        // Examples without a token to learn are allowed (each contributes a zero gradient): callers check
        // the data as read (`Dataset.requireLearnableTokens`), since a federation's truncation to the
        // plan's max_length must not decide whether its client declines.
        guard !examples.isEmpty else { throw TrainingError("the training data has no examples") }
        let c = configuration
        guard (1...256).contains(c.rank) else { throw TrainingError("rank must be in 1...256, got \(c.rank)") }
        guard c.alpha > 0, c.alpha.isFinite else { throw TrainingError("alpha must be positive, got \(c.alpha)") }
        guard !c.targets.isEmpty else { throw TrainingError("no target modules given") }
        // A LoRA on a projection the family's block does not have (q_proj on Phi-3's fused qkv_proj) would train nothing.
        do { try model.configuration.checkTargets(c.targets, source: "targets") } catch { throw TrainingError("\(error)") }
        guard c.batchSize >= 1, c.gradientAccumulation >= 1 else {
            throw TrainingError("batch size and gradient accumulation must be at least 1")
        }
        guard c.learningRate > 0, c.learningRate.isFinite else {
            throw TrainingError("learning rate must be positive, got \(c.learningRate)")
        }
        units = try Self.samplingUnits(examples, unit: c.privacyUnit)
        guard c.recordsPerUserPerStep >= 1 else {
            throw TrainingError("records per user per step must be at least 1, got \(c.recordsPerUserPerStep)")
        }
        if let q = c.samplingRate {
            guard q > 0, q <= 1 else { throw TrainingError("sampling rate must be in (0, 1], got \(q)") }
            samplingRate = q
        } else {
            let logicalBatch = c.batchSize * c.gradientAccumulation
            guard logicalBatch <= units.count else {
                throw TrainingError(c.privacyUnit == .record
                    ? "batch size \(logicalBatch) exceeds the \(examples.count) training examples"
                    : "batch size \(logicalBatch) exceeds the \(units.count) users in the training data "
                      + "(at privacy unit user the batch size counts users per step)")
            }
            samplingRate = Double(logicalBatch) / Double(units.count)
        }
        if let steps = c.steps {
            guard steps >= 1 else { throw TrainingError("steps must be at least 1, got \(steps)") }
            totalSteps = steps
        } else {
            guard c.epochs > 0, c.epochs.isFinite else { throw TrainingError("epochs must be positive, got \(c.epochs)") }
            totalSteps = max(1, Int((c.epochs / samplingRate).rounded(.up)))
        }
        if let dp = c.privacy {
            guard dp.noiseMultiplier > 0, dp.noiseMultiplier.isFinite else {
                throw TrainingError("noise multiplier must be positive, got \(dp.noiseMultiplier)")
            }
            guard dp.clipNorm > 0, dp.clipNorm.isFinite else { throw TrainingError("clip norm must be positive, got \(dp.clipNorm)") }
            guard dp.delta > 0, dp.delta < 1 else { throw TrainingError("delta must be in (0, 1), got \(dp.delta)") }
        }
        if let initial {
            guard initial.rank == c.rank, Set(initial.targets) == Set(c.targets) else {
                throw TrainingError("the starting adapter has rank \(initial.rank) on \(initial.targets.map(\.rawValue)), "
                                    + "the plan asks rank \(c.rank) on \(c.targets.map(\.rawValue))")
            }
            lora = initial
        } else {
            lora = TrainableLoRA.initialized(for: model, rank: c.rank, alpha: c.alpha, targets: c.targets,
                                             seed: c.initializationSeed)
        }
        do {
            let parameterCount = lora.count
            dpsgdGrid = try c.privacy.map { try DPSGDGrid(parameterCount: parameterCount, clipNorm: $0.clipNorm,
                                                          noiseMultiplier: $0.noiseMultiplier / $0.auditTestNoiseDivisor) }
        } catch {
            throw TrainingError("DP-SGD cannot run with these parameters: \(error)")
        }
        self.model = model
        self.examples = examples
        self.configuration = c
    }

    /// The privacy this run spends, for the ledger, before it starts (at `configuration.privacyUnit`).
    public var mechanism: MechanismSteps? {
        guard let dp = configuration.privacy else { return nil }
        return .dpsgd(samplingRate: samplingRate, noiseMultiplier: dp.noiseMultiplier, steps: totalSteps)
    }

    /// The sampling units of `examples`: each record alone, or (`.user`) each user's records, users in
    /// order of first appearance; a record without a user is an error naming its line.
    static func samplingUnits(_ examples: [TokenizedExample], unit: PrivacyUnit) throws -> [[Int]] {
        guard unit == .user else { return examples.indices.map { [$0] } }
        var units: [[Int]] = []
        var position: [String: Int] = [:]
        for (index, example) in examples.enumerated() {
            guard let user = example.user else {
                throw TrainingError("the record on line \(example.line) has no \"user\" field, which privacy unit user needs")
            }
            if let existing = position[user] {
                units[existing].append(index)
            } else {
                position[user] = units.count
                units.append([index])
            }
        }
        return units
    }

    /// The records of unit `unit` that one step processes: all of them, or under `.user` at most
    /// `recordsPerUserPerStep`, drawn uniformly without replacement.
    func stepRecords(ofUnit unit: Int) -> [Int] {
        let records = units[unit]
        let cap = configuration.recordsPerUserPerStep
        guard records.count > cap else { return records }
        return DPSGDStep.uniformSubset(count: records.count, size: cap).map { records[$0] }
    }


    /// Runs every step. `onStep(step, loss)` follows each optimizer step (for progress and checkpoints).
    public func train(progress: (any ProgressSink)? = nil,
                      onStep: ((Int, Double) throws -> Void)? = nil) throws -> TrainingResult {
        let c = configuration
        let count = lora.count
        var optimizer = AdamW(parameterCount: count, weightDecay: Float(c.weightDecay))
        let schedule = LearningRateSchedule(peak: c.learningRate, warmupSteps: c.warmupSteps, totalSteps: totalSteps,
                                            decay: c.decay)
        let expectedBatch = samplingRate * Double(units.count)
        var losses: [Double] = []
        var countedTotal = 0, processedTotal = 0
        let start = ProcessStatistics.now()
        let epsilonSoFar = try EpsilonSoFar(samplingRate: samplingRate, privacy: c.privacy)

        for step in 0..<totalSteps {
            let batch = DPSGDStep.poissonSample(count: units.count, rate: samplingRate)
            let sums = try stepSums(units: batch, step: step)
            processedTotal += sums.processedTokens
            countedTotal += sums.countedTokens
            let batchLoss = sums.loss, batchExamples = sums.examples
            let gradient: [Float]
            if let dpStep = sums.dpStep {
                // An empty sample still takes a step (noise only), as the accountant assumes.
                gradient = try dpStep.privatized(expectedBatchSize: expectedBatch)
            } else {
                let divisor = Float(max(1, batchExamples))
                gradient = sums.sum.map { $0 / divisor }
            }
            guard gradient.allSatisfy({ $0.isFinite }) else {
                throw TrainingError("step \(step + 1): the gradient is not finite; no adapter is written")
            }
            optimizer.update(&lora.parameters, gradient: gradient, learningRate: Float(schedule.rate(at: step)))
            let meanLoss = batchExamples > 0 ? batchLoss / Double(batchExamples) : .nan
            losses.append(meanLoss)
            let elapsed = ProcessStatistics.now() - start
            progress?.update(step + 1, String(format: "loss %.4f  batch %d  %.0f tokens/s", meanLoss, batch.count,
                                              Double(processedTotal) / max(elapsed, 1e-9)) + epsilonSoFar.field(steps: step + 1))
            try onStep?(step + 1, meanLoss)
        }
        guard lora.parameters.allSatisfy({ $0.isFinite }) else {
            throw TrainingError("the trained adapter has non-finite values; no adapter is written")
        }
        let tail = losses.suffix(max(1, losses.count / 10)).filter { $0.isFinite }
        let seconds = ProcessStatistics.now() - start
        var epsilon: Double?
        if let dp = c.privacy, let mechanism {
            epsilon = try PrivacyAccounting.epsilon(steps: [mechanism], delta: dp.delta, accountant: dp.accountant)
        }
        return TrainingResult(steps: totalSteps, tokens: countedTotal, processedTokens: processedTotal,
                              trainLoss: tail.isEmpty ? .nan : tail.reduce(0, +) / Double(tail.count), losses: losses,
                              seconds: seconds, samplingRate: samplingRate, privacyUnit: c.privacyUnit,
                              samplingUnits: units.count, epsilon: epsilon, lora: lora)
    }

    /// One step's sums before noise, over the sampled units.
    struct StepSums {
        /// With privacy: the clipped sum (one clip per unit); nil without.
        var dpStep: DPSGDStep?
        /// Without privacy: the plain sum of the records' gradients.
        var sum: [Float]
        /// Loss summed over the records that have a token to learn, and how many they are.
        var loss = 0.0
        var examples = 0
        var countedTokens = 0
        var processedTokens = 0
    }

    /// The gradients of the sampled `units` (indices into `units`), each unit's records summed first
    /// (one record at a time, exact) and that sum clipped to C as one contribution: a record alone, or
    /// all a user's records in the step together.
    func stepSums(units batch: [Int], step: Int) throws -> StepSums {
        let count = lora.count
        let privacy = configuration.privacy
        var sums = StepSums(dpStep: dpsgdGrid.map(DPSGDStep.init(grid:)),
                            sum: privacy == nil ? [Float](repeating: 0, count: count) : [])
        var unitSum = [Float](repeating: 0, count: count)
        var single = [Float](repeating: 0, count: count)
        for unit in batch {
            for i in 0..<count { unitSum[i] = 0 }
            var learned = 0
            let records = stepRecords(ofUnit: unit)
            for index in records {
                let example = examples[index]
                for i in 0..<count { single[i] = 0 }
                let (loss, counted) = try single.withUnsafeMutableBufferPointer { gradient in
                    try model.lossAndGradient(tokens: example.ids, labels: example.labels, lora: lora,
                                              gradient: gradient.baseAddress!, precision: model.precision)
                }
                sums.processedTokens += example.ids.count
                guard counted > 0 else { continue }  // nothing to learn; contributes a zero gradient
                guard loss.isFinite else {
                    throw TrainingError("step \(step + 1): the loss of the record on line \(example.line) is \(loss)")
                }
                sums.countedTokens += counted
                sums.loss += loss
                sums.examples += 1
                learned += 1
                for i in 0..<count { unitSum[i] += single[i] }
            }
            guard learned > 0 else { continue }
            if sums.dpStep != nil {
                let norm = try unitSum.withUnsafeBufferPointer { try sums.dpStep!.add($0) }
                guard norm != nil else {
                    throw TrainingError("step \(step + 1): the gradient of the "
                                        + (records.count == 1 ? "record" : "user whose first record is") + " on line "
                                        + "\(examples[records[0]].line) is not finite")
                }
            } else {
                for i in 0..<count { sums.sum[i] += unitSum[i] }
            }
        }
        return sums
    }
}

/// The ε a DP-SGD run has spent after each step, for its progress line: RDP of one step, scaled (cheap
/// enough for every step). Under the PLD accountant it is RDP's bound, labelled as such; the ledger and
/// the result use the run's own accountant.
struct EpsilonSoFar {
    private let perStep: RDPAccountant?
    private let delta: Double
    private let label: String

    init(samplingRate: Double, privacy: DifferentialPrivacy?) throws {
        guard let privacy else {
            perStep = nil
            delta = 0
            label = ""
            return
        }
        var accountant = RDPAccountant()
        // The noise kind DP-SGD adds (discrete Gaussian), so the progress line's ε is the ledger's.
        try accountant.add(MechanismSteps.dpsgd(samplingRate: samplingRate, noiseMultiplier: privacy.noiseMultiplier, steps: 1))
        perStep = accountant
        delta = privacy.delta
        label = privacy.accountant == .rdp ? "" : " (rdp bound)"
    }

    /// "  ε 1.234" after `steps` steps; empty without privacy.
    func field(steps: Int) -> String {
        guard let perStep, let epsilon = try? perStep.epsilon(delta: delta, repetitions: steps).epsilon else { return "" }
        return String(format: "  ε %.3f", epsilon) + label
    }
}
