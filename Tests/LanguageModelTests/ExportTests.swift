import Foundation
import Kernels
import ModelFormats
import TestSupport
import XCTest
@testable import LanguageModel

/// `quantize`'s exporter: what it writes loads back and computes what PEFT computes.
final class ExportTests: XCTestCase {
    /// tiny-llama (HF layout) with the PEFT adapter merged, written as F32 GGUF (llama.cpp layout):
    /// its logits must equal PEFT's LoRA logits.
    func testMergedAdapterExportReproducesPEFTLogits() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let weights = try ModelLoader.loadHFDirectory(Fixtures.url("tiny-llama"))
        let model = LlamaModel(weights: weights, pool: ThreadPool(threads: 2))
        let adapter = try ModelLoader.loadAdapter(path: Fixtures.url("tiny-llama/peft-adapter").path, for: model)
        let url = directory.appendingPathComponent("merged.gguf")
        try ModelExporter.export(LoadedModel(model: model, tokenizer: nil, gguf: nil), adapter: adapter, type: .f32, to: url)

        let file = try GGUFFile(url: url)
        XCTAssertEqual(file.bool("conclave.adapter_merged"), true)
        let merged = LlamaModel(weights: try ModelLoader.loadGGUF(file), pool: ThreadPool(threads: 2))
        let reference = try TinyLlamaReferenceTests.reference()
        let vocabulary = merged.configuration.vocabSize
        var worst: Float = 0
        for (i, ids) in reference.inputIds.enumerated() {
            let logits = try merged.allLogits(tokens: ids)
            let start = i * ids.count * vocabulary
            for j in logits.indices { worst = max(worst, abs(logits[j] - reference.loraLogits[start + j])) }
        }
        XCTAssertLessThanOrEqual(worst, TinyLlamaReferenceTests.logitTolerance, "merged export: worst logit difference \(worst)")
    }

    /// Each output type round-trips through our reader, and quantization error stays within its class.
    func testEveryOutputTypeLoadsBack() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let weights = try ModelLoader.loadHFDirectory(Fixtures.url("tiny-llama"))
        let model = LlamaModel(weights: weights, pool: ThreadPool(threads: 2))
        let reference = try TinyLlamaReferenceTests.reference()
        // Loss drift allowed per type on this random model (4-bit is coarse).
        let drift: [String: Double] = ["f32": 1e-5, "f16": 1e-3, "q8_0": 1e-2, "q4_1": 0.1, "q4_0": 0.1]
        for (name, type) in ModelExporter.formats {
            let url = directory.appendingPathComponent("\(name).gguf")
            try ModelExporter.export(LoadedModel(model: model, tokenizer: nil, gguf: nil), adapter: nil, type: type, to: url)
            let file = try GGUFFile(url: url)
            XCTAssertEqual(file.tensor(named: "blk.0.attn_q.weight")?.type, type)
            let loaded = LlamaModel(weights: try ModelLoader.loadGGUF(file), pool: ThreadPool(threads: 2))
            let score = try loaded.score(tokens: reference.inputIds[0], labels: reference.labels[0])
            XCTAssertEqual(score.meanLoss, reference.losses[0], accuracy: drift[name]!, "\(name)")
        }
    }
}
