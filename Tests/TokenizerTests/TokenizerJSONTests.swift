import Foundation
import TestSupport
import XCTest
@testable import Tokenizer

/// Loading HF `tokenizer.json` files, built here so the expected ids follow from the merges by hand.
final class TokenizerJSONTests: XCTestCase {
    /// Byte tokens get id = byte value; merges by rank: Ġ t, h e, Ġt he, c a, ca t, Ġ ca, 1 2.
    private func tokenizerJSON(preTokenizer: [String: Any]) -> [String: Any] {
        var vocab = [String: Int]()
        for byte in 0..<256 { vocab[ByteLevel.text(forByte: UInt8(byte))] = byte }
        for (i, text) in ["Ġt", "he", "Ġthe", "ca", "cat", "Ġca", "12"].enumerated() { vocab[text] = 256 + i }
        return [
            "version": "1.0",
            "added_tokens": [["id": 263, "content": "<|im_end|>", "special": true],
                             ["id": 264, "content": "<tool>", "special": false]],
            "normalizer": NSNull(),
            "pre_tokenizer": preTokenizer,
            "decoder": ["type": "ByteLevel"],
            "model": ["type": "BPE", "vocab": vocab,
                      // Both merge notations HF writes: "a b" strings and [a, b] pairs.
                      "merges": ["Ġ t", ["h", "e"], "Ġt he", ["c", "a"], "ca t", "Ġ ca", ["1", "2"]] as [Any]],
        ]
    }

    private let byteLevel: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "use_regex": true]

    private func write(_ object: Any, name: String = "tokenizer.json", in directory: URL? = nil) throws -> URL {
        let dir = try directory ?? Fixtures.temporaryDirectory("tokenizer-json")
        let url = dir.appendingPathComponent(name)
        try JSONSerialization.data(withJSONObject: object).write(to: url)
        return url
    }

    func testGPT2StyleTokenizerJSON() throws {
        let tok = try BPETokenizer(tokenizerJSON: try write(tokenizerJSON(preTokenizer: byteLevel)))
        XCTAssertEqual(tok.vocabularySize, 265)
        XCTAssertEqual(tok.preTokenizer, .gpt2)
        // "the": (h,e) merges, (t,he) has no rule. " cat": (c,a) rank 3, then (ca,t) rank 4 beats (Ġ,ca) rank 5.
        XCTAssertEqual(tok.encode("the cat the"), [116, 257, 32, 260, 258])
        XCTAssertEqual(tok.encode("a 12"), [97, 32, 262], "GPT-2 keeps \" 12\" one word, so 1 2 merges")
        XCTAssertEqual(tok.encode("x<|im_end|><tool>"), [120, 263, 264])
        XCTAssertEqual(tok.encode("x<|im_end|><tool>", parseSpecialTokens: false).suffix(1), [264],
                       "user-defined tokens are matched even without special-token parsing")
        XCTAssertEqual(tok.decode([116, 257, 32, 260, 263]), "the cat<|im_end|>")
        XCTAssertNil(tok.bosTokenId)
        XCTAssertNil(tok.chatTemplate)
    }

    func testDigitsSequenceIsSmolLMPreTokenizerAndConfigIsRead() throws {
        let sequence: [String: Any] = ["type": "Sequence", "pretokenizers": [
            ["type": "Digits", "individual_digits": true], byteLevel]]
        let url = try write(tokenizerJSON(preTokenizer: sequence))
        _ = try write(["bos_token": "<|im_end|>", "eos_token": ["content": "<|im_end|>"], "add_bos_token": true,
                       "chat_template": "{{ '<|im_start|>' }}"] as [String: Any],
                      name: "tokenizer_config.json", in: url.deletingLastPathComponent())
        let tok = try BPETokenizer(tokenizerJSON: url)
        XCTAssertEqual(tok.preTokenizer, .smollm)
        XCTAssertEqual(tok.encode("a 12"), [263, 97, 32, 49, 50], "BOS first; digits split so 1 2 never merge")
        XCTAssertEqual(tok.eosTokenId, 263)
        XCTAssertTrue(tok.endOfTurnTokenIds.contains(263))
        XCTAssertEqual(try tok.applyChatTemplate([ChatMessage(role: "user", content: "hi")], addGenerationPrompt: false),
                       "<|im_start|>user\nhi<|im_end|>\n")
    }

    /// Qwen2's tokenizer.json: its Split regex (as llama.cpp's llama-vocab.cpp quotes it "from tokenizer.json")
    /// and an NFC normalizer. Single digits never merge; a decomposed é (e + U+0301) is tokenized as the
    /// precomposed one (U+00E9, bytes C3 A9), by Unicode's canonical composition.
    func testQwen2SplitAndNFCNormalizer() throws {
        let split: [String: Any] = ["type": "Split", "pattern": ["Regex": PreTokenizer.qwen2Pattern], "behavior": "Isolated",
                                    "invert": false]
        let sequence: [String: Any] = ["type": "Sequence", "pretokenizers": [
            split, ["type": "ByteLevel", "add_prefix_space": false, "use_regex": false, "trim_offsets": false]]]
        var json = tokenizerJSON(preTokenizer: sequence)
        json["normalizer"] = ["type": "NFC"]
        let tok = try BPETokenizer(tokenizerJSON: try write(json))
        XCTAssertEqual(tok.preTokenizer, .qwen2)
        XCTAssertTrue(tok.normalizesToNFC)
        XCTAssertEqual(tok.encode("a 12"), [97, 32, 49, 50], "Qwen2 splits digits one by one, so 1 2 never merge")
        XCTAssertEqual(tok.encode("e\u{301}"), [195, 169], "NFC composes e + U+0301 into U+00E9")
        XCTAssertEqual(tok.encode("\u{E9}"), [195, 169])
        // The controls: without the normalizer the decomposed bytes stay; Llama 3's regex merges 1 2.
        json["normalizer"] = NSNull()
        XCTAssertEqual(try BPETokenizer(tokenizerJSON: try write(json)).encode("e\u{301}"), [101, 204, 129])
        var llama3 = split
        llama3["pattern"] = ["Regex": PreTokenizer.llama3Pattern]
        json["pre_tokenizer"] = ["type": "Sequence", "pretokenizers": [llama3, sequence["pretokenizers"].map { ($0 as! [Any])[1] }!]]
        XCTAssertEqual(try BPETokenizer(tokenizerJSON: try write(json)).encode("a 12"), [97, 32, 262])
    }

    /// A normalizer other than NFC would change the ids HF gives: refused by name, never ignored.
    func testOtherNormalizersAreRefused() throws {
        for normalizer in [["type": "Lowercase"], ["type": "NFKC"], ["type": "Sequence", "normalizers": [] as [Any]]] as [[String: Any]] {
            var json = tokenizerJSON(preTokenizer: byteLevel)
            json["normalizer"] = normalizer
            XCTAssertThrowsError(try BPETokenizer(tokenizerJSON: try write(json))) {
                XCTAssertTrue("\($0)".contains("normalizer \"\(normalizer["type"]!)\" is not supported"), "\($0)")
            }
        }
    }

    func testMalformedTokenizerJSONGivesClearErrors() throws {
        func message(_ object: Any?, raw: String? = nil) throws -> String {
            let dir = try Fixtures.temporaryDirectory("tokenizer-json")
            let url = dir.appendingPathComponent("tokenizer.json")
            if let raw { try Data(raw.utf8).write(to: url) } else { try JSONSerialization.data(withJSONObject: object!).write(to: url) }
            do {
                _ = try BPETokenizer(tokenizerJSON: url)
                return "no error"
            } catch { return "\(error)" }
        }
        func expect(_ object: Any?, raw: String? = nil, contains expected: String) throws {
            let text = try message(object, raw: raw)
            XCTAssertTrue(text.contains(expected), "expected \(expected.debugDescription) in: \(text)")
        }
        try expect(nil, raw: "{\"model\": ", contains: "not valid JSON")
        try expect(nil, raw: "[1, 2]", contains: "not a JSON object")
        try expect(["version": "1.0"], contains: "no \"model\"")

        var base = tokenizerJSON(preTokenizer: byteLevel)
        var model = base["model"] as! [String: Any]
        model["merges"] = nil
        base["model"] = model
        try expect(base, contains: "no model.merges")

        base = tokenizerJSON(preTokenizer: byteLevel)
        model = base["model"] as! [String: Any]
        model["type"] = "WordPiece"
        base["model"] = model
        try expect(base, contains: "\"WordPiece\"")

        model["type"] = "BPE"
        model["merges"] = ["Ġ t", "q zz"]
        base["model"] = model
        try expect(base, contains: "merge rule 1")

        model["merges"] = ["Ġ t", 17]
        base["model"] = model
        try expect(base, contains: "model.merges[1]")

        base = tokenizerJSON(preTokenizer: ["type": "Whitespace"])
        try expect(base, contains: "\"Whitespace\"")

        base = tokenizerJSON(preTokenizer: byteLevel)
        base["added_tokens"] = [["id": 300, "content": "<x>", "special": true]]
        try expect(base, contains: "no token with id 263")

        let missing = FileManager.default.temporaryDirectory.appendingPathComponent("no-such-dir/tokenizer.json")
        XCTAssertThrowsError(try BPETokenizer(tokenizerJSON: missing)) { error in
            XCTAssertTrue("\(error)".contains("cannot read"), "\(error)")
        }
    }

    func testBytesMissingFromTheVocabularyAreDropped() throws {
        let tokens = ["a", "b", "ab"]
        let tok = try BPETokenizer(tokens: tokens, merges: ["a b"], tokenTypes: nil, preTokenizer: .gpt2,
                                   bosTokenId: nil, eosTokenId: nil, addBOS: false, chatTemplate: nil)
        XCTAssertEqual(tok.encode("ab"), [2])
        XCTAssertEqual(tok.encode("a\u{4}b"), [0, 1], "0x04 has no token; it is dropped and does not join a and b")
        XCTAssertEqual(tok.encode("acb"), [0, 1], "the missing byte inside a word blocks the merge")
    }
}
