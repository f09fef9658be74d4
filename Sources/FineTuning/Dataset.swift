import Foundation
import SystemIO
import Tokenizer

/// One tokenized record: the ids and, aligned with them, the labels (−100 = no loss at that token).
///
/// HF convention: the model's output at position t is scored against labels[t + 1].
public struct TokenizedExample: Sendable, Equatable {
    public var ids: [Int]
    public var labels: [Int]
    /// The 1-based line of the JSONL file it came from.
    public var line: Int
    /// The record's `user` field: the person it is about, the unit of user-level privacy (nil when absent).
    public var user: String?
    /// The record's `condition` and `condition_names` (task records only): what its assessment should name,
    /// for the held-out condition accuracy (`ConditionAccuracy`); nil when absent.
    public var condition: ConditionLabel?

    public init(ids: [Int], labels: [Int], line: Int, user: String? = nil, condition: ConditionLabel? = nil) {
        precondition(ids.count == labels.count, "ids and labels differ in length")
        self.ids = ids
        self.labels = labels
        self.line = line
        self.user = user
        self.condition = condition
    }

    /// The tokens before the first scored one: a task record's prompt, which the model continues when it is asked
    /// for the assessment (empty when the first token is scored).
    public var promptIds: ArraySlice<Int> { ids[..<(labels.firstIndex { $0 != -100 } ?? ids.endIndex)] }

    /// Tokens that carry a loss (labels after the first position that are not −100).
    public var countedTokens: Int { labels.dropFirst().filter { $0 != -100 }.count }
}

/// A malformed dataset, naming the file and line.
public struct DatasetError: Error, CustomStringConvertible, Sendable {
    public let file: String
    public let line: Int?
    public let problem: String

    public init(file: String, line: Int?, _ problem: String) {
        self.file = file
        self.line = line
        self.problem = problem
    }

    public var description: String {
        if let line { return "\(file):\(line): \(problem)" }
        return "\(file): \(problem)"
    }
}

/// JSONL datasets shared by `eval` and `train`. Each line is one record (one DP-SGD "record"), one of:
/// - `{"text": "..."}`: loss on every token;
/// - `{"prompt": "...", "completion": "..."}`: loss on the completion and a closing end-of-sequence token;
/// - `{"messages": [{"role": "...", "content": "..."}, ...]}`: the chat template; loss on assistant turns;
/// - `{"input_ids": [...], "labels": [...]?}`: pre-tokenized; label −100 means no loss.
/// Any of them may carry `"user": "..."` (a non-empty string of at most `maximumUserBytes` bytes, or a
/// non-negative integer, read as its decimal digits): the person the record is about, the unit of
/// `--privacy-unit user`, under which every record must have one. A `prompt` record may carry
/// `"condition": "..."` and `"condition_names": ["...", ...]` (`ConditionLabel`): the condition its completion
/// names, for the held-out condition accuracy. Blank lines are skipped.
public enum Dataset {
    /// Largest dataset file read (bytes); larger files are refused before reading.
    public static let maximumFileBytes = 2 << 30
    /// Longest `user` value accepted (UTF-8 bytes).
    public static let maximumUserBytes = 256

    /// Reads and tokenizes every record of a JSONL file.
    ///
    /// - Parameters:
    ///   - tokenizer: needed for text records; nil allows pre-tokenized records only.
    ///   - maxLength: records longer than this many tokens are cut to their first `maxLength`
    ///     (`truncated(_:to:)`), never refused: see there.
    ///   - vocabularySize: pre-tokenized ids and labels must lie below it.
    ///   - requireUser: every record must have a `user` field (`--privacy-unit user`); the first without
    ///     one is an error naming its line.
    public static func load(_ url: URL, tokenizer: BPETokenizer?, maxLength: Int?, vocabularySize: Int,
                            requireUser: Bool = false) throws -> [TokenizedExample] {
        let name = url.path
        let attributes: [FileAttributeKey: Any]
        // Of the file a symbolic link names, not of the link (attributesOfItem does not follow links).
        do { attributes = try FileManager.default.attributesOfItem(atPath: url.resolvingSymlinksInPath().path) } catch {
            throw DatasetError(file: name, line: nil, "cannot read: no such file")
        }
        guard attributes[.type] as? FileAttributeType == .typeRegular else {
            throw DatasetError(file: name, line: nil, (attributes[.type] as? FileAttributeType == .typeDirectory ? "is a directory" : "is not a regular file")
                               + "; expected a JSONL file, one JSON record per line")
        }
        if let size = attributes[.size] as? Int, size > maximumFileBytes {
            throw DatasetError(file: name, line: nil, "file is \(size) bytes, more than the \(maximumFileBytes) allowed")
        }
        let data = try fileData(contentsOf: url)
        var examples: [TokenizedExample] = []
        var lineNumber = 0
        let lineLimit = maxLength.map { maximumLineBytes(maxLength: $0, tokenizer: tokenizer) }
        for rawLine in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            let trimmed = rawLine.drop { $0 == 32 || $0 == 9 || $0 == 13 }
            if trimmed.allSatisfy({ $0 == 32 || $0 == 9 || $0 == 13 }) { continue }
            // Bytes first: tokenizing a 50 MB line to learn it is too long took 33 s and 2 GB.
            if let lineLimit, let maxLength, rawLine.count > lineLimit {
                throw DatasetError(file: name, line: lineNumber,
                                   "line is \(rawLine.count) bytes, more than the \(lineLimit) that a record of at most "
                                   + "\(maxLength) tokens can take; shorten the record or raise the maximum length")
            }
            let example = try parse(Data(rawLine), file: name, line: lineNumber, tokenizer: tokenizer,
                                    vocabularySize: vocabularySize)
            if requireUser && example.user == nil {
                throw DatasetError(file: name, line: lineNumber, "record has no \"user\" field, which privacy unit "
                                   + "user needs on every record (add \"user\": \"<id of the person>\", or train at privacy unit record)")
            }
            examples.append(example)
        }
        guard !examples.isEmpty else { throw DatasetError(file: name, line: nil, "no records") }
        return maxLength.map { truncated(examples, to: $0) } ?? examples
    }

    /// Every record cut to its first `maxLength` tokens (ids and labels alike); shorter ones unchanged.
    ///
    /// Over-length records are truncated, identically whatever the plan, and never refused or skipped
    /// (issue 13): a federation's `max_length` is the coordinator's choice, and a refusal quoting a
    /// record's length let it binary-search private token counts at no ε cost. Truncation is a fixed
    /// transformation of each record on its own, applied before the per-record gradient is clipped, so
    /// the DP-SGD guarantee under add/remove of one record is unchanged and N stays the same; skipping
    /// would change N (and the sampling rate's meaning) and would need accounting of its own.
    public static func truncated(_ examples: [TokenizedExample], to maxLength: Int) -> [TokenizedExample] {
        precondition(maxLength >= 1, "maxLength must be at least 1")
        return examples.map { example in
            guard example.ids.count > maxLength else { return example }
            var cut = example  // the same record (line, user), shorter
            cut.ids = Array(example.ids.prefix(maxLength))
            cut.labels = Array(example.labels.prefix(maxLength))
            return cut
        }
    }

    /// Throws when no record has a token to learn (every label −100, or every sequence too short), naming
    /// `file`. A federation's client checks this on its records as read, before the plan's truncation, so
    /// that whether it declines never depends on the plan's `max_length`.
    public static func requireLearnableTokens(_ examples: [TokenizedExample], file: String) throws {
        guard examples.contains(where: { $0.countedTokens > 0 }) else {
            throw DatasetError(file: file, line: nil, "no record has a token to learn (all labels are -100 or sequences "
                               + "are too short)")
        }
    }

    /// The most bytes a JSONL line can take whose record has at most `maxLength` tokens: each token covers
    /// at most the longest vocabulary entry's bytes (32 for a pre-tokenized id with its separator), each
    /// byte of text at most 6 bytes of JSON (`\u0001`), plus 64 KiB for the keys, roles and whitespace.
    static func maximumLineBytes(maxLength: Int, tokenizer: BPETokenizer?) -> Int {
        let tokenBytes = tokenizer.map { $0.tokens.reduce(1) { max($0, $1.utf8.count) } } ?? 32
        let (product, overflow) = maxLength.multipliedReportingOverflow(by: tokenBytes * 6)
        return overflow ? Int.max : product.addingReportingOverflow(64 << 10).overflow ? Int.max : product + (64 << 10)
    }

    /// Parses and tokenizes one JSONL line.
    public static func parse(_ line: Data, file: String, line lineNumber: Int, tokenizer: BPETokenizer?,
                             vocabularySize: Int) throws -> TokenizedExample {
        func fail(_ problem: String) -> DatasetError { DatasetError(file: file, line: lineNumber, problem) }
        let object: Any
        do {
            try StrictJSON.validate(Array(line))
            object = try JSONSerialization.jsonObject(with: line, options: [.fragmentsAllowed])
        } catch let error as StrictJSON.SyntaxError {
            throw fail("not valid JSON: \(error); each line must be one complete JSON object")
        } catch {
            throw fail("not valid JSON; each line must be one complete JSON object")
        }
        guard let record = object as? [String: Any] else { throw fail("a record must be a JSON object") }
        var example = try content(of: record, line: lineNumber, tokenizer: tokenizer, vocabularySize: vocabularySize,
                                  fail: fail)
        example.user = try user(record["user"], fail: fail)
        example.condition = try ConditionLabel(record["condition"], names: record["condition_names"], fail: fail)
        if example.condition != nil && (record["prompt"] == nil || example.promptIds.isEmpty) {
            throw fail("\"condition\" applies to a \"prompt\"+\"completion\" record with a non-empty prompt only (its "
                       + "prompt is what the model continues when asked to name the condition)")
        }
        return example
    }

    /// The record's `user` field: nil when absent; a non-empty bounded string, or a non-negative integer
    /// as its decimal digits.
    private static func user(_ value: Any?, fail: (String) -> DatasetError) throws -> String? {
        guard let value else { return nil }
        if let text = value as? String {
            guard !text.isEmpty, text.utf8.count <= maximumUserBytes else {
                throw fail("\"user\" must be a non-empty string of at most \(maximumUserBytes) bytes")
            }
            return text
        }
        // JSON true/false arrive as NSNumber of type char ("c"); they are refused along with fractions.
        if let number = value as? NSNumber, String(cString: number.objCType) != "c", number.doubleValue >= 0,
           number.doubleValue < 1e15, number.doubleValue == Double(number.intValue) {
            return String(number.intValue)
        }
        throw fail("\"user\" must be a string or a non-negative integer")
    }

    /// The tokens and labels of a record's one content field.
    private static func content(of record: [String: Any], line lineNumber: Int, tokenizer: BPETokenizer?,
                                vocabularySize: Int, fail: (String) -> DatasetError) throws -> TokenizedExample {
        let kinds = ["text", "prompt", "messages", "input_ids"].filter { record[$0] != nil }
        guard kinds.count == 1 else {
            throw fail(kinds.isEmpty
                ? "a record needs one of \"text\", \"prompt\"+\"completion\", \"messages\" or \"input_ids\""
                : "a record may have only one of \(kinds.map { "\"\($0)\"" }.joined(separator: ", "))")
        }
        func needTokenizer() throws -> BPETokenizer {
            guard let tokenizer else { throw fail("text records need a model with a tokenizer") }
            return tokenizer
        }
        switch kinds[0] {
        case "text":
            guard let text = record["text"] as? String else { throw fail("\"text\" must be a string") }
            let ids = try needTokenizer().encode(text)
            return TokenizedExample(ids: ids, labels: ids, line: lineNumber)
        case "prompt":
            guard let prompt = record["prompt"] as? String else { throw fail("\"prompt\" must be a string") }
            guard let completion = record["completion"] as? String else {
                throw fail("a \"prompt\" record needs a string \"completion\"")
            }
            let tokenizer = try needTokenizer()
            let promptIds = tokenizer.encode(prompt)
            // The completion continues the prompt: no BOS or SentencePiece dummy prefix of its own.
            var completionIds = tokenizer.encodeContinuation(completion)
            if let eos = tokenizer.eosTokenId { completionIds.append(eos) }
            return TokenizedExample(ids: promptIds + completionIds,
                                    labels: [Int](repeating: -100, count: promptIds.count) + completionIds,
                                    line: lineNumber)
        case "messages":
            guard let list = record["messages"] as? [Any], !list.isEmpty else {
                throw fail("\"messages\" must be a non-empty array")
            }
            var messages: [ChatMessage] = []
            for (index, item) in list.enumerated() {
                guard let message = item as? [String: Any], let role = message["role"] as? String,
                      let content = message["content"] as? String else {
                    throw fail("messages[\(index)] needs string \"role\" and \"content\"")
                }
                guard ["system", "user", "assistant"].contains(role) else {
                    throw fail("messages[\(index)]: unknown role '\(role)'")
                }
                messages.append(ChatMessage(role: role, content: content))
            }
            let (ids, mask) = try needTokenizer().encodeChat(messages)
            return TokenizedExample(ids: ids, labels: zip(ids, mask).map { $1 ? $0 : -100 }, line: lineNumber)
        default:
            let ids = try integers(record["input_ids"], field: "input_ids", fail: fail)
            for (i, id) in ids.enumerated() where id < 0 || id >= vocabularySize {
                throw fail("input_ids[\(i)] = \(id) is outside the vocabulary (0..<\(vocabularySize))")
            }
            var labels = ids
            if record["labels"] != nil {
                labels = try integers(record["labels"], field: "labels", fail: fail)
                guard labels.count == ids.count else {
                    throw fail("\"labels\" has \(labels.count) entries but \"input_ids\" has \(ids.count)")
                }
                for (i, label) in labels.enumerated() where label != -100 && (label < 0 || label >= vocabularySize) {
                    throw fail("labels[\(i)] = \(label) is neither -100 nor inside the vocabulary")
                }
            }
            return TokenizedExample(ids: ids, labels: labels, line: lineNumber)
        }
    }

    private static func integers(_ value: Any?, field: String, fail: (String) -> DatasetError) throws -> [Int] {
        guard let array = value as? [Any], !array.isEmpty else { throw fail("\"\(field)\" must be a non-empty array") }
        return try array.enumerated().map { index, element in
            // JSON true/false arrive as NSNumber of type char ("c"); they are refused along with fractions.
            guard let number = element as? NSNumber, String(cString: number.objCType) != "c",
                  abs(number.doubleValue) < 1e15, number.doubleValue == Double(number.intValue) else {
                throw fail("\(field)[\(index)] is not an integer")
            }
            return number.intValue
        }
    }
}
