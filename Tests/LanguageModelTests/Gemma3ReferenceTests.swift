import Foundation
import Kernels
import ModelFormats
import TestSupport
import XCTest
@testable import LanguageModel

/// A tiny random Gemma 3 text model (Gemma 2's block with (1 + w) per-head q/k norms, no soft-capping; six layers of
/// which the sixth is global; a sliding window of 5 that every 16-token example crosses; the sliding layers' own rope
/// base and the global layer's linear rope scaling) against transformers + PEFT in float64 (Tests/Fixtures/tiny-gemma3,
/// made by Tests/Fixtures/generate.py): logits, per-example losses, LoRA logits and LoRA gradients on all seven
/// projections, from the HF directory, from the GGUF llama.cpp's convert_hf_to_gguf.py wrote from it, and from its
/// Q8_0 copy against gguf-py's dequantized weights. (llama.cpp on the converter's file:
/// Reference/llamacpp_gemma3_check.py.)
final class Gemma3ReferenceTests: XCTestCase {
    func testLogitsAndLossesMatchTransformers() throws {
        for gguf in [false, true] {
            for adapter in [false, true] {
                try TinyReference.checkLogitsAndLosses("gemma3", gguf: gguf, adapter: adapter, architecture: .gemma3)
            }
        }
    }

    /// Through the training pass: the masked attention's backward on the sliding layers, the head norms', the rope's of
    /// each layer kind.
    func testLoRAGradientsMatchPEFT() throws {
        try TinyReference.checkGradients("gemma3", gguf: false, tensors: 84)
        try TinyReference.checkGradients("gemma3", gguf: true, tensors: 84)
    }

    /// The converter's Q8_0 file against transformers' float64 forward over its weights dequantized by gguf-py
    /// (float32 products), then the default int8 path.
    func testQ8_0FileMatchesTransformersOverDequantizedWeights() throws {
        let reference = try TinyReference.reference("gemma3")
        let model = LlamaModel(weights: try ModelLoader.loadGGUF(try GGUFFile(url: Fixtures.url("tiny-gemma3/model-q8_0.gguf.bin"))),
                               pool: ThreadPool(threads: 2))
        model.precision = .float32
        XCTAssertEqual(model.weights.layers[0].projection(.qProj).format, .q8_0, "the file is Q8_0")
        let json = try Fixtures.json("tiny-gemma3/reference.json")
        let losses = try XCTUnwrap((json["q8_0"] as? [String: Any])?["loss_per_example"] as? [Double])
        let expected = try reference.tensors.floats("q8_0_logits"), float = try reference.tensors.floats("logits")
        let vocabulary = model.configuration.vocabSize
        var worstLogit: Float = 0, worstLoss = 0.0, quantizationEffect: Float = 0, worstInt8 = 0.0
        for (i, ids) in reference.inputIds.enumerated() {
            let logits = try model.allLogits(tokens: ids)
            let start = i * ids.count * vocabulary
            for j in logits.indices {
                worstLogit = max(worstLogit, abs(logits[j] - expected[start + j]))
                quantizationEffect = max(quantizationEffect, abs(expected[start + j] - float[start + j]))
            }
            worstLoss = max(worstLoss, abs(try model.score(tokens: ids, labels: reference.labels[i]).meanLoss - losses[i]))
        }
        model.precision = .int8
        for (i, ids) in reference.inputIds.enumerated() {
            worstInt8 = max(worstInt8, abs(try model.score(tokens: ids, labels: reference.labels[i]).meanLoss - losses[i]))
        }
        print("gemma3 Q8_0: worst logit difference \(worstLogit), loss \(worstLoss); Q8_0 vs float \(quantizationEffect); "
              + "int8 activations: loss \(worstInt8)")
        XCTAssertGreaterThan(quantizationEffect, 10 * TinyReference.logitTolerance, "the reference must see the quantization")
        XCTAssertLessThanOrEqual(worstLogit, TinyReference.logitTolerance)
        XCTAssertLessThanOrEqual(worstLoss, TinyReference.lossTolerance)
        XCTAssertLessThan(worstInt8, Self.int8LossTolerance, "Q8_0 with int8 activations")
    }

    /// int8 activations' rounding on this model: 0.019 nats measured (AVX-512 VNNI), four times the Qwen models' (0.004,
    /// `QwenReferenceTests.int8LossTolerance`): its 32-wide rows are one int8 block each, over six layers.
    static let int8LossTolerance = 0.05

    /// Incremental decoding past the window (five tokens, then one at a time on the KV cache, each sliding layer's query
    /// reading only its window's cached keys) equals one full pass.
    func testKVCacheMatchesFullPass() throws {
        let worst = try TinyReference.worstCachedDifference("gemma3")
        XCTAssertLessThan(worst, 1e-4, "cached vs full logits differ by \(worst)")
    }

    /// What both loaders read: the block, the layer kinds, each kind's rope, the (1 + w) norms (head norms included).
    func testStructure() throws {
        let hf = try TinyReference.weights("gemma3", gguf: false), gguf = try TinyReference.weights("gemma3", gguf: true)
        for weights in [hf, gguf] {
            let c = weights.configuration
            XCTAssertEqual(c.architecture, .gemma3)
            XCTAssertEqual(weights.ropeLayout, .halfSplit)
            XCTAssertTrue(c.tieWordEmbeddings)
            XCTAssertEqual(c.headDim, 16)
            XCTAssertNil(c.attentionSoftcap)
            XCTAssertNil(c.finalLogitSoftcap)
            XCTAssertEqual(c.queryPreAttentionScalar, 16)
            XCTAssertEqual(c.embeddingScale, Float(32).squareRoot())
            XCTAssertEqual(c.slidingWindow, 5)
            XCTAssertEqual(c.slidingLayers, [true, true, true, true, true, false], "every sixth layer global")
            XCTAssertEqual((0..<6).map { c.attentionWindow(layer: $0) }, [5, 5, 5, 5, 5, nil])
            XCTAssertEqual(c.ropeTheta, 1_000_000)
            XCTAssertEqual(c.slidingRopeTheta, 10_000)
            XCTAssertEqual(c.ropeScaling, .linear(factor: 8))
            XCTAssertEqual(c.contextLength, 128, "the window is masked, not a bound on the context")
            XCTAssertEqual(weights.layers[5].queryNorm?.count, 16)
            XCTAssertNotNil(weights.layers[0].postFeedForwardNorm)
        }
        // HF's w plus 1 is the converter's 1 + w, for every norm (the head norms and the final one included).
        let pairs = [(hf.finalNorm, gguf.finalNorm)] + zip(hf.layers, gguf.layers).flatMap { h, g in
            [(h.attentionNorm, g.attentionNorm), (h.feedForwardNorm, g.feedForwardNorm),
             (h.postAttentionNorm!, g.postAttentionNorm!), (h.postFeedForwardNorm!, g.postFeedForwardNorm!),
             (h.queryNorm!, g.queryNorm!), (h.keyNorm!, g.keyNorm!)]
        }
        for (h, g) in pairs { XCTAssertEqual(h, g) }
        // The sliding layers rotate with their own base, unscaled; the global layer with rope_theta over 8.
        let model = LlamaModel(weights: gguf, pool: ThreadPool(threads: 1))
        XCTAssertEqual(model.inverseFrequencies(layer: 0)[1], Float(pow(10_000, -2.0 / 16)), accuracy: 1e-7)
        XCTAssertEqual(model.inverseFrequencies(layer: 5)[1], Float(pow(1_000_000, -2.0 / 16) / 8), accuracy: 1e-7)
    }

    /// Positive controls: each Gemma 3 part broken alone leaves the logits far outside the tolerance: the window off by
    /// one either way or gone, the layer kinds moved, the sliding layers' rope base or the global layer's scaling lost,
    /// the head norms w instead of 1 + w.
    func testBreakingAGemma3PartFails() throws {
        let weights = try TinyReference.weights("gemma3", gguf: true)
        func configured(_ change: (inout LlamaConfiguration) -> Void) -> ModelWeights {
            var changed = weights.configuration
            change(&changed)
            return ModelWeights(configuration: changed, embedding: weights.embedding, output: weights.output,
                                finalNorm: weights.finalNorm, layers: weights.layers, ropeLayout: weights.ropeLayout,
                                source: weights.source)
        }
        let headNormsW = ModelWeights(
            configuration: weights.configuration, embedding: weights.embedding, output: weights.output,
            finalNorm: weights.finalNorm, layers: weights.layers.map { layer in
                var changed = LayerWeights(attentionNorm: layer.attentionNorm, feedForwardNorm: layer.feedForwardNorm,
                                           projections: layer.projections, queryNorm: layer.queryNorm!.map { $0 - 1 },
                                           keyNorm: layer.keyNorm!.map { $0 - 1 })
                changed.postAttentionNorm = layer.postAttentionNorm
                changed.postFeedForwardNorm = layer.postFeedForwardNorm
                return changed
            }, ropeLayout: weights.ropeLayout, source: weights.source)
        let cases: [(String, ModelWeights)] = [
            ("no window", configured { $0.slidingWindow = nil }),
            ("window 4 (one key fewer)", configured { $0.slidingWindow = 4 }),
            ("window 6 (one key more)", configured { $0.slidingWindow = 6 }),
            ("every layer global", configured { $0.slidingLayers = Array(repeating: false, count: 6) }),
            ("every layer sliding", configured { $0.slidingLayers = Array(repeating: true, count: 6) }),
            ("sliding layers with the global rope", configured { $0.slidingRopeTheta = nil }),
            ("global layer unscaled", configured { $0.ropeScaling = .none }),
            ("head norms w instead of 1 + w", headNormsW)]
        for (label, broken) in cases {
            let model = LlamaModel(weights: broken, pool: ThreadPool(threads: 2))
            let (worstLogit, _) = try TinyReference.worstDifferences(model, "gemma3", adapter: false)
            print("gemma3 with \(label): worst logit difference \(worstLogit)")
            XCTAssertGreaterThan(worstLogit, 100 * TinyReference.logitTolerance, label)
        }
        let intact = LlamaModel(weights: weights, pool: ThreadPool(threads: 2))
        XCTAssertLessThanOrEqual(try TinyReference.worstDifferences(intact, "gemma3", adapter: false).logit,
                                 TinyReference.logitTolerance)
    }

    /// PEFT's adapter in (all seven projections of the six layers), through the trainable layout and back out as a PEFT
    /// directory that loads to the same numbers.
    func testPEFTAdapterInAndOut() throws {
        let model = try TinyReference.model("gemma3", gguf: true)
        let adapter = try TinyReference.adapter("gemma3", for: model)
        XCTAssertEqual(Set(adapter.targets), Set(model.configuration.adaptableModules))
        XCTAssertEqual(adapter.layers[5][.qProj]?.outFeatures, 64)
        let directory = try Fixtures.temporaryDirectory("gemma3-adapter")
        defer { try? FileManager.default.removeItem(at: directory) }
        let out = directory.appendingPathComponent("adapter")
        try TrainableLoRA.from(adapter, for: model).adapter().write(to: out)
        let reloaded = try ModelLoader.loadAdapter(path: out.path, for: model)
        for layer in 0..<6 {
            for module in adapter.targets {
                XCTAssertEqual(reloaded.layers[layer][module]?.a, adapter.layers[layer][module]?.a, "\(layer) \(module)")
                XCTAssertEqual(reloaded.layers[layer][module]?.b, adapter.layers[layer][module]?.b, "\(layer) \(module)")
            }
        }
    }
}
