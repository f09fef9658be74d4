import Foundation
import ModelFormats
import TestSupport
import XCTest
@testable import Tokenizer

/// Qwen2's pre-tokenizer (GGUF `tokenizer.ggml.pre = qwen2`) against HF tokenizers with the same regex
/// (Tests/Fixtures/smollm2/qwen2-pretokenizer-cases.json, made by Tests/Fixtures/generate.py over SmolLM2's
/// vocabulary: no Qwen vocabulary can be had here). Words are compared as well as ids, because SmolLM2 has
/// no multi-digit tokens and so its ids alone cannot tell Qwen2's single digits from Llama 3's runs of three.
final class Qwen2PreTokenizerTests: XCTestCase {
    static func words(_ text: String, _ preTokenizer: PreTokenizer) -> [String] {
        let bytes = Array(text.utf8)
        var splitter = WordSplitter()
        var ends: [Int] = []
        bytes.withUnsafeBufferPointer {
            splitter.load($0, 0..<$0.count)
            splitter.split(preTokenizer, bytes: $0, ends: &ends)
        }
        var start = 0
        return ends.map { end in
            defer { start = end }
            return String(decoding: bytes[start..<end], as: UTF8.self)
        }
    }

    func testWordsAndIdsMatchHuggingFaceTokenizers() throws {
        var metadata = try SmolLM2.metadata()
        metadata["tokenizer.ggml.pre"] = .string("qwen2")
        let tokenizer = try BPETokenizer(ggufMetadata: metadata)
        XCTAssertEqual(tokenizer.preTokenizer, .qwen2)
        let cases = try XCTUnwrap(try Fixtures.json("smollm2/qwen2-pretokenizer-cases.json")["cases"] as? [[String: Any]])
        var wordsChecked = 0
        for item in cases {
            let text = try XCTUnwrap(item["text"] as? String)
            let ids = tokenizer.encode(text)
            XCTAssertEqual(ids, try XCTUnwrap(item["ids"] as? [Int]), "ids of \(text.debugDescription)")
            XCTAssertEqual(tokenizer.decode(ids), text)
            if let words = item["words"] as? [String] {
                XCTAssertEqual(Self.words(text, .qwen2), words, "words of \(text.debugDescription)")
                wordsChecked += 1
            }
        }
        XCTAssertGreaterThanOrEqual(cases.count, 100)
        XCTAssertGreaterThanOrEqual(wordsChecked, 90)
        // The control: Llama 3's pattern groups digits by three, which the words above must not show.
        XCTAssertEqual(Self.words("12345 x", .llama3), ["123", "45", " x"])
        XCTAssertEqual(Self.words("12345 x", .qwen2), ["1", "2", "3", "4", "5", " x"])
    }
}
