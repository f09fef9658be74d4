import Foundation
import Kernels
import ModelFormats
import TestSupport
import XCTest
@testable import LanguageModel

/// A tiny random Gemma 2 (embeddings times √hidden, (1 + w) pre- and post-norms, GeGLU with gelu-tanh, attention and
/// final-logit soft-capping, head size 32 with hidden 64 and 4 heads, tied embeddings, a sliding window on the even
/// layers) against transformers + PEFT in float64 (Tests/Fixtures/tiny-gemma2, made by Tests/Fixtures/generate.py):
/// logits, per-example losses, LoRA logits and LoRA gradients on all seven projections, from the HF directory (whose
/// norm weights are w), from the GGUF llama.cpp's convert_hf_to_gguf.py wrote from it (1 + w), and from its Q8_0 copy
/// against gguf-py's dequantized weights.
final class Gemma2ReferenceTests: XCTestCase {
    func testLogitsAndLossesMatchTransformers() throws {
        for gguf in [false, true] {
            for adapter in [false, true] {
                try TinyReference.checkLogitsAndLosses("gemma2", gguf: gguf, adapter: adapter, architecture: .gemma2)
            }
        }
    }

    /// Through the training pass: the post-norms' and GeGLU's backward, the soft-capped attention's and logits'.
    func testLoRAGradientsMatchPEFT() throws {
        try TinyReference.checkGradients("gemma2", gguf: false, tensors: 28)
        try TinyReference.checkGradients("gemma2", gguf: true, tensors: 28)
    }

    /// The converter's Q8_0 file against transformers' float64 forward over its weights dequantized by gguf-py
    /// (float32 products), then the default int8 path.
    func testQ8_0FileMatchesTransformersOverDequantizedWeights() throws {
        let reference = try TinyReference.reference("gemma2")
        let file = try GGUFFile(url: Fixtures.url("tiny-gemma2/model-q8_0.gguf.bin"))
        let model = LlamaModel(weights: try ModelLoader.loadGGUF(file), pool: ThreadPool(threads: 2))
        model.precision = .float32
        XCTAssertEqual(model.weights.layers[0].projection(.qProj).format, .q8_0, "the file is Q8_0")
        let json = try Fixtures.json("tiny-gemma2/reference.json")
        let losses = try XCTUnwrap((json["q8_0"] as? [String: Any])?["loss_per_example"] as? [Double])
        let expected = try reference.tensors.floats("q8_0_logits"), float = try reference.tensors.floats("logits")
        let vocabulary = model.configuration.vocabSize
        var worstLogit: Float = 0, worstLoss = 0.0, quantizationEffect: Float = 0
        for (i, ids) in reference.inputIds.enumerated() {
            let logits = try model.allLogits(tokens: ids)
            let start = i * ids.count * vocabulary
            for j in logits.indices {
                worstLogit = max(worstLogit, abs(logits[j] - expected[start + j]))
                quantizationEffect = max(quantizationEffect, abs(expected[start + j] - float[start + j]))
            }
            worstLoss = max(worstLoss, abs(try model.score(tokens: ids, labels: reference.labels[i]).meanLoss - losses[i]))
        }
        print("gemma2 Q8_0: worst logit difference \(worstLogit), loss \(worstLoss); Q8_0 vs float \(quantizationEffect)")
        XCTAssertGreaterThan(quantizationEffect, 10 * TinyReference.logitTolerance, "the reference must see the quantization")
        XCTAssertLessThanOrEqual(worstLogit, TinyReference.logitTolerance)
        XCTAssertLessThanOrEqual(worstLoss, TinyReference.lossTolerance)
        model.precision = .int8
        var worstInt8 = 0.0
        for (i, ids) in reference.inputIds.enumerated() {
            worstInt8 = max(worstInt8, abs(try model.score(tokens: ids, labels: reference.labels[i]).meanLoss - losses[i]))
        }
        print("gemma2 Q8_0 int8 activations: worst loss difference \(worstInt8)")
        XCTAssertLessThan(worstInt8, QwenReferenceTests.int8LossTolerance, "Q8_0 with int8 activations")
    }

    /// Training's int8 path on the Q8_0 file (int8 forward, backward through transposed Q8_0 copies) stays close to
    /// its float32 gradient through the post-norms, GeGLU and the caps, as LoRAGradientTests asks of the Llama.
    func testInt8TrainingGradientIsCloseToFloat() throws {
        let reference = try TinyReference.reference("gemma2")
        let model = LlamaModel(weights: try ModelLoader.loadGGUF(try GGUFFile(url: Fixtures.url("tiny-gemma2/model-q8_0.gguf.bin"))),
                               pool: ThreadPool(threads: 2))
        let lora = TrainableLoRA.from(try TinyReference.adapter("gemma2", for: model), for: model)
        func gradient(_ precision: ActivationPrecision) throws -> ([Float], Double) {
            var g = [Float](repeating: 0, count: lora.count)
            let loss = try g.withUnsafeMutableBufferPointer {
                try model.lossAndGradient(tokens: reference.inputIds[1], labels: reference.labels[1], lora: lora,
                                          gradient: $0.baseAddress!, precision: precision).loss
            }
            return (g, loss)
        }
        let (exact, exactLoss) = try gradient(.float32), (fast, fastLoss) = try gradient(.int8)
        var difference = 0.0, norm = 0.0, dot = 0.0, fastNorm = 0.0
        for i in exact.indices {
            difference += Double(fast[i] - exact[i]) * Double(fast[i] - exact[i])
            norm += Double(exact[i]) * Double(exact[i])
            fastNorm += Double(fast[i]) * Double(fast[i])
            dot += Double(fast[i]) * Double(exact[i])
        }
        let relative = (difference / norm).squareRoot(), cosine = dot / (norm * fastNorm).squareRoot()
        print("gemma2 int8 training gradient: relative L2 error \(relative), cosine \(cosine), loss \(exactLoss) vs \(fastLoss)")
        XCTAssertNotEqual(relative, 0, "the int8 path must actually run on a Q8_0 base")
        XCTAssertLessThan(relative, 0.05)
        XCTAssertGreaterThan(cosine, 0.998)
        XCTAssertEqual(fastLoss, exactLoss, accuracy: 0.01)
    }

    /// Incremental decoding (soft-capped scores over the cache, post-norms in place) equals one full pass.
    func testKVCacheMatchesFullPass() throws {
        let worst = try TinyReference.worstCachedDifference("gemma2")
        XCTAssertLessThan(worst, 1e-4, "cached vs full logits differ by \(worst)")
    }

    /// What both loaders read: the block, the hyper-parameters, the (1 + w) norms, and the window of the even layers
    /// (masked past it, SlidingWindowTests: the context is max_position_embeddings).
    func testStructureAndSlidingWindow() throws {
        let hf = try TinyReference.weights("gemma2", gguf: false), gguf = try TinyReference.weights("gemma2", gguf: true)
        for weights in [hf, gguf] {
            let c = weights.configuration
            XCTAssertEqual(c.architecture, .gemma2)
            XCTAssertEqual(weights.ropeLayout, .halfSplit)
            XCTAssertTrue(c.tieWordEmbeddings)
            XCTAssertEqual(c.headDim, 32)
            XCTAssertEqual(c.attentionSoftcap, 1.0)
            XCTAssertEqual(c.finalLogitSoftcap, 1.5)
            XCTAssertEqual(c.queryPreAttentionScalar, 32)
            XCTAssertEqual(c.embeddingScale, 8)
            XCTAssertEqual(c.slidingWindow, 32)
            XCTAssertEqual(c.slidingLayers, [true, false])
            XCTAssertEqual(c.contextLength, 128, "max_position_embeddings: the window is masked, not a bound")
            XCTAssertNotNil(weights.layers[1].postAttentionNorm)
            XCTAssertNotNil(weights.layers[1].postFeedForwardNorm)
        }
        // HF's w plus 1 is the converter's 1 + w, for every norm (the final one included).
        let pairs = [(hf.finalNorm, gguf.finalNorm)] + zip(hf.layers, gguf.layers).flatMap { h, g in
            [(h.attentionNorm, g.attentionNorm), (h.feedForwardNorm, g.feedForwardNorm),
             (h.postAttentionNorm!, g.postAttentionNorm!), (h.postFeedForwardNorm!, g.postFeedForwardNorm!)]
        }
        for (h, g) in pairs { XCTAssertEqual(h, g) }
        let model = LlamaModel(weights: gguf, pool: ThreadPool(threads: 2))
        XCTAssertEqual(try model.allLogits(tokens: Array(repeating: 3, count: 128)).count, 128 * 256)
        XCTAssertThrowsError(try model.allLogits(tokens: Array(repeating: 3, count: 129))) {
            XCTAssertTrue("\($0)".contains("context of 128"), "\($0)")
        }
        let lora = TrainableLoRA.initialized(for: model, rank: 2, alpha: 4, targets: [.qProj], seed: 1)
        var gradient = [Float](repeating: 0, count: lora.count)
        XCTAssertThrowsError(try gradient.withUnsafeMutableBufferPointer {
            try model.lossAndGradient(tokens: Array(repeating: 3, count: 129), labels: Array(repeating: 3, count: 129),
                                      lora: lora, gradient: $0.baseAddress!)
        })
    }

    /// Positive controls: each Gemma 2 part broken alone leaves the logits far outside the tolerance, and the
    /// gradients too where the part is one the backward pass reads.
    func testBreakingAGemma2PartFails() throws {
        let weights = try TinyReference.weights("gemma2", gguf: true)
        func configured(_ change: (inout LlamaConfiguration) -> Void) -> ModelWeights {
            var changed = weights.configuration
            change(&changed)
            return rebuilt(weights, configuration: changed)
        }
        let noPlusOne = rebuilt(weights, finalNorm: weights.finalNorm.map { $0 - 1 }) { layer in
            var changed = LayerWeights(attentionNorm: layer.attentionNorm.map { $0 - 1 },
                                       feedForwardNorm: layer.feedForwardNorm.map { $0 - 1 }, projections: layer.projections)
            changed.postAttentionNorm = layer.postAttentionNorm!.map { $0 - 1 }
            changed.postFeedForwardNorm = layer.postFeedForwardNorm!.map { $0 - 1 }
            return changed
        }
        let noPostNorms = rebuilt(weights) { layer in
            LayerWeights(attentionNorm: layer.attentionNorm, feedForwardNorm: layer.feedForwardNorm,
                         projections: layer.projections)
        }
        let cases: [(String, ModelWeights)] = [
            ("attention soft-capping dropped", configured { $0.attentionSoftcap = nil }),
            ("final soft-capping dropped", configured { $0.finalLogitSoftcap = nil }),
            ("query scale 1/sqrt(16)", configured { $0.queryPreAttentionScalar = 16 }),
            ("embedding not scaled", configured { $0.embeddingScale = nil }),
            ("norms w instead of 1 + w", noPlusOne), ("post-norms dropped", noPostNorms)]
        for (label, broken) in cases {
            let model = LlamaModel(weights: broken, pool: ThreadPool(threads: 2))
            let (worstLogit, _) = try TinyReference.worstDifferences(model, "gemma2", adapter: false)
            print("gemma2 with \(label): worst logit difference \(worstLogit)")
            XCTAssertGreaterThan(worstLogit, 100 * TinyReference.logitTolerance, label)
        }
        let intact = LlamaModel(weights: weights, pool: ThreadPool(threads: 2))
        XCTAssertLessThanOrEqual(try TinyReference.worstDifferences(intact, "gemma2", adapter: false).logit,
                                 TinyReference.logitTolerance)
    }

    /// √hidden in the checkpoint's dtype as transformers computes it (torch 2.13: `float(torch.tensor(d**0.5, dtype=t))`
    /// for Gemma-2-2B's 2304, 9B's 3584, 27B's 4608): bfloat16 48.0, 59.75, 68.0; float16 48.0, 59.875, 67.875.
    func testEmbeddingScaleInTheModelsDtype() {
        XCTAssertEqual([2304, 3584, 4608].map { LlamaConfiguration.embeddingScale(hidden: $0, dtype: "bfloat16") }, [48, 59.75, 68])
        XCTAssertEqual([2304, 3584, 4608].map { LlamaConfiguration.embeddingScale(hidden: $0, dtype: "float16") }, [48, 59.875, 67.875])
        XCTAssertEqual(LlamaConfiguration.embeddingScale(hidden: 3584, dtype: "float32"), Float(3584).squareRoot())
        XCTAssertEqual(LlamaConfiguration.embeddingScale(hidden: 3584, dtype: nil), 59.866519927978516)
    }

    /// `weights` with another configuration, final norm or layers (each layer through `layer`).
    func rebuilt(_ weights: ModelWeights, configuration: LlamaConfiguration? = nil, finalNorm: [Float]? = nil,
                 layer: (LayerWeights) -> LayerWeights = { $0 }) -> ModelWeights {
        ModelWeights(configuration: configuration ?? weights.configuration, embedding: weights.embedding,
                     output: weights.output, finalNorm: finalNorm ?? weights.finalNorm, layers: weights.layers.map(layer),
                     ropeLayout: weights.ropeLayout, source: weights.source)
    }
}
