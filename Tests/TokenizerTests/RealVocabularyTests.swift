import Foundation
import ModelFormats
import TestSupport
import XCTest
@testable import Tokenizer

/// Real models' tokenizers against HF `tokenizers`: llama.cpp ships vocabulary-only GGUFs of real checkpoints
/// (`models/ggml-vocab-<name>.gguf`, written by its convert_hf_to_gguf_update.py) with, beside each, test texts
/// (`.inp`, separated by `\n__ggml_vocab_test__\n`) and the ids HF's tokenizer gives them with
/// `add_special_tokens=False` (`.out`, one line of ids per text): Unicode, digits, whitespace runs, code. Each
/// vocabulary is loaded from its GGUF metadata as any model file is, and every text's ids must equal HF's exactly
/// (encoded as llama.cpp's test-tokenizer-0 does: no BOS, special-token text as plain text).
///
/// The files come from the llama-cpp-python sdist that `make test` unpacks into `.build/llama_cpp_python`
/// (`Fixtures.llamaCppSource`); without them this fails, saying how to get them.
final class RealVocabularyTests: XCTestCase {
    /// The vocabularies whose `tokenizer.ggml.model` and `pre` the tokenizer implements.
    static let supported = ["llama-spm", "phi-3", "llama-bpe", "qwen2", "gpt-2", "starcoder", "refact", "command-r", "mpt"]

    /// The vocabularies it does not implement, each refused when loaded with an error naming what it lacks.
    static let refused: [(name: String, naming: String)] = [
        ("falcon", "\"falcon\""), ("deepseek-llm", "\"deepseek-llm\""), ("deepseek-coder", "\"deepseek-coder\""),
        ("bert-bge", "\"bert\""), ("gemma-4", "\"gemma4\""), ("qwen35", "\"qwen35\""),
    ]

    static var models: URL { Fixtures.llamaCppSource.appendingPathComponent("models") }

    /// The texts and HF's ids of `ggml-vocab-<name>.gguf`, as test-tokenizer-0 reads them.
    static func cases(_ name: String) throws -> [(text: String, ids: [Int])] {
        let base = models.appendingPathComponent("ggml-vocab-\(name).gguf")
        let input = try String(contentsOf: URL(fileURLWithPath: base.path + ".inp"), encoding: .utf8)
        let output = try String(contentsOf: URL(fileURLWithPath: base.path + ".out"), encoding: .utf8)
        var texts = input.components(separatedBy: "\n__ggml_vocab_test__\n")
        if texts.last == "" { texts.removeLast() }
        var lines = output.components(separatedBy: "\n")
        if lines.last == "" { lines.removeLast() }
        XCTAssertEqual(texts.count, lines.count, "\(name): .inp and .out hold different numbers of cases")
        return zip(texts, lines).map { text, line in
            (text, line.split(separator: " ").map { Int($0)! })
        }
    }

    static func tokenizer(_ name: String) throws -> BPETokenizer {
        let file = try GGUFFile(url: models.appendingPathComponent("ggml-vocab-\(name).gguf"))
        return try BPETokenizer(ggufMetadata: file.metadata)
    }

    /// The files must be there: a missing copy fails with the command that fetches it, never passes silently.
    func testTheVocabulariesArePresent() throws {
        for name in Self.supported + Self.refused.map(\.name) {
            let path = Self.models.appendingPathComponent("ggml-vocab-\(name).gguf").path
            for file in [path, path + ".inp", path + ".out"] where !FileManager.default.fileExists(atPath: file) {
                XCTFail("\(file) is missing: run `make llama-cpp-source` (it unpacks the llama-cpp-python sdist from PyPI "
                        + "into .build/llama_cpp_python), or set LLAMA_CPP to a llama.cpp source folder")
            }
        }
    }

    func testIdsEqualHFTokenizers() throws {
        var summary: [String] = []
        for name in Self.supported {
            let base = Self.models.appendingPathComponent("ggml-vocab-\(name).gguf").path
            guard FileManager.default.fileExists(atPath: base + ".inp") else {
                XCTFail("\(base).inp is missing: run `make llama-cpp-source`")
                continue
            }
            let tokenizer = try Self.tokenizer(name)
            let cases = try Self.cases(name)
            var matches = 0
            for (text, expected) in cases {
                var ids: [Int] = []
                tokenizer.appendEncoded(text, parseSpecialTokens: false, into: &ids)
                if ids == expected {
                    matches += 1
                } else {
                    XCTFail("\(name): \(text.debugDescription) gives \(ids), HF tokenizers \(expected)")
                }
            }
            XCTAssertGreaterThanOrEqual(cases.count, 40, "\(name): every case read")
            summary.append("\(name) \(matches)/\(cases.count)")
        }
        print("real vocabularies, ids equal to HF tokenizers: " + summary.joined(separator: ", "))
    }

    /// Controls: Qwen2's vocabulary read with GPT-2's pre-tokenizer, and Llama 2's without its
    /// SentencePiece dummy prefix, must each miss HF's ids on some cases, or the comparison could not see them.
    func testAWrongReadingMissesHFIds() throws {
        for (name, key, value) in [("qwen2", "tokenizer.ggml.pre", GGUFValue.string("gpt2")),
                                   ("llama-spm", "tokenizer.ggml.add_space_prefix", .bool(false))] {
            var metadata = try GGUFFile(url: Self.models.appendingPathComponent("ggml-vocab-\(name).gguf")).metadata
            metadata[key] = value
            let tokenizer = try BPETokenizer(ggufMetadata: metadata)
            let missed = try Self.cases(name).filter { text, expected in
                var ids: [Int] = []
                tokenizer.appendEncoded(text, parseSpecialTokens: false, into: &ids)
                return ids != expected
            }
            print("\(name) with \(key) = \(value): \(missed.count) cases differ from HF")
            XCTAssertGreaterThanOrEqual(missed.count, 3, "\(name) with \(key) changed must differ from HF")
        }
    }

    func testUnimplementedVocabulariesAreRefused() throws {
        for (name, naming) in Self.refused {
            XCTAssertThrowsError(try Self.tokenizer(name), name) { error in
                XCTAssertTrue("\(error)".contains(naming), "\(name): \(error)")
            }
        }
    }
}
