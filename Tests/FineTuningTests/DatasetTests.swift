import Foundation
import ModelFormats
import TestSupport
import Tokenizer
import XCTest
@testable import FineTuning

final class DatasetTests: XCTestCase {
    static let tokenizer: BPETokenizer? = try? BPETokenizer(ggufMetadata: GGUFFile(url: Fixtures.defaultModel).metadata)

    func parse(_ line: String, tokenizer: BPETokenizer? = DatasetTests.tokenizer) throws -> TokenizedExample {
        try Dataset.parse(Data(line.utf8), file: "d.jsonl", line: 7, tokenizer: tokenizer, vocabularySize: 49152)
    }

    func testRecordKindsAndTheirLabels() throws {
        let tokenizer = try XCTUnwrap(Self.tokenizer)
        let text = try parse("{\"text\": \"Hello world\"}")
        XCTAssertEqual(text.ids, [19556, 905])
        XCTAssertEqual(text.labels, text.ids)

        let task = try parse("{\"prompt\": \"Q:\", \"completion\": \" yes\"}")
        let promptCount = tokenizer.encode("Q:").count
        XCTAssertEqual(Array(task.labels.prefix(promptCount)), [Int](repeating: -100, count: promptCount))
        XCTAssertEqual(task.labels.last, tokenizer.eosTokenId, "the completion ends with end-of-sequence")
        XCTAssertEqual(Array(task.ids.suffix(from: promptCount)), Array(task.labels.suffix(from: promptCount)))

        let chat = try parse("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"hello\"}]}")
        let counted = chat.labels.filter { $0 != -100 }
        XCTAssertEqual(tokenizer.decode(counted), "hello<|im_end|>", "loss on the assistant turn only")

        let tokens = try parse("{\"input_ids\": [5, 6, 7], \"labels\": [-100, 6, 7]}", tokenizer: nil)
        XCTAssertEqual(tokens.labels, [-100, 6, 7])
        XCTAssertEqual(tokens.countedTokens, 2)
    }

    func testMalformedRecordsNameTheLine() {
        let cases: [(String, String)] = [
            ("{\"text\": 3}", "\"text\" must be a string"),
            ("[1, 2]", "must be a JSON object"),
            ("{\"prompt\": \"a\"}", "completion"),
            ("{\"text\": \"a\", \"prompt\": \"b\", \"completion\": \"c\"}", "only one of"),
            ("{\"input_ids\": [1, 2.5]}", "input_ids[1] is not an integer"),
            ("{\"input_ids\": [1, true]}", "input_ids[1] is not an integer"),
            ("{\"input_ids\": [1, 49152]}", "outside the vocabulary"),
            ("{\"input_ids\": [1, 2], \"labels\": [1]}", "has 1 entries"),
            ("{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}", "unknown role"),
            ("{\"messages\": []}", "non-empty"),
            ("{}", "needs one of"),
            ("{oops", "not valid JSON"),
        ]
        for (line, fragment) in cases {
            XCTAssertThrowsError(try parse(line)) { error in
                XCTAssertTrue("\(error)".hasPrefix("d.jsonl:7: "), "\(error)")
                XCTAssertTrue("\(error)".contains(fragment), "'\(fragment)' missing from \(error)")
            }
        }
        XCTAssertThrowsError(try parse("{\"text\": \"hi\"}", tokenizer: nil)) { XCTAssertTrue("\($0)".contains("tokenizer")) }
    }

    /// JSONSerialization on Linux reads `{"text": "a",}` as if the comma were not there; a line that is not
    /// JSON is refused with its line and the column where it stops being JSON.
    func testLinesThatAreNotStrictJSONAreRefused() {
        let cases: [(String, String)] = [
            ("{\"text\": \"a\",}", "trailing comma before '}' at column 14"),
            ("{\"input_ids\": [1, 2,]}", "trailing comma before ']' at column 21"),
            ("{'text': 'a'}", "expected a quoted key"),
            ("{\"text\": \"a\"} x", "unexpected 'x' after the value"),
            ("{\"text\": \"a\"}{\"text\": \"b\"}", "after the value"),
            ("{\"input_ids\": [NaN]}", "expected a value"),
            ("{\"input_ids\": [01]}", "expected ',' or ']'"),
            ("{\"input_ids\": [1.]}", "expected a digit"),
            ("{\"text\": \"a\\q\"}", "invalid escape"),
            ("{\"text\": \"a\tb\"}", "unescaped control character"),
            ("{\"text\": \"a\"", "expected ',' or '}', found end of line"),
        ]
        for (line, fragment) in cases {
            XCTAssertThrowsError(try parse(line), line) { error in
                XCTAssertTrue("\(error)".hasPrefix("d.jsonl:7: not valid JSON: "), "\(error)")
                XCTAssertTrue("\(error)".contains(fragment), "'\(fragment)' missing from \(error)")
            }
        }
        // What JSON allows still parses: whitespace, escapes, exponents, nesting, a Windows line ending.
        XCTAssertNoThrow(try parse(" {\"input_ids\" : [ 1 , 2 ] , \"labels\": [-100, 2], \"x\": {\"y\": [1e2, -0.5E-3, null, true]}}\r",
                                   tokenizer: nil))
        XCTAssertNoThrow(try parse("{\"text\": \"\\u00e9\\n\\\"q\\\" \\/\"}"))
    }

    func testFilesEmptyTooLongAndTheDemoData() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let empty = directory.appendingPathComponent("empty.jsonl")
        try "\n  \n".write(to: empty, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try Dataset.load(empty, tokenizer: Self.tokenizer, maxLength: nil, vocabularySize: 49152)) {
            XCTAssertTrue("\($0)".contains("no records"))
        }
        // Over-length records are cut to their first maxLength tokens, never refused (issue 13).
        let long = directory.appendingPathComponent("long.jsonl")
        try "{\"text\": \"a b c d e f g h\"}\n".write(to: long, atomically: true, encoding: .utf8)
        let whole = try Dataset.load(long, tokenizer: Self.tokenizer, maxLength: nil, vocabularySize: 49152)
        XCTAssertGreaterThan(whole[0].ids.count, 4, "the positive control: the record is longer than 4 tokens")
        let cut = try Dataset.load(long, tokenizer: Self.tokenizer, maxLength: 4, vocabularySize: 49152)
        XCTAssertEqual(cut, [TokenizedExample(ids: Array(whole[0].ids.prefix(4)), labels: Array(whole[0].labels.prefix(4)), line: 1)])
        XCTAssertThrowsError(try Dataset.load(directory.appendingPathComponent("missing.jsonl"), tokenizer: nil,
                                              maxLength: nil, vocabularySize: 10))
        // A symbolic link to a dataset is that dataset (it was refused as "not a regular file").
        let link = directory.appendingPathComponent("linked.jsonl")
        try FileManager.default.createSymbolicLink(at: link, withDestinationURL: long)
        XCTAssertEqual(try Dataset.load(link, tokenizer: Self.tokenizer, maxLength: nil, vocabularySize: 49152), whole)
        // A directory (as a join configuration's "data" may name) is refused by name, not with a Foundation error.
        XCTAssertThrowsError(try Dataset.load(directory, tokenizer: nil, maxLength: nil, vocabularySize: 10)) {
            XCTAssertEqual("\($0)", "\(directory.path): is a directory; expected a JSONL file, one JSON record per line")
        }
        // Every example file under Config/ parses.
        let demo = Fixtures.repositoryRoot.appendingPathComponent("Config/demo-eval.jsonl")
        XCTAssertEqual(try Dataset.load(demo, tokenizer: Self.tokenizer, maxLength: 8192, vocabularySize: 49152).count, 4)
    }

    /// The optional `user` field: a string or a non-negative integer on any kind of record; anything else
    /// is refused naming the line, and under privacy unit user every record must have one.
    func testTheUserField() throws {
        XCTAssertNil(try parse("{\"input_ids\": [1, 2]}", tokenizer: nil).user)
        XCTAssertEqual(try parse("{\"input_ids\": [1, 2], \"user\": \"patient 17\"}", tokenizer: nil).user, "patient 17")
        XCTAssertEqual(try parse("{\"user\": 17, \"input_ids\": [1, 2]}", tokenizer: nil).user, "17")
        XCTAssertEqual(try parse("{\"text\": \"Hello world\", \"user\": \"a\"}").user, "a")
        let bad: [(String, String)] = [
            ("{\"input_ids\": [1], \"user\": \"\"}", "\"user\" must be a non-empty string"),
            ("{\"input_ids\": [1], \"user\": \"\(String(repeating: "x", count: 257))\"}", "at most 256 bytes"),
            ("{\"input_ids\": [1], \"user\": -1}", "a string or a non-negative integer"),
            ("{\"input_ids\": [1], \"user\": 1.5}", "a string or a non-negative integer"),
            ("{\"input_ids\": [1], \"user\": true}", "a string or a non-negative integer"),
            ("{\"input_ids\": [1], \"user\": null}", "a string or a non-negative integer"),
            ("{\"input_ids\": [1], \"user\": [\"a\"]}", "a string or a non-negative integer"),
            // JSONSerialization would keep one of the two silently: which user would the record be?
            ("{\"input_ids\": [1], \"user\": \"a\", \"user\": \"b\"}", "duplicate key \"user\" at column 33"),
            ("{\"input_ids\": [1], \"user\": \"a\", \"\\u0075ser\": \"b\"}", "duplicate key"),
            ("{\"messages\": [{\"role\": \"user\", \"role\": \"assistant\", \"content\": \"x\"}]}", "duplicate key \"role\""),
        ]
        for (line, fragment) in bad {
            XCTAssertThrowsError(try parse(line, tokenizer: nil), line) { error in
                XCTAssertTrue("\(error)".hasPrefix("d.jsonl:7: "), "\(error)")
                XCTAssertTrue("\(error)".contains(fragment), "'\(fragment)' missing from \(error)")
            }
        }
        // The same key in two different objects is not a duplicate.
        XCTAssertNoThrow(try parse("{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}"))

        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("notes.jsonl")
        try "{\"input_ids\": [1, 2], \"user\": \"a\"}\n\n{\"input_ids\": [3, 4]}\n".write(to: file, atomically: true, encoding: .utf8)
        XCTAssertEqual(try Dataset.load(file, tokenizer: nil, maxLength: nil, vocabularySize: 10).map(\.user), ["a", nil])
        XCTAssertThrowsError(try Dataset.load(file, tokenizer: nil, maxLength: nil, vocabularySize: 10, requireUser: true)) {
            XCTAssertTrue("\($0)".hasPrefix("\(file.path):3: record has no \"user\" field"), "\($0)")
        }
    }

    /// A line too long for any record of `maxLength` tokens is refused by its bytes, before it is tokenized.
    /// Failed before: this 8 MB line was tokenized first (1.5 M tokens; `train` peaked at 173 MB against
    /// 47 MB now, and the issue measured 33 s and 2 GB for a 50 MB line) and refused for its token count.
    func testAnOverlongLineIsRefusedByItsBytesBeforeTokenizing() throws {
        let tokenizer = try XCTUnwrap(Self.tokenizer)
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let huge = directory.appendingPathComponent("huge.jsonl")
        let words = String(repeating: "cardiology note ", count: 500_000)
        try ("{\"text\": \"short\"}\n{\"text\": \"" + words + "\"}\n").write(to: huge, atomically: true, encoding: .utf8)
        let limit = Dataset.maximumLineBytes(maxLength: 512, tokenizer: tokenizer)
        let start = Date()
        XCTAssertThrowsError(try Dataset.load(huge, tokenizer: tokenizer, maxLength: 512, vocabularySize: 49152)) {
            XCTAssertEqual("\($0)", "\(huge.path):2: line is \(words.utf8.count + 12) bytes, more than the \(limit) that a "
                           + "record of at most 512 tokens can take; shorten the record or raise the maximum length")
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 1.0, "the line was tokenized before its length was checked")
        // The bound never refuses a line whose record fits: the longest token, escaped byte by byte, 512 times.
        let longest = tokenizer.tokens.max { $0.utf8.count < $1.utf8.count }!
        XCTAssertLessThanOrEqual(512 * longest.utf8.count * 6 + (64 << 10), limit)
        let fits = directory.appendingPathComponent("fits.jsonl")
        try ("{\"text\": \"" + String(repeating: "note ", count: 100) + "\"}\n").write(to: fits, atomically: true, encoding: .utf8)
        XCTAssertEqual(try Dataset.load(fits, tokenizer: tokenizer, maxLength: 512, vocabularySize: 49152).count, 1)
    }

    /// A prompt/completion record over a SentencePiece vocabulary that adds BOS (tiny-llama-spm): BOS once at
    /// the start, and the completion tokenized as it continues the prompt (no second BOS or dummy prefix), as
    /// the prompt and completion tokenize together where no token spans their boundary.
    func testPromptCompletionOverASentencePieceVocabulary() throws {
        let tokenizer = try BPETokenizer(ggufMetadata: GGUFFile(url: Fixtures.url("tiny-llama-spm/model.gguf.bin")).metadata)
        let task = try Dataset.parse(Data("{\"prompt\": \"Dose:\", \"completion\": \" 500 mg\"}".utf8), file: "d.jsonl",
                                     line: 1, tokenizer: tokenizer, vocabularySize: tokenizer.vocabularySize)
        XCTAssertEqual(task.ids.filter { $0 == tokenizer.bosTokenId }.count, 1)
        XCTAssertEqual(Array(task.ids.dropLast()), tokenizer.encode("Dose: 500 mg"))
        XCTAssertEqual(task.ids.last, tokenizer.eosTokenId)
    }
}

final class DatasetTruncationTests: XCTestCase {
    /// Truncation cuts ids and labels alike, keeps N and every line, and leaves short records as they are.
    func testTruncationKeepsEveryRecordAndCutsIdsAndLabelsAlike() {
        let examples = [TokenizedExample(ids: [1, 2, 3, 4, 5, 6], labels: [-100, -100, 3, 4, 5, 6], line: 1),
                        TokenizedExample(ids: [7, 8], labels: [7, 8], line: 3)]
        let cut = Dataset.truncated(examples, to: 3)
        XCTAssertEqual(cut, [TokenizedExample(ids: [1, 2, 3], labels: [-100, -100, 3], line: 1),
                             TokenizedExample(ids: [7, 8], labels: [7, 8], line: 3)])
        XCTAssertEqual(Dataset.truncated(examples, to: 6), examples)
        // A record whose learnable tokens all lie past the cut keeps its place, with nothing to learn.
        XCTAssertEqual(Dataset.truncated(examples, to: 2)[0].countedTokens, 0)
    }

    /// Two clients whose data differ only in one record's length (3 tokens or 900): under a plan with a
    /// small max_length both load the same number of records, every one within the length, and neither
    /// refuses. Seen failing on the old code, which refused the long record with "record has 900 tokens,
    /// more than the maximum length 4".
    func testASmallMaxLengthDoesNotMakeLoadingDependOnRecordLengths() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        func write(_ name: String, longRecord: Int) throws -> URL {
            let url = directory.appendingPathComponent(name)
            let records = ["{\"input_ids\": [1, 2, 3, 4, 5]}", "{\"input_ids\": [\((0..<longRecord).map { String($0 % 9 + 1) }.joined(separator: ", "))]}"]
            try records.joined(separator: "\n").write(to: url, atomically: true, encoding: .utf8)
            return url
        }
        let short = try write("short.jsonl", longRecord: 3), long = try write("long.jsonl", longRecord: 900)
        for maxLength in [2, 4, 64, 899] {
            let a = try Dataset.load(short, tokenizer: nil, maxLength: maxLength, vocabularySize: 10)
            let b = try Dataset.load(long, tokenizer: nil, maxLength: maxLength, vocabularySize: 10)
            XCTAssertEqual(a.count, b.count, "max_length \(maxLength)")
            XCTAssertTrue((a + b).allSatisfy { $0.ids.count <= maxLength && $0.ids.count == $0.labels.count })
        }
    }
}
