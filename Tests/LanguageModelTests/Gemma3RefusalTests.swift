import Foundation
import ModelFormats
import TestSupport
import XCTest
@testable import LanguageModel

/// A Gemma 3 file lacking what its block must have, or asking what the block does not compute, is refused naming the
/// file and the tensor, key or field; the spellings of its layer kinds and rope that transformers and llama.cpp accept
/// are read alike. Each case edits the converter's own file (or the HF config) in one place; the unedited copies load.
final class Gemma3RefusalTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws { directory = try Fixtures.temporaryDirectory("gemma3-refusal") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    typealias Tensor = (name: String, dimensions: [Int], type: TensorType, data: [UInt8])

    func rewrite(_ name: String, edit: (inout [(String, GGUFValue)], inout [Tensor]) -> Void) throws -> URL {
        let file = try GGUFFile(url: Fixtures.url("tiny-gemma3/model.gguf.bin"))
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

    func setting(_ key: String, to value: GGUFValue) -> (inout [(String, GGUFValue)], inout [Tensor]) -> Void {
        { metadata, _ in
            metadata.removeAll { $0.0 == key }
            metadata.append((key, value))
        }
    }

    func configuration(_ url: URL) throws -> LlamaConfiguration { try ModelLoader.load(path: url.path, threads: 1).model.configuration }

    func testGGUFKeysAndTensors() throws {
        XCTAssertEqual(try configuration(try rewrite("plain") { _, _ in }).slidingLayers, [true, true, true, true, true, false])
        let noKeyNorm = try rewrite("no-k-norm") { _, tensors in tensors.removeAll { $0.name == "blk.2.attn_k_norm.weight" } }
        assertRefused(noKeyNorm, naming: ["'blk.2.attn_k_norm.weight'"])
        // llama.cpp's gemma3 reads no attention cap: a file carrying one asks what llama.cpp would not compute.
        assertRefused(try rewrite("attention-cap", edit: setting("gemma3.attn_logit_softcapping", to: .float32(50))),
                      naming: ["'gemma3.attn_logit_softcapping'"])
        assertRefused(try rewrite("yarn", edit: setting("gemma3.rope.scaling.type", to: .string("yarn"))),
                      naming: ["'gemma3.rope.scaling.type'", "'yarn'"])
        assertRefused(try rewrite("pattern-string", edit: setting("gemma3.attention.sliding_window_pattern", to: .string("6"))),
                      naming: ["'gemma3.attention.sliding_window_pattern'"])
        assertRefused(try rewrite("pattern-short", edit: setting("gemma3.attention.sliding_window_pattern",
                                                                 to: .array([.bool(true), .bool(false)]))),
                      naming: ["'gemma3.attention.sliding_window_pattern'", "(6)"])
        assertRefused(try rewrite("swa-base-string", edit: setting("gemma3.rope.freq_base_swa", to: .string("1e4"))),
                      naming: ["'gemma3.rope.freq_base_swa' must be a number"])
        // llama_hparams::set_swa_pattern: n = 3 slides layers 0, 1, 3, 4; one flag per layer as given; llama.cpp runs no
        // sliding layer without a window, every layer then with the global rope.
        XCTAssertEqual(try configuration(try rewrite("pattern-3", edit: setting("gemma3.attention.sliding_window_pattern",
                                                                                to: .uint32(3)))).slidingLayers,
                       [true, true, false, true, true, false])
        let flags: [Bool] = [false, true, false, true, false, true]
        XCTAssertEqual(try configuration(try rewrite("pattern-flags", edit: setting("gemma3.attention.sliding_window_pattern",
                                                                                    to: .array(flags.map { .bool($0) })))).slidingLayers,
                       flags)
        let windowless = try configuration(try rewrite("no-window") { metadata, _ in
            metadata.removeAll { $0.0 == "gemma3.attention.sliding_window" }
        })
        XCTAssertEqual(windowless.slidingLayers, [])
        XCTAssertNil(windowless.attentionWindow(layer: 0))
        XCTAssertEqual(try configuration(try rewrite("swa-base", edit: setting("gemma3.rope.freq_base_swa", to: .float32(500))))
            .slidingRopeTheta, 500)
        // llama.cpp's query scale: the head size (16), or hidden / heads (8) for the 62-layer Gemma-3-27B.
        let deep = try rewrite("layers-62", edit: setting("gemma3.block_count", to: .uint32(62)))
        XCTAssertEqual(try LlamaConfiguration(gguf: try GGUFFile(url: deep)).queryPreAttentionScalar, 8)
    }

    /// HF configs: transformers' two spellings of Gemma 3's rope and layer kinds are read alike; what the block does not
    /// compute is refused by field.
    func testHFConfigFields() throws {
        try FileManager.default.copyItem(at: Fixtures.url("tiny-gemma3/model.safetensors"),
                                         to: directory.appendingPathComponent("model.safetensors"))
        let original = try XCTUnwrap(try JSONSerialization.jsonObject(
            with: Data(contentsOf: Fixtures.url("tiny-gemma3/config.json"))) as? [String: Any])
        let url = directory.appendingPathComponent("config.json")
        func load(_ json: [String: Any]) throws -> LlamaConfiguration {
            try JSONSerialization.data(withJSONObject: json).write(to: url)
            return try ModelLoader.loadHFDirectory(directory).configuration
        }
        let reference = try load(original)
        XCTAssertEqual(reference.slidingLayers, [true, true, true, true, true, false])
        // transformers 5's nested rope_parameters and the older top-level keys (rope_scaling for the global layers,
        // rope_theta, rope_local_base_freq) and sliding_window_pattern give the same model.
        var nested = original, flat = original
        for key in ["rope_parameters", "rope_scaling", "rope_theta", "rope_local_base_freq", "layer_types"] {
            nested[key] = nil
            flat[key] = nil
        }
        nested["rope_parameters"] = ["full_attention": ["rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0],
                                     "sliding_attention": ["rope_type": "default", "rope_theta": 10_000.0]]
        flat["rope_scaling"] = ["rope_type": "linear", "factor": 8.0]
        flat["rope_theta"] = 1_000_000.0
        flat["rope_local_base_freq"] = 10_000.0
        flat["sliding_window_pattern"] = 6
        XCTAssertEqual(try load(nested), reference)
        XCTAssertEqual(try load(flat), reference)
        // Gemma3TextConfig's defaults: rope_theta 1e6, rope_local_base_freq 1e4, no caps, query_pre_attn_scalar 256.
        var defaults = flat
        for key in ["rope_scaling", "rope_theta", "rope_local_base_freq", "final_logit_softcapping", "attn_logit_softcapping",
                    "query_pre_attn_scalar"] { defaults[key] = nil }
        let c = try load(defaults)
        XCTAssertEqual([c.ropeTheta, c.slidingRopeTheta, c.queryPreAttentionScalar], [1_000_000, 10_000, 256])
        XCTAssertEqual(c.ropeScaling, RopeScaling.none)
        XCTAssertNil(c.attentionSoftcap)
        var pattern = flat
        pattern["sliding_window_pattern"] = 2
        XCTAssertEqual(try load(pattern).slidingLayers, [true, false, true, false, true, false])
        pattern["sliding_window_pattern"] = 0  // read only without layer_types, as transformers reads it
        XCTAssertThrowsError(try load(pattern)) {
            XCTAssertTrue("\($0)".contains("'sliding_window_pattern' must be a positive integer"), "\($0)")
        }
        let cases: [(String, Any, String)] = [
            ("model_type", "gemma3", "model_type 'gemma3' is not supported"),
            ("layer_types", ["sliding_attention", "full_attention"], "layer_types has 2 entries, expected num_hidden_layers = 6"),
            ("layer_types", Array(repeating: "chunked_attention", count: 6), "layer_types entry 'chunked_attention'"),
            ("rope_parameters", ["full_attention": ["rope_type": "default", "rope_theta": 1e6],
                                 "sliding_attention": ["rope_type": "linear", "factor": 2.0]],
             "rope_parameters.sliding_attention.rope_type 'linear' is not supported"),
            ("rope_parameters", ["full_attention": ["rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                    "high_freq_factor": 4.0, "rope_theta": 1e6]],
             "rope scaling is computed for"),
            ("rope_parameters", ["chunked_attention": ["rope_type": "default"]], "rope_parameters.chunked_attention"),
            ("rope_local_base_freq", -1, "rope_local_base_freq must be a positive number"),
            ("use_bidirectional_attention", true, "use_bidirectional_attention = true"),
            ("hidden_activation", "gelu", "hidden_activation 'gelu' is not supported for model_type 'gemma3_text'"),
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
