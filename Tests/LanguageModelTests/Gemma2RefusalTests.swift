import Foundation
import ModelFormats
import TestSupport
import XCTest
@testable import LanguageModel

/// A Gemma 2 file lacking what its block must have, or carrying what the block does not compute, is refused naming
/// the file and the tensor, key or field. Each case edits the converter's own file (or the HF config) in one place;
/// the unedited rewrite loads (the positive control).
final class Gemma2RefusalTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws { directory = try Fixtures.temporaryDirectory("gemma2-refusal") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    typealias Tensor = (name: String, dimensions: [Int], type: TensorType, data: [UInt8])

    func rewrite(_ name: String, edit: (inout [(String, GGUFValue)], inout [Tensor]) -> Void) throws -> URL {
        let file = try GGUFFile(url: Fixtures.url("tiny-gemma2/model.gguf.bin"))
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

    func setting(_ key: String, to value: GGUFValue) -> (inout [(String, GGUFValue)], inout [Tensor]) -> Void {
        { metadata, _ in metadata = metadata.map { $0.0 == key ? ($0.0, value) : $0 } }
    }

    func testUneditedRewriteLoads() throws {
        let loaded = try ModelLoader.load(path: try rewrite("plain") { _, _ in }.path, threads: 1)
        XCTAssertEqual(loaded.model.configuration.architecture, .gemma2)
        XCTAssertTrue(try loaded.model.allLogits(tokens: [1, 2, 3]).allSatisfy(\.isFinite))
    }

    /// The fuzz seeds (Tests/Fuzz/Corpus: gguf/gemma2.bin, hf-config/tiny-gemma2.json) are accepted, so the gguf and
    /// hf-config targets start inside the Gemma 2 paths (the targets themselves ignore a loader's error).
    func testFuzzSeedsLoad() throws {
        let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fuzz/Corpus")
        let weights = try ModelLoader.loadGGUF(try GGUFFile(url: corpus.appendingPathComponent("gguf/gemma2.bin")))
        XCTAssertEqual(weights.configuration.architecture, .gemma2)
        XCTAssertEqual(weights.configuration.finalLogitSoftcap, 30)
        XCTAssertNotNil(weights.layers[0].postFeedForwardNorm)
        let c = try LlamaConfiguration(configJSON: corpus.appendingPathComponent("hf-config/tiny-gemma2.json"))
        XCTAssertEqual(c.attentionSoftcap, 50)
        XCTAssertEqual(c.slidingWindow, 32)
    }

    func testMissingOrMisshapenTensorsAreNamed() throws {
        let noPost = try rewrite("no-post-ffw") { _, tensors in tensors.removeAll { $0.name == "blk.1.post_ffw_norm.weight" } }
        assertRefused(noPost, naming: ["'blk.1.post_ffw_norm.weight'"])
        let shortPost = try rewrite("short-post-attention") { _, tensors in
            tensors = tensors.map { $0.name == "blk.0.post_attention_norm.weight" ? ($0.name, [32], .f32, f32(32)) : $0 }
        }
        assertRefused(shortPost, naming: ["'blk.0.post_attention_norm.weight'", "64"])
        // Qwen3's per-head norms are not this block's.
        let headNorm = try rewrite("q-norm") { _, tensors in
            tensors.append((name: "blk.0.attn_q_norm.weight", dimensions: [32], type: .f32, data: f32(32)))
        }
        assertRefused(headNorm, naming: ["tensor 'blk.0.attn_q_norm.weight'", "Gemma 2 block"])
    }

    func testMissingOrUnsupportedKeysAreNamed() throws {
        for key in ["gemma2.block_count", "gemma2.attention.head_count", "gemma2.embedding_length"] {
            let url = try rewrite("no-\(key)") { metadata, _ in metadata.removeAll { $0.0 == key } }
            assertRefused(url, naming: ["'\(key)'"])
        }
        assertRefused(try rewrite("cap-string", edit: setting("gemma2.attn_logit_softcapping", to: .string("1"))),
                      naming: ["'gemma2.attn_logit_softcapping' must be a number"])
        assertRefused(try rewrite("cap-negative", edit: setting("gemma2.final_logit_softcapping", to: .float32(-1))),
                      naming: ["final_logit_softcapping = -1.0 must be positive"])
        assertRefused(try rewrite("window-string", edit: setting("gemma2.attention.sliding_window", to: .string("32"))),
                      naming: ["'gemma2.attention.sliding_window'"])
        assertRefused(try rewrite("key-length", edit: setting("gemma2.attention.key_length", to: .uint32(16))),
                      naming: ["'gemma2.attention.key_length'"])
        let yarn = try rewrite("yarn") { metadata, _ in metadata.append(("gemma2.rope.scaling.type", .string("yarn"))) }
        assertRefused(yarn, naming: ["'gemma2.rope.scaling.type'", "'yarn'"])
        assertRefused(try rewrite("window-0", edit: setting("gemma2.attention.sliding_window", to: .uint32(0))),
                      naming: ["'gemma2.attention.sliding_window' = 0"])
        // Without the caps (llama.cpp reads them as optional) and the window (llama.cpp's default: 4096) the file loads
        // uncapped, and the context is max_position_embeddings (128, within 4096).
        let plain = try rewrite("no-caps") { metadata, _ in
            metadata.removeAll { $0.0.hasSuffix("softcapping") || $0.0 == "gemma2.attention.sliding_window" }
        }
        let c = try ModelLoader.load(path: plain.path, threads: 1).model.configuration
        XCTAssertNil(c.attentionSoftcap)
        XCTAssertNil(c.finalLogitSoftcap)
        XCTAssertEqual(c.slidingWindow, 4096)
        XCTAssertEqual(c.contextLength, 128)
        // llama.cpp's query scale: the head size (32), or hidden / heads (16) for the 46-layer Gemma-2-27B.
        for (layers, scalar) in [(2, 32.0), (46, 16.0)] {
            let url = try rewrite("layers-\(layers)", edit: setting("gemma2.block_count", to: .uint32(UInt32(layers))))
            XCTAssertEqual(try LlamaConfiguration(gguf: try GGUFFile(url: url)).queryPreAttentionScalar, scalar)
        }
    }

    /// HF configs: Gemma 2's fields are read, and values the block does not compute are refused by field.
    func testHFConfigFieldsAreRefused() throws {
        try FileManager.default.copyItem(at: Fixtures.url("tiny-gemma2/model.safetensors"),
                                         to: directory.appendingPathComponent("model.safetensors"))
        let original = try XCTUnwrap(try JSONSerialization.jsonObject(
            with: Data(contentsOf: Fixtures.url("tiny-gemma2/config.json"))) as? [String: Any])
        let url = directory.appendingPathComponent("config.json")
        func load(_ json: [String: Any]) throws -> ModelWeights {
            try JSONSerialization.data(withJSONObject: json).write(to: url)
            return try ModelLoader.loadHFDirectory(directory)
        }
        XCTAssertEqual(try load(original).configuration.queryPreAttentionScalar, 32)
        // Absent keys take Gemma2Config's defaults (transformers 5.25: Gemma2Config() has query_pre_attn_scalar 256,
        // attn_logit_softcapping 50, final_logit_softcapping 30, sliding_window 4096); null caps and window are none.
        var defaults = original
        for key in ["query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping"] { defaults[key] = nil }
        defaults["sliding_window"] = NSNull()
        let c = try load(defaults).configuration
        XCTAssertEqual([c.queryPreAttentionScalar, c.attentionSoftcap, c.finalLogitSoftcap], [256, 50, 30])
        XCTAssertEqual(c.contextLength, 128)
        var uncapped = original
        uncapped["attn_logit_softcapping"] = NSNull()
        uncapped["final_logit_softcapping"] = NSNull()
        XCTAssertNil(try load(uncapped).configuration.attentionSoftcap)
        XCTAssertNil(try load(uncapped).configuration.finalLogitSoftcap)
        var noHead = original  // Gemma2Config's head_dim is 256, not hidden / heads
        noHead["head_dim"] = nil
        try JSONSerialization.data(withJSONObject: noHead).write(to: url)
        XCTAssertEqual(try LlamaConfiguration(configJSON: url).headDim, 256)
        var absent = original  // no key: Gemma2Config's default window, 4096
        absent["sliding_window"] = nil
        XCTAssertEqual(try load(absent).configuration.slidingWindow, 4096)
        let cases: [(String, Any, String)] = [
            ("hidden_activation", "gelu", "hidden_activation 'gelu' is not supported for model_type 'gemma2'"),
            ("layer_types", ["sliding_attention", "chunked_attention"], "layer_types entry 'chunked_attention'"),
            ("attn_logit_softcapping", "50", "'attn_logit_softcapping' must be a number"),
            ("final_logit_softcapping", -30, "final_logit_softcapping = -30.0 must be positive"),
            ("query_pre_attn_scalar", 0, "query_pre_attn_scalar = 0.0 must be positive"),
            ("query_pre_attn_scalar", NSNull(), "'query_pre_attn_scalar' must be a number"),
            ("sliding_window", 0, "sliding_window = 0"),
            ("attention_bias", true, "attention_bias = true"),
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
