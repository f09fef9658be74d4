import Foundation
import Kernels
import ModelFormats
import TestSupport
import XCTest
@testable import LanguageModel

/// YaRN against transformers + PEFT in float64 (Tests/Fixtures/tiny-yarn-{llama,qwen2,qwen3}: factor 4 over an
/// original context of 256, so that the ramp between beta_fast 32 and beta_slow 1 keeps, blends and interpolates
/// rotary pairs), from the HF directory and from the GGUF llama.cpp's converter wrote (`rope.scaling.type = yarn`,
/// factor, original context; Llama's with yarn_beta_* keys). llama.cpp's own forward on those files agrees with
/// the same float64 numbers (Reference/llamacpp_rope_check.py): its mscale, get_mscale(factor) times
/// `rope.scaling.attn_factor`, is transformers' default attention factor.
final class YarnTests: XCTestCase {
    static let families: [(name: String, architecture: ModelArchitecture)] =
        [("yarn-llama", .llama), ("yarn-qwen2", .qwen2), ("yarn-qwen3", .qwen3)]
    static let scaling = RopeScaling.yarn(factor: 4, originalContext: 256, betaFast: 32, betaSlow: 1, truncate: true,
                                          attentionFactor: 1 + 0.1 * log(4.0))

    func testLogitsAndLossesMatchTransformers() throws {
        for (name, architecture) in Self.families {
            for gguf in [false, true] {
                for adapter in [false, true] {
                    try TinyReference.checkLogitsAndLosses(name, gguf: gguf, adapter: adapter, architecture: architecture)
                }
            }
        }
    }

    func testLoRAGradientsMatchPEFT() throws {
        for (name, _) in Self.families {
            try TinyReference.checkGradients(name, gguf: false)
            try TinyReference.checkGradients(name, gguf: true)
        }
    }

    /// The scaling read from each spelling (rope_type with betas, Qwen2.5's `type`, Qwen3's `rope_type`; the
    /// converter's keys), the frequency table against transformers' `rotary_emb.inv_freq` and the magnitude against
    /// its `attention_scaling`; and the ramp exercises all three regimes.
    func testFrequenciesAndMagnitudeAreTransformers() throws {
        for (name, _) in Self.families {
            let reference = try TinyReference.reference(name)
            let expected = try reference.tensors.floats("inv_freq")
            let json = try Fixtures.json("tiny-\(name)/reference.json")
            let attention = try XCTUnwrap(json["attention_scaling"] as? Double)
            for gguf in [false, true] {
                let model = try TinyReference.model(name, gguf: gguf)
                let label = "\(name) \(gguf ? "GGUF" : "HF")"
                guard case let .yarn(factor, original, betaFast, betaSlow, truncate, magnitude) = model.configuration.ropeScaling,
                      case let .yarn(f, o, bf, bs, t, m) = Self.scaling else {
                    XCTFail("\(label): \(model.configuration.ropeScaling)"); continue
                }
                XCTAssertEqual([factor, Double(original), betaFast, betaSlow], [f, Double(o), bf, bs], label)
                XCTAssertEqual(truncate, t, label)
                XCTAssertEqual(magnitude, m, accuracy: 1e-6, label)  // GGUF's factor is a float32
                XCTAssertEqual(Double(model.ropeMagnitude), attention, accuracy: 1e-6, label)
                XCTAssertEqual(model.inverseFrequencies.count, expected.count, label)
                let worst = zip(model.inverseFrequencies, expected).map { abs($0 - $1) / $1 }.max()!
                XCTAssertLessThanOrEqual(worst, 1e-6, "\(label): frequencies off by \(worst) (relative)")
            }
            let divisors = try XCTUnwrap(RopeFrequencies.divisors(try TinyReference.model(name, gguf: false).configuration))
            XCTAssertEqual(divisors.first, 1, "\(name): the fastest pair is kept")
            XCTAssertTrue(divisors.contains { $0 > 1.01 && $0 < 3.99 }, "\(name): some pairs are blended: \(divisors)")
            XCTAssertEqual(divisors.last, 4, "\(name): the slowest pair is interpolated")
        }
    }

    /// config-variant.json (HF only): truncate false, betas 16 and 2, and mscale 1.5 over mscale_all_dim 0.5 give the
    /// attention factor get_mscale(4, 1.5) / get_mscale(4, 0.5); its frequencies, logits and losses against
    /// transformers'. Controls: the same read with truncate true, or with the default attention factor, must fail.
    func testTruncateBetasAndMscaleMatchTransformers() throws {
        let folder = try Fixtures.temporaryDirectory("yarn-variant")
        defer { try? FileManager.default.removeItem(at: folder) }
        for (source, target) in [("config-variant.json", "config.json"), ("model.safetensors", "model.safetensors")] {
            try FileManager.default.copyItem(at: Fixtures.url("tiny-yarn-llama/\(source)"), to: folder.appendingPathComponent(target))
        }
        let weights = try ModelLoader.loadHFDirectory(folder)
        let attention = RopeScaling.yarnMagnitude(4, 1.5) / RopeScaling.yarnMagnitude(4, 0.5)
        XCTAssertEqual(weights.configuration.ropeScaling, .yarn(factor: 4, originalContext: 256, betaFast: 16, betaSlow: 2,
                                                                truncate: false, attentionFactor: attention))
        let reference = try TinyReference.reference("yarn-llama")
        let json = try XCTUnwrap(try Fixtures.json("tiny-yarn-llama/reference.json")["variant"] as? [String: Any])
        XCTAssertEqual(attention, try XCTUnwrap(json["attention_scaling"] as? Double), accuracy: 1e-12)
        let losses = try XCTUnwrap(json["loss_per_example"] as? [Double])
        let expectedLogits = try reference.tensors.floats("variant_logits")
        let expectedFrequencies = try reference.tensors.floats("variant_inv_freq")
        func worst(_ configuration: LlamaConfiguration) throws -> (frequency: Float, logit: Float, loss: Double) {
            let model = TinyReference.model(weights, configuration: configuration)
            let frequency = zip(model.inverseFrequencies, expectedFrequencies).map { abs($0 - $1) / $1 }.max()!
            var logit: Float = 0, loss = 0.0
            for (i, ids) in reference.inputIds.enumerated() {
                let logits = try model.allLogits(tokens: ids), start = i * ids.count * configuration.vocabSize
                for j in logits.indices { logit = max(logit, abs(logits[j] - expectedLogits[start + j])) }
                loss = max(loss, abs(try model.score(tokens: ids, labels: reference.labels[i]).meanLoss - losses[i]))
            }
            return (frequency, logit, loss)
        }
        let result = try worst(weights.configuration)
        print("yarn variant: frequencies \(result.frequency), worst logit \(result.logit), worst loss \(result.loss)")
        XCTAssertLessThanOrEqual(result.frequency, 1e-6)
        XCTAssertLessThanOrEqual(result.logit, TinyReference.logitTolerance)
        XCTAssertLessThanOrEqual(result.loss, TinyReference.lossTolerance)
        var truncated = weights.configuration, defaultAttention = weights.configuration
        truncated.ropeScaling = .yarn(factor: 4, originalContext: 256, betaFast: 16, betaSlow: 2, truncate: true,
                                      attentionFactor: attention)
        defaultAttention.ropeScaling = .yarn(factor: 4, originalContext: 256, betaFast: 16, betaSlow: 2, truncate: false,
                                             attentionFactor: RopeScaling.yarnMagnitude(4))
        XCTAssertGreaterThan(try worst(truncated).frequency, 1e-3, "truncate must show in the frequencies")
        XCTAssertGreaterThan(try worst(defaultAttention).loss, 10 * TinyReference.lossTolerance, "mscale must show")
        XCTAssertGreaterThan(try worst(defaultAttention).logit, 10 * TinyReference.logitTolerance, "mscale must show")
    }

    /// Each half of YaRN alone, the frequency blend without the attention factor and the attention factor without the
    /// blend, must fail the comparison by far, through inference and training: the tests above see both.
    func testEachHalfOfYarnShows() throws {
        for (name, _) in Self.families {
            let weights = try TinyReference.weights(name, gguf: true)
            let reference = try TinyReference.reference(name)
            guard case let .yarn(factor, original, betaFast, betaSlow, truncate, attention) = weights.configuration.ropeScaling else {
                return XCTFail("\(name): not YaRN")
            }
            for (label, scaling) in [
                ("without the attention factor", RopeScaling.yarn(factor: factor, originalContext: original, betaFast: betaFast,
                                                                  betaSlow: betaSlow, truncate: truncate, attentionFactor: 1)),
                ("without the frequency blend", RopeScaling.yarn(factor: 1, originalContext: original, betaFast: betaFast,
                                                                 betaSlow: betaSlow, truncate: truncate, attentionFactor: attention)),
            ] {
                var configuration = weights.configuration
                configuration.ropeScaling = scaling
                let model = TinyReference.model(weights, configuration: configuration)
                let (logit, loss) = try TinyReference.worstDifferences(model, name, adapter: true)
                print("\(name) \(label): worst logit \(logit), loss \(loss)")
                XCTAssertGreaterThan(logit, 10 * TinyReference.logitTolerance, "\(name) \(label) must show")
                XCTAssertGreaterThan(loss, 10 * TinyReference.lossTolerance, "\(name) \(label) must show")
                let trainingLoss = try TinyReference.firstTrainingLoss(model, name)
                XCTAssertGreaterThan(abs(trainingLoss - reference.loraLosses[0]), 10 * TinyReference.lossTolerance,
                                     "\(name) \(label): training must differ")
            }
        }
    }

    func testKVCacheMatchesFullPass() throws {
        for (name, _) in Self.families {
            let worst = try TinyReference.worstCachedDifference(name)
            XCTAssertLessThan(worst, 1e-4, "\(name): cached vs full logits differ by \(worst)")
        }
    }

    /// `quantize` from the HF directory writes YaRN as the converter does (type, factor, original context), and the
    /// file loads back to the same scaling and computes transformers' logits; a YaRN llama.cpp cannot carry
    /// (config-variant.json's truncate false and other betas) is refused.
    func testExportWritesYarn() throws {
        let directory = try Fixtures.temporaryDirectory("yarn-export")
        defer { try? FileManager.default.removeItem(at: directory) }
        for (name, architecture) in Self.families {
            let model = try TinyReference.model(name, gguf: false)
            let (file, exported) = try TinyReference.exported(model, to: directory.appendingPathComponent("\(name).gguf"))
            let p = architecture.rawValue + "."
            XCTAssertEqual(file.string(p + "rope.scaling.type"), "yarn")
            XCTAssertEqual(file.double(p + "rope.scaling.factor"), 4)
            XCTAssertEqual(file.int(p + "rope.scaling.original_context_length"), 256)
            XCTAssertNil(file.metadata[p + "rope.scaling.attn_factor"], "the default attention factor needs no multiplier")
            XCTAssertEqual(exported.configuration.ropeScaling, model.configuration.ropeScaling)
            let (logit, loss) = try TinyReference.worstDifferences(exported, name, adapter: false)
            XCTAssertLessThanOrEqual(logit, TinyReference.logitTolerance, "\(name) exported: worst logit \(logit)")
            XCTAssertLessThanOrEqual(loss, TinyReference.lossTolerance, "\(name) exported: worst loss \(loss)")
        }
        let folder = directory.appendingPathComponent("variant")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        for (source, target) in [("config-variant.json", "config.json"), ("model.safetensors", "model.safetensors")] {
            try FileManager.default.copyItem(at: Fixtures.url("tiny-yarn-llama/\(source)"), to: folder.appendingPathComponent(target))
        }
        let variant = LlamaModel(weights: try ModelLoader.loadHFDirectory(folder), pool: ThreadPool(threads: 2))
        XCTAssertThrowsError(try ModelExporter.export(LoadedModel(model: variant, tokenizer: nil, gguf: nil), adapter: nil,
                                                      scheme: .uniform(.f32), to: directory.appendingPathComponent("v.gguf"))) {
            XCTAssertTrue("\($0)".contains("truncate false") && "\($0)".contains("llama.cpp computes"), "\($0)")
        }
    }
}
