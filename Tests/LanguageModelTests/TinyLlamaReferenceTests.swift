import Foundation
import Kernels
import ModelFormats
import TestSupport
import XCTest
@testable import LanguageModel

/// The tiny random Llama against HF transformers + PEFT (float64): logits, losses, LoRA logits.
final class TinyLlamaReferenceTests: XCTestCase {
    /// Tolerances from the issue: logits 1e-4 max abs, losses 1e-5.
    static let logitTolerance: Float = 1e-4
    static let lossTolerance = 1e-5

    struct Reference {
        let inputIds: [[Int]]
        let labels: [[Int]]
        let losses: [Double]
        let loraLosses: [Double]
        let logits: [Float]
        let loraLogits: [Float]
    }

    static func reference() throws -> Reference {
        let json = try Fixtures.json("tiny-llama/reference.json")
        let tensors = try SafetensorsFile(url: Fixtures.url("tiny-llama/reference.safetensors"))
        let lora = json["lora"] as! [String: Any]
        return Reference(inputIds: json["input_ids"] as! [[Int]], labels: json["labels"] as! [[Int]],
                         losses: json["loss_per_example"] as! [Double], loraLosses: lora["loss_per_example"] as! [Double],
                         logits: try tensors.floats("logits"), loraLogits: try tensors.floats("lora_logits"))
    }

    func maxAbsDifference(_ a: [Float], _ b: ArraySlice<Float>) -> Float {
        zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
    }

    func check(_ model: LlamaModel, logits expectedLogits: [Float], losses: [Double], label: String) throws {
        let reference = try Self.reference()
        let vocabulary = model.configuration.vocabSize
        var worstLogit: Float = 0, worstLoss = 0.0
        for (i, ids) in reference.inputIds.enumerated() {
            let logits = try model.allLogits(tokens: ids)
            let start = i * ids.count * vocabulary
            worstLogit = max(worstLogit, maxAbsDifference(logits, expectedLogits[start..<(start + ids.count * vocabulary)]))
            let score = try model.score(tokens: ids, labels: reference.labels[i])
            worstLoss = max(worstLoss, abs(score.meanLoss - losses[i]))
        }
        XCTAssertLessThanOrEqual(worstLogit, Self.logitTolerance, "\(label): worst logit difference \(worstLogit)")
        XCTAssertLessThanOrEqual(worstLoss, Self.lossTolerance, "\(label): worst loss difference \(worstLoss)")
    }

    func loadTiny() throws -> LlamaModel {
        LlamaModel(weights: try ModelLoader.loadHFDirectory(Fixtures.url("tiny-llama")), pool: ThreadPool(threads: 2))
    }

    func testBaseLogitsAndLossesMatchTransformers() throws {
        let reference = try Self.reference()
        try check(try loadTiny(), logits: reference.logits, losses: reference.losses, label: "HF layout")
    }

    func testPEFTAdapterLogitsAndLossesMatchPEFT() throws {
        let reference = try Self.reference()
        let model = try loadTiny()
        model.setAdapter(try ModelLoader.loadAdapter(path: Fixtures.url("tiny-llama/peft-adapter").path, for: model))
        try check(model, logits: reference.loraLogits, losses: reference.loraLosses, label: "HF layout + PEFT")
    }

    /// The same weights written as a GGUF (Q/K rows permuted as llama.cpp's converter does) must give
    /// the same numbers through adjacent-pair RoPE, with and without the adapter.
    func testGGUFLayoutGivesTheSameNumbers() throws {
        let reference = try Self.reference()
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let ggufURL = directory.appendingPathComponent("tiny.gguf")
        try TinyGGUF.write(hfDirectory: Fixtures.url("tiny-llama"), to: ggufURL)
        let file = try GGUFFile(url: ggufURL)
        let model = LlamaModel(weights: try ModelLoader.loadGGUF(file), pool: ThreadPool(threads: 2))
        XCTAssertEqual(model.weights.ropeLayout, .adjacentPairs)
        try check(model, logits: reference.logits, losses: reference.losses, label: "GGUF layout")
        model.setAdapter(try ModelLoader.loadAdapter(path: Fixtures.url("tiny-llama/peft-adapter").path, for: model))
        try check(model, logits: reference.loraLogits, losses: reference.loraLosses, label: "GGUF layout + PEFT")
    }

    /// Incremental decoding with the KV cache gives the same logits as one full pass.
    func testKVCacheMatchesFullPass() throws {
        let worst = try TinyReference.worstCachedDifference(loadTiny(), ids: Self.reference().inputIds[0])
        XCTAssertLessThan(worst, 1e-4, "cached vs full logits differ by \(worst)")
    }

    /// One pass over a task record's prompt serves its score and its greedy continuation: the loss is `score`'s (the
    /// forward in two pieces: within the cached-pass tolerance above) and the tokens are `generate`'s exactly, on the
    /// reference records whose labels mask a prompt; a record with no prompt is refused, not continued from nothing.
    func testScoreAndContinueIsScoreThenGenerate() throws {
        let model = try loadTiny(), reference = try Self.reference()
        var continued = 0
        // The reference records, and each again with its first half masked as a prompt.
        let halves = zip(reference.inputIds, reference.labels).map { ids, labels in
            (ids, [Int](repeating: -100, count: ids.count / 2) + labels[(ids.count / 2)...])
        }
        for (ids, labels) in Array(zip(reference.inputIds, reference.labels)) + halves {
            guard let prompt = labels.firstIndex(where: { $0 != -100 }), prompt > 0 else {
                XCTAssertThrowsError(try model.scoreAndContinue(tokens: ids, labels: labels, maxTokens: 6, stopTokens: [])) {
                    XCTAssertTrue("\($0)".contains("no prompt"), "\($0)")
                }
                continue
            }
            let (score, continuation) = try model.scoreAndContinue(tokens: ids, labels: labels, maxTokens: 6, stopTokens: [])
            let alone = try model.score(tokens: ids, labels: labels)
            XCTAssertEqual(score.countedTokens, alone.countedTokens)
            XCTAssertEqual(score.totalLoss, alone.totalLoss, accuracy: 1e-4 * Double(alone.countedTokens))
            let generated = try model.generate(prompt: Array(ids[..<prompt]), maxTokens: 6, sampling: .greedy, stopTokens: [])
            XCTAssertEqual(continuation, generated.tokens)
            XCTAssertEqual(continuation.count, 6)
            // The continuation starts from the prompt, not from the record's end: the control is the continuation of
            // the whole record, which differs.
            let afterRecord = try model.generate(prompt: ids, maxTokens: 6, sampling: .greedy, stopTokens: [])
            XCTAssertNotEqual(continuation, afterRecord.tokens)
            continued += 1
        }
        XCTAssertGreaterThanOrEqual(continued, 1 + reference.inputIds.count, "records with a masked prompt were continued")
    }

    func testOutOfRangeTokenAndContextAreErrors() throws {
        let model = try loadTiny()
        XCTAssertThrowsError(try model.score(tokens: [1, 512])) { XCTAssertTrue("\($0)".contains("512")) }
        XCTAssertThrowsError(try model.score(tokens: [Int](repeating: 1, count: 129))) {
            XCTAssertTrue("\($0)".contains("context"), "\($0)")
        }
        // In release this module has no preconditions (-Ounchecked): unequal labels must throw, not read past the end.
        XCTAssertThrowsError(try model.score(tokens: [1, 2, 3], labels: [1, 2])) {
            XCTAssertTrue("\($0)".contains("2 labels for 3 tokens"), "\($0)")
        }
        XCTAssertNoThrow(try model.score(tokens: [1, 2, 3], labels: [1, 2, 3]))
    }
}

/// Writes an HF float model as a GGUF the way llama.cpp's converter does (for layout tests).
enum TinyGGUF {
    static func write(hfDirectory: URL, to url: URL) throws {
        let c = try LlamaConfiguration(configJSON: hfDirectory.appendingPathComponent("config.json"))
        let tensors = try SafetensorsFile(url: hfDirectory.appendingPathComponent("model.safetensors"))
        var writer = GGUFWriter()
        writer.set("general.architecture", .string("llama"))
        writer.set("llama.block_count", .uint32(UInt32(c.numHiddenLayers)))
        writer.set("llama.context_length", .uint32(UInt32(c.maxPositionEmbeddings)))
        writer.set("llama.embedding_length", .uint32(UInt32(c.hiddenSize)))
        writer.set("llama.feed_forward_length", .uint32(UInt32(c.intermediateSize)))
        writer.set("llama.attention.head_count", .uint32(UInt32(c.numAttentionHeads)))
        writer.set("llama.attention.head_count_kv", .uint32(UInt32(c.numKeyValueHeads)))
        writer.set("llama.rope.freq_base", .float32(Float(c.ropeTheta)))
        writer.set("llama.attention.layer_norm_rms_epsilon", .float32(Float(c.rmsNormEps)))
        writer.set("llama.vocab_size", .uint32(UInt32(c.vocabSize)))
        func add(_ hf: String, _ gguf: String, permuteHeads: Int? = nil) throws {
            let info = tensors.tensors[hf]!
            var values = try tensors.floats(hf)
            if let heads = permuteHeads {
                let rows = info.shape[0], columns = info.shape[1], hd = rows / heads
                var permuted = values
                for row in 0..<rows {
                    let target = RoPEPermutation.ggufRow(ofHFRow: row, headDimension: hd)
                    for col in 0..<columns { permuted[target * columns + col] = values[row * columns + col] }
                }
                values = permuted
            }
            let bytes = values.withUnsafeBytes { Array($0) }
            try writer.addTensor(name: gguf, dimensions: info.shape.reversed(), type: .f32, data: bytes)
        }
        try add("model.embed_tokens.weight", "token_embd.weight")
        try add("lm_head.weight", "output.weight")
        try add("model.norm.weight", "output_norm.weight")
        for l in 0..<c.numHiddenLayers {
            let p = "model.layers.\(l)"
            try add("\(p).input_layernorm.weight", "blk.\(l).attn_norm.weight")
            try add("\(p).post_attention_layernorm.weight", "blk.\(l).ffn_norm.weight")
            try add("\(p).self_attn.q_proj.weight", "blk.\(l).attn_q.weight", permuteHeads: c.numAttentionHeads)
            try add("\(p).self_attn.k_proj.weight", "blk.\(l).attn_k.weight", permuteHeads: c.numKeyValueHeads)
            try add("\(p).self_attn.v_proj.weight", "blk.\(l).attn_v.weight")
            try add("\(p).self_attn.o_proj.weight", "blk.\(l).attn_output.weight")
            try add("\(p).mlp.gate_proj.weight", "blk.\(l).ffn_gate.weight")
            try add("\(p).mlp.up_proj.weight", "blk.\(l).ffn_up.weight")
            try add("\(p).mlp.down_proj.weight", "blk.\(l).ffn_down.weight")
        }
        try writer.write(to: url)
    }
}
