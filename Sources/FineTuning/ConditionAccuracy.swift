import Foundation
import LanguageModel
import Privacy
import Tokenizer

/// What a task record's assessment should name: its `condition` (JSONL `"condition": "..."`) and, optionally,
/// the phrasings that count as naming it (`"condition_names": ["...", ...]`; when absent or empty, the condition
/// itself is the one name). Read by `Dataset.parse`; bounded before anything is kept.
public struct ConditionLabel: Sendable, Equatable, Hashable {
    public var condition: String
    /// The phrasings that count, the condition's own name first (deduplicated, never empty).
    public var names: [String]

    /// Most `condition_names` entries, and most UTF-8 bytes of the condition or one name.
    public static let maximumNames = 64
    public static let maximumBytes = 256

    public init(condition: String, names: [String] = []) {
        self.condition = condition
        var seen = Set<String>(), all: [String] = []
        for name in [condition] + names where seen.insert(ConditionMatcher.normalized(name)).inserted { all.append(name) }
        self.names = all
    }

    /// The record's fields as JSON gave them: nil when `condition` is absent; an error naming the field otherwise.
    init?(_ condition: Any?, names: Any?, fail: (String) -> DatasetError) throws {
        guard let condition else {
            if names != nil { throw fail("\"condition_names\" needs a \"condition\"") }
            return nil
        }
        func checked(_ value: Any, _ field: String) throws -> String {
            guard let text = value as? String, !ConditionMatcher.normalized(text).isEmpty,
                  text.utf8.count <= Self.maximumBytes else {
                throw fail("\"\(field)\" must be a string of at most \(Self.maximumBytes) bytes with a letter or digit")
            }
            return text
        }
        let label = try checked(condition, "condition")
        var list: [String] = []
        if let names {
            guard let array = names as? [Any], array.count <= Self.maximumNames else {
                throw fail("\"condition_names\" must be an array of at most \(Self.maximumNames) strings")
            }
            list = try array.enumerated().map { try checked($1, "condition_names[\($0)]") }
        }
        self.init(condition: label, names: list)
    }
}

/// Whether a generated assessment names a record's condition: its first line that is not blank, folded to
/// lower-case words (every character that is not a letter or digit a space), holds one of the label's names,
/// folded the same way, as whole words. "Stage 2 hypertension, above goal." names "stage 2 hypertension";
/// "Hypertensive urgency" does not name "hypertension".
public enum ConditionMatcher {
    /// Lower-case words separated by single spaces.
    public static func normalized(_ text: String) -> String {
        let folded = text.lowercased().unicodeScalars.map { CharacterSet.alphanumerics.contains($0) ? Character($0) : " " }
        return String(folded).split(separator: " ").joined(separator: " ")
    }

    /// The first line of `text` that is not blank, trimmed ("" when all is blank).
    public static func firstLine(_ text: String) -> String {
        text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.first { !$0.isEmpty } ?? ""
    }

    /// Whether the first line of `assessment` names `label`.
    public static func names(_ label: ConditionLabel, in assessment: String) -> Bool {
        let line = " " + normalized(firstLine(assessment)) + " "
        return label.names.contains { name in line.contains(" " + normalized(name) + " ") }
    }
}

/// The held-out condition accuracy a client releases each round, before and after (`ConditionAccuracyRelease` in
/// Wire documents the mechanism and its accounting).
///
/// Which records are scored: the plan bounds them at `records` per round. The first `records` privacy units of
/// the held-out split (in file order) that have a labelled record are scored, each by its first labelled record:
/// at privacy unit record a unit is a record, at unit user a person. Adding or removing one unit then changes the
/// scored set by that unit at most, and at most one other unit leaves or enters it (the one at the bound): each
/// coordinate of (correct before, correct after, count) moves by at most 1, so the L2 sensitivity is √3.
public enum ConditionAccuracy {
    /// Tokens generated for an assessment: the condition leads an assessment line ("{diagnosis}. {reasoning}").
    public static let maximumTokens = 24

    /// The indices of the held-out records scored: the first labelled record of each of the first `limit` units
    /// with one. `users` (privacy unit user) is each record's person; nil: each record is its own unit.
    public static func scored(_ examples: [TokenizedExample], limit: Int, users: [String?]? = nil) -> [Int] {
        var chosen: [Int] = [], seen = Set<String>()
        for (index, example) in examples.enumerated() where chosen.count < limit && example.condition != nil {
            if let users {
                guard let user = users[index], seen.insert(user).inserted else { continue }
            }
            chosen.append(index)
        }
        return chosen
    }

    /// The assessment the model writes for `example`: greedy, after its prompt, up to `maximumTokens` or the end of
    /// the first line that is not blank, decoded.
    public static func assessment(model: LlamaModel, tokenizer: BPETokenizer, example: TokenizedExample) throws -> String {
        var generated: [Int] = []
        let lineEnded = Self.lineEnded(tokenizer)
        _ = try model.generate(prompt: Array(example.promptIds), maxTokens: maximumTokens, sampling: .greedy,
                               stopTokens: tokenizer.endOfTurnTokenIds, onToken: { generated.append($0) },
                               shouldStop: { lineEnded(generated) })
        return ConditionMatcher.firstLine(tokenizer.decode(generated))
    }

    /// An assessment's end: once a line with text has ended (what the matcher reads is the first such line).
    static func lineEnded(_ tokenizer: BPETokenizer) -> ([Int]) -> Bool {
        { generated in
            let text = tokenizer.decode(generated)
            guard let newline = text.lastIndex(where: \.isNewline) else { return false }
            return !text[..<newline].trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
        }
    }

    /// Whether the model, with its adapter as set, names the condition of each of `examples[indices]`.
    public static func correct(model: LlamaModel, tokenizer: BPETokenizer, examples: [TokenizedExample],
                               indices: [Int]) throws -> [Bool] {
        correct(examples: examples, indices: indices,
                assessments: try indices.map { try assessment(model: model, tokenizer: tokenizer, example: examples[$0]) })
    }

    /// Whether each of `assessments`, written for `examples[indices]` in that order, names its record's condition.
    public static func correct(examples: [TokenizedExample], indices: [Int], assessments: [String]) -> [Bool] {
        zip(indices, assessments).map { index, text in
            guard let label = examples[index].condition else { preconditionFailure("record \(index) has no condition") }
            return ConditionMatcher.names(label, in: text)
        }
    }

    /// The exact sums (correct before, correct after, count) over the scored units.
    public static func exactSums(before: [Bool], after: [Bool]) -> [Int64] {
        precondition(before.count == after.count, "\(before.count) units scored before and \(after.count) after")
        return [Int64(before.filter { $0 }.count), Int64(after.filter { $0 }.count), Int64(before.count)]
    }

    /// The released sums: `exactSums` plus independent N_Z(0, σ²) on each coordinate, σ = z·√3.
    /// - Parameter noise: adds noise of the given σ in place; nil (production) is `DiscreteGaussian.add`.
    public static func release(before: [Bool], after: [Bool], noiseMultiplier: Double,
                               noise: ((inout [Int64], Double) throws -> Void)? = nil) throws -> [Int64] {
        var sums = exactSums(before: before, after: after)
        let sigma = noiseMultiplier * 3.0.squareRoot()
        if let noise {
            try noise(&sums, sigma)
        } else {
            try DiscreteGaussian.add(to: &sums, sigma: sigma)
        }
        return sums
    }
}
