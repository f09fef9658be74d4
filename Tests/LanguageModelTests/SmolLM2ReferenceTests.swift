import Foundation
import TestSupport
import Tokenizer
import XCTest
@testable import LanguageModel

/// The default model (SmolLM2-135M-Instruct, Q4_1 GGUF) against HF transformers on the same
/// dequantized weights in float64: per-text losses, top-5 next tokens, greedy continuations.
final class SmolLM2ReferenceTests: XCTestCase {
    /// The issue's tolerance on each case's mean loss.
    static let lossTolerance = 2e-3

    nonisolated(unsafe) static var shared: LoadedModel?
    static func model() throws -> LoadedModel {
        if let shared { return shared }
        let path = Fixtures.defaultModel.path
        guard FileManager.default.fileExists(atPath: path) else {
            throw NSError(domain: "SmolLM2ReferenceTests", code: 1,
                          userInfo: [NSLocalizedDescriptionKey: "default model missing at \(path): run `make model`"])
        }
        let loaded = try ModelLoader.load(path: path, threads: 2)
        // Exact products for the comparison with float64 transformers; int8 is checked separately.
        loaded.model.precision = .float32
        shared = loaded
        return loaded
    }

    func testLossesAndTopFiveMatchTransformers() throws {
        let loaded = try Self.model()
        let reference = try Fixtures.json("smollm2/reference.json")
        var worstLoss = 0.0
        for case let item as [String: Any] in reference["cases"] as! [Any] {
            let ids = item["ids"] as! [Int]
            XCTAssertEqual(loaded.tokenizer!.encode(item["text"] as! String), ids, "tokenizer: \(item["text"]!)")
            let score = try loaded.model.score(tokens: ids)
            let expected = item["loss"] as! Double
            worstLoss = max(worstLoss, abs(score.meanLoss - expected))
            XCTAssertEqual(score.meanLoss, expected, accuracy: Self.lossTolerance, "loss of \(item["text"]!)")
            // Top 5 after the whole text, compared as a set.
            let cache = loaded.model.makeCache(capacity: ids.count)
            var top5: Set<Int> = []
            try loaded.model.forward(tokens: ids, cache: cache, logits: .last) { _, logits in
                let order = (0..<loaded.model.configuration.vocabSize).sorted { logits[$0] > logits[$1] }
                top5 = Set(order.prefix(5))
            }
            XCTAssertEqual(top5, Set(item["top5_next"] as! [Int]), "top-5 next tokens after \(item["text"]!)")
        }
        print("SmolLM2 worst loss difference: \(worstLoss) (tolerance \(Self.lossTolerance))")
    }

    func testGreedyContinuationsMatchTransformers() throws {
        let loaded = try Self.model()
        let reference = try Fixtures.json("smollm2/reference.json")
        let tokenizer = loaded.tokenizer!
        var stops = tokenizer.endOfTurnTokenIds
        if let eos = tokenizer.eosTokenId { stops.insert(eos) }
        for case let item as [String: Any] in reference["greedy"] as! [Any] {
            let prompt = item["ids"] as! [Int]
            XCTAssertEqual(tokenizer.encode(item["prompt"] as! String), prompt)
            let expected = item["greedy_ids"] as! [Int]
            // The reference includes the stop token when it was produced; ask for exactly that many.
            let result = try loaded.model.generate(prompt: prompt, maxTokens: expected.count, sampling: .greedy,
                                                   stopTokens: [])
            XCTAssertEqual(result.tokens, expected, "greedy continuation of \(item["prompt"]!)")
            XCTAssertEqual(tokenizer.decode(result.tokens), item["greedy_text"] as! String)
        }
    }

    /// The default inference path (int8 activations against the quantized weights, as llama.cpp computes)
    /// stays close to transformers: each case's loss within `int8LossTolerance`, and the most likely next
    /// token the same as the reference's top one. Rounding activations to 8 bits is noise whose
    /// realisation depends on float summation order (a last-bit change flips a rounding): the row-tile
    /// and panel kernels, equal to 1e-13 NMSE per product, gave worst case-loss differences of 0.024
    /// and 0.067 nats on these 8-15-token texts. The anchor script shows llama.cpp's greedy
    /// continuation equals ours on this path; both differ from float64 after a near-tie.
    static let int8LossTolerance = 0.1

    func testInt8ActivationsStayCloseToTransformers() throws {
        let loaded = try Self.model()
        loaded.model.precision = .int8
        defer { loaded.model.precision = .float32 }
        let reference = try Fixtures.json("smollm2/reference.json")
        var worstLoss = 0.0
        for case let item as [String: Any] in reference["cases"] as! [Any] {
            let ids = item["ids"] as! [Int]
            let score = try loaded.model.score(tokens: ids)
            let expected = item["loss"] as! Double
            worstLoss = max(worstLoss, abs(score.meanLoss - expected))
            XCTAssertEqual(score.meanLoss, expected, accuracy: Self.int8LossTolerance, "int8 loss of \(item["text"]!)")
            let cache = loaded.model.makeCache(capacity: ids.count)
            var best = -1
            try loaded.model.forward(tokens: ids, cache: cache, logits: .last) { _, logits in
                best = (0..<loaded.model.configuration.vocabSize).max { logits[$0] < logits[$1] }!
            }
            XCTAssertEqual(best, (item["top5_next"] as! [Int]).first, "int8 top-1 after \(item["text"]!)")
        }
        print("SmolLM2 int8 worst loss difference: \(worstLoss) (tolerance \(Self.int8LossTolerance))")
    }
}
