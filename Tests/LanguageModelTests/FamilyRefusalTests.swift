import Foundation
import ModelFormats
import TestSupport
import XCTest
@testable import LanguageModel

/// What a family's block does not compute, and a file lacking what the block must have, are refused naming the file
/// and the tensor, key or field, never run with wrong numbers. Each case edits the converter's own file of a
/// TinyFamily (or its HF config) in one place; the unedited rewrite, written by the same code, loads (the positive
/// control). The cases are per family (`ggufRefusals`, `configRefusals`); what every family must refuse is added to
/// them (`commonRefusals`).
final class FamilyRefusalTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws { directory = try Fixtures.temporaryDirectory("family-refusal") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    /// One edit of a GGUF file. Tensors put in are F32 ones of the given dimensions; a key set is replaced where the
    /// file has it and appended where not.
    enum Edit {
        case removeTensor(String), replaceTensor(String, dimensions: [Int]), addTensor(String, dimensions: [Int])
        case removeKey(String), setKey(String, GGUFValue)
    }

    /// A GGUF edit and what the refusal must name (the file's name is always required too).
    struct Refusal {
        let file: String
        let edit: Edit
        let naming: [String]
    }

    /// The fixture's GGUF of `family` rewritten with `edits` into `name`.gguf.
    func rewrite(_ family: TinyFamily, name: String, _ edits: [Edit]) throws -> URL {
        let url = directory.appendingPathComponent("\(family.name)-\(name).gguf")
        func ones(_ dimensions: [Int]) -> [UInt8] {
            [Float](repeating: 1, count: dimensions.reduce(1, *)).withUnsafeBytes { Array($0) }
        }
        try TinyReference.rewrite(Fixtures.url("tiny-\(family.name)/model.gguf.bin"), to: url) { metadata, tensors in
            for edit in edits {
                switch edit {
                case .removeTensor(let name): tensors.removeAll { $0.name == name }
                case .replaceTensor(let name, let dimensions):
                    tensors = tensors.map { $0.name == name ? (name, dimensions, .f32, ones(dimensions)) : $0 }
                case .addTensor(let name, let dimensions): tensors.append((name, dimensions, .f32, ones(dimensions)))
                case .removeKey(let key): metadata.removeAll { $0.0 == key }
                case .setKey(let key, let value):
                    if metadata.contains(where: { $0.0 == key }) {
                        metadata = metadata.map { $0.0 == key ? (key, value) : $0 }
                    } else {
                        metadata.append((key, value))
                    }
                }
            }
        }
        return url
    }

    func assertRefused(_ url: URL, naming names: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try ModelLoader.load(path: url.path, threads: 1), file: file, line: line) { error in
            for name in [url.lastPathComponent] + names {
                XCTAssertTrue("\(error)".contains(name), "expected '\(name)' in: \(error)", file: file, line: line)
            }
        }
    }

    /// What every family refuses: a file without one of the hyper-parameters the block is built from, a YaRN it does
    /// not compute (Gemma's and Phi-3's blocks) or, where it is computed (Llama, Qwen2, Qwen3: YarnTests), one without
    /// its factor; and outside Gemma, Gemma 2's attention soft-capping key, a computation those blocks do not do.
    func commonRefusals(_ family: TinyFamily) -> [Refusal] {
        let arch = family.architecture.rawValue
        return ["block_count", "feed_forward_length", "attention.head_count", "embedding_length"].map {
            Refusal(file: "no-\($0)", edit: .removeKey("\(arch).\($0)"), naming: ["'\(arch).\($0)'"])
        } + [Refusal(file: "yarn", edit: .setKey("\(arch).rope.scaling.type", .string("yarn")),
                     naming: ["'\(arch).rope.scaling.type'", "'yarn'"])]
            + (family.architecture.isGemma ? [] : [
                Refusal(file: "softcap", edit: .setKey("\(arch).attn_logit_softcapping", .float32(0.5)),
                        naming: ["'\(arch).attn_logit_softcapping'", "\(family.architecture.displayName) block"])])
    }

    /// Each family's own GGUF refusals.
    func ggufRefusals(_ family: TinyFamily) -> [Refusal] {
        switch family.architecture {
        case .qwen2: return [
            Refusal(file: "no-v-bias", edit: .removeTensor("blk.1.attn_v.bias"), naming: ["blk.1.attn_v.bias"]),
            // A Qwen3 head norm in a Qwen2 file.
            Refusal(file: "q-norm", edit: .addTensor("blk.0.attn_q_norm.weight", dimensions: [16]),
                    naming: ["tensor 'blk.0.attn_q_norm.weight'", "Qwen2 block"]),
        ]
        case .qwen3: return [
            // A Qwen2 bias in a Qwen3 file; keys its block does not read.
            Refusal(file: "q-bias", edit: .addTensor("blk.0.attn_q.bias", dimensions: [128]),
                    naming: ["tensor 'blk.0.attn_q.bias'", "Qwen3 block"]),
            Refusal(file: "sliding", edit: .setKey("qwen3.attention.sliding_window", .uint32(64)),
                    naming: ["'qwen3.attention.sliding_window'", "Qwen3 block"]),
            Refusal(file: "partial-rotary", edit: .setKey("qwen3.rope.dimension_count", .uint32(16)),
                    naming: ["'qwen3.rope.dimension_count'", "16 is not the head dimension 32"]),
        ]
        case .gemma2: return [
            Refusal(file: "no-post-ffw", edit: .removeTensor("blk.1.post_ffw_norm.weight"), naming: ["'blk.1.post_ffw_norm.weight'"]),
            Refusal(file: "short-post-attention", edit: .replaceTensor("blk.0.post_attention_norm.weight", dimensions: [32]),
                    naming: ["'blk.0.post_attention_norm.weight'", "64"]),
            // Qwen3's per-head norms are not this block's.
            Refusal(file: "q-norm", edit: .addTensor("blk.0.attn_q_norm.weight", dimensions: [32]),
                    naming: ["tensor 'blk.0.attn_q_norm.weight'", "Gemma 2 block"]),
            Refusal(file: "cap-string", edit: .setKey("gemma2.attn_logit_softcapping", .string("1")),
                    naming: ["'gemma2.attn_logit_softcapping' must be a number"]),
            Refusal(file: "cap-negative", edit: .setKey("gemma2.final_logit_softcapping", .float32(-1)),
                    naming: ["final_logit_softcapping = -1.0 must be positive"]),
            Refusal(file: "window-string", edit: .setKey("gemma2.attention.sliding_window", .string("32")),
                    naming: ["'gemma2.attention.sliding_window'"]),
            Refusal(file: "key-length", edit: .setKey("gemma2.attention.key_length", .uint32(16)),
                    naming: ["'gemma2.attention.key_length'"]),
            Refusal(file: "window-0", edit: .setKey("gemma2.attention.sliding_window", .uint32(0)),
                    naming: ["'gemma2.attention.sliding_window' = 0"]),
            // Gemma 3's sliding rope base is not this block's (llama.cpp's gemma2 would read it; transformers has none).
            Refusal(file: "swa-base", edit: .setKey("gemma2.rope.freq_base_swa", .float32(500)), naming: ["'gemma2.rope.freq_base_swa'"]),
        ]
        case .gemma3: return [
            Refusal(file: "no-k-norm", edit: .removeTensor("blk.2.attn_k_norm.weight"), naming: ["'blk.2.attn_k_norm.weight'"]),
            // llama.cpp's gemma3 reads no attention cap: a file carrying one asks what llama.cpp would not compute.
            Refusal(file: "attention-cap", edit: .setKey("gemma3.attn_logit_softcapping", .float32(50)),
                    naming: ["'gemma3.attn_logit_softcapping'"]),
            Refusal(file: "pattern-string", edit: .setKey("gemma3.attention.sliding_window_pattern", .string("6")),
                    naming: ["'gemma3.attention.sliding_window_pattern'"]),
            Refusal(file: "pattern-short", edit: .setKey("gemma3.attention.sliding_window_pattern", .array([.bool(true), .bool(false)])),
                    naming: ["'gemma3.attention.sliding_window_pattern'", "(6)"]),
            Refusal(file: "swa-base-string", edit: .setKey("gemma3.rope.freq_base_swa", .string("1e4")),
                    naming: ["'gemma3.rope.freq_base_swa' must be a number"]),
            Refusal(file: "rope-freqs", edit: .addTensor("rope_freqs.weight", dimensions: [8]), naming: ["tensor 'rope_freqs.weight'"]),
        ]
        case .phi3: return [
            Refusal(file: "no-qkv", edit: .removeTensor("blk.1.attn_qkv.weight"), naming: ["'blk.1.attn_qkv.weight'"]),
            // q, k, v of 4 + 2·2 heads of 16 are 128 rows; 120 is not. ffn_up holds gate and up: 2·96 rows, not 96.
            Refusal(file: "short-qkv", edit: .replaceTensor("blk.0.attn_qkv.weight", dimensions: [64, 120]),
                    naming: ["'blk.0.attn_qkv.weight'", "[64, 120]", "expected [64, 128]"]),
            Refusal(file: "unfused-up", edit: .replaceTensor("blk.1.ffn_up.weight", dimensions: [64, 96]),
                    naming: ["'blk.1.ffn_up.weight'", "expected [64, 192]"]),
            // Separate q, k, v (another family's layout) are not this block's; LongRoPE needs both factor tensors, one
            // factor per rotary pair (6), and its original context.
            Refusal(file: "separate-q", edit: .addTensor("blk.0.attn_q.weight", dimensions: [64, 64]),
                    naming: ["tensor 'blk.0.attn_q.weight'", "Phi-3 block"]),
            Refusal(file: "no-short-factors", edit: .removeTensor("rope_factors_short.weight"),
                    naming: ["'rope_factors_short.weight' is missing"]),
            Refusal(file: "long-factors-8", edit: .replaceTensor("rope_factors_long.weight", dimensions: [8]),
                    naming: ["tensor 'rope_factors_long.weight'", "expected [6]"]),
            Refusal(file: "no-original", edit: .removeKey("phi3.rope.scaling.original_context_length"),
                    naming: ["'phi3.rope.scaling.original_context_length'"]),
            Refusal(file: "rope-freqs", edit: .addTensor("rope_freqs.weight", dimensions: [8]), naming: ["tensor 'rope_freqs.weight'"]),
            // A rotary dimension that is odd or beyond the head (the file's own 12 of 16 loads), a window that is not
            // an integer.
            Refusal(file: "rotary-13", edit: .setKey("phi3.rope.dimension_count", .uint32(13)),
                    naming: ["'phi3.rope.dimension_count' = 13", "head dimension 16"]),
            Refusal(file: "rotary-18", edit: .setKey("phi3.rope.dimension_count", .uint32(18)),
                    naming: ["'phi3.rope.dimension_count' = 18", "head dimension 16"]),
            Refusal(file: "window", edit: .setKey("phi3.attention.sliding_window", .string("64")),
                    naming: ["'phi3.attention.sliding_window'"]),
        ]
        default: return []
        }
    }

    /// Each family's own HF config refusals: (key, value, what the error says) on its config.json as `original`.
    func configRefusals(_ family: TinyFamily, original: [String: Any]) throws -> [(String, Any, String)] {
        switch family.architecture {
        case .qwen2: return [
            ("use_sliding_window", true, "use_sliding_window"),
            // YaRN is computed for Qwen2 (YarnTests); the kinds only Llama's block computes are refused.
            ("rope_scaling", ["rope_type": "linear", "factor": 4.0], "computed for model_type 'llama' only"),
        ]
        case .qwen3: return [
            ("attention_bias", true, "attention_bias = true"),
            ("use_sliding_window", true, "use_sliding_window"),
            ("layer_types", ["full_attention", "sliding_attention"], "'sliding_attention'"),
            ("rope_parameters", ["rope_type": "linear", "rope_theta": 1e6, "factor": 4.0], "computed for model_type 'llama' only"),
            ("model_type", "qwen3_moe", "'qwen3_moe'"),
        ]
        case .gemma2: return [
            ("hidden_activation", "gelu", "hidden_activation 'gelu' is not supported for model_type 'gemma2'"),
            ("layer_types", ["sliding_attention", "chunked_attention"], "layer_types entry 'chunked_attention'"),
            ("attn_logit_softcapping", "50", "'attn_logit_softcapping' must be a number"),
            ("final_logit_softcapping", -30, "final_logit_softcapping = -30.0 must be positive"),
            ("query_pre_attn_scalar", 0, "query_pre_attn_scalar = 0.0 must be positive"),
            ("query_pre_attn_scalar", NSNull(), "'query_pre_attn_scalar' must be a number"),
            ("sliding_window", 0, "sliding_window = 0"),
            ("sliding_window", NSNull(), "'sliding_window' = null is not supported for model_type 'gemma2'"),
            ("attention_bias", true, "attention_bias = true"),
        ]
        case .gemma3: return [
            ("model_type", "gemma3", "model_type 'gemma3' is not supported"),
            ("layer_types", ["sliding_attention", "full_attention"], "layer_types has 2 entries, expected num_hidden_layers = 6"),
            ("layer_types", Array(repeating: "chunked_attention", count: 6), "layer_types entry 'chunked_attention'"),
            ("rope_parameters", ["full_attention": ["rope_type": "default", "rope_theta": 1e6],
                                 "sliding_attention": ["rope_type": "linear", "factor": 2.0]],
             "rope_parameters.sliding_attention.rope_type 'linear' is not supported"),
            ("rope_parameters", ["full_attention": ["rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                    "high_freq_factor": 4.0, "rope_theta": 1e6]], "rope scaling is computed for"),
            ("rope_parameters", ["chunked_attention": ["rope_type": "default"]], "rope_parameters.chunked_attention"),
            ("rope_local_base_freq", -1, "rope_local_base_freq must be a positive number"),
            ("use_bidirectional_attention", true, "use_bidirectional_attention = true"),
            ("hidden_activation", "gelu", "hidden_activation 'gelu' is not supported for model_type 'gemma3_text'"),
            ("sliding_window", NSNull(), "'sliding_window' = null is not supported for model_type 'gemma3_text'"),
        ]
        case .phi3:
            let parameters = try XCTUnwrap(original["rope_parameters"] as? [String: Any])
            func longrope(_ change: (inout [String: Any]) -> Void) -> [String: Any] {
                var object = parameters
                change(&object)
                return object
            }
            return [
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
        default: return []
        }
    }

    func testUneditedRewriteLoads() throws {
        for family in TinyFamily.all {
            let loaded = try ModelLoader.load(path: try rewrite(family, name: "plain", []).path, threads: 1)
            XCTAssertEqual(loaded.model.configuration.architecture, family.architecture)
            XCTAssertTrue(try loaded.model.allLogits(tokens: [1, 2, 3]).allSatisfy(\.isFinite), family.name)
        }
    }

    func testGGUFEditsAreRefusedByName() throws {
        for family in TinyFamily.all {
            let own = ggufRefusals(family)
            XCTAssertFalse(own.isEmpty, "\(family.name) needs its own refusal cases")
            for refusal in own + commonRefusals(family) {
                assertRefused(try rewrite(family, name: refusal.file, [refusal.edit]), naming: refusal.naming)
            }
        }
    }

    /// HF configs: each field the family's block does not compute is refused by name, with the config's path; the
    /// fixture's own config loads.
    func testHFConfigFieldsAreRefused() throws {
        for family in TinyFamily.all {
            let folder = directory.appendingPathComponent("hf-\(family.name)")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try FileManager.default.copyItem(at: Fixtures.url("tiny-\(family.name)/model.safetensors"),
                                             to: folder.appendingPathComponent("model.safetensors"))
            let original = try config(family)
            let url = folder.appendingPathComponent("config.json")
            func load(_ json: [String: Any]) throws -> ModelWeights {
                try JSONSerialization.data(withJSONObject: json).write(to: url)
                return try ModelLoader.loadHFDirectory(folder)
            }
            XCTAssertEqual(try load(original).configuration.architecture, family.architecture)
            let cases = try configRefusals(family, original: original)
            XCTAssertFalse(cases.isEmpty, "\(family.name) needs its own config refusal cases")
            for (key, value, expected) in cases {
                var json = original
                json[key] = value
                XCTAssertThrowsError(try load(json), "\(family.name) \(key)") { error in
                    XCTAssertTrue("\(error)".contains(expected) && "\(error)".contains(url.path), "\(family.name) \(key): \(error)")
                }
            }
        }
    }

    func config(_ family: TinyFamily) throws -> [String: Any] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.url("tiny-\(family.name)/config.json")))
            as? [String: Any])
    }

    /// An HF directory holding `json` as its config and the family's weights, loaded.
    func loadHF(_ family: TinyFamily, _ json: [String: Any]) throws -> ModelWeights {
        let folder = directory.appendingPathComponent("hf-\(family.name)-accepted")
        if !FileManager.default.fileExists(atPath: folder.path) {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try FileManager.default.copyItem(at: Fixtures.url("tiny-\(family.name)/model.safetensors"),
                                             to: folder.appendingPathComponent("model.safetensors"))
        }
        try JSONSerialization.data(withJSONObject: json).write(to: folder.appendingPathComponent("config.json"))
        return try ModelLoader.loadHFDirectory(folder)
    }

    func testUnknownArchitectureIsNamed() throws {
        let url = try rewrite(.qwen2, name: "mamba", [.setKey("general.architecture", .string("mamba"))])
        assertRefused(url, naming: ["architecture 'mamba'", "'qwen3'", "'gemma2'"])
    }

    /// Qwen3's rope_theta inside rope_parameters (transformers 5's spelling).
    func testQwen3ReadsRopeThetaInsideRopeParameters() throws {
        XCTAssertEqual(try loadHF(.qwen3, try config(.qwen3)).configuration.ropeTheta, 1_000_000)
    }

    /// A LoRA on a projection Phi-3 fuses away would train nothing: refused by name, with the fused one to use.
    func testPhi3UnfusedTargetsAreRefused() throws {
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

    /// A window of 0 is llama.cpp's "none": the context is max_position_embeddings (512; past LongRoPE's original 256,
    /// a session takes the long factors: LongRopeContextTests). HF configs: the
    /// transformers 4 spelling of the rotary part, no window, and an explicit LongRoPE attention_factor, which is
    /// taken as it is (transformers'), not recomputed from the contexts.
    func testPhi3AcceptedVariants() throws {
        let none = try rewrite(.phi3, name: "window-0", [.setKey("phi3.attention.sliding_window", .uint32(0))])
        let c = try ModelLoader.load(path: none.path, threads: 1).model.configuration
        XCTAssertNil(c.slidingWindow)
        XCTAssertEqual(c.contextLength, 512)
        let original = try config(.phi3)
        XCTAssertEqual(try loadHF(.phi3, original).configuration.slidingWindow, 32)
        XCTAssertEqual(try loadHF(.phi3, original).configuration.rotaryDim, 12)
        var topLevel = original  // transformers 4's spelling: the factor beside the config's other keys
        topLevel["rope_parameters"] = NSNull()
        topLevel["rope_theta"] = 10000.0
        topLevel["partial_rotary_factor"] = 0.5
        XCTAssertEqual(try loadHF(.phi3, topLevel).configuration.rotaryDim, 8)
        var noWindow = original
        noWindow["sliding_window"] = NSNull()
        XCTAssertEqual(try loadHF(.phi3, noWindow).configuration.contextLength, 512)
        var explicit = original
        var parameters = try XCTUnwrap(original["rope_parameters"] as? [String: Any])
        parameters["attention_factor"] = 1.5
        explicit["rope_parameters"] = parameters
        guard case .longrope(_, _, let attention, _)? = try? loadHF(.phi3, explicit).configuration.ropeScaling else {
            return XCTFail("longrope with attention_factor")
        }
        XCTAssertEqual(attention, 1.5)
    }

    /// Without the caps and the window a Gemma 2 file takes llama.cpp's defaults (src/llama-hparams.h,
    /// src/models/gemma2.cpp: its graph caps always, at 50 and 30 without the keys; a window of 4096), and the context
    /// is max_position_embeddings (128, within 4096). llama.cpp's query scale: the head size (32), or hidden / heads
    /// (16) for the 46-layer Gemma-2-27B.
    func testGemma2GGUFDefaults() throws {
        let plain = try rewrite(.gemma2, name: "no-caps", [.removeKey("gemma2.attn_logit_softcapping"),
                                                          .removeKey("gemma2.final_logit_softcapping"),
                                                          .removeKey("gemma2.attention.sliding_window")])
        let c = try ModelLoader.load(path: plain.path, threads: 1).model.configuration
        XCTAssertEqual(c.attentionSoftcap, 50)
        XCTAssertEqual(c.finalLogitSoftcap, 30)
        XCTAssertEqual(c.slidingWindow, 4096)
        XCTAssertEqual(c.contextLength, 128)
        for (layers, scalar) in [(2, 32.0), (46, 16.0)] {
            let url = try rewrite(.gemma2, name: "layers-\(layers)", [.setKey("gemma2.block_count", .uint32(UInt32(layers)))])
            XCTAssertEqual(try LlamaConfiguration(gguf: try GGUFFile(url: url)).queryPreAttentionScalar, scalar)
        }
    }

    /// HF configs of Gemma 2: absent keys take Gemma2Config's defaults (transformers 5.25: Gemma2Config() has
    /// query_pre_attn_scalar 256, attn_logit_softcapping 50, final_logit_softcapping 30, sliding_window 4096, head_dim
    /// 256, not hidden / heads); null caps are none (a null window is refused: configRefusals).
    func testGemma2HFDefaults() throws {
        let original = try config(.gemma2)
        XCTAssertEqual(try loadHF(.gemma2, original).configuration.queryPreAttentionScalar, 32)
        var defaults = original
        for key in ["query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping"] { defaults[key] = nil }
        let c = try loadHF(.gemma2, defaults).configuration
        XCTAssertEqual([c.queryPreAttentionScalar, c.attentionSoftcap, c.finalLogitSoftcap], [256, 50, 30])
        XCTAssertEqual(c.contextLength, 128)
        var uncapped = original
        uncapped["attn_logit_softcapping"] = NSNull()
        uncapped["final_logit_softcapping"] = NSNull()
        XCTAssertNil(try loadHF(.gemma2, uncapped).configuration.attentionSoftcap)
        XCTAssertNil(try loadHF(.gemma2, uncapped).configuration.finalLogitSoftcap)
        var noHead = original
        noHead["head_dim"] = nil
        let url = directory.appendingPathComponent("gemma2-no-head.json")
        try JSONSerialization.data(withJSONObject: noHead).write(to: url)
        XCTAssertEqual(try LlamaConfiguration(configJSON: url).headDim, 256)
        var absent = original
        absent["sliding_window"] = nil
        XCTAssertEqual(try loadHF(.gemma2, absent).configuration.slidingWindow, 4096)
    }

    /// Gemma 3's GGUF variants as llama.cpp reads them: the sliding layers from `attention.sliding_window_pattern` (n: layer
    /// l slides when l % n < n − 1, llama_hparams::set_swa_pattern; or one flag per layer), none without a window (every
    /// layer then with the global rope), the sliding rope base; the query scale: the head size (16), or hidden / heads (8)
    /// for the 62-layer Gemma-3-27B.
    func testGemma3GGUFVariants() throws {
        func configuration(_ name: String, _ edits: [Edit]) throws -> LlamaConfiguration {
            try ModelLoader.load(path: try rewrite(.gemma3, name: name, edits).path, threads: 1).model.configuration
        }
        XCTAssertEqual(try configuration("pattern-3", [.setKey("gemma3.attention.sliding_window_pattern", .uint32(3))]).slidingLayers,
                       [true, true, false, true, true, false])
        let flags: [Bool] = [false, true, false, true, false, true]
        XCTAssertEqual(try configuration("pattern-flags", [.setKey("gemma3.attention.sliding_window_pattern",
                                                                   .array(flags.map { .bool($0) }))]).slidingLayers, flags)
        let windowless = try configuration("no-window", [.removeKey("gemma3.attention.sliding_window")])
        XCTAssertEqual(windowless.slidingLayers, [])
        XCTAssertNil(windowless.attentionWindow(layer: 0))
        XCTAssertEqual(try configuration("swa-base", [.setKey("gemma3.rope.freq_base_swa", .float32(500))]).slidingRopeTheta, 500)
        let deep = try rewrite(.gemma3, name: "layers-62", [.setKey("gemma3.block_count", .uint32(62))])
        XCTAssertEqual(try LlamaConfiguration(gguf: try GGUFFile(url: deep)).queryPreAttentionScalar, 8)
    }

    /// HF configs of Gemma 3: transformers 5's nested rope_parameters and the older top-level keys (rope_scaling for the
    /// global layers, rope_theta, rope_local_base_freq, sliding_window_pattern) give the same model; absent keys take
    /// Gemma3TextConfig's defaults (rope_theta 1e6, rope_local_base_freq 1e4, no caps, query_pre_attn_scalar 256).
    func testGemma3HFVariants() throws {
        let original = try config(.gemma3), reference = try loadHF(.gemma3, original).configuration
        XCTAssertEqual(reference.slidingLayers, [true, true, true, true, true, false])
        var flat = original
        for key in ["rope_parameters", "layer_types", "_sliding_window_pattern"] { flat[key] = nil }
        flat["rope_scaling"] = ["rope_type": "linear", "factor": 8.0]
        flat["rope_theta"] = 1_000_000.0
        flat["rope_local_base_freq"] = 10_000.0
        flat["sliding_window_pattern"] = 6
        XCTAssertEqual(try loadHF(.gemma3, flat).configuration, reference)
        var defaults = flat
        for key in ["rope_scaling", "rope_theta", "rope_local_base_freq", "final_logit_softcapping", "attn_logit_softcapping",
                    "query_pre_attn_scalar"] { defaults[key] = nil }
        let c = try loadHF(.gemma3, defaults).configuration
        XCTAssertEqual([c.ropeTheta, c.slidingRopeTheta, c.queryPreAttentionScalar], [1_000_000, 10_000, 256])
        XCTAssertEqual(c.ropeScaling, RopeScaling.none)
        XCTAssertNil(c.attentionSoftcap)
        var pattern = flat
        pattern["sliding_window_pattern"] = 2
        XCTAssertEqual(try loadHF(.gemma3, pattern).configuration.slidingLayers, [true, false, true, false, true, false])
        pattern["sliding_window_pattern"] = 0  // read only without layer_types, as transformers reads it
        XCTAssertThrowsError(try loadHF(.gemma3, pattern)) {
            XCTAssertTrue("\($0)".contains("'sliding_window_pattern' must be a positive integer"), "\($0)")
        }
    }

    /// The fuzz seeds (Tests/Fuzz/Corpus: gguf/gemma2.bin, hf-config/tiny-gemma2.json) are accepted, so the gguf and
    /// hf-config targets start inside the Gemma 2 paths (the targets themselves ignore a loader's error).
    func testGemma2FuzzSeedsLoad() throws {
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

    /// The Gemma 3 fuzz seeds (gguf/gemma3.bin, hf-config/tiny-gemma3.json) are accepted, so those targets start inside
    /// Gemma 3's paths: head norms, a sliding layer and a global one, the sliding rope base, the global layer's scaling.
    func testGemma3FuzzSeedsLoad() throws {
        let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fuzz/Corpus")
        let weights = try ModelLoader.loadGGUF(try GGUFFile(url: corpus.appendingPathComponent("gguf/gemma3.bin")))
        XCTAssertEqual(weights.configuration.architecture, .gemma3)
        XCTAssertEqual(weights.configuration.slidingLayers, [true, false])
        XCTAssertEqual(weights.configuration.slidingRopeTheta, 10_000)
        XCTAssertNotNil(weights.layers[1].queryNorm)
        let c = try LlamaConfiguration(configJSON: corpus.appendingPathComponent("hf-config/tiny-gemma3.json"))
        XCTAssertEqual(c.architecture, .gemma3)
        XCTAssertEqual(c.slidingLayers, [true, false])
        XCTAssertEqual(c.slidingWindow, 5)
        XCTAssertNotEqual(c.ropeScaling, RopeScaling.none)
        XCTAssertEqual(c.ropeScaling, weights.configuration.ropeScaling)
    }
}
