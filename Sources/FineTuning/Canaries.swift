import Foundation
import Kernels
import LanguageModel
import Privacy
import SecureCrypto
import Tokenizer

// Canaries and their exposure: Carlini, Liu, Erlingsson, Kos and Song, "The Secret Sharer: Evaluating and
// Testing Unintended Memorization in Neural Networks", USENIX Security 2019. A canary is a fixed phrase
// followed by a secret of d random digits; the candidate space R is every d-digit secret; exposure is
// log2 |R| − log2 rank, where rank is the secret's place among all candidates ordered by the model's loss.

/// A canary problem, naming the field or value at fault.
public struct CanaryError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// One secret: d digits, each 0...9.
public struct Canary: Sendable, Hashable, Codable {
    public let digits: [UInt8]

    /// - Precondition: every digit is in 0...9.
    public init(digits: [UInt8]) {
        precondition(digits.allSatisfy { $0 <= 9 }, "a canary digit must be in 0...9")
        self.digits = digits
    }

    public init(from decoder: Decoder) throws {
        let digits = try decoder.singleValueContainer().decode([UInt8].self)
        guard digits.allSatisfy({ $0 <= 9 }) else { throw CanaryError("a canary digit is outside 0...9: \(digits)") }
        self.digits = digits
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(digits)
    }

    /// The secret as it appears in text: digits separated by single spaces, e.g. "4 8 1 5 2 3".
    public var secret: String { digits.map { String($0) }.joined(separator: " ") }

    /// The secret's index in the candidate space: its digits read as a base-10 number.
    public var index: Int { digits.reduce(0) { $0 * 10 + Int($1) } }

    /// The candidate with the given index in a space of `count`-digit secrets.
    public init(index: Int, digits count: Int) {
        var value = index, digits = [UInt8](repeating: 0, count: count)
        for position in stride(from: count - 1, through: 0, by: -1) {
            digits[position] = UInt8(value % 10)
            value /= 10
        }
        self.init(digits: digits)
    }

    /// A secret with `count` digits drawn independently and uniformly from libsodium's generator.
    public static func random(digits count: Int) -> Canary {
        Canary(digits: (0..<count).map { _ in UInt8(SecureRandom.uniform(10)) })
    }
}

/// How a canary becomes tokens: a fixed prefix (the phrase), then one piece of tokens per digit.
///
/// The model scores candidates from this layout, so it must equal what the dataset loader produces
/// for the canary's record; `text(phrase:tokenizer:)` checks that on every digit pair.
public struct CanaryTokenization: Sendable, Equatable {
    /// The phrase's tokens (with BOS when the tokenizer adds one).
    public let prefix: [Int]
    /// pieces[d]: the tokens of digit d as it follows the phrase or another digit.
    public let digitPieces: [[Int]]

    /// A layout given as token ids, for models without a tokenizer (records as `input_ids`).
    /// - Throws: `CanaryError` unless there are ten non-empty digit pieces and the prefix is non-empty.
    public init(prefix: [Int], digitPieces: [[Int]]) throws {
        guard !prefix.isEmpty else { throw CanaryError("the canary prefix has no tokens") }
        guard digitPieces.count == 10 else {
            throw CanaryError("a canary tokenization needs 10 digit pieces, got \(digitPieces.count)")
        }
        if let empty = digitPieces.firstIndex(where: \.isEmpty) { throw CanaryError("digit \(empty) has no tokens") }
        self.prefix = prefix
        self.digitPieces = digitPieces
    }

    /// The layout of `phrase` followed by space-separated digits under a real tokenizer.
    ///
    /// Byte-level BPEs that split digits (SmolLM2's does) give each " d" the same tokens wherever it
    /// stands; this is checked on a probe in which every ordered pair of digits occurs, and the layout is
    /// refused when the tokenizer merges across a digit boundary.
    /// - Throws: `CanaryError` naming the phrase or the digit whose tokens depend on their neighbours.
    public static func text(phrase: String, tokenizer: BPETokenizer) throws -> CanaryTokenization {
        let prefix = tokenizer.encode(phrase)
        var pieces: [[Int]] = []
        for digit in 0...9 {
            let ids = tokenizer.encode(phrase + " \(digit)")
            guard ids.count > prefix.count, Array(ids.prefix(prefix.count)) == prefix else {
                throw CanaryError("the phrase '\(phrase)' does not tokenize the same when digit \(digit) follows it")
            }
            pieces.append(Array(ids.dropFirst(prefix.count)))
        }
        let layout = try CanaryTokenization(prefix: prefix, digitPieces: pieces)
        // Every ordered pair (a, b) of digits appears once as neighbours in this probe.
        var probe: [UInt8] = []
        for a in 0...9 { for b in 0...9 { probe += [UInt8(a), UInt8(b)] } }
        let canary = Canary(digits: probe)
        guard tokenizer.encode(CanarySet.text(phrase: phrase, canary: canary)) == layout.tokens(canary) else {
            throw CanaryError("the tokenizer merges digits of '\(phrase) 0 0 0 1 …' across their spaces; "
                              + "canary candidates could not be scored digit by digit")
        }
        return layout
    }

    /// The canary's full token sequence: prefix, then each digit's piece.
    public func tokens(_ canary: Canary) -> [Int] {
        prefix + canary.digits.flatMap { digitPieces[Int($0)] }
    }
}

/// Secret canaries planted in a training set, each `repetitions` times. Codable so that a client can
/// keep its canaries in its state directory (they are secrets: store them like keys) and measure
/// their exposure after every round; decoding re-checks every field.
public struct CanarySet: Sendable, Equatable, Codable {
    /// Carlini et al.'s style of phrase; the secret follows after a space.
    public static let defaultPhrase = "My account number is"
    /// Largest number of digits a secret may have (|R| = 10^18 still fits an Int).
    public static let maximumDigits = 18

    public let phrase: String
    public let digits: Int
    public let repetitions: Int
    public let canaries: [Canary]

    /// |R| = 10^digits: every secret of this length.
    public var spaceSize: Int { CanarySet.spaceSize(digits: digits) }

    /// 10^digits, the number of secrets of that length.
    /// - Precondition: digits in 0...`maximumDigits`.
    public static func spaceSize(digits: Int) -> Int {
        precondition((0...maximumDigits).contains(digits), "digits must be in 0...\(maximumDigits), got \(digits)")
        return (0..<digits).reduce(1) { value, _ in value * 10 }
    }

    /// An existing set, e.g. read back from a client's state.
    /// - Throws: `CanaryError` when a canary has the wrong number of digits, two are equal, or counts are out of range.
    public init(phrase: String, digits: Int, repetitions: Int, canaries: [Canary]) throws {
        guard (1...CanarySet.maximumDigits).contains(digits) else {
            throw CanaryError("canary digits must be in 1...\(CanarySet.maximumDigits), got \(digits)")
        }
        guard repetitions >= 1 else { throw CanaryError("canary repetitions must be at least 1, got \(repetitions)") }
        guard !phrase.isEmpty else { throw CanaryError("the canary phrase is empty") }
        if let wrong = canaries.firstIndex(where: { $0.digits.count != digits }) {
            throw CanaryError("canary \(wrong) has \(canaries[wrong].digits.count) digits, the set has \(digits)")
        }
        guard Set(canaries).count == canaries.count else { throw CanaryError("two canaries share a secret") }
        self.phrase = phrase
        self.digits = digits
        self.repetitions = repetitions
        self.canaries = canaries
    }

    private enum CodingKeys: String, CodingKey { case phrase, digits, repetitions, canaries }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let canaries = try container.decode([Canary].self, forKey: .canaries)
        try self.init(phrase: container.decode(String.self, forKey: .phrase), digits: container.decode(Int.self, forKey: .digits),
                      repetitions: container.decode(Int.self, forKey: .repetitions), canaries: canaries)
    }

    /// `count` distinct secrets of `digits` random digits (libsodium's generator), to be planted
    /// `repetitions` times each after `phrase`.
    /// - Throws: `CanaryError` for counts out of range or more canaries than the space holds.
    public static func generate(count: Int, digits: Int, repetitions: Int, phrase: String = defaultPhrase) throws -> CanarySet {
        guard count >= 1 else { throw CanaryError("canary count must be at least 1, got \(count)") }
        guard (1...maximumDigits).contains(digits) else {
            throw CanaryError("canary digits must be in 1...\(maximumDigits), got \(digits)")
        }
        guard count <= spaceSize(digits: digits) / 2 else {
            throw CanaryError("\(count) canaries of \(digits) digits would fill more than half of the \(spaceSize(digits: digits)) secrets")
        }
        var seen = Set<Canary>(), canaries: [Canary] = []
        while canaries.count < count {
            let canary = Canary.random(digits: digits)
            if seen.insert(canary).inserted { canaries.append(canary) }
        }
        return try CanarySet(phrase: phrase, digits: digits, repetitions: repetitions, canaries: canaries)
    }

    /// The canary's text: "phrase d d d …".
    public static func text(phrase: String, canary: Canary) -> String { phrase + " " + canary.secret }

    /// The canary's text in this set.
    public func text(_ canary: Canary) -> String { CanarySet.text(phrase: phrase, canary: canary) }

    /// The JSONL lines to plant: each canary `repetitions` times, as `{"text": …}` when `tokenization`
    /// is nil, else as `{"input_ids": […]}`. Append them to a dataset file; order does not matter to
    /// Poisson-sampled training.
    public func records(tokenization: CanaryTokenization? = nil) -> [String] {
        var lines: [String] = []
        for canary in canaries {
            let object: [String: Any] = tokenization.map { ["input_ids": $0.tokens(canary)] } ?? ["text": text(canary)]
            // A dictionary of a string or an integer array always serialises.
            let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
            let line = String(decoding: data, as: UTF8.self)
            lines += Array(repeating: line, count: repetitions)
        }
        return lines
    }

    /// The canaries as training examples (each `repetitions` times, loss on every token), with `line`
    /// numbers continuing after `firstLine`, as the dataset loader would give them.
    public func examples(tokenization: CanaryTokenization, firstLine: Int = 0) -> [TokenizedExample] {
        var examples: [TokenizedExample] = []
        for canary in canaries {
            let ids = tokenization.tokens(canary)
            for _ in 0..<repetitions {
                examples.append(TokenizedExample(ids: ids, labels: ids, line: firstLine + examples.count + 1))
            }
        }
        return examples
    }

    /// `examples` appended to `dataset`.
    public func planted(into dataset: [TokenizedExample], tokenization: CanaryTokenization) -> [TokenizedExample] {
        dataset + examples(tokenization: tokenization, firstLine: dataset.map(\.line).max() ?? 0)
    }
}

/// A canary's exposure, log2 |R| − log2 rank (Carlini et al. 2019, Definition 3), with rank the number
/// of candidates in R whose loss is at most the secret's (the secret included, so ties count against it).
///
/// Loss is the model's cross-entropy of the secret's tokens given the phrase, in nats. The phrase's
/// own loss is the same for every candidate (a causal model does not see what follows), so this orders
/// R exactly as the paper's log-perplexity of the full canary sequence does, at a fraction of the cost.
///
/// Large spaces are estimated from a uniform sample rather than by the paper's skew-normal fit: the
/// fraction of sampled candidates at most as likely as the secret is an unbiased estimate of (rank − 1)
/// / (|R| − 1), and the exact Clopper–Pearson interval on that fraction gives an interval on exposure
/// that assumes nothing about the shape of the loss distribution. The price is resolution: with n
/// samples it cannot tell exposures above about log2 n apart, and says so through the interval's upper
/// end; the skew-normal fit extrapolates beyond that, but on an assumption a test cannot check.
public struct Exposure: Sendable, Equatable, Codable {
    /// Exposure in bits, between 0 and log2 |R|.
    public var bits: Double
    /// The secret's rank among all candidates (1 = the most likely); estimated when sampled.
    public var rank: Double
    /// |R|.
    public var spaceSize: Int
    /// Other candidates whose loss was compared with the secret's (|R| − 1 when exact).
    public var candidatesScored: Int
    public var isExact: Bool
    /// The range of exposure at `confidence` (a single point when exact).
    public var lowerBits: Double
    public var upperBits: Double
    public var confidence: Double
    /// The secret's loss (nats over its tokens).
    public var secretLoss: Double

    /// Largest candidate space scored exhaustively (losses of all candidates are kept in memory).
    public static let maximumExactSpace = 1_000_000

    /// Exposure from losses already computed; exact and sampled scoring both end here.
    ///
    /// - Parameters:
    ///   - candidateLosses: the losses of every other candidate (exactly |R| − 1 of them: exact), or of a
    ///     uniform sample without replacement from the other candidates (fewer: estimated).
    ///   - spaceSize: |R|, at least 2.
    ///   - confidence: of the interval on a sampled estimate.
    /// - Throws: `CanaryError` for non-finite losses, more losses than |R| − 1, or no candidates.
    public static func fromLosses(secretLoss: Double, candidateLosses: [Double], spaceSize: Int,
                                  confidence: Double = 0.95) throws -> Exposure {
        guard spaceSize >= 2 else { throw CanaryError("the candidate space must hold at least 2 secrets, got \(spaceSize)") }
        guard secretLoss.isFinite else { throw CanaryError("the secret's loss is \(secretLoss)") }
        guard !candidateLosses.isEmpty else { throw CanaryError("no candidate losses to rank the secret against") }
        guard candidateLosses.count <= spaceSize - 1 else {
            throw CanaryError("\(candidateLosses.count) candidate losses, but only \(spaceSize - 1) other candidates exist")
        }
        if let bad = candidateLosses.firstIndex(where: { !$0.isFinite }) {
            throw CanaryError("candidate loss \(bad) is \(candidateLosses[bad])")
        }
        guard confidence > 0, confidence < 1 else { throw CanaryError("confidence must be in (0, 1), got \(confidence)") }
        let n = candidateLosses.count
        let atMost = candidateLosses.filter { $0 <= secretLoss }.count
        let logSpace = log2(Double(spaceSize))
        let others = Double(spaceSize - 1)
        if n == spaceSize - 1 {
            let rank = Double(1 + atMost)
            let bits = logSpace - log2(rank)
            return Exposure(bits: bits, rank: rank, spaceSize: spaceSize, candidatesScored: n, isExact: true,
                            lowerBits: bits, upperBits: bits, confidence: 1, secretLoss: secretLoss)
        }
        let fraction = Binomial.clopperPearson(successes: atMost, trials: n, confidence: confidence)
        let rank = 1 + others * Double(atMost) / Double(n)
        return Exposure(bits: logSpace - log2(rank), rank: rank, spaceSize: spaceSize, candidatesScored: n, isExact: false,
                        lowerBits: logSpace - log2(1 + others * fraction.upperBound),
                        upperBits: logSpace - log2(1 + others * fraction.lowerBound),
                        confidence: confidence, secretLoss: secretLoss)
    }

    /// Exact exposure of every canary of `set`, scoring all |R| candidates once (digit by digit, sharing
    /// each common prefix in the KV cache) with the model as it stands (its current adapter).
    /// - Throws: `CanaryError` when |R| exceeds `maximumExactSpace`; model errors.
    public static func exact(model: LlamaModel, tokenization: CanaryTokenization, set: CanarySet) throws -> [Exposure] {
        guard set.spaceSize <= maximumExactSpace else {
            throw CanaryError("a space of \(set.spaceSize) candidates is larger than the \(maximumExactSpace) scored exactly; "
                              + "use the sampled estimate")
        }
        let losses = try CanaryScoring.allLosses(model: model, tokenization: tokenization, digits: set.digits)
        return try set.canaries.map { canary in
            let secret = canary.index
            var others = losses
            others.remove(at: secret)
            return try fromLosses(secretLoss: losses[secret], candidateLosses: others, spaceSize: set.spaceSize)
        }
    }

    /// Exposure of every canary of `set` as the issue asks: exact when |R| ≤ `exactUpTo`, otherwise
    /// estimated from `samples` sampled candidates. The model is used as it stands (its current adapter).
    public static func measure(model: LlamaModel, tokenization: CanaryTokenization, set: CanarySet,
                               exactUpTo: Int = 10_000, samples: Int = 2_000, confidence: Double = 0.95) throws -> [Exposure] {
        if set.spaceSize <= min(exactUpTo, maximumExactSpace) {
            return try exact(model: model, tokenization: tokenization, set: set)
        }
        return try estimated(model: model, tokenization: tokenization, set: set, samples: samples, confidence: confidence)
    }

    /// Estimated exposure of every canary of `set` from `samples` distinct candidates drawn uniformly
    /// (libsodium's generator) and scored once for all canaries; each canary is compared with the
    /// sampled candidates other than itself. Falls back to `exact` when the sample would cover the space.
    /// - Throws: `CanaryError` for fewer than 1 sample or a bad confidence; model errors.
    public static func estimated(model: LlamaModel, tokenization: CanaryTokenization, set: CanarySet, samples: Int,
                                 confidence: Double = 0.95) throws -> [Exposure] {
        guard samples >= 1 else { throw CanaryError("exposure needs at least 1 sampled candidate, got \(samples)") }
        let space = set.spaceSize
        if samples >= space - 1, space <= maximumExactSpace {
            return try exact(model: model, tokenization: tokenization, set: set)
        }
        guard samples <= space / 2 else {
            throw CanaryError("\(samples) samples from \(space) candidates: sample at most half the space, or score it exactly")
        }
        // Distinct uniform draws: a uniform sample without replacement from R.
        var seen = Set<Canary>(), sample: [Canary] = []
        while sample.count < min(samples, space) {
            let candidate = Canary.random(digits: set.digits)
            if seen.insert(candidate).inserted { sample.append(candidate) }
        }
        let sampleLosses = try CanaryScoring.losses(model: model, tokenization: tokenization, candidates: sample)
        let secretLosses = try CanaryScoring.losses(model: model, tokenization: tokenization, candidates: set.canaries)
        return try zip(set.canaries, secretLosses).map { canary, secretLoss in
            let others = zip(sample, sampleLosses).filter { $0.0 != canary }.map(\.1)
            return try fromLosses(secretLoss: secretLoss, candidateLosses: others, spaceSize: space, confidence: confidence)
        }
    }
}

/// Scoring canary candidates with the KV cache: the phrase runs once, then only the digits.
public enum CanaryScoring {
    /// The loss (nats) of each candidate's digit tokens given the phrase. Each candidate's digits run
    /// as one batch after the cached phrase, so every candidate is scored the same way.
    public static func losses(model: LlamaModel, tokenization: CanaryTokenization, candidates: [Canary]) throws -> [Double] {
        let vocabulary = model.configuration.vocabSize
        let cache = model.makeCache(capacity: tokenization.prefix.count + 64)
        var first = [Float](repeating: 0, count: vocabulary)
        try runPrefix(model: model, tokenization: tokenization, cache: cache, into: &first)
        let base = cache.count
        return try candidates.map { candidate in
            let suffix = candidate.digits.flatMap { tokenization.digitPieces[Int($0)] }
            var loss = first.withUnsafeBufferPointer { negativeLogProbability($0.baseAddress!, suffix[0], vocabulary) }
            if suffix.count > 1 {
                cache.truncate(to: base)
                try model.forward(tokens: Array(suffix.dropLast()), cache: cache, logits: .all) { row, logits in
                    loss += negativeLogProbability(logits, suffix[row + 1], vocabulary)
                }
            }
            return loss
        }
    }

    /// The loss of every candidate with `digits` digits, indexed by `Canary.index`, by a depth-first
    /// walk of the token tree of all candidates: each distinct token prefix runs through the model once
    /// (one token at a time on the KV cache) and is shared by every candidate below it, so |R| = 10^4
    /// costs about 1.1·10^3 one-token steps per token of a digit piece rather than 10^4 sequences.
    public static func allLosses(model: LlamaModel, tokenization: CanaryTokenization, digits: Int) throws -> [Double] {
        precondition(digits >= 1, "candidates need at least one digit")
        let vocabulary = model.configuration.vocabSize
        let pieces = tokenization.digitPieces
        let longest = pieces.map(\.count).max() ?? 1
        let cache = model.makeCache(capacity: tokenization.prefix.count + digits * longest + 1)
        var root = [Float](repeating: 0, count: vocabulary)
        try runPrefix(model: model, tokenization: tokenization, cache: cache, into: &root)
        var losses = [Double](repeating: .nan, count: CanarySet.spaceSize(digits: digits))

        // `group`: the digits (at position `depth` of the secret) whose pieces share the tokens
        // 0..<`position`, which the cache already holds; `logits` predict the token after them.
        func walk(depth: Int, index: Int, group: [Int], position: Int, lossSoFar: Double, logits: [Float]) throws {
            let base = cache.count
            let last = depth == digits - 1
            // Digits whose piece is complete: the same logits begin the next digit.
            for digit in group where pieces[digit].count == position {
                if last {
                    losses[index * 10 + digit] = lossSoFar
                } else {
                    cache.truncate(to: base)
                    try walk(depth: depth + 1, index: index * 10 + digit, group: Array(0...9), position: 0,
                             lossSoFar: lossSoFar, logits: logits)
                }
            }
            let continuing = group.filter { pieces[$0].count > position }
            for token in Set(continuing.map { pieces[$0][position] }).sorted() {
                let members = continuing.filter { pieces[$0][position] == token }
                let loss = lossSoFar + logits.withUnsafeBufferPointer { negativeLogProbability($0.baseAddress!, token, vocabulary) }
                if last, members.allSatisfy({ pieces[$0].count == position + 1 }) {
                    // Nothing depends on this token's output: the candidates end here.
                    for digit in members { losses[index * 10 + digit] = loss }
                    continue
                }
                cache.truncate(to: base)
                var next = [Float](repeating: 0, count: vocabulary)
                try next.withUnsafeMutableBufferPointer { out in
                    try model.forward(tokens: [token], cache: cache, logits: .last) { _, row in
                        out.baseAddress!.update(from: row, count: vocabulary)
                    }
                }
                try walk(depth: depth, index: index, group: members, position: position + 1, lossSoFar: loss, logits: next)
            }
            cache.truncate(to: base)
        }
        try walk(depth: 0, index: 0, group: Array(0...9), position: 0, lossSoFar: 0, logits: root)
        precondition(!losses.contains { $0.isNaN }, "the candidate walk missed a candidate")
        return losses
    }

    /// Runs the phrase into `cache` and keeps its last row of logits (the first digit's prediction).
    private static func runPrefix(model: LlamaModel, tokenization: CanaryTokenization, cache: KVCache,
                                  into logits: inout [Float]) throws {
        let vocabulary = model.configuration.vocabSize
        for token in tokenization.prefix + tokenization.digitPieces.joined() where token < 0 || token >= vocabulary {
            throw CanaryError("canary token \(token) is outside the model's vocabulary (0..<\(vocabulary))")
        }
        try logits.withUnsafeMutableBufferPointer { out in
            try model.forward(tokens: tokenization.prefix, cache: cache, logits: .last) { _, row in
                out.baseAddress!.update(from: row, count: vocabulary)
            }
        }
    }

    /// −log softmax(logits)[label], in nats.
    static func negativeLogProbability(_ logits: UnsafePointer<Float>, _ label: Int, _ vocabulary: Int) -> Double {
        Activation.logSumExp(logits, vocabulary).value - Double(logits[label])
    }
}

/// Canaries for a one-run privacy audit (Steinke, Nasr and Jagielski 2023): each is included in the
/// training data once, independently with probability 1/2, and the auditor later guesses which were.
public struct CanaryAudit: Sendable, Equatable, Codable {
    /// The audit's canaries (repetitions 1: one record each, so the bound is per record).
    public let set: CanarySet
    /// Whether each canary is in the training data: the secret the audit tests, never shown to training.
    public let included: [Bool]

    /// - Throws: `CanaryError` unless there is one inclusion bit per canary and each canary is one record.
    public init(set: CanarySet, included: [Bool]) throws {
        guard included.count == set.canaries.count else {
            throw CanaryError("\(included.count) inclusion bits for \(set.canaries.count) audit canaries")
        }
        guard set.repetitions == 1 else {
            throw CanaryError("audit canaries must be planted once each (record-level ε), not \(set.repetitions) times")
        }
        self.set = set
        self.included = included
    }

    private enum CodingKeys: String, CodingKey { case set, included }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        try self.init(set: container.decode(CanarySet.self, forKey: .set),
                      included: container.decode([Bool].self, forKey: .included))
    }

    /// m canaries of `digits` random digits, each included with probability 1/2 (libsodium's generator).
    public static func generate(count: Int, digits: Int, phrase: String = CanarySet.defaultPhrase) throws -> CanaryAudit {
        let set = try CanarySet.generate(count: count, digits: digits, repetitions: 1, phrase: phrase)
        let bits = SecureRandom.bytes(count).map { $0 & 1 == 1 }
        return try CanaryAudit(set: set, included: bits)
    }

    /// The included canaries as training examples, once each.
    public func examples(tokenization: CanaryTokenization, firstLine: Int = 0) -> [TokenizedExample] {
        let kept = zip(set.canaries, included).filter(\.1).map(\.0)
        return kept.enumerated().map { offset, canary in
            let ids = tokenization.tokens(canary)
            return TokenizedExample(ids: ids, labels: ids, line: firstLine + offset + 1)
        }
    }

    /// Each canary's loss (nats over its secret's tokens) with the model as it stands (its current
    /// adapter). Taken once on the model before training, it is the baseline of `audit`.
    public func losses(model: LlamaModel, tokenization: CanaryTokenization) throws -> [Double] {
        try CanaryScoring.losses(model: model, tokenization: tokenization, candidates: set.canaries)
    }

    /// Scores every audit canary with the model as it stands, relative to its loss on the model before
    /// training (`baseLosses`, from `losses` on the base model), and returns the one-run lower bound on ε
    /// with its power. The raw loss would mostly measure what the base model already knew about each
    /// random secret (the same whether or not it was trained on); the difference measures training.
    /// - Parameters:
    ///   - baseLosses: each canary's loss before training, in the set's order.
    ///   - guesses: r (even), fixed before training; nil guesses on all canaries.
    ///   - delta: δ of the hypothesis tested (the accountant's δ to compare with its ε).
    /// - Throws: `CanaryError` when `baseLosses` does not have one loss per canary; the audit's errors.
    public func audit(model: LlamaModel, tokenization: CanaryTokenization, baseLosses: [Double], guesses: Int? = nil,
                      delta: Double, significance: Double = 0.05) throws -> OneRunAudit {
        guard baseLosses.count == set.canaries.count else {
            throw CanaryError("\(baseLosses.count) base losses for \(set.canaries.count) audit canaries")
        }
        let after = try losses(model: model, tokenization: tokenization)
        return try EmpiricalPrivacy.audit(scores: zip(after, baseLosses).map { $0 - $1 }, included: included,
                                          guesses: guesses, delta: delta, significance: significance)
    }
}
