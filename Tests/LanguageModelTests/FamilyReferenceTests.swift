import Foundation
import Kernels
import ModelFormats
import TestSupport
import XCTest
@testable import LanguageModel

/// Each family's tiny random model (TinyFamily.all: Qwen2, Qwen3, Gemma 2, Gemma 3, Phi-3) against transformers + PEFT in
/// float64 (Tests/Fixtures/tiny-<name>, made by Tests/Fixtures/generate.py): logits, per-example losses, LoRA logits
/// and LoRA gradients, from the HF directory and from the GGUF that llama.cpp's convert_hf_to_gguf.py wrote from it,
/// and from its Q8_0 copy against transformers over gguf-py's dequantized weights; the PEFT adapter in and out; what
/// each loader reads; and, as positive controls, each family's own parts broken one at a time.
final class FamilyReferenceTests: XCTestCase {
    func testLogitsAndLossesMatchTransformers() throws {
        for family in TinyFamily.all {
            for gguf in [false, true] {
                for adapter in [false, true] {
                    try TinyReference.checkLogitsAndLosses(family.name, gguf: gguf, adapter: adapter,
                                                           architecture: family.architecture)
                }
            }
        }
    }

    /// Through training's pass, on every projection the family has (Phi-3's fused ones: one A and one B over each
    /// fused output, as PEFT adapts them).
    func testLoRAGradientsMatchPEFT() throws {
        for family in TinyFamily.all {
            try TinyReference.checkGradients(family.name, gguf: false, tensors: family.adapterTensors)
            try TinyReference.checkGradients(family.name, gguf: true, tensors: family.adapterTensors)
        }
    }

    /// The converter's Q8_0 file against transformers' float64 forward over the same weights dequantized by gguf-py
    /// (exact float32 products here, so the tolerances are the float files'), then the default inference path (int8
    /// activations, row-grouped stacks of q, k, v or the fused matrices where the CPU has them, biases, head norms
    /// and post-norms after): close to the reference, as SmolLM2's int8 test asks.
    func testQ8_0FilesMatchTransformersOverDequantizedWeights() throws {
        for family in TinyFamily.all {
            let name = family.name
            let reference = try TinyReference.reference(name)
            let file = try GGUFFile(url: Fixtures.url("tiny-\(name)/model-q8_0.gguf.bin"))
            let model = LlamaModel(weights: try ModelLoader.loadGGUF(file), pool: ThreadPool(threads: 2))
            model.precision = .float32
            XCTAssertEqual(model.weights.layers[0].projection(family.queryProjection).format, .q8_0, "\(name): the file is Q8_0")
            let json = try Fixtures.json("tiny-\(name)/reference.json")
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
            print("\(name) Q8_0: worst logit difference \(worstLogit), loss \(worstLoss); Q8_0 vs float \(quantizationEffect)")
            XCTAssertGreaterThan(quantizationEffect, 10 * TinyReference.logitTolerance, "\(name): the reference must see the quantization")
            XCTAssertLessThanOrEqual(worstLogit, TinyReference.logitTolerance, "\(name) Q8_0")
            XCTAssertLessThanOrEqual(worstLoss, TinyReference.lossTolerance, "\(name) Q8_0")
            model.precision = .int8
            var worstInt8 = 0.0
            for (i, ids) in reference.inputIds.enumerated() {
                worstInt8 = max(worstInt8, abs(try model.score(tokens: ids, labels: reference.labels[i]).meanLoss - losses[i]))
            }
            print("\(name) Q8_0 int8 activations: worst loss difference \(worstInt8)")
            XCTAssertLessThan(worstInt8, family.int8LossTolerance, "\(name) Q8_0 with int8 activations")
        }
    }

    /// Training's int8 path on the Q8_0 file (int8 forward, backward through transposed Q8_0 copies) stays close to
    /// its float32 gradient through each family's parts, as LoRAGradientTests asks of the Llama.
    func testInt8TrainingGradientIsCloseToFloat() throws {
        for family in TinyFamily.all {
            let name = family.name
            let reference = try TinyReference.reference(name)
            let model = LlamaModel(weights: try ModelLoader.loadGGUF(try GGUFFile(url: Fixtures.url("tiny-\(name)/model-q8_0.gguf.bin"))),
                                   pool: ThreadPool(threads: 2))
            let lora = TrainableLoRA.from(try TinyReference.adapter(name, for: model), for: model)
            func gradient(_ precision: ActivationPrecision) throws -> ([Float], Double) {
                var g = [Float](repeating: 0, count: lora.count)
                let loss = try g.withUnsafeMutableBufferPointer {
                    try model.lossAndGradient(tokens: reference.inputIds[1], labels: reference.labels[1], lora: lora,
                                              gradient: $0.baseAddress!, precision: precision).loss
                }
                return (g, loss)
            }
            let (exact, exactLoss) = try gradient(.float32), (fast, fastLoss) = try gradient(.int8)
            let (relative, cosine, _) = TinyReference.agreement(fast, with: exact)
            print("\(name) int8 training gradient: relative L2 error \(relative), cosine \(cosine), loss \(exactLoss) vs \(fastLoss)")
            XCTAssertNotEqual(relative, 0, "\(name): the int8 path must actually run on a Q8_0 base")
            XCTAssertEqual(fastLoss, exactLoss, accuracy: 0.01, name)
            XCTAssertLessThan(relative, family.int8GradientAgreement.relative, name)
            XCTAssertGreaterThan(cosine, family.int8GradientAgreement.cosine, name)
        }
    }

    /// Incremental decoding (biases and head norms applied in place on the KV cache's rows, k and v split out of a
    /// fused output, soft-capped scores over the cache, post-norms in place) equals one full pass.
    func testKVCacheMatchesFullPass() throws {
        for family in TinyFamily.all {
            let worst = try TinyReference.worstCachedDifference(family.name)
            XCTAssertLessThan(worst, 1e-4, "\(family.name): cached vs full logits differ by \(worst)")
        }
    }

    /// PEFT's adapter in (every projection of the family, shapes checked against the block's), through the trainable
    /// layout and back out as a PEFT directory that loads to the same tensors and computes PEFT's LoRA logits.
    func testPEFTAdapterInAndOut() throws {
        let directory = try Fixtures.temporaryDirectory("family-adapter")
        defer { try? FileManager.default.removeItem(at: directory) }
        for family in TinyFamily.all {
            let name = family.name
            let model = try TinyReference.model(name, gguf: true)
            let adapter = try TinyReference.adapter(name, for: model)
            XCTAssertEqual(Set(adapter.targets), family.projections, name)
            for layer in 0..<family.layers {
                for module in family.projections {
                    XCTAssertEqual(adapter.layers[layer][module]?.outFeatures, model.weights.layers[layer].projection(module).rows,
                                   "\(name) \(layer) \(module)")
                }
            }
            let roundTrip = TrainableLoRA.from(adapter, for: model).adapter()
            let out = directory.appendingPathComponent(name)
            try roundTrip.write(to: out)
            let config = try XCTUnwrap(try JSONSerialization.jsonObject(
                with: Data(contentsOf: out.appendingPathComponent("adapter_config.json"))) as? [String: Any])
            XCTAssertEqual(config["target_modules"] as? [String], family.projections.map(\.rawValue).sorted(), name)
            let reloaded = try ModelLoader.loadAdapter(path: out.path, for: model)
            for layer in 0..<family.layers {
                for module in adapter.targets {
                    XCTAssertEqual(reloaded.layers[layer][module]?.a, adapter.layers[layer][module]?.a, "\(name) \(layer) \(module)")
                    XCTAssertEqual(reloaded.layers[layer][module]?.b, adapter.layers[layer][module]?.b, "\(name) \(layer) \(module)")
                }
            }
            let reference = try TinyReference.reference(name)
            let loraLogits = try reference.tensors.floats("lora_logits")
            model.setAdapter(reloaded)
            var worstReloaded: Float = 0
            for (i, ids) in reference.inputIds.enumerated() {
                let logits = try model.allLogits(tokens: ids)
                for j in logits.indices { worstReloaded = max(worstReloaded, abs(logits[j] - loraLogits[i * logits.count + j])) }
            }
            XCTAssertLessThanOrEqual(worstReloaded, TinyReference.logitTolerance, "\(name): the written adapter computes PEFT's logits")
        }
    }

    /// What both loaders read: the block's parts, the head size, tying, HF's half-split rope rows (the converter
    /// keeps them: llama.cpp's NEOX rope), and the sliding window: masked on the sliding layers (Gemma's), where a
    /// sequence past it runs; or bounding the context (Phi-3's): as many tokens as the window run, one more is refused
    /// by inference and by training alike.
    func testStructureAndSlidingWindow() throws {
        for family in TinyFamily.all {
            for gguf in [false, true] {
                let label = "\(family.name) \(gguf ? "GGUF" : "HF")"
                let model = try TinyReference.model(family.name, gguf: gguf)
                let c = model.configuration
                XCTAssertEqual(c.architecture, family.architecture, label)
                XCTAssertEqual(model.weights.ropeLayout, .halfSplit, label)
                XCTAssertEqual(c.tieWordEmbeddings, family.tied, label)
                XCTAssertEqual(c.headDim, family.headDim, label)
                XCTAssertEqual(model.weights.layers.count, family.layers, label)
                for layer in model.weights.layers {
                    XCTAssertEqual(Set(layer.projections.keys), family.projections, label)
                    XCTAssertEqual(Set(layer.biases.keys), family.biased, label)
                    for module in family.biased { XCTAssertEqual(layer.biases[module]?.count, layer.projection(module).rows, label) }
                    XCTAssertEqual(layer.queryNorm?.count, family.headNorms ? family.headDim : nil, label)
                    XCTAssertEqual(layer.keyNorm?.count, family.headNorms ? family.headDim : nil, label)
                    XCTAssertEqual(layer.postAttentionNorm?.count, family.postNorms ? c.hiddenSize : nil, label)
                    XCTAssertEqual(layer.postFeedForwardNorm?.count, family.postNorms ? c.hiddenSize : nil, label)
                }
                XCTAssertEqual(c.slidingWindow, family.window, label)
                XCTAssertEqual(c.slidingLayers, family.slidingLayers, label)
                if let window = family.window, !family.slidingLayers.isEmpty {
                    XCTAssertEqual(c.contextLength, c.maxPositionEmbeddings, "\(label): the window is masked, not a bound")
                    XCTAssertEqual(try model.allLogits(tokens: Array(repeating: 3, count: window + 1)).count,
                                   (window + 1) * c.vocabSize)
                    continue
                }
                guard let window = family.window else {
                    XCTAssertEqual(c.contextLength, c.maxPositionEmbeddings, label)
                    continue
                }
                XCTAssertLessThan(window, c.maxPositionEmbeddings, label)
                XCTAssertEqual(c.contextLength, window, "\(label): the window bounds the context")
                XCTAssertEqual(try model.allLogits(tokens: Array(repeating: 3, count: window)).count, window * c.vocabSize)
                XCTAssertThrowsError(try model.allLogits(tokens: Array(repeating: 3, count: window + 1))) {
                    XCTAssertTrue("\($0)".contains("context of \(window)"), "\(label): \($0)")
                }
                let lora = TrainableLoRA.initialized(for: model, rank: 2, alpha: 4, targets: [family.queryProjection], seed: 1)
                var gradient = [Float](repeating: 0, count: lora.count)
                XCTAssertThrowsError(try gradient.withUnsafeMutableBufferPointer {
                    try model.lossAndGradient(tokens: Array(repeating: 3, count: window + 1),
                                              labels: Array(repeating: 3, count: window + 1), lora: lora, gradient: $0.baseAddress!)
                }, label)
            }
        }
    }

    /// Positive controls: each family part broken alone (TinyFamily.breakages) leaves the logits far outside the
    /// tolerance; the intact weights are within it.
    func testBreakingAFamilyPartFails() throws {
        for family in TinyFamily.all {
            XCTAssertFalse(family.breakages.isEmpty, "\(family.name) needs its positive controls")
            let weights = try TinyReference.weights(family.name, gguf: true)
            for (label, breakage) in family.breakages {
                let model = LlamaModel(weights: breakage(weights), pool: ThreadPool(threads: 2))
                let (worstLogit, _) = try TinyReference.worstDifferences(model, family.name, adapter: false)
                print("\(family.name) with \(label): worst logit difference \(worstLogit)")
                XCTAssertGreaterThan(worstLogit, 100 * TinyReference.logitTolerance, "\(family.name): \(label)")
            }
            let intact = LlamaModel(weights: weights, pool: ThreadPool(threads: 2))
            XCTAssertLessThanOrEqual(try TinyReference.worstDifferences(intact, family.name, adapter: false).logit,
                                     TinyReference.logitTolerance, family.name)
        }
    }

    /// Qwen3's head size comes from key_length (32), not hidden / heads (16).
    func testQwen3HeadSizeIsNotHiddenOverHeads() throws {
        let qwen3 = try TinyReference.model("qwen3", gguf: true)
        XCTAssertEqual(qwen3.configuration.headDim, 32)
        XCTAssertEqual(qwen3.configuration.hiddenSize / qwen3.configuration.numAttentionHeads, 16)
    }

    /// Gemma 2's hyper-parameters as both loaders read them, and the (1 + w) norms: HF's w plus 1 is the converter's
    /// 1 + w, for every norm (the final one included).
    func testGemma2HyperParametersAndNorms() throws {
        let hf = try TinyReference.weights("gemma2", gguf: false), gguf = try TinyReference.weights("gemma2", gguf: true)
        for weights in [hf, gguf] {
            let c = weights.configuration
            XCTAssertEqual(c.attentionSoftcap, 1.0)
            XCTAssertEqual(c.finalLogitSoftcap, 1.5)
            XCTAssertEqual(c.queryPreAttentionScalar, 32)
            XCTAssertEqual(c.embeddingScale, 8)
            XCTAssertEqual(c.maxPositionEmbeddings, 128)
        }
        let pairs = [(hf.finalNorm, gguf.finalNorm)] + zip(hf.layers, gguf.layers).flatMap { h, g in
            [(h.attentionNorm, g.attentionNorm), (h.feedForwardNorm, g.feedForwardNorm),
             (h.postAttentionNorm!, g.postAttentionNorm!), (h.postFeedForwardNorm!, g.postFeedForwardNorm!)]
        }
        for (h, g) in pairs { XCTAssertEqual(h, g) }
    }

    /// Gemma 3's hyper-parameters as both loaders read them (the layer kinds and each kind's rope among them), and the
    /// (1 + w) norms: HF's w plus 1 is the converter's 1 + w, for every norm (the head norms and the final one included).
    func testGemma3HyperParametersAndNorms() throws {
        let hf = try TinyReference.weights("gemma3", gguf: false), gguf = try TinyReference.weights("gemma3", gguf: true)
        for weights in [hf, gguf] {
            let c = weights.configuration
            XCTAssertNil(c.attentionSoftcap)
            XCTAssertNil(c.finalLogitSoftcap)
            XCTAssertEqual(c.queryPreAttentionScalar, 16)
            XCTAssertEqual(c.embeddingScale, Float(32).squareRoot())
            XCTAssertEqual((0..<6).map { c.attentionWindow(layer: $0) }, [5, 5, 5, 5, 5, nil])
            XCTAssertEqual(c.ropeTheta, 1_000_000)
            XCTAssertEqual(c.slidingRopeTheta, 10_000)
            XCTAssertEqual(c.ropeScaling, .linear(factor: 8))
        }
        let pairs = [(hf.finalNorm, gguf.finalNorm)] + zip(hf.layers, gguf.layers).flatMap { h, g in
            [(h.attentionNorm, g.attentionNorm), (h.feedForwardNorm, g.feedForwardNorm),
             (h.postAttentionNorm!, g.postAttentionNorm!), (h.postFeedForwardNorm!, g.postFeedForwardNorm!),
             (h.queryNorm!, g.queryNorm!), (h.keyNorm!, g.keyNorm!)]
        }
        for (h, g) in pairs { XCTAssertEqual(h, g) }
        // The sliding layers rotate with their own base, unscaled; the global layer with rope_theta over 8.
        let model = LlamaModel(weights: gguf, pool: ThreadPool(threads: 1))
        XCTAssertEqual(model.layerFrequencies(0, session: model.inverseFrequencies)[1], Float(pow(10_000, -2.0 / 16)), accuracy: 1e-7)
        XCTAssertEqual(model.layerFrequencies(5, session: model.inverseFrequencies)[1], Float(pow(1_000_000, -2.0 / 16) / 8), accuracy: 1e-7)
    }

    /// √hidden in the checkpoint's dtype as transformers computes it (torch 2.13: `float(torch.tensor(d**0.5, dtype=t))`
    /// for Gemma-2-2B's 2304, 9B's 3584, 27B's 4608): bfloat16 48.0, 59.75, 68.0; float16 48.0, 59.875, 67.875.
    func testGemma2EmbeddingScaleInTheModelsDtype() {
        XCTAssertEqual([2304, 3584, 4608].map { LlamaConfiguration.embeddingScale(hidden: $0, dtype: "bfloat16") }, [48, 59.75, 68])
        XCTAssertEqual([2304, 3584, 4608].map { LlamaConfiguration.embeddingScale(hidden: $0, dtype: "float16") }, [48, 59.875, 67.875])
        XCTAssertEqual(LlamaConfiguration.embeddingScale(hidden: 3584, dtype: "float32"), Float(3584).squareRoot())
        XCTAssertEqual(LlamaConfiguration.embeddingScale(hidden: 3584, dtype: nil), 59.866519927978516)
    }

    /// Phi-3's rotary part and LongRoPE as both loaders read them: 12 of the head's 16 values rotated
    /// (partial_rotary_factor 0.75 / rope.dimension_count 12), six short and long factors, the attention factor
    /// √(1 + ln 2 / ln 256) of a context doubled from 256 to 512.
    func testPhi3RotaryPartAndLongRoPE() throws {
        for gguf in [false, true] {
            let model = try TinyReference.model("phi3", gguf: gguf)
            let c = model.configuration
            XCTAssertEqual(model.weights.layers[1].projection(.qkvProj).rows, 16 * (4 + 2 * 2))
            XCTAssertEqual(model.weights.layers[1].projection(.gateUpProj).rows, 2 * 96)
            XCTAssertEqual(c.rotaryDim, 12)
            XCTAssertEqual(model.inverseFrequencies.count, 6)
            XCTAssertEqual(c.maxPositionEmbeddings, 512)
            guard case .longrope(let short, let long, let attention, let original) = c.ropeScaling else {
                return XCTFail("LongRoPE expected, got \(c.ropeScaling)")
            }
            XCTAssertEqual(short.map { Float($0) }, [1.0, 1.05, 1.2, 1.6, 2.5, 4.0])
            XCTAssertEqual(long.count, 6)
            XCTAssertEqual(attention, (1 + log(2.0) / log(256.0)).squareRoot(), accuracy: 1e-6)
            XCTAssertEqual(original, 256)
        }
    }
}
