import Foundation
import Kernels
import ModelFormats
import TestSupport
import XCTest
@testable import LanguageModel

/// A tiny random Phi-3 (fused qkv_proj and gate_up_proj, partial rotary 0.75 and LongRoPE as Phi-4-mini's, a sliding
/// window shorter than its context) against
/// transformers + PEFT in float64 (Tests/Fixtures/tiny-phi3, made by Tests/Fixtures/generate.py): logits,
/// per-example losses, LoRA logits and LoRA gradients on the fused projections, from the HF directory, from the
/// GGUF that llama.cpp's convert_hf_to_gguf.py wrote from it, and from its Q8_0 copy against gguf-py's
/// dequantized weights.
final class Phi3ReferenceTests: XCTestCase {
    func testLogitsAndLossesMatchTransformers() throws {
        for gguf in [false, true] {
            for adapter in [false, true] {
                try TinyReference.checkLogitsAndLosses("phi3", gguf: gguf, adapter: adapter, architecture: .phi3)
            }
        }
    }

    /// One A and one B over each fused output (PEFT's LoRA on qkv_proj and gate_up_proj), through training's pass.
    func testLoRAGradientsMatchPEFT() throws {
        try TinyReference.checkGradients("phi3", gguf: false, tensors: 16)
        try TinyReference.checkGradients("phi3", gguf: true, tensors: 16)
    }

    /// The converter's Q8_0 file against transformers' float64 forward over its weights dequantized by gguf-py
    /// (float32 products: the float files' tolerances), then the default int8 path (row-grouped fused matrices).
    func testQ8_0FileMatchesTransformersOverDequantizedWeights() throws {
        let reference = try TinyReference.reference("phi3")
        let file = try GGUFFile(url: Fixtures.url("tiny-phi3/model-q8_0.gguf.bin"))
        let model = LlamaModel(weights: try ModelLoader.loadGGUF(file), pool: ThreadPool(threads: 2))
        model.precision = .float32
        XCTAssertEqual(model.weights.layers[0].projection(.qkvProj).format, .q8_0, "the file is Q8_0")
        let json = try Fixtures.json("tiny-phi3/reference.json")
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
        print("phi3 Q8_0: worst logit difference \(worstLogit), loss \(worstLoss); Q8_0 vs float \(quantizationEffect)")
        XCTAssertGreaterThan(quantizationEffect, 10 * TinyReference.logitTolerance, "the reference must see the quantization")
        XCTAssertLessThanOrEqual(worstLogit, TinyReference.logitTolerance)
        XCTAssertLessThanOrEqual(worstLoss, TinyReference.lossTolerance)
        model.precision = .int8
        var worstInt8 = 0.0
        for (i, ids) in reference.inputIds.enumerated() {
            worstInt8 = max(worstInt8, abs(try model.score(tokens: ids, labels: reference.labels[i]).meanLoss - losses[i]))
        }
        print("phi3 Q8_0 int8 activations: worst loss difference \(worstInt8)")
        XCTAssertLessThan(worstInt8, QwenReferenceTests.int8LossTolerance, "Q8_0 with int8 activations")
    }

    /// Training's int8 path on the Q8_0 file (int8 forward, backward through transposed Q8_0 copies of the fused
    /// matrices) stays close to its float32 gradient, as LoRAGradientTests asks of the Llama.
    func testInt8TrainingGradientIsCloseToFloat() throws {
        let reference = try TinyReference.reference("phi3")
        let model = LlamaModel(weights: try ModelLoader.loadGGUF(try GGUFFile(url: Fixtures.url("tiny-phi3/model-q8_0.gguf.bin"))),
                               pool: ThreadPool(threads: 2))
        let lora = TrainableLoRA.from(try TinyReference.adapter("phi3", for: model), for: model)
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
        print("phi3 int8 training gradient: relative L2 error \(relative), cosine \(cosine), loss \(exactLoss) vs \(fastLoss)")
        XCTAssertNotEqual(relative, 0, "the int8 path must actually run on a Q8_0 base")
        XCTAssertLessThan(relative, 0.05)
        XCTAssertGreaterThan(cosine, 0.998)
        XCTAssertEqual(fastLoss, exactLoss, accuracy: 0.01)
    }

    /// Incremental decoding (k and v split out of the fused output into the cache's rows) equals one full pass.
    func testKVCacheMatchesFullPass() throws {
        let worst = try TinyReference.worstCachedDifference("phi3")
        XCTAssertLessThan(worst, 1e-4, "cached vs full logits differ by \(worst)")
    }

    /// The converter's file: fused tensors, HF's half-split rows (llama.cpp's NEOX rope), untied output, the window.
    func testStructureAndSlidingWindow() throws {
        for gguf in [false, true] {
            let model = try TinyReference.model("phi3", gguf: gguf)
            let c = model.configuration
            XCTAssertEqual(c.architecture, .phi3)
            XCTAssertEqual(model.weights.ropeLayout, .halfSplit)
            XCTAssertFalse(c.tieWordEmbeddings)
            XCTAssertEqual(model.weights.layers[0].projections.keys.map(\.rawValue).sorted(),
                           ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"])
            XCTAssertEqual(model.weights.layers[1].projection(.qkvProj).rows, 16 * (4 + 2 * 2))
            XCTAssertEqual(model.weights.layers[1].projection(.gateUpProj).rows, 2 * 96)
            XCTAssertEqual(c.headDim, 16)
            XCTAssertEqual(c.rotaryDim, 12, "partial_rotary_factor 0.75 / rope.dimension_count 12")
            XCTAssertEqual(model.inverseFrequencies.count, 6)
            XCTAssertEqual(c.maxPositionEmbeddings, 512)
            guard case .longrope(let short, let long, let attention, let original) = c.ropeScaling else {
                return XCTFail("LongRoPE expected, got \(c.ropeScaling)")
            }
            XCTAssertEqual(short.map { Float($0) }, [1.0, 1.05, 1.2, 1.6, 2.5, 4.0])
            XCTAssertEqual(long.count, 6)
            XCTAssertEqual(attention, (1 + log(2.0) / log(256.0)).squareRoot(), accuracy: 1e-6)
            XCTAssertEqual(original, 256)
            XCTAssertEqual(c.slidingWindow, 32)
            // The window bounds the context: 32 tokens run (the positive control), 33 are refused in both passes.
            XCTAssertEqual(c.contextLength, 32)
            XCTAssertEqual(try model.allLogits(tokens: Array(repeating: 3, count: 32)).count, 32 * c.vocabSize)
            XCTAssertThrowsError(try model.allLogits(tokens: Array(repeating: 3, count: 33))) {
                XCTAssertTrue("\($0)".contains("context of 32"), "\($0)")
            }
            let lora = TrainableLoRA.initialized(for: model, rank: 2, alpha: 4, targets: [.qkvProj], seed: 1)
            var gradient = [Float](repeating: 0, count: lora.count)
            XCTAssertThrowsError(try gradient.withUnsafeMutableBufferPointer {
                try model.lossAndGradient(tokens: Array(repeating: 3, count: 33), labels: Array(repeating: 3, count: 33),
                                          lora: lora, gradient: $0.baseAddress!)
            })
        }
    }

    /// Positive controls: the Phi-3 parts broken one at a time leave the logits far outside the tolerance.
    func testBreakingAPhi3PartFails() throws {
        let weights = try TinyReference.weights("phi3", gguf: true)
        let c = weights.configuration
        let ff = c.intermediateSize, qWidth = c.numAttentionHeads * c.headDim, kvWidth = c.numKeyValueHeads * c.headDim
        // gate_up_proj's halves swapped (up activated instead of gate); qkv_proj's k and v rows swapped.
        let swappedGateUp = rowsSwapped(weights, .gateUpProj, first: 0..<ff, second: ff..<(2 * ff))
        let swappedKV = rowsSwapped(weights, .qkvProj, first: qWidth..<(qWidth + kvWidth),
                                    second: (qWidth + kvWidth)..<(qWidth + 2 * kvWidth))
        let adjacent = ModelWeights(configuration: c, embedding: weights.embedding, output: weights.output,
                                    finalNorm: weights.finalNorm, layers: weights.layers, ropeLayout: .adjacentPairs,
                                    source: weights.source)
        func configured(_ change: (inout LlamaConfiguration) -> Void) -> ModelWeights {
            var changed = c
            change(&changed)
            return ModelWeights(configuration: changed, embedding: weights.embedding, output: weights.output,
                                finalNorm: weights.finalNorm, layers: weights.layers, ropeLayout: weights.ropeLayout,
                                source: weights.source)
        }
        let wholeHead = configured {  // 16 values rotated, the two added pairs with factor 1
            $0.rotaryDim = $0.headDim
            if case .longrope(let short, let long, let attention, let original) = $0.ropeScaling {
                $0.ropeScaling = .longrope(shortFactors: short + [1, 1], longFactors: long + [1, 1], attentionFactor: attention,
                                           originalContext: original)
            }
        }
        let noLongrope = configured { $0.ropeScaling = .none }
        let noAttentionFactor = configured {
            if case .longrope(let short, let long, _, let original) = $0.ropeScaling {
                $0.ropeScaling = .longrope(shortFactors: short, longFactors: long, attentionFactor: 1, originalContext: original)
            }
        }
        for (label, broken) in [("gate/up swapped", swappedGateUp), ("k/v swapped", swappedKV), ("adjacent-pair rope", adjacent),
                                ("every value of the head rotated", wholeHead), ("LongRoPE dropped", noLongrope),
                                ("LongRoPE's attention factor dropped", noAttentionFactor)] {
            let model = LlamaModel(weights: broken, pool: ThreadPool(threads: 2))
            let (worstLogit, _) = try TinyReference.worstDifferences(model, "phi3", adapter: false)
            print("phi3 with \(label): worst logit difference \(worstLogit)")
            XCTAssertGreaterThan(worstLogit, 100 * TinyReference.logitTolerance, label)
        }
        let intact = LlamaModel(weights: weights, pool: ThreadPool(threads: 2))
        XCTAssertLessThanOrEqual(try TinyReference.worstDifferences(intact, "phi3", adapter: false).logit,
                                 TinyReference.logitTolerance)
    }

    /// `weights` with the rows `first` and `second` (of equal length) of one projection exchanged in every layer.
    func rowsSwapped(_ weights: ModelWeights, _ module: ProjectionModule, first: Range<Int>, second: Range<Int>) -> ModelWeights {
        let layers = weights.layers.map { layer -> LayerWeights in
            let matrix = layer.projection(module), columns = matrix.columns
            let values = matrix.dequantized()
            var swapped = values
            for (a, b) in zip(first, second) {
                swapped.replaceSubrange((a * columns)..<((a + 1) * columns), with: values[(b * columns)..<((b + 1) * columns)])
                swapped.replaceSubrange((b * columns)..<((b + 1) * columns), with: values[(a * columns)..<((a + 1) * columns)])
            }
            var projections = layer.projections
            projections[module] = WeightMatrix(float32: swapped, rows: matrix.rows, columns: columns)
            return LayerWeights(attentionNorm: layer.attentionNorm, feedForwardNorm: layer.feedForwardNorm,
                                projections: projections, biases: layer.biases)
        }
        return ModelWeights(configuration: weights.configuration, embedding: weights.embedding, output: weights.output,
                            finalNorm: weights.finalNorm, layers: layers, ropeLayout: weights.ropeLayout, source: weights.source)
    }

    /// PEFT's adapter in (fused targets, shapes checked), through the trainable layout and back out as a PEFT
    /// directory that loads to the same numbers.
    func testPEFTAdapterInAndOut() throws {
        let model = try TinyReference.model("phi3", gguf: true)
        let adapter = try TinyReference.adapter("phi3", for: model)
        XCTAssertEqual(Set(adapter.targets), [.qkvProj, .oProj, .gateUpProj, .downProj])
        XCTAssertEqual(adapter.layers[0][.qkvProj]?.outFeatures, 128)
        XCTAssertEqual(adapter.layers[1][.gateUpProj]?.outFeatures, 192)
        let roundTrip = TrainableLoRA.from(adapter, for: model).adapter()
        let directory = try Fixtures.temporaryDirectory("phi3-adapter")
        defer { try? FileManager.default.removeItem(at: directory) }
        let out = directory.appendingPathComponent("adapter")
        try roundTrip.write(to: out)
        let config = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("adapter_config.json")))
            as? [String: Any])
        XCTAssertEqual(config["target_modules"] as? [String], ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"])
        let reloaded = try ModelLoader.loadAdapter(path: out.path, for: model)
        for layer in 0..<2 {
            for module in adapter.targets {
                XCTAssertEqual(reloaded.layers[layer][module]?.a, adapter.layers[layer][module]?.a, "\(layer) \(module)")
                XCTAssertEqual(reloaded.layers[layer][module]?.b, adapter.layers[layer][module]?.b, "\(layer) \(module)")
            }
        }
    }

    /// `quantize` writes Phi-3 back as a `phi3` file (the adapter merged into the fused matrices, llama.cpp's names,
    /// the window and context as they were), which loads back and computes transformers' LoRA logits. (llama.cpp
    /// runs such files: Reference/llamacpp_phi3_export_check.py.)
    func testExportWritesPhi3() throws {
        let directory = try Fixtures.temporaryDirectory("phi3-export")
        defer { try? FileManager.default.removeItem(at: directory) }
        let source = try ModelLoader.load(path: Fixtures.url("tiny-phi3").path, threads: 2)
        let adapter = try TinyReference.adapter("phi3", for: source.model)
        let url = directory.appendingPathComponent("merged.gguf")
        try ModelExporter.export(source, adapter: adapter, scheme: .uniform(.f32), to: url)
        let file = try GGUFFile(url: url)
        XCTAssertEqual(file.string("general.architecture"), "phi3")
        XCTAssertEqual(file.int("phi3.attention.sliding_window"), 32)
        XCTAssertEqual(file.int("phi3.context_length"), 512)
        XCTAssertEqual(file.int("phi3.rope.scaling.original_context_length"), 256)
        XCTAssertEqual(file.double("phi3.rope.scaling.attn_factor") ?? 0, (1 + log(2.0) / log(256.0)).squareRoot(), accuracy: 1e-6)
        XCTAssertEqual(file.tensor(named: "rope_factors_short.weight")?.dimensions, [6])
        XCTAssertEqual(file.tensor(named: "rope_factors_long.weight")?.dimensions, [6])
        XCTAssertEqual(file.int("phi3.rope.dimension_count"), 12, "the rotary part of the head")
        XCTAssertEqual(file.tensor(named: "blk.1.attn_qkv.weight")?.dimensions, [64, 128])
        XCTAssertEqual(file.tensor(named: "blk.1.ffn_up.weight")?.dimensions, [64, 192])
        XCTAssertFalse(file.metadataKeys.contains { $0.hasPrefix("llama.") }, "no Llama keys in a Phi-3 file")
        XCTAssertEqual(file.tensors.count, 5 + 2 * 6, "embedding, output, final norm, 2 LongRoPE factors; 2 norms and 4 matrices a layer")
        let model = LlamaModel(weights: try ModelLoader.loadGGUF(file), pool: ThreadPool(threads: 2))
        let reference = try TinyReference.reference("phi3")
        let expected = try reference.tensors.floats("lora_logits")
        var worst: Float = 0
        for (i, ids) in reference.inputIds.enumerated() {
            let logits = try model.allLogits(tokens: ids)
            for j in logits.indices { worst = max(worst, abs(logits[j] - expected[i * logits.count + j])) }
        }
        print("phi3 merged f32 export: worst logit difference from PEFT's \(worst)")
        XCTAssertLessThanOrEqual(worst, TinyReference.logitTolerance)
        // The K-quant mix: attn_qkv counts as attn_v for llama.cpp (Q6_K on use_more_bits layers: the last of two),
        // then falls back on these 64-value rows as llama-quantize does (Q6_K → Q8_0, Q4_K → Q5_0).
        let mixed = directory.appendingPathComponent("q4_k_m.gguf")
        try ModelExporter.export(source, adapter: nil, scheme: .kQuantMix(.q4_K), to: mixed)
        let mixedFile = try GGUFFile(url: mixed)
        XCTAssertEqual(mixedFile.tensor(named: "blk.0.attn_qkv.weight")?.type, .q5_0)
        XCTAssertEqual(mixedFile.tensor(named: "blk.1.attn_qkv.weight")?.type, .q8_0)
        XCTAssertEqual(mixedFile.tensor(named: "blk.1.ffn_up.weight")?.type, .q5_0)
        XCTAssertEqual(try ModelLoader.load(path: mixed.path, threads: 1).model.configuration.architecture, .phi3)
    }

    /// A LoRA on a projection Phi-3 fuses away would train nothing: refused by name, with the fused one to use.
    func testUnfusedTargetsAreRefused() throws {
        let model = try TinyReference.model("phi3", gguf: false)
        XCTAssertNoThrow(try model.configuration.checkTargets([.qkvProj, .gateUpProj], source: "test"))
        XCTAssertThrowsError(try model.configuration.checkTargets([.qkvProj, .upProj], source: "test")) {
            XCTAssertTrue("\($0)".contains("'up_proj'") && "\($0)".contains("'gate_up_proj'"), "\($0)")
        }
        // tiny-llama's adapter (down_proj, gate_proj, ... in its config's order) on the Phi-3 model.
        XCTAssertThrowsError(try TinyReference.adapter("llama", for: model)) {
            XCTAssertTrue("\($0)".contains("'gate_proj'") && "\($0)".contains("'gate_up_proj'"), "\($0)")
        }
        // And the reverse: a fused target on a Llama block.
        let llama = try TinyReference.model("llama", gguf: false)
        XCTAssertThrowsError(try llama.configuration.checkTargets([.qkvProj], source: "test")) {
            XCTAssertTrue("\($0)".contains("'qkv_proj'") && "\($0)".contains("Llama"), "\($0)")
        }
    }
}

/// What the Phi-3 description does not cover, and a Phi-3 file lacking what it must have, are refused naming the
/// file and the tensor, key or field. Each case edits the converter's own file (or the HF config) in one place;
/// the unedited rewrite loads (the positive control).
final class Phi3RefusalTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws { directory = try Fixtures.temporaryDirectory("phi3-refusal") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    typealias Tensor = (name: String, dimensions: [Int], type: TensorType, data: [UInt8])

    func rewrite(_ name: String, edit: (inout [(String, GGUFValue)], inout [Tensor]) -> Void) throws -> URL {
        let file = try GGUFFile(url: Fixtures.url("tiny-phi3/model.gguf.bin"))
        var metadata = file.metadataKeys.map { ($0, file.metadata[$0]!) }
        var tensors = file.tensors.map { (name: $0.name, dimensions: $0.dimensions, type: $0.type, data: Array(file.data(for: $0))) }
        edit(&metadata, &tensors)
        var writer = GGUFWriter()
        for (key, value) in metadata { writer.set(key, value) }
        for tensor in tensors {
            try writer.addTensor(name: tensor.name, dimensions: tensor.dimensions, type: tensor.type, data: tensor.data)
        }
        let url = directory.appendingPathComponent("\(name).gguf")
        try writer.write(to: url)
        return url
    }

    func assertRefused(_ url: URL, naming names: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try ModelLoader.load(path: url.path, threads: 1), file: file, line: line) { error in
            for name in [url.lastPathComponent] + names {
                XCTAssertTrue("\(error)".contains(name), "expected '\(name)' in: \(error)", file: file, line: line)
            }
        }
    }

    func f32(_ count: Int) -> [UInt8] { [Float](repeating: 1, count: count).withUnsafeBytes { Array($0) } }

    func testUneditedRewriteLoads() throws {
        let loaded = try ModelLoader.load(path: try rewrite("plain") { _, _ in }.path, threads: 1)
        XCTAssertEqual(loaded.model.configuration.architecture, .phi3)
        XCTAssertTrue(try loaded.model.allLogits(tokens: [1, 2, 3]).allSatisfy(\.isFinite))
    }

    func testMissingOrMisshapenTensorsAreNamed() throws {
        let missing = try rewrite("no-qkv") { _, tensors in tensors.removeAll { $0.name == "blk.1.attn_qkv.weight" } }
        assertRefused(missing, naming: ["'blk.1.attn_qkv.weight'"])
        // q, k, v of 4 + 2·2 heads of 16 are 128 rows; 120 is not.
        let shortQKV = try rewrite("short-qkv") { _, tensors in
            tensors = tensors.map { $0.name == "blk.0.attn_qkv.weight" ? ($0.name, [64, 120], .f32, f32(64 * 120)) : $0 }
        }
        assertRefused(shortQKV, naming: ["'blk.0.attn_qkv.weight'", "[64, 120]", "expected [64, 128]"])
        // ffn_up holds gate and up: 2·96 rows, not 96.
        let unfusedUp = try rewrite("unfused-up") { _, tensors in
            tensors = tensors.map { $0.name == "blk.1.ffn_up.weight" ? ($0.name, [64, 96], .f32, f32(64 * 96)) : $0 }
        }
        assertRefused(unfusedUp, naming: ["'blk.1.ffn_up.weight'", "expected [64, 192]"])
        // Separate q, k, v (another family's layout) are not this block's; LongRoPE needs both factor tensors, one
        // factor per rotary pair (6), and its original context.
        let separate = try rewrite("separate-q") { _, tensors in
            tensors.append((name: "blk.0.attn_q.weight", dimensions: [64, 64], type: .f32, data: f32(64 * 64)))
        }
        assertRefused(separate, naming: ["tensor 'blk.0.attn_q.weight'", "Phi-3 block"])
        let noShort = try rewrite("no-short-factors") { _, tensors in tensors.removeAll { $0.name == "rope_factors_short.weight" } }
        assertRefused(noShort, naming: ["'rope_factors_short.weight' is missing"])
        let longFactors = try rewrite("long-factors-8") { _, tensors in
            tensors = tensors.map { $0.name == "rope_factors_long.weight" ? ($0.name, [8], .f32, f32(8)) : $0 }
        }
        assertRefused(longFactors, naming: ["tensor 'rope_factors_long.weight'", "expected [6]"])
        let noOriginal = try rewrite("no-original") { metadata, _ in
            metadata.removeAll { $0.0 == "phi3.rope.scaling.original_context_length" }
        }
        assertRefused(noOriginal, naming: ["'phi3.rope.scaling.original_context_length'"])
        let rope_freqs = try rewrite("rope-freqs") { _, tensors in
            tensors.append((name: "rope_freqs.weight", dimensions: [8], type: .f32, data: f32(8)))
        }
        assertRefused(rope_freqs, naming: ["tensor 'rope_freqs.weight'"])
    }

    func testMissingOrUnsupportedKeysAreNamed() throws {
        for key in ["phi3.block_count", "phi3.feed_forward_length", "phi3.attention.head_count", "phi3.embedding_length"] {
            let url = try rewrite("no-\(key)") { metadata, _ in metadata.removeAll { $0.0 == key } }
            assertRefused(url, naming: ["'\(key)'"])
        }
        // A rotary dimension that is odd or beyond the head (the file's own 12 of 16 loads), yarn, and a window that
        // is not an integer.
        for bad in [13, 18] {
            let partial = try rewrite("rotary-\(bad)") { metadata, _ in
                metadata = metadata.map { $0.0 == "phi3.rope.dimension_count" ? ($0.0, .uint32(UInt32(bad))) : $0 }
            }
            assertRefused(partial, naming: ["'phi3.rope.dimension_count' = \(bad)", "head dimension 16"])
        }
        let yarn = try rewrite("yarn") { metadata, _ in metadata.append(("phi3.rope.scaling.type", .string("yarn"))) }
        assertRefused(yarn, naming: ["'phi3.rope.scaling.type'", "'yarn'"])
        let window = try rewrite("window") { metadata, _ in
            metadata = metadata.map { $0.0 == "phi3.attention.sliding_window" ? ($0.0, .string("64")) : $0 }
        }
        assertRefused(window, naming: ["'phi3.attention.sliding_window'"])
        // A window of 0 is llama.cpp's "none": the context is max_position_embeddings (512; past LongRoPE's original
        // 256, a session takes the long factors: LongRopeContextTests).
        let none = try rewrite("window-0") { metadata, _ in
            metadata = metadata.map { $0.0 == "phi3.attention.sliding_window" ? ($0.0, .uint32(0)) : $0 }
        }
        let c = try ModelLoader.load(path: none.path, threads: 1).model.configuration
        XCTAssertNil(c.slidingWindow)
        XCTAssertEqual(c.contextLength, 512)
    }

    /// HF configs: what Phi-3's newer checkpoints add and the block does not compute is refused by field.
    func testHFConfigFieldsAreRefused() throws {
        try FileManager.default.copyItem(at: Fixtures.url("tiny-phi3/model.safetensors"),
                                         to: directory.appendingPathComponent("model.safetensors"))
        let original = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.url("tiny-phi3/config.json")))
            as? [String: Any])
        let url = directory.appendingPathComponent("config.json")
        func load(_ json: [String: Any]) throws -> ModelWeights {
            try JSONSerialization.data(withJSONObject: json).write(to: url)
            return try ModelLoader.loadHFDirectory(directory)
        }
        XCTAssertEqual(try load(original).configuration.slidingWindow, 32)
        XCTAssertEqual(try load(original).configuration.rotaryDim, 12)
        var topLevel = original  // transformers 4's spelling: the factor beside the config's other keys
        topLevel["rope_parameters"] = NSNull()
        topLevel["rope_theta"] = 10000.0
        topLevel["partial_rotary_factor"] = 0.5
        XCTAssertEqual(try load(topLevel).configuration.rotaryDim, 8)
        var noWindow = original
        noWindow["sliding_window"] = NSNull()
        XCTAssertEqual(try load(noWindow).configuration.contextLength, 512)
        let parameters = try XCTUnwrap(original["rope_parameters"] as? [String: Any])
        func longrope(_ change: (inout [String: Any]) -> Void) -> [String: Any] {
            var object = parameters
            change(&object)
            return object
        }
        // An explicit attention_factor is taken as it is (transformers'), not recomputed from the contexts.
        var explicit = original
        explicit["rope_parameters"] = longrope { $0["attention_factor"] = 1.5 }
        guard case .longrope(_, _, let attention, _)? = try? load(explicit).configuration.ropeScaling else {
            return XCTFail("longrope with attention_factor")
        }
        XCTAssertEqual(attention, 1.5)
        let cases: [(String, Any, String)] = [
            ("rope_parameters", ["rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.1],
             "partial_rotary_factor = 0.1 rotates 1 of the head's 16"),
            ("rope_parameters", ["rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.5],
             "partial_rotary_factor = 1.5 must be in (0, 1]"),
            ("rope_parameters", longrope { $0["short_factor"] = [1.0, 2.0] }, "short_factor has 2 values, expected 6"),
            ("rope_parameters", longrope { $0["long_factor"] = nil }, "rope_parameters.long_factor must be a list"),
            ("rope_parameters", longrope { $0["short_factor"] = [1.0, 1.0, 1.0, -1.0, 1.0, 1.0] }, "short_factor[3] must be a positive"),
            ("rope_parameters", longrope { $0["original_max_position_embeddings"] = 128 }, "differs from the top-level"),
            ("rope_parameters", longrope { $0["rope_type"] = "yarn" }, "rope_type 'yarn' is not supported"),
            ("rope_parameters", longrope { $0["mscale"] = 1.0 }, "rope_parameters.mscale is not supported"),
            ("attention_bias", true, "attention_bias = true"),
            ("hidden_act", "gelu_new", "hidden_act 'gelu_new'"),
            ("sliding_window", 0, "sliding_window = 0"),
            ("sliding_window", "64", "'sliding_window' must be an integer"),
        ]
        for (key, value, expected) in cases {
            var json = original
            json[key] = value
            XCTAssertThrowsError(try load(json), key) { error in
                XCTAssertTrue("\(error)".contains(expected) && "\(error)".contains(url.path), "\(key): \(error)")
            }
        }
    }
}
