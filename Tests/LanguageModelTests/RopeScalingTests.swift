import Foundation
import Kernels
import ModelFormats
import TestSupport
import XCTest
@testable import LanguageModel

/// Llama with rope scaling against transformers + PEFT in float64 (Tests/Fixtures/tiny-llama3: Llama-3.2-shaped,
/// `rope_type: llama3` with factor 8, low/high_freq_factor 1/4 and an original context of 64, so that its 8
/// frequencies fall in all three of llama3's regimes; tiny-llama-linear: `{"type": "linear", "factor": 4}`),
/// from the HF directory and from the GGUF that llama.cpp's convert_hf_to_gguf.py wrote from it (llama3 as
/// `rope_freqs.weight`, linear as `llama.rope.scaling.type` and `.factor`). Inference and training read one
/// frequency table (`LlamaModel.inverseFrequencies`), so both are compared, and the same models with their
/// scaling ignored must fail the same comparisons (the positive control).
final class RopeScalingTests: XCTestCase {
    static let names = ["llama3", "llama-linear"]

    func testLogitsAndLossesMatchTransformers() throws {
        for name in Self.names {
            for gguf in [false, true] {
                for adapter in [false, true] {
                    try TinyReference.checkLogitsAndLosses(name, gguf: gguf, adapter: adapter, architecture: .llama)
                }
            }
        }
    }

    func testLoRAGradientsMatchPEFT() throws {
        for name in Self.names {
            try TinyReference.checkGradients(name, gguf: false)
            try TinyReference.checkGradients(name, gguf: true)
        }
    }

    /// The scaling each file declares, read as what it is, and the table built from it against transformers'
    /// own `rotary_emb.inv_freq` (float32, so a relative tolerance of a few float32 roundings).
    func testFrequencyTablesAreTransformers() throws {
        let expectedScaling: [String: (hf: RopeScaling, gguf: RopeScaling)] = [
            "llama3": (.llama3(factor: 8, lowFrequencyFactor: 1, highFrequencyFactor: 4, originalContext: 64),
                       .frequencyFactors(try Self.converterFactors("llama3"))),
            "llama-linear": (.linear(factor: 4), .linear(factor: 4)),
        ]
        for name in Self.names {
            let expected = try TinyReference.reference(name).tensors.floats("inv_freq")
            for gguf in [false, true] {
                let model = try TinyReference.model(name, gguf: gguf)
                XCTAssertEqual(model.configuration.ropeScaling, gguf ? expectedScaling[name]!.gguf : expectedScaling[name]!.hf,
                               "\(name) \(gguf ? "GGUF" : "HF")")
                XCTAssertEqual(model.inverseFrequencies.count, expected.count)
                let worst = zip(model.inverseFrequencies, expected).map { abs($0 - $1) / $1 }.max()!
                XCTAssertLessThanOrEqual(worst, 1e-6, "\(name) \(gguf ? "GGUF" : "HF"): frequencies off by \(worst) (relative)")
            }
        }
        // The llama3 file's factors are 1 (kept), one blended and 8 (divided): all three regimes are exercised.
        let factors = try Self.converterFactors("llama3")
        XCTAssertEqual(factors.first, 1)
        XCTAssertTrue(factors.contains { $0 > 1 && $0 < 8 }, "\(factors)")
        XCTAssertEqual(factors.last, 8)
    }

    /// rope_freqs.weight as the converter wrote it (reference.json, read back by gguf-py).
    static func converterFactors(_ name: String) throws -> [Float] {
        let json = try Fixtures.json("tiny-\(name)/reference.json")
        let tensors = try XCTUnwrap((json["gguf_rope"] as? [String: Any])?["tensors"] as? [String: [Double]])
        return try XCTUnwrap(tensors["rope_freqs.weight"]).map(Float.init)
    }

    /// The same weights with the scaling dropped (the frequencies θ^(−2i/d) alone): the comparisons above must
    /// fail by far, through inference and through training, or they could not see the scaling.
    func testIgnoringTheScalingFailsTheComparison() throws {
        for name in Self.names {
            let unscaledFrequencies = try TinyReference.reference(name).tensors.floats("inv_freq_unscaled")
            for gguf in [false, true] {
                let weights = try TinyReference.weights(name, gguf: gguf)
                var configuration = weights.configuration
                configuration.ropeScaling = .none
                let unscaled = TinyReference.model(weights, configuration: configuration)
                let worstFrequency = zip(unscaled.inverseFrequencies, unscaledFrequencies).map { abs($0 - $1) / $1 }.max()!
                XCTAssertLessThanOrEqual(worstFrequency, 1e-6, "the control computes transformers' unscaled frequencies")
                let (logit, loss) = try TinyReference.worstDifferences(unscaled, name, adapter: true)
                print("\(name) \(gguf ? "GGUF" : "HF") without its rope scaling: worst logit \(logit), loss \(loss)")
                XCTAssertGreaterThan(logit, 100 * TinyReference.logitTolerance, "\(name): ignoring the scaling must show")
                XCTAssertGreaterThan(loss, 100 * TinyReference.lossTolerance, "\(name): ignoring the scaling must show")
                let trainingLoss = try TinyReference.firstTrainingLoss(unscaled, name)
                XCTAssertGreaterThan(abs(trainingLoss - (try TinyReference.reference(name)).loraLosses[0]),
                                     100 * TinyReference.lossTolerance,
                                     "\(name): training without the scaling must differ")
            }
        }
    }

    /// HF's `dynamic` (config-dynamic.json: factor 4, max_position_embeddings 16, the examples' length) against
    /// transformers' float64 numbers with it: the unscaled frequencies, because transformers changes them only
    /// past max_position_embeddings, and a 17th position is refused by inference (whole and cached) and by
    /// training alike. Control: reading its factor as linear scaling must fail the comparison.
    func testDynamicIsComputedWithinTheContextItAccepts() throws {
        let folder = try Fixtures.temporaryDirectory("rope-dynamic")
        defer { try? FileManager.default.removeItem(at: folder) }
        for (source, target) in [("config-dynamic.json", "config.json"), ("model.safetensors", "model.safetensors")] {
            try FileManager.default.copyItem(at: Fixtures.url("tiny-llama-linear/\(source)"), to: folder.appendingPathComponent(target))
        }
        let weights = try ModelLoader.loadHFDirectory(folder)
        XCTAssertEqual(weights.configuration.ropeScaling, .dynamic(factor: 4))
        XCTAssertEqual(weights.configuration.maxPositionEmbeddings, 16)
        let reference = try TinyReference.reference("llama-linear")
        let json = try Fixtures.json("tiny-llama-linear/reference.json")
        let losses = try XCTUnwrap((json["dynamic"] as? [String: Any])?["loss_per_example"] as? [Double])
        let expected = try reference.tensors.floats("dynamic_logits")
        func worst(_ model: LlamaModel) throws -> (logit: Float, loss: Double) {
            var worstLogit: Float = 0, worstLoss = 0.0
            for (i, ids) in reference.inputIds.enumerated() {
                let logits = try model.allLogits(tokens: ids), start = i * ids.count * model.configuration.vocabSize
                for j in logits.indices { worstLogit = max(worstLogit, abs(logits[j] - expected[start + j])) }
                worstLoss = max(worstLoss, abs(try model.score(tokens: ids, labels: reference.labels[i]).meanLoss - losses[i]))
            }
            return (worstLogit, worstLoss)
        }
        let model = LlamaModel(weights: weights, pool: ThreadPool(threads: 2))
        let (logit, loss) = try worst(model)
        print("llama-linear as dynamic: worst logit difference \(logit), worst loss difference \(loss)")
        XCTAssertLessThanOrEqual(logit, TinyReference.logitTolerance, "dynamic: worst logit \(logit)")
        XCTAssertLessThanOrEqual(loss, TinyReference.lossTolerance, "dynamic: worst loss \(loss)")
        var linear = weights.configuration
        linear.ropeScaling = .linear(factor: 4)
        let control = try worst(TinyReference.model(weights, configuration: linear))
        XCTAssertGreaterThan(control.loss, 100 * TinyReference.lossTolerance, "dynamic's factor read as linear must show")

        let tooLong = reference.inputIds[0] + [reference.inputIds[1][0]]
        XCTAssertThrowsError(try model.allLogits(tokens: tooLong)) { XCTAssertTrue("\($0)".contains("16"), "\($0)") }
        let cache = model.makeCache(capacity: 4)
        try model.forward(tokens: reference.inputIds[0], cache: cache, logits: .none)
        XCTAssertThrowsError(try model.forward(tokens: [1], cache: cache, logits: .last) { _, _ in })
        let lora = TrainableLoRA.from(try TinyReference.adapter("llama-linear", for: model), for: model)
        var gradient = [Float](repeating: 0, count: lora.count)
        XCTAssertThrowsError(try gradient.withUnsafeMutableBufferPointer {
            try model.lossAndGradient(tokens: tooLong, labels: tooLong, lora: lora, gradient: $0.baseAddress!)
        })
    }

    /// Incremental decoding rotates each new row at its own position with the same table: the same logits as
    /// one full pass.
    func testKVCacheMatchesFullPass() throws {
        for name in Self.names {
            let worst = try TinyReference.worstCachedDifference(name)
            XCTAssertLessThan(worst, 1e-4, "\(name): cached vs full logits differ by \(worst)")
        }
    }

    /// `quantize` from the HF directory writes the scaling as llama.cpp reads it (llama3 as rope_freqs.weight,
    /// equal to the converter's; linear as its keys), and the file computes transformers' logits.
    func testExportWritesTheScaling() throws {
        let directory = try Fixtures.temporaryDirectory("rope-export")
        defer { try? FileManager.default.removeItem(at: directory) }
        for name in Self.names {
            let model = try TinyReference.model(name, gguf: false)
            let (file, exported) = try TinyReference.exported(model, to: directory.appendingPathComponent("\(name).gguf"))
            if name == "llama3" {
                guard case .frequencyFactors(let factors) = exported.configuration.ropeScaling else {
                    return XCTFail("llama3 export: \(exported.configuration.ropeScaling)")
                }
                let converter = try Self.converterFactors(name)
                XCTAssertLessThanOrEqual(zip(factors, converter).map { abs($0 - $1) / $1 }.max()!, 1e-6, "\(factors) vs \(converter)")
            } else {
                XCTAssertEqual(file.string("llama.rope.scaling.type"), "linear")
                XCTAssertEqual(exported.configuration.ropeScaling, .linear(factor: 4))
            }
            let (logit, loss) = try TinyReference.worstDifferences(exported, name, adapter: false)
            XCTAssertLessThanOrEqual(logit, TinyReference.logitTolerance, "\(name) exported: worst logit \(logit)")
            XCTAssertLessThanOrEqual(loss, TinyReference.lossTolerance, "\(name) exported: worst loss \(loss)")
        }
    }
}
