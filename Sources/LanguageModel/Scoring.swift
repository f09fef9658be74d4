import Foundation
import Kernels

/// Next-token cross-entropy of one sequence under the model.
public struct SequenceScore: Sendable {
    /// Tokens that counted (label ≠ −100 at the predicted position).
    public var countedTokens: Int
    /// Σ −log p(label) over counted tokens, in nats.
    public var totalLoss: Double
    /// Counted tokens whose label was the model's most likely token.
    public var correct: Int
    public var meanLoss: Double { countedTokens > 0 ? totalLoss / Double(countedTokens) : .nan }
}

extension LlamaModel {
    /// Scores one sequence with HF's convention: the logits at position t predict labels[t + 1];
    /// a label of −100 is not counted. `labels` defaults to the tokens themselves.
    public func score(tokens: [Int], labels: [Int]? = nil) throws -> SequenceScore {
        let labels = labels ?? tokens
        precondition(labels.count == tokens.count, "labels and tokens differ in length")
        var score = SequenceScore(countedTokens: 0, totalLoss: 0, correct: 0)
        guard tokens.count >= 2 else { return score }
        // The last position predicts nothing, so it is not run through the output head.
        let cache = makeCache(capacity: tokens.count)
        let vocabulary = configuration.vocabSize
        try forward(tokens: Array(tokens), cache: cache, logits: .all) { t, logits in
            guard t + 1 < labels.count else { return }
            let label = labels[t + 1]
            guard label != -100 else { return }
            guard label >= 0 && label < vocabulary else {
                throw LanguageModelError.tokenOutOfRange(token: label, vocabularySize: vocabulary)
            }
            let (logSum, argmax) = Activation.logSumExp(logits, vocabulary)
            score.totalLoss += logSum - Double(logits[label])
            score.countedTokens += 1
            if argmax == label { score.correct += 1 }
        }
        return score
    }

    /// The logits of every position (tokens × vocabulary), for tests and small inputs.
    public func allLogits(tokens: [Int]) throws -> [Float] {
        let vocabulary = configuration.vocabSize
        var out = [Float](repeating: 0, count: tokens.count * vocabulary)
        let cache = makeCache(capacity: tokens.count)
        try out.withUnsafeMutableBufferPointer { buffer in
            try forward(tokens: tokens, cache: cache, logits: .all) { t, logits in
                (buffer.baseAddress! + t * vocabulary).update(from: logits, count: vocabulary)
            }
        }
        return out
    }
}
