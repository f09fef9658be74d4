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
        let rows = try RowScores(tokens: tokens, labels: labels, vocabulary: configuration.vocabSize)
        guard tokens.count >= 2 else { return rows.total }
        // The last position predicts nothing, and no position before the first counted one is scored (a task record's
        // prompt), so those rows are not run through the output head.
        // A record with nothing counted still runs through the layers, which check its tokens.
        let firstCounted = (0..<(tokens.count - 1)).first(where: { labels[$0 + 1] != -100 }) ?? tokens.count
        let cache = makeCache(capacity: tokens.count)
        try forward(tokens: tokens, cache: cache, logitChunks: .from(firstCounted)) { first, count, logits in
            rows.take(first: first, count: count, logits: logits, pool: pool)
        }
        return rows.total
    }

    /// `score(tokens:labels:)` of a task record, and the greedy continuation `generate` writes after its prompt (the
    /// tokens before the first counted label), from one pass over the prompt: its keys stay in the cache for both, and
    /// its last row's logits score the first counted label and choose the first new token. The prompt runs alone, as
    /// `generate` runs it, and the continuation starts from the cache rolled back to it, so it is `generate`'s; the
    /// score is `score`'s, its forward in two pieces (the prompt, then the rest). A held-out note's loss and its
    /// generated assessment then cost one prompt pass where they cost two. (A LongRoPE model's session is the longer of
    /// the two, record or prompt and continuation, as its factor set is chosen once: the two differ from `score`'s and
    /// `generate`'s only where one crosses the original context and the other does not.)
    /// - Parameters:
    ///   - shouldStop: asked with the tokens generated so far after each one; true ends the continuation.
    /// - Returns: the score, and the generated tokens (without the stop token that ended them).
    /// - Throws: as `score`; and when no label is counted or the first counted label is the first token (no prompt).
    public func scoreAndContinue(tokens: [Int], labels: [Int], maxTokens: Int, stopTokens: Set<Int>,
                                 shouldStop: ([Int]) -> Bool = { _ in false }) throws -> (score: SequenceScore, continuation: [Int]) {
        let rows = try RowScores(tokens: tokens, labels: labels, vocabulary: configuration.vocabSize)
        guard let prompt = labels.firstIndex(where: { $0 != -100 }), prompt > 0 else {
            throw LanguageModelError.noPrompt(tokens: tokens.count)
        }
        let cache = makeCache(capacity: max(tokens.count, prompt + maxTokens))
        var sampler = Sampler(.greedy)
        var next = 0
        try forward(tokens: Array(tokens[..<prompt]), cache: cache, logitChunks: .last) { first, count, logits in
            rows.take(first: first, count: count, logits: logits, pool: pool)
            next = sampler.sample(logits, count: configuration.vocabSize)
        }
        if prompt < tokens.count {
            try forward(tokens: Array(tokens[prompt...]), cache: cache, logitChunks: .all) { first, count, logits in
                rows.take(first: prompt + first, count: count, logits: logits, pool: pool)
            }
        }
        cache.count = prompt
        let continuation = try continueGeneration(from: next, cache: cache, sampler: &sampler, maxTokens: maxTokens,
                                                  stopTokens: stopTokens, onToken: { _ in }, shouldStop: shouldStop).tokens
        return (rows.total, continuation)
    }
}

/// The per-row losses and hits of one scored sequence, filled chunk by chunk (each chunk's rows on the pool's threads)
/// and summed in row order, so a sequence scored in one pass or in pieces gives the same total.
final class RowScores {
    let labels: [Int]
    let vocabulary: Int
    private let losses: UnsafeMutablePointer<Double>
    private let hits: UnsafeMutablePointer<Bool>

    /// Checks what `score` documents: as many labels as tokens, counted labels inside the vocabulary.
    init(tokens: [Int], labels: [Int], vocabulary: Int) throws {
        // Thrown, not a precondition: a bad record must not stop the process.
        guard labels.count == tokens.count else {
            throw LanguageModelError.labelsMismatch(tokens: tokens.count, labels: labels.count)
        }
        for t in labels.indices.dropFirst() where labels[t] != -100 && (labels[t] < 0 || labels[t] >= vocabulary) {
            throw LanguageModelError.tokenOutOfRange(token: labels[t], vocabularySize: vocabulary)
        }
        self.labels = labels
        self.vocabulary = vocabulary
        losses = .allocate(capacity: max(1, tokens.count))
        hits = .allocate(capacity: max(1, tokens.count))
    }

    deinit {
        losses.deallocate()
        hits.deallocate()
    }

    /// Rows first..<first + count of the sequence, their logits (count, vocabulary).
    func take(first: Int, count: Int, logits: UnsafePointer<Float>, pool: ThreadPool) {
        nonisolated(unsafe) let losses = losses, hits = hits, logits = logits
        let labels = labels, vocabulary = vocabulary
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

    /// The counted rows' sum (each row must have been taken).
    var total: SequenceScore {
        var score = SequenceScore(countedTokens: 0, totalLoss: 0, correct: 0)
        for t in 0..<max(0, labels.count - 1) where labels[t + 1] != -100 {
            score.totalLoss += losses[t]
            score.countedTokens += 1
            if hits[t] { score.correct += 1 }
        }
        return score
    }
}

extension LlamaModel {
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
