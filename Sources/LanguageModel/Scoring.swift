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
        // Thrown, not a precondition: this module builds with -Ounchecked, which drops preconditions.
        guard labels.count == tokens.count else {
            throw LanguageModelError.labelsMismatch(tokens: tokens.count, labels: labels.count)
        }
        var score = SequenceScore(countedTokens: 0, totalLoss: 0, correct: 0)
        guard tokens.count >= 2 else { return score }
        // The last position predicts nothing, and no position before the first counted one is scored (a task record's
        // prompt), so those rows are not run through the output head.
        // A record with nothing counted still runs through the layers, which check its tokens.
        let firstCounted = (0..<(tokens.count - 1)).first(where: { labels[$0 + 1] != -100 }) ?? tokens.count
        let cache = makeCache(capacity: tokens.count)
        let vocabulary = configuration.vocabSize
        for t in 1..<labels.count where labels[t] != -100 && (labels[t] < 0 || labels[t] >= vocabulary) {
            throw LanguageModelError.tokenOutOfRange(token: labels[t], vocabularySize: vocabulary)
        }
        // Each chunk's rows are reduced on the pool's threads, then summed in row order.
        let losses = UnsafeMutablePointer<Double>.allocate(capacity: tokens.count)
        let hits = UnsafeMutablePointer<Bool>.allocate(capacity: tokens.count)
        defer { losses.deallocate(); hits.deallocate() }
        try forward(tokens: Array(tokens), cache: cache, logitChunks: .from(firstCounted)) { first, count, logits in
            nonisolated(unsafe) let losses = losses, hits = hits
            pool.parallelFor(count, minimumChunk: 1) { range in
                for i in range {
                    let t = first + i
                    guard t + 1 < labels.count, labels[t + 1] != -100 else { continue }
                    let row = logits + i * vocabulary, label = labels[t + 1]
                    let (logSum, argmax) = Activation.logSumExp(row, vocabulary)
                    losses[t] = logSum - Double(row[label])
                    hits[t] = argmax == label
                }
            }
        }
        for t in 0..<(tokens.count - 1) where labels[t + 1] != -100 {
            score.totalLoss += losses[t]
            score.countedTokens += 1
            if hits[t] { score.correct += 1 }
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
