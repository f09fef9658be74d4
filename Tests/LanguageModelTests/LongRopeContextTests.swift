import Foundation
import Kernels
import ModelFormats
import TestSupport
import XCTest
@testable import LanguageModel

/// LongRoPE past the original context (Tests/Fixtures/tiny-phi3-long: a tiny Phi-3 whose original context, 8, is
/// shorter than its 16-token examples) against transformers + PEFT in float64, from the HF directory and the
/// converter's GGUF. The rule (`RopeFrequencies.longFactors`): a session rotates every position by the long factors
/// when the context it was opened for exceeds the original context, else by the short ones and stops there, as
/// llama.cpp chooses by its context size. transformers chooses per call by the longest position, which for a whole
/// sequence is the same choice: 16 tokens take the long factors, the first 8 alone the short ones.
final class LongRopeContextTests: XCTestCase {
    static let name = "phi3-long"

    func testLongSequencesMatchTransformers() throws {
        for gguf in [false, true] {
            for adapter in [false, true] {
                try TinyReference.checkLogitsAndLosses(Self.name, gguf: gguf, adapter: adapter, architecture: .phi3)
            }
            try TinyReference.checkGradients(Self.name, gguf: gguf, tensors: 16)
        }
    }

    /// The examples' first 8 tokens, within the original context, rotate by the short factors (transformers'
    /// short_logits); both tables equal transformers'.
    func testSequencesWithinTheOriginalContextUseTheShortFactors() throws {
        let reference = try TinyReference.reference(Self.name)
        let json = try XCTUnwrap(try Fixtures.json("tiny-\(Self.name)/reference.json")["short"] as? [String: Any])
        let n = try XCTUnwrap(json["tokens"] as? Int), losses = try XCTUnwrap(json["loss_per_example"] as? [Double])
        let expected = try reference.tensors.floats("short_logits")
        for gguf in [false, true] {
            let model = try TinyReference.model(Self.name, gguf: gguf)
            for (table, key) in [(model.inverseFrequencies, "inv_freq_short"), (model.longInverseFrequencies!, "inv_freq_long")] {
                let worst = zip(table, try reference.tensors.floats(key)).map { abs($0 - $1) / $1 }.max()!
                XCTAssertLessThanOrEqual(worst, 1e-6, "\(key): \(worst)")
            }
            var worstLogit: Float = 0, worstLoss = 0.0
            for (i, ids) in reference.inputIds.enumerated() {
                let prefix = Array(ids[0..<n])
                let logits = try model.allLogits(tokens: prefix), start = i * n * model.configuration.vocabSize
                for j in logits.indices { worstLogit = max(worstLogit, abs(logits[j] - expected[start + j])) }
                let score = try model.score(tokens: prefix, labels: Array(reference.labels[i][0..<n]))
                worstLoss = max(worstLoss, abs(score.meanLoss - losses[i]))
            }
            print("phi3-long \(gguf ? "GGUF" : "HF") within the original context: worst logit \(worstLogit), loss \(worstLoss)")
            XCTAssertLessThanOrEqual(worstLogit, TinyReference.logitTolerance)
            XCTAssertLessThanOrEqual(worstLoss, TinyReference.lossTolerance)
        }
    }

    /// A session opened for 16 positions takes the long factors from its first token: fed 5 tokens, then one at a
    /// time, it gives the full pass's logits. One opened for 8 (the original context) takes the short factors and
    /// refuses a ninth position, naming 8, rather than rotate it by another set than its cached keys.
    func testASessionKeepsOneFactorSet() throws {
        let model = try TinyReference.model(Self.name, gguf: true)
        let reference = try TinyReference.reference(Self.name)
        let ids = reference.inputIds[0], vocabulary = model.configuration.vocabSize
        let full = try model.allLogits(tokens: ids)
        let long = model.makeCache(capacity: ids.count)
        var worst: Float = 0
        try model.forward(tokens: Array(ids[0..<5]), cache: long, logits: .none)
        for t in 5..<ids.count {
            try model.forward(tokens: [ids[t]], cache: long, logits: .last) { _, logits in
                for v in 0..<vocabulary { worst = max(worst, abs(logits[v] - full[t * vocabulary + v])) }
            }
        }
        XCTAssertLessThan(worst, 1e-4, "a long session's cached logits differ from the full pass by \(worst)")

        let short = model.makeCache(capacity: 8)
        let expected = try reference.tensors.floats("short_logits")
        try model.forward(tokens: Array(ids[0..<8]), cache: short, logits: .last) { _, logits in
            for v in 0..<vocabulary { XCTAssertEqual(logits[v], expected[7 * vocabulary + v], accuracy: 1e-4) }
        }
        XCTAssertThrowsError(try model.forward(tokens: [ids[8]], cache: short, logits: .last) { _, _ in }) {
            XCTAssertTrue("\($0)".contains("original context of 8 in a session opened for 8"), "\($0)")
        }
        XCTAssertEqual(model.configuration.contextLength, 64, "the model's context is max_position_embeddings")
    }

    /// Control: the 16-token examples rotated by the short factors (a model whose long factors are its short ones)
    /// must fail the comparison by far, through inference and training.
    func testShortFactorsPastTheOriginalContextFailTheComparison() throws {
        let weights = try TinyReference.weights(Self.name, gguf: false)
        guard case let .longrope(short, _, attention, original) = weights.configuration.ropeScaling else {
            return XCTFail("not LongRoPE")
        }
        var configuration = weights.configuration
        configuration.ropeScaling = .longrope(shortFactors: short, longFactors: short, attentionFactor: attention,
                                              originalContext: original)
        let model = TinyReference.model(weights, configuration: configuration)
        let (logit, loss) = try TinyReference.worstDifferences(model, Self.name, adapter: true)
        print("phi3-long with the short factors throughout: worst logit \(logit), loss \(loss)")
        XCTAssertGreaterThan(logit, 10 * TinyReference.logitTolerance)
        XCTAssertGreaterThan(loss, 10 * TinyReference.lossTolerance)
        let trainingLoss = try TinyReference.firstTrainingLoss(model, Self.name)
        XCTAssertGreaterThan(abs(trainingLoss - (try TinyReference.reference(Self.name)).loraLosses[0]),
                             10 * TinyReference.lossTolerance)
    }
}
