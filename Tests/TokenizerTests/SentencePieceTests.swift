import Foundation
import ModelFormats
import TestSupport
import XCTest
@testable import Tokenizer

/// The SentencePiece-style tokenizer against sentencepiece itself and HF tokenizers, on the vocabulary that
/// Tests/Fixtures/generate.py tiny-llama-spm trains (byte fallback, dummy prefix, digits split, a
/// user-defined `<tool>`), loaded from the GGUF that llama.cpp's converter wrote and from HF's tokenizer.json.
final class SentencePieceTests: XCTestCase {
    static func cases() throws -> [[String: Any]] {
        try XCTUnwrap(Fixtures.json("tiny-llama-spm/reference.json")["cases"] as? [[String: Any]])
    }

    static func ggufMetadata() throws -> [String: GGUFValue] {
        try GGUFFile(url: Fixtures.url("tiny-llama-spm/model.gguf.bin")).metadata
    }

    static func fromGGUF() throws -> BPETokenizer { try BPETokenizer(ggufMetadata: ggufMetadata()) }

    static func fromTokenizerJSON() throws -> BPETokenizer {
        try BPETokenizer(tokenizerJSON: Fixtures.url("tiny-llama-spm/tokenizer.json"))
    }

    /// Ids of `text` without BOS.
    static func ids(_ tokenizer: BPETokenizer, _ text: String, parseSpecialTokens: Bool = true) -> [Int] {
        var ids: [Int] = []
        tokenizer.appendEncoded(text, parseSpecialTokens: parseSpecialTokens, into: &ids)
        return ids
    }

    /// HF's decoder ends with Strip(" ", start 1): one leading space goes; ours keeps it.
    static func hfDecoded(_ ours: String) -> String { ours.hasPrefix(" ") ? String(ours.dropFirst()) : ours }

    func check(_ tokenizer: BPETokenizer, source: String) throws {
        XCTAssertTrue(tokenizer.isSentencePiece)
        XCTAssertTrue(tokenizer.addSpacePrefix)
        var compared = 0, plain = 0
        for item in try Self.cases() {
            let text = item["text"] as! String
            let hf = item["hf_ids"] as! [Int]
            XCTAssertEqual(Self.ids(tokenizer, text), hf, "\(source): ids of \(text.debugDescription) against HF")
            if let sentencePiece = item["sentencepiece_ids"] as? [Int] {
                XCTAssertEqual(Self.ids(tokenizer, text), sentencePiece, "\(source): \(text.debugDescription) against sentencepiece")
                compared += 1
            }
            // sentencepiece parses no control token: ours with parsing off must agree, where no user-defined
            // token (which both cut out, but only HF and llama.cpp follow with a new dummy prefix) is in the text.
            if let sentencePiece = item["sentencepiece_ids_plain"] as? [Int], !text.contains("<tool>") {
                XCTAssertEqual(Self.ids(tokenizer, text, parseSpecialTokens: false), sentencePiece,
                               "\(source): \(text.debugDescription), special tokens as text, against sentencepiece")
                plain += 1
            }
            XCTAssertEqual(Self.hfDecoded(tokenizer.decode(hf)), item["hf_decoded"] as! String,
                           "\(source): decode of \(text.debugDescription)")
            XCTAssertEqual(tokenizer.encode(text).first, 1, "BOS first (add_bos_token)")
        }
        XCTAssertGreaterThanOrEqual(compared, 25)
        XCTAssertEqual(plain, 3)
    }

    func testGGUFVocabularyGivesHFAndSentencePieceIds() throws {
        try check(try Self.fromGGUF(), source: "GGUF")
    }

    func testTokenizerJSONGivesHFAndSentencePieceIds() throws {
        try check(try Self.fromTokenizerJSON(), source: "tokenizer.json")
    }

    /// sentencepiece's own file: its ModelProto read field by field (tokenizer_config.json beside it).
    func testTokenizerModelGivesHFAndSentencePieceIds() throws {
        try check(try BPETokenizer(sentencePieceModel: Fixtures.url("tiny-llama-spm/tokenizer.model")), source: "tokenizer.model")
    }

    func testMalformedOrUnsupportedTokenizerModelsAreRefusedByName() throws {
        let directory = try Fixtures.temporaryDirectory("spm-model")
        defer { try? FileManager.default.removeItem(at: directory) }
        let original = try Data(contentsOf: Fixtures.url("tiny-llama-spm/tokenizer.model"))
        // One piece "a" (score 0, normal), then a trainer spec and a normaliser spec.
        let piece: [UInt8] = [0x0A, 0x0A, 0x0A, 0x01, 0x61, 0x15, 0, 0, 0, 0, 0x18, 0x01]
        let cases: [([UInt8], String)] = [
            (Array(original.prefix(1000)), "runs past the end"),
            (piece + [0x12, 0x02, 0x18, 0x01, 0x1A, 0x02, 0x20, 0x00], "trainer_spec.model_type unigram (only BPE, 2) is not supported"),
            (piece + [0x12, 0x02, 0x18, 0x02], "normalizer_spec.remove_extra_whitespaces = true is not supported"),
            (piece + [0x12, 0x02, 0x18, 0x02, 0x1A, 0x06, 0x0A, 0x04] + Array("nfkc".utf8), "normalizer_spec.name \"nfkc\""),
            ([0x08] + [UInt8](repeating: 0xFF, count: 11), "a varint is longer"),
            ([0x0A, 0x7F, 0x00], "a field of 127 bytes runs past the end"),
            ([0x0B], "wire type 3 is not supported"),
            ([0x0A, 0x02, 0x0A, 0x01, 0xFF], "runs past the end"),
            ([0x0A, 0x03, 0x0A, 0x01, 0xFF], "a string is not UTF-8"),
            ([], "has 0 pieces"),
        ]
        for (i, (bytes, expected)) in cases.enumerated() {
            let file = directory.appendingPathComponent("case\(i).model")
            try Data(bytes).write(to: file)
            XCTAssertThrowsError(try BPETokenizer(sentencePieceModel: file), "case \(i)") {
                XCTAssertTrue("\($0)".contains(expected) && "\($0)".contains("case\(i).model"), "case \(i): \($0)")
            }
        }
    }

    /// Positive control for the comparisons above: the same vocabulary with its scores reversed, or without
    /// the dummy prefix, must give other ids on the reference texts.
    func testTheReferenceTellsScoresAndPrefixApart() throws {
        var metadata = try Self.ggufMetadata()
        let scores = try XCTUnwrap(metadata["tokenizer.ggml.scores"]?.arrayValue)
        metadata["tokenizer.ggml.scores"] = .array(scores.map { .float32(-Float($0.doubleValue!)) })
        var noPrefix = try Self.ggufMetadata()
        noPrefix["tokenizer.ggml.add_space_prefix"] = .bool(false)
        for (name, changed) in [("reversed scores", metadata), ("no prefix", noPrefix)] {
            let tokenizer = try BPETokenizer(ggufMetadata: changed)
            let differing = try Self.cases().filter { Self.ids(tokenizer, $0["text"] as! String) != $0["hf_ids"] as! [Int] }
            XCTAssertGreaterThan(differing.count, 10, name)
        }
    }

    func testGGUFKeysRoundTrip() throws {
        // The JSON-loaded tokenizer has ranks, not scores: its GGUF keys carry scores made from the ranks.
        for tokenizer in [try Self.fromGGUF(), try Self.fromTokenizerJSON()] {
            let copy = try BPETokenizer(ggufMetadata: Dictionary(uniqueKeysWithValues: tokenizer.ggufMetadata.map { ($0.key, $0.value) }))
            XCTAssertTrue(copy.isSentencePiece)
            for item in try Self.cases() {
                let text = item["text"] as! String
                XCTAssertEqual(Self.ids(copy, text), item["hf_ids"] as! [Int], text.debugDescription)
            }
        }
    }

    func testStreamingDecodeHoldsBackSplitCharacters() throws {
        let tokenizer = try Self.fromGGUF()
        let text = "emoji 😀👍🏽 done, 患者は入院した"
        let ids = Self.ids(tokenizer, text)
        XCTAssertTrue(ids.contains { tokenizer.tokenTypes[$0] == .byte }, "the text must need byte fallback")
        var stream = TokenStreamDecoder(tokenizer: tokenizer)
        var pieces: [String] = []
        for id in ids { pieces.append(stream.append(id)) }
        pieces.append(stream.finish())
        XCTAssertFalse(pieces.contains { $0.contains("\u{FFFD}") }, "\(pieces)")
        XCTAssertEqual(pieces.joined(), " " + text)
    }

    func testBadGGUFMetadataIsRefusedByKey() throws {
        let good = try Self.ggufMetadata()
        func message(_ change: (inout [String: GGUFValue]) -> Void) -> String {
            var metadata = good
            change(&metadata)
            do {
                _ = try BPETokenizer(ggufMetadata: metadata)
                return "no error"
            } catch { return "\(error)" }
        }
        let expectations: [(String, (inout [String: GGUFValue]) -> Void)] = [
            ("no tokenizer.ggml.scores", { $0["tokenizer.ggml.scores"] = nil }),
            ("no tokenizer.ggml.token_type", { $0["tokenizer.ggml.token_type"] = nil }),
            ("3 scores for 480 tokens", { $0["tokenizer.ggml.scores"] = .array([.float32(0), .float32(0), .float32(0)]) }),
            ("tokenizer.ggml.scores[0] is not a finite float32", {
                var scores = $0["tokenizer.ggml.scores"]!.arrayValue!
                scores[0] = .float32(.nan)
                $0["tokenizer.ggml.scores"] = .array(scores)
            }),
            ("<0x41> is missing", {
                var types = $0["tokenizer.ggml.token_type"]!.arrayValue!
                types[4 + 0x41] = .int32(1)
                $0["tokenizer.ggml.token_type"] = .array(types)
            }),
            ("tokenizer.ggml.add_eos_token = true is not supported", { $0["tokenizer.ggml.add_eos_token"] = .bool(true) }),
            ("tokenizer.ggml.remove_extra_whitespaces = true", { $0["tokenizer.ggml.remove_extra_whitespaces"] = .bool(true) }),
            ("tokenizer.ggml.add_space_prefix is not a bool", { $0["tokenizer.ggml.add_space_prefix"] = .int32(1) }),
            ("tokenizer.ggml.model is \"bert\"", { $0["tokenizer.ggml.model"] = .string("bert") }),
            ("byte token 5 \"x\" is not of the form <0xAB>", {
                var tokens = $0["tokenizer.ggml.tokens"]!.arrayValue!
                tokens[5] = .string("x")
                $0["tokenizer.ggml.tokens"] = .array(tokens)
            }),
        ]
        XCTAssertEqual(message { _ in }, "no error")
        for (expected, change) in expectations {
            XCTAssertTrue(message(change).contains(expected), "expected \(expected): \(message(change))")
        }
    }

    func testMetaspaceAndOtherNormalisersAreRefusedByName() throws {
        let url = Fixtures.url("tiny-llama-spm/tokenizer.json")
        var root = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        root["normalizer"] = NSNull()
        root["pre_tokenizer"] = ["type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "always", "split": false]
        let directory = try Fixtures.temporaryDirectory("spm-json")
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("tokenizer.json")
        try JSONSerialization.data(withJSONObject: root).write(to: file)
        XCTAssertThrowsError(try BPETokenizer(tokenizerJSON: file)) {
            XCTAssertTrue("\($0)".contains("pre_tokenizer Metaspace is not supported"), "\($0)")
        }
        var dropout = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        var model = dropout["model"] as! [String: Any]
        model["dropout"] = 0.1
        dropout["model"] = model
        try JSONSerialization.data(withJSONObject: dropout).write(to: file)
        XCTAssertThrowsError(try BPETokenizer(tokenizerJSON: file)) {
            XCTAssertTrue("\($0)".contains("model.dropout is not supported"), "\($0)")
        }
    }

    func testUnknownTokenWithoutByteFallbackJoinsARun() throws {
        // The same vocabulary with its byte tokens made unused: characters it lacks become one <unk> per run.
        var metadata = try Self.ggufMetadata()
        let types = try XCTUnwrap(metadata["tokenizer.ggml.token_type"]?.arrayValue)
        metadata["tokenizer.ggml.token_type"] = .array(types.map { $0.intValue == 6 ? .int32(5) : $0 })
        let tokenizer = try BPETokenizer(ggufMetadata: metadata)
        let ids = Self.ids(tokenizer, "a\u{3A9}\u{3A8}b")   // Greek: not in the corpus
        XCTAssertEqual(ids.filter { $0 == 0 }.count, 1, "\(ids)")
        XCTAssertEqual(tokenizer.decode(ids).contains("<unk>"), true)
    }

    /// The fuzz seeds (Tests/Fuzz/Corpus: tokenizer/sentencepiece.json and .model, gguf/llama-spm.bin) reach the
    /// SentencePiece loaders and the Llama 2 chat layout, rather than stopping at an error.
    func testFuzzSeedsReachTheSentencePieceLoaders() throws {
        let corpus = Fixtures.repositoryRoot.appendingPathComponent("Tests/Fuzz/Corpus")
        let json = try BPETokenizer(tokenizerJSON: corpus.appendingPathComponent("tokenizer/sentencepiece.json"))
        XCTAssertTrue(json.isSentencePiece)
        XCTAssertEqual(json.encode("the 12"), [266, 260, 269])
        let model = try BPETokenizer(sentencePieceModel: corpus.appendingPathComponent("tokenizer/sentencepiece.model"))
        XCTAssertEqual(model.encode("the 12"), [1, 266, 260, 269])
        let gguf = try BPETokenizer(ggufMetadata: GGUFFile(url: corpus.appendingPathComponent("gguf/llama-spm.bin")).metadata)
        XCTAssertTrue(gguf.isSentencePiece)
        XCTAssertEqual(gguf.encode("the 12"), [1, 266, 260, 269])
        XCTAssertEqual(try gguf.applyChatTemplate([ChatMessage(role: "user", content: "hi")], addGenerationPrompt: true),
                       "<s>[INST] hi [/INST]")
    }
}
