import Foundation
import LanguageModel
import SystemIO

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
        let start = ProcessStatistics.now()
        var total = 0.0, counted = 0, correct = 0, processed = 0
        var perExample: [(tokens: Int, loss: Double)] = []
        for (index, example) in examples.enumerated() {
            let score = try model.score(tokens: example.ids, labels: example.labels)
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
