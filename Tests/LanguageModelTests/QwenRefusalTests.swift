import Foundation
import Kernels
import ModelFormats
import TestSupport
import XCTest
@testable import LanguageModel

/// What the Qwen block descriptions do not cover is refused with the file and the tensor, key or field
/// named, never run with wrong numbers. Each case edits the converter's own file (or the HF config) in one
/// place; the unedited copy, written by the same code, loads (the positive control).
final class QwenRefusalTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws { directory = try Fixtures.temporaryDirectory("qwen-refusal") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    /// The fixture's GGUF rewritten with `edit` applied to its metadata and tensor list.
    func rewrite(_ family: String, name: String,
                 edit: (inout [(String, GGUFValue)], inout [(name: String, dimensions: [Int], type: TensorType, data: [UInt8])]) -> Void)
        throws -> URL {
        let file = try GGUFFile(url: Fixtures.url("tiny-\(family)/model.gguf.bin"))
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
            let message = "\(error)"
            for name in [url.lastPathComponent] + names {
                XCTAssertTrue(message.contains(name), "expected '\(name)' in: \(message)", file: file, line: line)
            }
        }
    }

    func testUneditedRewriteLoads() throws {
        for family in ["qwen2", "qwen3"] {
            let url = try rewrite(family, name: "plain-\(family)") { _, _ in }
            let loaded = try ModelLoader.load(path: url.path, threads: 1)
            XCTAssertTrue(try loaded.model.allLogits(tokens: [1, 2, 3]).allSatisfy(\.isFinite))
        }
    }

    func testMissingBiasIsNamed() throws {
        let url = try rewrite("qwen2", name: "no-v-bias") { _, tensors in tensors.removeAll { $0.name == "blk.1.attn_v.bias" } }
        assertRefused(url, naming: ["blk.1.attn_v.bias"])
    }

    func testTensorOfAnotherFamilyIsRefused() throws {
        // A Qwen3 head norm in a Qwen2 file, and a Qwen2 bias in a Qwen3 file.
        let norm = try rewrite("qwen2", name: "qwen2-with-q-norm") { _, tensors in
            tensors.append((name: "blk.0.attn_q_norm.weight", dimensions: [16], type: .f32,
                            data: [Float](repeating: 1, count: 16).withUnsafeBytes { Array($0) }))
        }
        assertRefused(norm, naming: ["tensor 'blk.0.attn_q_norm.weight'", "Qwen2 block"])
        let bias = try rewrite("qwen3", name: "qwen3-with-q-bias") { _, tensors in
            tensors.append((name: "blk.0.attn_q.bias", dimensions: [128], type: .f32,
                            data: [Float](repeating: 0, count: 128).withUnsafeBytes { Array($0) }))
        }
        assertRefused(bias, naming: ["tensor 'blk.0.attn_q.bias'", "Qwen3 block"])
    }

    func testUnreadKeysAreRefused() throws {
        let sliding = try rewrite("qwen3", name: "qwen3-sliding") { metadata, _ in
            metadata.append(("qwen3.attention.sliding_window", .uint32(64)))
        }
        assertRefused(sliding, naming: ["'qwen3.attention.sliding_window'", "Qwen3 block"])
        let yarn = try rewrite("qwen2", name: "qwen2-yarn") { metadata, _ in
            metadata.append(("qwen2.rope.scaling.type", .string("yarn")))
        }
        assertRefused(yarn, naming: ["'qwen2.rope.scaling.type'", "'yarn'"])  // computed (YarnTests), but not without a factor
        // Gemma 2's soft-capping key on another family: a computation its block does not do.
        let softcap = try rewrite("qwen3", name: "qwen3-softcap") { metadata, _ in
            metadata.append(("qwen3.attn_logit_softcapping", .float32(0.5)))
        }
        assertRefused(softcap, naming: ["'qwen3.attn_logit_softcapping'", "Qwen3 block"])
        let partial = try rewrite("qwen3", name: "qwen3-partial-rotary") { metadata, _ in
            metadata.append(("qwen3.rope.dimension_count", .uint32(16)))
        }
        assertRefused(partial, naming: ["'qwen3.rope.dimension_count'", "16 is not the head dimension 32"])
    }

    func testUnknownArchitectureIsNamed() throws {
        let url = try rewrite("qwen2", name: "gemma3") { metadata, _ in
            metadata = metadata.map { $0.0 == "general.architecture" ? ($0.0, .string("gemma3")) : $0 }
        }
        assertRefused(url, naming: ["architecture 'gemma3'", "'qwen3'", "'gemma2'"])
    }

    /// HF configs: each field the Qwen blocks do not compute is refused by name; the fixture's own loads.
    func testHFConfigFieldsAreRefused() throws {
        for name in ["model.safetensors"] {
            try FileManager.default.copyItem(at: Fixtures.url("tiny-qwen3/\(name)"), to: directory.appendingPathComponent(name))
        }
        let original = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.url("tiny-qwen3/config.json")))
            as? [String: Any])
        let url = directory.appendingPathComponent("config.json")
        func load(_ json: [String: Any]) throws -> ModelWeights {
            try JSONSerialization.data(withJSONObject: json).write(to: url)
            return try ModelLoader.loadHFDirectory(directory)
        }
        XCTAssertEqual(try load(original).configuration.architecture, .qwen3)
        XCTAssertEqual(try load(original).configuration.ropeTheta, 1_000_000, "rope_theta inside rope_parameters")
        let cases: [(String, Any, String)] = [
            ("attention_bias", true, "attention_bias = true"),
            ("use_sliding_window", true, "use_sliding_window"),
            ("layer_types", ["full_attention", "sliding_attention"], "'sliding_attention'"),
            ("rope_parameters", ["rope_type": "linear", "rope_theta": 1e6, "factor": 4.0], "computed for model_type 'llama' only"),
            ("model_type", "qwen3_moe", "'qwen3_moe'"),
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
