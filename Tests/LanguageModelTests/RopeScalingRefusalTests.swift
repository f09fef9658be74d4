import Foundation
import Kernels
import ModelFormats
import TestSupport
import XCTest
@testable import LanguageModel

/// Rope scaling the model does not compute exactly, and broken scaling, is refused with the file and the
/// tensor, key or field named: each case edits the converter's own file (or the HF config.json) of
/// tiny-llama3 / tiny-llama-linear in one place; the unedited copy, written by the same code, loads (the
/// positive control).
final class RopeScalingRefusalTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws { directory = try Fixtures.temporaryDirectory("rope-refusal") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    typealias Tensor = (name: String, dimensions: [Int], type: TensorType, data: [UInt8])

    /// `tiny-<fixture>/model.gguf.bin` rewritten with `edit` applied to its metadata and tensors.
    func rewrite(_ fixture: String, name: String, edit: (inout [(String, GGUFValue)], inout [Tensor]) -> Void) throws -> URL {
        let file = try GGUFFile(url: Fixtures.url("tiny-\(fixture)/model.gguf.bin"))
        var metadata = file.metadataKeys.map { ($0, file.metadata[$0]!) }
        var tensors: [Tensor] = file.tensors.map { ($0.name, $0.dimensions, $0.type, Array(file.data(for: $0))) }
        edit(&metadata, &tensors)
        var writer = GGUFWriter()
        for (key, value) in metadata { writer.set(key, value) }
        for tensor in tensors { try writer.addTensor(name: tensor.name, dimensions: tensor.dimensions, type: tensor.type, data: tensor.data) }
        let url = directory.appendingPathComponent("\(name).gguf")
        try writer.write(to: url)
        return url
    }

    func assertRefused(_ url: URL, naming names: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try ModelLoader.load(path: url.path, threads: 1), file: file, line: line) { error in
            let message = "\(error)"
            for name in [url.lastPathComponent] + names {
                XCTAssertTrue(message.contains(name), "expected '\(name)' in: \(message)", file: file, line: line)
            }
        }
    }

    static func floats(_ values: [Float]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }

    func testUneditedRewritesLoad() throws {
        for fixture in ["llama3", "llama-linear"] {
            let loaded = try ModelLoader.load(path: try rewrite(fixture, name: "plain-\(fixture)") { _, _ in }.path, threads: 1)
            XCTAssertNotEqual(loaded.model.configuration.ropeScaling, .none)
            XCTAssertTrue(try loaded.model.allLogits(tokens: [1, 2, 3]).allSatisfy(\.isFinite))
        }
    }

    func testBadFrequencyFactorsAreNamed() throws {
        func replacingFactors(_ name: String, _ tensor: Tensor) throws -> URL {
            try rewrite("llama3", name: name) { _, tensors in
                tensors = tensors.map { $0.name == "rope_freqs.weight" ? tensor : $0 }
            }
        }
        let tensor = "tensor 'rope_freqs.weight'"
        assertRefused(try replacingFactors("short", ("rope_freqs.weight", [7], .f32, Self.floats(Array(repeating: 2, count: 7)))),
                      naming: [tensor, "dimensions [7], expected [8]"])
        assertRefused(try replacingFactors("f16", ("rope_freqs.weight", [8], .f16, [UInt8](repeating: 0x3c, count: 16))),
                      naming: [tensor, "expected F32"])
        for (label, value) in [("zero", Float(0)), ("negative", -2), ("nan", .nan), ("infinite", .infinity)] {
            var values = [Float](repeating: 8, count: 8)
            values[3] = value
            assertRefused(try replacingFactors("factor-\(label)", ("rope_freqs.weight", [8], .f32, Self.floats(values))),
                          naming: [tensor, "element 3"])
        }
    }

    /// Rope scaling is checked against transformers on the Llama block only, so the other families' files and
    /// configs with a scaling are refused by name (llama.cpp, too, reads rope_freqs.weight for Llama only).
    func testScalingOfOtherFamiliesIsRefused() throws {
        let factors = try rewrite("qwen2", name: "qwen2-rope-freqs") { _, tensors in
            tensors.append(("rope_freqs.weight", [8], .f32, Self.floats(Array(repeating: 1, count: 8))))
        }
        assertRefused(factors, naming: ["tensor 'rope_freqs.weight'", "Llama block", "'qwen2'"])
        let linear = try rewrite("qwen3", name: "qwen3-linear") { metadata, _ in
            metadata.append(("qwen3.rope.scaling.type", .string("linear")))
            metadata.append(("qwen3.rope.scaling.factor", .float32(4)))
        }
        assertRefused(linear, naming: ["'qwen3.rope.scaling.*'", "Llama block", "'qwen3'"])
        // Control: the same keys with factor 1 scale nothing, and the file loads.
        let one = try rewrite("qwen3", name: "qwen3-linear-1") { metadata, _ in
            metadata.append(("qwen3.rope.scaling.type", .string("linear")))
            metadata.append(("qwen3.rope.scaling.factor", .float32(1)))
        }
        XCTAssertEqual(try ModelLoader.load(path: one.path, threads: 1).model.configuration.ropeScaling, .none)
        XCTAssertThrowsError(try loadHF("qwen3") { $0["rope_parameters"] = ["rope_type": "linear", "factor": 4.0, "rope_theta": 1e6] }) {
            XCTAssertTrue("\($0)".contains("computed for model_type 'llama' only") && "\($0)".contains("'qwen3'"), "\($0)")
        }
        XCTAssertEqual(try loadHF("qwen3") { _ in }.configuration.ropeScaling, .none)
    }

    func testScalingTypesAndFactorsNotComputedAreNamed() throws {
        for type in ["longrope", "dynamic", "su"] {
            let url = try rewrite("llama-linear", name: "type-\(type)") { metadata, _ in
                metadata = metadata.map { $0.0 == "llama.rope.scaling.type" ? ($0.0, .string(type)) : $0 }
            }
            assertRefused(url, naming: ["'llama.rope.scaling.type'", "'\(type)'", "not supported"])
        }
        for (label, factor) in [("zero", Float(0)), ("negative", -4), ("nan", .nan)] {
            let url = try rewrite("llama-linear", name: "factor-\(label)") { metadata, _ in
                metadata = metadata.map { $0.0 == "llama.rope.scaling.factor" ? ($0.0, .float32(factor)) : $0 }
            }
            assertRefused(url, naming: ["'llama.rope.scaling.factor'", "must be a positive number"])
        }
        // YaRN's attention factor changes cos and sin even under linear scaling: a key the block does not read.
        let attention = try rewrite("llama-linear", name: "attn-factor") { metadata, _ in
            metadata.append(("llama.rope.scaling.attn_factor", .float32(1.2)))
        }
        assertRefused(attention, naming: ["'llama.rope.scaling.attn_factor'", "not one the Llama block reads"])
        // Both scalings at once: no converter writes it and nothing checks it.
        let both = try rewrite("llama3", name: "freqs-and-linear") { metadata, _ in
            metadata.append(("llama.rope.scaling.type", .string("linear")))
            metadata.append(("llama.rope.scaling.factor", .float32(2)))
        }
        assertRefused(both, naming: ["tensor 'rope_freqs.weight'", "together with linear rope scaling"])
        // The control of the last: type none switches the factor off, as in llama.cpp, and the file loads.
        let none = try rewrite("llama3", name: "freqs-and-none") { metadata, _ in
            metadata.append(("llama.rope.scaling.type", .string("none")))
            metadata.append(("llama.rope.scaling.factor", .float32(2)))
        }
        XCTAssertEqual(try ModelLoader.load(path: none.path, threads: 1).model.configuration.ropeScaling,
                       .frequencyFactors(try RopeScalingTests.converterFactors("llama3")))
    }

    /// YaRN in a GGUF as llama.cpp computes it for these blocks: a factor is required, and the yarn_* keys the
    /// converter writes from a config are accepted only with the values llama.cpp uses in their place (it never
    /// reads them here). tiny-yarn-llama's converter file carries yarn_beta_fast 32 and yarn_beta_slow 1 and loads:
    /// the positive control of the edits.
    func testYarnKeysLlamaCppDoesNotReadAreRefusedUnlessInert() throws {
        let plain = try rewrite("yarn-llama", name: "yarn-plain") { _, _ in }
        let plainFile = try GGUFFile(url: plain)
        XCTAssertEqual(plainFile.double("llama.rope.scaling.yarn_beta_fast"), 32, "the converter wrote the config's betas")
        XCTAssertEqual(try ModelLoader.load(path: plain.path, threads: 1).model.configuration.ropeScaling, YarnTests.scaling)
        func edited(_ name: String, _ key: String, _ value: GGUFValue?) throws -> URL {
            try rewrite("yarn-llama", name: name) { metadata, _ in
                metadata.removeAll { $0.0 == key }
                if let value { metadata.append((key, value)) }
            }
        }
        assertRefused(try edited("no-factor", "llama.rope.scaling.factor", nil),
                      naming: ["'llama.rope.scaling.type' = 'yarn' needs 'llama.rope.scaling.factor'", "missing"])
        for (key, value) in [("yarn_beta_fast", Float(16)), ("yarn_beta_slow", 2), ("yarn_ext_factor", 0.5),
                             ("yarn_log_multiplier", 0.1), ("yarn_attn_factor", 1.5)] {
            assertRefused(try edited("bad-\(key)", "llama.rope.scaling.\(key)", .float32(value)),
                          naming: ["'llama.rope.scaling.\(key)'", "llama.cpp does not read it"])
        }
        let inert = try edited("inert-attn", "llama.rope.scaling.yarn_attn_factor", .float32(Float(1 + 0.1 * log(4.0))))
        XCTAssertEqual(try ModelLoader.load(path: inert.path, threads: 1).model.configuration.ropeScaling, YarnTests.scaling)
        // rope.scaling.attn_factor is the multiplier llama.cpp does read: cos and sin scale by get_mscale(4) · 1.5.
        let multiplied = try edited("attn-factor", "llama.rope.scaling.attn_factor", .float32(1.5))
        guard case .yarn(_, _, _, _, _, let attention) = try ModelLoader.load(path: multiplied.path, threads: 1)
            .model.configuration.ropeScaling else { return XCTFail("attn_factor: not YaRN") }
        XCTAssertEqual(attention, 1.5 * (1 + 0.1 * log(4.0)), accuracy: 1e-6)
        let original = try edited("original", "llama.rope.scaling.original_context_length", nil)
        guard case .yarn(_, let context, _, _, _, _) = try ModelLoader.load(path: original.path, threads: 1)
            .model.configuration.ropeScaling else { return XCTFail("no original context: not YaRN") }
        XCTAssertEqual(context, 1024, "without the key, llama.cpp's original context is context_length")
        let withFactors = try rewrite("yarn-llama", name: "yarn-freqs") { _, tensors in
            tensors.append(("rope_freqs.weight", [8], .f32, Self.floats(Array(repeating: 1, count: 8))))
        }
        assertRefused(withFactors, naming: ["tensor 'rope_freqs.weight' together with YaRN"])
        // Families whose YaRN nothing checks: Phi-3 and Gemma 2 refuse it, in a GGUF and in config.json.
        let phi3 = try rewrite("phi3", name: "phi3-yarn") { metadata, _ in
            metadata.append(("phi3.rope.scaling.type", .string("yarn")))
            metadata.append(("phi3.rope.scaling.factor", .float32(4)))
        }
        assertRefused(phi3, naming: ["'phi3.rope.scaling.type' = 'yarn'", "not 'phi3'"])
        XCTAssertThrowsError(try loadHF("phi3") { $0["rope_parameters"] = ["rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4] }) {
            XCTAssertTrue("\($0)".contains("rope_type 'yarn' is not supported"), "\($0)")
        }
        XCTAssertThrowsError(try loadHF("gemma2") { $0["rope_scaling"] = ["rope_type": "yarn", "factor": 4.0] }) {
            XCTAssertTrue("\($0)".contains("not 'gemma2'"), "\($0)")
        }
    }

    /// The HF directory with its config.json edited by `edit` (model.safetensors copied beside it).
    func loadHF(_ fixture: String, edit: (inout [String: Any]) -> Void) throws -> ModelWeights {
        let folder = directory.appendingPathComponent(UUID().uuidString)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Fixtures.url("tiny-\(fixture)/model.safetensors"),
                                         to: folder.appendingPathComponent("model.safetensors"))
        var config = try Fixtures.json("tiny-\(fixture)/config.json")
        edit(&config)
        try JSONSerialization.data(withJSONObject: config).write(to: folder.appendingPathComponent("config.json"))
        return try ModelLoader.loadHFDirectory(folder)
    }

    func testHFConfigFieldsAreNamed() throws {
        let llama3 = RopeScaling.llama3(factor: 8, lowFrequencyFactor: 1, highFrequencyFactor: 4, originalContext: 64)
        XCTAssertEqual(try loadHF("llama3") { _ in }.configuration.ropeScaling, llama3)
        // transformers 5's spelling: rope_parameters with rope_theta inside; and the newer "rope_type" for linear.
        let moved = try loadHF("llama3") { config in
            var parameters = config.removeValue(forKey: "rope_scaling") as! [String: Any]
            parameters["rope_theta"] = config.removeValue(forKey: "rope_theta")
            config["rope_parameters"] = parameters
        }
        XCTAssertEqual(moved.configuration.ropeScaling, llama3)
        XCTAssertEqual(moved.configuration.ropeTheta, 500_000)
        XCTAssertEqual(try loadHF("llama-linear") { $0["rope_scaling"] = ["rope_type": "linear", "factor": 4] }.configuration.ropeScaling,
                       .linear(factor: 4))
        let cases: [(label: String, scaling: Any, expected: [String])] = [
            ("dynamic without factor", ["rope_type": "dynamic"], ["rope_scaling.factor is missing"]),
            ("yarn zero factor", ["rope_type": "yarn", "factor": 0.0, "original_max_position_embeddings": 64],
             ["rope_scaling.factor = 0.0 must be positive"]),
            ("yarn betas", ["rope_type": "yarn", "factor": 4.0, "beta_fast": 1.0, "beta_slow": 32.0],
             ["rope_scaling.beta_fast (1.0) must be greater than beta_slow (32.0)"]),
            ("yarn zero beta", ["rope_type": "yarn", "factor": 4.0, "beta_slow": 0.0], ["rope_scaling.beta_slow = 0.0 must be positive"]),
            ("yarn truncate", ["rope_type": "yarn", "factor": 4.0, "truncate": "no"], ["rope_scaling.truncate must be true or false"]),
            ("yarn attention", ["rope_type": "yarn", "factor": 4.0, "attention_factor": -1.0],
             ["rope_scaling.attention_factor = -1.0 must be positive"]),
            ("yarn unread key", ["rope_type": "yarn", "factor": 4.0, "low_freq_factor": 1.0],
             ["rope_scaling.low_freq_factor is not supported with rope_type 'yarn'"]),
            ("longrope", ["rope_type": "longrope", "short_factor": [1.0], "long_factor": [2.0]], ["'longrope'"]),
            ("zero factor", ["rope_type": "linear", "factor": 0], ["rope_scaling.factor = 0.0 must be positive"]),
            ("negative factor", ["type": "linear", "factor": -4.0], ["rope_scaling.factor = -4.0 must be positive"]),
            ("no factor", ["rope_type": "linear"], ["rope_scaling.factor is missing"]),
            ("text factor", ["rope_type": "linear", "factor": "4"], ["rope_scaling.factor must be a finite number"]),
            ("equal frequency factors", ["rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 4.0,
                                         "original_max_position_embeddings": 64],
             ["rope_scaling.high_freq_factor (4.0) must be greater than low_freq_factor (4.0)"]),
            ("llama3 zero low", ["rope_type": "llama3", "factor": 8.0, "low_freq_factor": 0.0, "high_freq_factor": 4.0,
                                 "original_max_position_embeddings": 64], ["rope_scaling.low_freq_factor = 0.0 must be positive"]),
            ("llama3 bad original", ["rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 0.5],
             ["rope_scaling.original_max_position_embeddings = 0.5 must be a positive integer"]),
            ("unread key", ["rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                            "original_max_position_embeddings": 64, "attention_factor": 2.0],
             ["rope_scaling.attention_factor is not supported with rope_type 'llama3'"]),
            ("partial rotary", ["rope_type": "linear", "factor": 2.0, "partial_rotary_factor": 0.5],
             ["rope_scaling.partial_rotary_factor = 0.5 is not supported"]),
            ("not an object", "llama3", ["'rope_scaling' must be an object"]),
        ]
        for (label, scaling, expected) in cases {
            XCTAssertThrowsError(try loadHF("llama3") { $0["rope_scaling"] = scaling }, label) { error in
                for text in expected + ["config.json"] {
                    XCTAssertTrue("\(error)".contains(text), "\(label): expected '\(text)' in: \(error)")
                }
            }
        }
    }
}
