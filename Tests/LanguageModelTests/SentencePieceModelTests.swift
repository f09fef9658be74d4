import Foundation
import Kernels
import TestSupport
import XCTest
@testable import LanguageModel
@testable import Tokenizer

/// A Llama GGUF with a SentencePiece vocabulary (Tests/Fixtures/tiny-llama-spm, written by llama.cpp's
/// converter from a tiny random Llama and a trained sentencepiece model) loads with that tokenizer and
/// generates transformers' float64 greedy tokens.
final class SentencePieceModelTests: XCTestCase {
    func testSentencePieceGGUFLoadsAndGeneratesTheReferenceTokens() throws {
        let loaded = try ModelLoader.load(path: Fixtures.url("tiny-llama-spm/model.gguf.bin").path, threads: 1)
        let tokenizer = try ModelLoader.requireTokenizer(loaded, path: "tiny-llama-spm")
        XCTAssertTrue(tokenizer.isSentencePiece)
        defer { loaded.model.precision = .int8 }
        let greedy = try XCTUnwrap(Fixtures.json("tiny-llama-spm/reference.json")["greedy"] as? [[String: Any]])
        var int8Compared = 0
        for item in greedy {
            let prompt = item["ids"] as! [Int], expected = item["greedy_ids"] as! [Int]
            XCTAssertEqual(tokenizer.encode(item["prompt"] as! String), prompt, "prompt ids, BOS first")
            for precision in [ActivationPrecision.float32, .int8] {
                loaded.model.precision = precision
                let tokens = try loaded.model.generate(prompt: prompt, maxTokens: expected.count, sampling: .greedy,
                                                       stopTokens: []).tokens
                // int8 activations move logits by hundredths here: held to the reference up to the first step
                // whose float64 top-2 margin is under 0.05; float32 in full.
                var compared = expected.count
                if precision == .int8 {
                    compared = (item["top2_margins"] as! [Double]).firstIndex { $0 < 0.05 } ?? expected.count
                    int8Compared += compared
                }
                XCTAssertEqual(Array(tokens.prefix(compared)), Array(expected.prefix(compared)),
                               "\(precision) greedy continuation of '\(item["prompt"]!)'")
                if precision == .float32 {
                    // HF's decoder drops one leading space (Strip); ours keeps it.
                    let text = tokenizer.decode(tokens)
                    XCTAssertEqual(text.hasPrefix(" ") ? String(text.dropFirst()) : text, item["greedy_text"] as? String)
                }
            }
        }
        XCTAssertGreaterThanOrEqual(int8Compared, 8)
    }

    /// An HF directory whose tokenizer is a sentencepiece tokenizer.model alone loads it.
    func testAnHFDirectoryWithOnlyATokenizerModelLoadsIt() throws {
        let directory = try Fixtures.temporaryDirectory("spm-hf")
        defer { try? FileManager.default.removeItem(at: directory) }
        for name in ["tiny-llama/config.json", "tiny-llama/model.safetensors", "tiny-llama-spm/tokenizer.model",
                     "tiny-llama-spm/tokenizer_config.json"] {
            try FileManager.default.copyItem(at: Fixtures.url(name),
                                             to: directory.appendingPathComponent(URL(fileURLWithPath: name).lastPathComponent))
        }
        let loaded = try ModelLoader.load(path: directory.path, threads: 1)
        let tokenizer = try XCTUnwrap(loaded.tokenizer)
        XCTAssertTrue(tokenizer.isSentencePiece)
        XCTAssertEqual(tokenizer.encode("Hello world"), [1, 345, 402, 332, 338, 280, 274, 356, 354])
    }

    /// llama.cpp's own reading of the same GGUF vocabulary (Reference/make_spm_llamacpp_reference.py):
    /// its ids with special tokens parsed and not, and its detokenized text, which keeps the dummy prefix's
    /// space as ours does (it drops control and unknown tokens' text, so those cases are left out there).
    func testLlamaCppReadsTheGGUFVocabularyAsWeDo() throws {
        let url = Fixtures.repositoryRoot.appendingPathComponent(
            "Tests/LanguageModelTests/Reference/tiny-llama-spm/llama-cpp.json")
        let reference = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let cases = try XCTUnwrap(reference["cases"] as? [[String: Any]])
        let hf = try XCTUnwrap(Fixtures.json("tiny-llama-spm/reference.json")["cases"] as? [[String: Any]])
        let loaded = try ModelLoader.load(path: Fixtures.url("tiny-llama-spm/model.gguf.bin").path, threads: 1)
        let tokenizer = try XCTUnwrap(loaded.tokenizer)
        var decoded = 0
        for (item, hfItem) in zip(cases, hf) {
            let text = item["text"] as! String
            for (parse, key) in [(true, "ids"), (false, "ids_plain")] {
                var ids: [Int] = []
                tokenizer.appendEncoded(text, parseSpecialTokens: parse, into: &ids)
                XCTAssertEqual(ids, item[key] as! [Int], "\(text.debugDescription), special tokens parsed: \(parse)")
            }
            let hfIds = hfItem["hf_ids"] as! [Int]
            if !hfIds.contains(where: { [.control, .unknown].contains(tokenizer.tokenTypes[$0]) }) {
                XCTAssertEqual(tokenizer.decode(hfIds), item["detokenized_hf_ids"] as! String, text.debugDescription)
                decoded += 1
            }
        }
        XCTAssertEqual(cases.count, 33)
        XCTAssertEqual(decoded, 30)
    }
}
