import Foundation
import LanguageModel
import Privacy
import SystemIO
import Tokenizer

/// Held-out evaluation: mean next-token loss, perplexity and token accuracy over a dataset.
public struct Evaluation: Sendable {
    public var examples: Int
    /// Counted tokens over all examples.
    public var tokens: Int
    /// Mean loss over all counted tokens (nats).
    public var loss: Double
    public var perplexity: Double { exp(loss) }
    public var tokenAccuracy: Double
    public var perExample: [(tokens: Int, loss: Double)]
    public var tokensPerSecond: Double
    /// Tokens run through the model (counted or not), for throughput.
    public var processedTokens: Int

    /// The `eval --json` object.
    public func json(peakResidentBytes: Int) -> [String: Any] {
        ["examples": examples, "tokens": tokens, "loss": loss, "perplexity": perplexity,
         "token_accuracy": tokenAccuracy,
         "per_example": perExample.map { ["tokens": $0.tokens, "loss": $0.loss] as [String: Any] },
         "tokens_per_second": tokensPerSecond, "processed_tokens": processedTokens,
         "peak_rss_bytes": peakResidentBytes]
    }
}

public enum Evaluator {
    /// Scores every example; examples with no counted token report loss NaN and are left out of the mean.
    public static func evaluate(model: LlamaModel, examples: [TokenizedExample],
                                progress: (any ProgressSink)? = nil) throws -> Evaluation {
        try evaluate(examples: examples, progress: progress) { _, example in
            try model.score(tokens: example.ids, labels: example.labels)
        }
    }

    /// `evaluate`, and the assessment `ConditionAccuracy.assessment` writes for each example at `assessing` (in that
    /// order), each from the pass that scores its example (`LlamaModel.scoreAndContinue`): a note's prompt is run once
    /// for its loss and its assessment, where the two took two passes.
    public static func evaluate(model: LlamaModel, examples: [TokenizedExample], assessing: [Int], tokenizer: BPETokenizer,
                                progress: (any ProgressSink)? = nil) throws -> (evaluation: Evaluation, assessments: [String]) {
        var written: [Int: String] = [:]
        let wanted = Set(assessing)
        let evaluation = try evaluate(examples: examples, progress: progress) { index, example in
            guard wanted.contains(index) else { return try model.score(tokens: example.ids, labels: example.labels) }
            let (score, continuation) = try model.scoreAndContinue(
                tokens: example.ids, labels: example.labels, maxTokens: ConditionAccuracy.maximumTokens,
                stopTokens: tokenizer.endOfTurnTokenIds, shouldStop: ConditionAccuracy.lineEnded(tokenizer))
            written[index] = ConditionMatcher.firstLine(tokenizer.decode(continuation))
            return score
        }
        return (evaluation, try assessing.map { index in
            guard let text = written[index] else { throw TrainingError("no held-out record \(index) of \(examples.count) to assess") }
            return text
        })
    }

    private static func evaluate(examples: [TokenizedExample], progress: (any ProgressSink)?,
                                 score: (Int, TokenizedExample) throws -> SequenceScore) throws -> Evaluation {
        let start = ProcessStatistics.now()
        var total = 0.0, counted = 0, correct = 0, processed = 0
        var perExample: [(tokens: Int, loss: Double)] = []
        for (index, example) in examples.enumerated() {
            let score = try score(index, example)
            total += score.totalLoss
            counted += score.countedTokens
            correct += score.correct
            processed += example.ids.count
            perExample.append((score.countedTokens, score.meanLoss))
            let elapsed = ProcessStatistics.now() - start
            progress?.update(index + 1, String(format: "loss %.4f  %.0f tokens/s",
                                               counted > 0 ? total / Double(counted) : .nan, Double(processed) / elapsed))
        }
        let seconds = ProcessStatistics.now() - start
        return Evaluation(examples: examples.count, tokens: counted, loss: counted > 0 ? total / Double(counted) : .nan,
                          tokenAccuracy: counted > 0 ? Double(correct) / Double(counted) : 0,
                          perExample: perExample, tokensPerSecond: Double(processed) / max(seconds, 1e-9),
                          processedTokens: processed)
    }
}

/// The held-out figures a client releases each round (Wire's `HeldOutRelease` documents the
/// mechanism): per record, its mean token loss before and after, clipped to [0, L] and put on a grid of
/// S units per L, plus S for the count; summed over the records; each coordinate noised with N_Z(0, σ²),
/// σ = z·√3·S, the discrete Gaussian (`DiscreteGaussian`, libsodium randomness). Adding or removing
/// one record moves the exact sum by at most √3·S in L2.
public enum HeldOutMetrics {
    /// The exact sum (before, after, count) in grid units, before noise. Records with no scored token
    /// contribute nothing (their tokens do not depend on the adapter, so they have none in both).
    /// - Parameter users: at privacy unit user, each record's user (every record must have one): each
    ///   user then contributes one vector, the means of its records' clipped losses and S for the count,
    ///   so that adding or removing a person moves the sum by at most √3·S, as a record does at unit record.
    /// - Throws: `TrainingError` when the two evaluations are not of the same records, or a record has no user.
    public static func exactSums(before: Evaluation, after: Evaluation, lossClip: Double, gridScale: Int64,
                                 users: [String?]? = nil) throws -> [Int64] {
        guard before.perExample.count == after.perExample.count, lossClip.isFinite, lossClip > 0, gridScale > 0,
              users.map({ $0.count == before.perExample.count }) ?? true else {
            throw TrainingError(
                "held-out release: \(before.perExample.count) records before and \(after.perExample.count) after, "
                + "\(users.map { "\($0.count) users, " } ?? "")loss clip \(lossClip), grid \(gridScale)")
        }
        func clipped(_ loss: Double) -> Double { loss.isNaN ? 0 : min(max(loss, 0), lossClip) }
        func grid(_ clippedLoss: Double) -> Int64 { Int64((clippedLoss / lossClip * Double(gridScale)).rounded()) }
        // One group per record, or per user: the clipped losses it averages.
        var groups: [String: (before: Double, after: Double, records: Int)] = [:]
        var order: [String] = []
        for (index, (b, a)) in zip(before.perExample, after.perExample).enumerated() where b.tokens > 0 && a.tokens > 0 {
            let key: String
            if let users {
                guard let user = users[index] else {
                    throw TrainingError("held-out release at privacy unit user: held-out record \(index + 1) has no user")
                }
                key = "u:" + user
            } else {
                key = "r:\(index)"
            }
            if groups[key] == nil { order.append(key) }
            let sum = groups[key] ?? (0, 0, 0)
            groups[key] = (sum.before + clipped(b.loss), sum.after + clipped(a.loss), sum.records + 1)
        }
        var sums: [Int64] = [0, 0, 0]
        for key in order {
            let group = groups[key]!
            sums[0] += grid(group.before / Double(group.records))
            sums[1] += grid(group.after / Double(group.records))
            sums[2] += gridScale
        }
        return sums
    }

    /// The released (noised) sums: `exactSums` plus independent N_Z(0, σ²) on each, σ = z·√3·S.
    /// - Parameter noise: adds noise of the given σ in place; nil (production) is `DiscreteGaussian.add`.
    ///   Tests inject a recording one.
    public static func release(before: Evaluation, after: Evaluation, lossClip: Double, noiseMultiplier: Double,
                               gridScale: Int64, users: [String?]? = nil,
                               noise: ((inout [Int64], Double) throws -> Void)? = nil) throws -> [Int64] {
        var sums = try exactSums(before: before, after: after, lossClip: lossClip, gridScale: gridScale, users: users)
        let sigma = noiseMultiplier * 3.0.squareRoot() * Double(gridScale)
        if let noise {
            try noise(&sums, sigma)
        } else {
            try DiscreteGaussian.add(to: &sums, sigma: sigma)
        }
        return sums
    }
}
