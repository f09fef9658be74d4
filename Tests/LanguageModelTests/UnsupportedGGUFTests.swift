import Foundation
import Kernels
import ModelFormats
import TestSupport
import XCTest
@testable import LanguageModel

/// A `llama` GGUF that needs computation the model does not do (rope scalings other than llama3's factors and
/// linear, partial rotary, experts, sliding windows, soft-capping, biases) is refused with the file and the
/// key or tensor named, never run with wrong numbers. The files are written by llama.cpp's own gguf-py
/// (Reference/make_unsupported_ggufs.py); `plain.bin` is the same tiny model with nothing added, which must
/// load and run, and so must the three rope scalings now computed (RopeScalingTests checks their numbers).
final class UnsupportedGGUFTests: XCTestCase {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Reference/unsupported-gguf")

    func load(_ name: String) throws -> LoadedModel {
        try ModelLoader.load(path: Self.directory.appendingPathComponent(name + ".bin").path, threads: 1)
    }

    /// Positive control: the plain file loads and gives finite logits.
    func testPlainTinyLlamaLoadsAndRuns() throws {
        let loaded = try load("plain")
        XCTAssertEqual(loaded.model.configuration.headDim, 8)
        let logits = try loaded.model.allLogits(tokens: [1, 2, 3])
        XCTAssertEqual(logits.count, 3 * 32)
        XCTAssertTrue(logits.allSatisfy(\.isFinite))
    }

    func testEachUnsupportedFeatureIsRefusedNamingFileAndKey() throws {
        let cases: [(file: String, names: [String])] = [
            ("partial-rotary", ["'llama.rope.dimension_count'", "4 is not the head dimension 8"]),
            ("layer-norm", ["'llama.attention.layer_norm_epsilon'"]),
            ("experts", ["'llama.expert_count'", "experts"]),
            ("sliding-window", ["'llama.attention.sliding_window'"]),
            ("logit-softcapping", ["'llama.final_logit_softcapping'"]),
            ("query-bias", ["tensor 'blk.0.attn_q.bias'"]),
        ]
        for (file, names) in cases {
            XCTAssertThrowsError(try load(file), file) { error in
                let message = "\(error)"
                XCTAssertTrue(message.contains("\(file).bin"), "\(file): the error must name the file: \(message)")
                for name in names { XCTAssertTrue(message.contains(name), "\(file): expected '\(name)' in: \(message)") }
                XCTAssertTrue(message.contains("not supported") || message.contains("not one the Llama block reads"),
                              "\(file): \(message)")
            }
        }
    }

    /// The rope scalings gguf-py wrote that are computed: llama3's factors (rope_freqs.weight), linear with its
    /// type, and a factor without a type (linear to llama.cpp), each read as what it is and running.
    func testComputedRopeScalingsLoad() throws {
        let expected: [(String, RopeScaling)] = [("rope-freqs", .frequencyFactors([1, 10.0 / 3, 17.0 / 3, 8])),
                                                 ("rope-scaling-linear", .linear(factor: 8)),
                                                 ("rope-scaling-factor", .linear(factor: 2))]
        for (file, scaling) in expected {
            let loaded = try load(file)
            if case .frequencyFactors(let factors) = scaling, case .frequencyFactors(let read) = loaded.model.configuration.ropeScaling {
                XCTAssertEqual(read.count, factors.count, file)
                for (a, b) in zip(read, factors) { XCTAssertEqual(a, b, accuracy: 1e-6, file) }
            } else {
                XCTAssertEqual(loaded.model.configuration.ropeScaling, scaling, file)
            }
            XCTAssertTrue(try loaded.model.allLogits(tokens: [1, 2, 3]).allSatisfy(\.isFinite), file)
        }
    }

    /// YaRN is computed (YarnTests): the file with its type, factor 4 and original context 32 loads as such.
    func testYarnFileLoads() throws {
        XCTAssertEqual(try load("rope-scaling-yarn").model.configuration.ropeScaling,
                       .yarn(factor: 4, originalContext: 32, betaFast: 32, betaSlow: 1, truncate: true,
                             attentionFactor: RopeScaling.yarnMagnitude(4)))
    }

    /// An HF config whose rope scaling is not computed (Llama with `longrope`) is refused naming the file and the field;
    /// the same directory without the field loads (the positive control).
    func testHFConfigWithRopeScalingIsRefused() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let source = Fixtures.url("tiny-llama")
        for name in ["config.json", "model.safetensors"] {
            try FileManager.default.copyItem(at: source.appendingPathComponent(name), to: directory.appendingPathComponent(name))
        }
        XCTAssertNoThrow(try ModelLoader.loadHFDirectory(directory))
        let configURL = directory.appendingPathComponent("config.json")
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as! [String: Any]
        config["rope_scaling"] = ["rope_type": "longrope", "short_factor": [1.0], "long_factor": [2.0]] as [String: Any]
        try JSONSerialization.data(withJSONObject: config).write(to: configURL)
        XCTAssertThrowsError(try ModelLoader.loadHFDirectory(directory)) { error in
            XCTAssertTrue("\(error)".contains("config.json")
                          && "\(error)".contains("rope_scaling.rope_type 'longrope' is not supported"), "\(error)")
        }
    }

    /// Found by fuzzing (`Tests/Fuzz/Regressions/gguf/oom-block-count-33ea01f6.bin`): a file whose
    /// `llama.block_count` is in the millions made the check list every expected tensor name first, over
    /// 2 GB. The check asks per tensor now: loading the file fails on its own errors, holding little heap.
    func testAHugeBlockCountIsCheckedWithoutListingEveryLayer() throws {
        let file = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fuzz/Regressions/gguf/oom-block-count-33ea01f6.bin")
        let gguf = try GGUFFile(url: file)
        let layers = try LlamaConfiguration(gguf: gguf).numHiddenLayers
        XCTAssertGreaterThan(layers, 1_000_000, "the regression input keeps its huge block count")
        let before = try XCTUnwrap(HeapUsage.bytesInUse())
        XCTAssertThrowsError(try ModelLoader.loadGGUF(gguf))
        let held = try XCTUnwrap(HeapUsage.bytesInUse()) - before
        XCTAssertLessThan(held, 64 << 20, "checking a file of \(layers) layers held \(held) bytes")
        // Control: the per-tensor question gives the listed answer on the plain file's names.
        XCTAssertTrue(GGUFSupport.isExpected("blk.0.attn_q.weight", try LlamaConfiguration(gguf: gguf)))
        XCTAssertFalse(GGUFSupport.isExpected("blk.00.attn_q.weight", try LlamaConfiguration(gguf: gguf)))
        XCTAssertFalse(GGUFSupport.isExpected("blk.\(layers).attn_q.weight", try LlamaConfiguration(gguf: gguf)))
        XCTAssertTrue(GGUFSupport.isExpected("rope_freqs.weight", try LlamaConfiguration(gguf: gguf)))
        var qwen = try LlamaConfiguration(gguf: gguf)
        qwen.architecture = .qwen2
        XCTAssertFalse(GGUFSupport.isExpected("rope_freqs.weight", qwen), "llama.cpp reads frequency factors for llama only")
    }
}
