import Foundation
import ModelFormats
import Wire
import SecureAggregation
import SecureCrypto
import Audit
import Privacy
import CoordinatorService

/// The seed corpora of `Tests/Fuzz/Corpus`: small valid inputs for each target, made with the
/// project's own writers and encoders (`conclave-fuzz --write-seeds Tests/Fuzz/Corpus` regenerates
/// them; the secure-aggregation transcripts and audit signatures differ run to run, nothing else).
public enum SeedCorpus {
    public static func write(to directory: URL) throws {
        let seeds: [FuzzTarget: [String: Data]] = [
            .gguf: try ModelSeeds.gguf(), .safetensors: try ModelSeeds.safetensors(),
            .tokenizer: try ModelSeeds.tokenizer(), .hfConfig: ["tiny-llama.json": Data(ModelSeeds.hfConfig.utf8),
                                                                   "tiny-llama3.json": Data(ModelSeeds.hfConfigLlama3.utf8),
                                                                   "tiny-phi3.json": Data(ModelSeeds.hfConfigPhi3.utf8),
                                                                   "tiny-gemma2.json": Data(ModelSeeds.hfConfigGemma2.utf8),
                                                                   "tiny-gemma3.json": Data(ModelSeeds.hfConfigGemma3.utf8)],
            .peft: try ModelSeeds.peft(), .jsonl: ModelSeeds.jsonl(), .wire: try WireSeeds.frames(),
            .secagg: try WireSeeds.secureRounds(), .config: try StateSeeds.configuration(), .audit: try StateSeeds.audit(),
        ]
        for (target, files) in seeds {
            let folder = directory.appendingPathComponent(target.rawValue, isDirectory: true)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            for (name, data) in files { try data.write(to: folder.appendingPathComponent(name)) }
        }
    }
}

enum ModelSeeds {
    /// Named `.bin`, as every seed is: `*.gguf` is kept out of git for models, and these are inputs.
    static func gguf() throws -> [String: Data] {
        var llama = GGUFWriter()
        llama.set("general.architecture", .string("llama"))
        for (key, value) in [("context_length", 128), ("embedding_length", 64), ("block_count", 1),
                             ("feed_forward_length", 160), ("attention.head_count", 4), ("attention.head_count_kv", 2),
                             ("vocab_size", 262)] {
            llama.set("llama.\(key)", .uint32(UInt32(value)))
        }
        llama.set("llama.rope.freq_base", .float32(10000))
        llama.set("llama.attention.layer_norm_rms_epsilon", .float32(1e-5))
        llama.set("tokenizer.ggml.model", .string("gpt2"))
        llama.set("tokenizer.ggml.pre", .string("smollm"))
        let tokens = (0..<256).map { DatasetTarget.byteLevelText(UInt8($0)) } + ["Ġt", "he", "Ġthe", "<|im_start|>", "<|im_end|>", "12"]
        llama.set("tokenizer.ggml.tokens", .array(tokens.map { .string($0) }))
        llama.set("tokenizer.ggml.token_type", .array(tokens.indices.map { .int32($0 >= 259 && $0 <= 260 ? 3 : 1) }))
        llama.set("tokenizer.ggml.merges", .array(["Ġ t", "h e", "Ġt he", "1 2"].map { .string($0) }))
        llama.set("tokenizer.ggml.bos_token_id", .uint32(259))
        llama.set("tokenizer.ggml.eos_token_id", .uint32(260))
        llama.set("tokenizer.chat_template", .string("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"))
        try llama.addTensor(name: "token_embd.weight", dimensions: [32, 2], type: .f32, data: [UInt8](repeating: 0x3c, count: 256))
        try llama.addTensor(name: "blk.0.attn_q.weight", dimensions: [32, 1], type: .q8_0, data: [UInt8](repeating: 1, count: 34))
        try llama.addTensor(name: "blk.0.attn_k.weight", dimensions: [32, 1], type: .q4_1, data: [UInt8](repeating: 2, count: 20))
        try llama.addTensor(name: "blk.0.attn_v.weight", dimensions: [32, 1], type: .q4_0, data: [UInt8](repeating: 3, count: 18))
        try llama.addTensor(name: "output_norm.weight", dimensions: [8], type: .f16, data: [UInt8](repeating: 0x3c, count: 16))
        var scalars = GGUFWriter(alignment: 8)
        let values: [GGUFValue] = [.uint8(1), .int8(-1), .uint16(2), .int16(-2), .uint32(3), .int32(-3), .float32(0.5),
                                   .bool(true), .string("text"), .array([.uint64(4), .uint64(5)]), .uint64(6), .int64(-6),
                                   .float64(0.25), .array([.array([.string("nested")])])]
        for (i, value) in values.enumerated() { scalars.set("seed.value\(i)", value) }
        try scalars.addTensor(name: "t", dimensions: [4], type: .bf16, data: [UInt8](repeating: 0x3f, count: 8))
        // The rope scalings the loader computes: llama3's frequency factors (one per rotary pair of the head of
        // 32) and linear scaling by its keys.
        var llama3 = try weights()
        let factors = (0..<16).map { Float(1 + $0 / 2) }.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }
        try llama3.addTensor(name: "rope_freqs.weight", dimensions: [16], type: .f32, data: factors)
        var linear = try weights()
        linear.set("llama.rope.scaling.type", .string("linear"))
        linear.set("llama.rope.scaling.factor", .float32(4))
        return ["llama.bin": llama.encoded(), "scalars.bin": scalars.encoded(), "weights.bin": try weights().encoded(),
                "rope-freqs.bin": llama3.encoded(), "rope-linear.bin": linear.encoded(), "llama-spm.bin": try sentencePiece().encoded(),
                "phi3.bin": try phi3().encoded(), "gemma2.bin": try gemma2().encoded(), "gemma3.bin": try gemma3().encoded()]
    }

    /// The SentencePiece pieces of the seeds: unknown, BOS, EOS, a user-defined token, the 256 byte tokens, then
    /// pieces with "▁" for spaces (their scores: later pieces merge later).
    static let sentencePieces = ["<unk>", "<s>", "</s>", "<tool>"] + (0..<256).map { String(format: "<0x%02X>", $0) }
        + ["\u{2581}", "t", "h", "e", "\u{2581}t", "he", "\u{2581}the", "1", "2", "12"]

    /// The seed pieces as a sentencepiece `tokenizer.model` (ModelProto in protobuf wire format): pieces with
    /// scores and types, a BPE trainer spec with byte fallback, an identity normaliser with the dummy prefix.
    static func sentencePieceModel() -> Data {
        func varint(_ value: UInt64) -> [UInt8] {
            var value = value, out: [UInt8] = []
            repeat {
                out.append(UInt8(value & 0x7F) | (value > 0x7F ? 0x80 : 0))
                value >>= 7
            } while value > 0
            return out
        }
        func field(_ number: Int, _ payload: [UInt8]) -> [UInt8] { varint(UInt64(number << 3 | 2)) + varint(UInt64(payload.count)) + payload }
        var out: [UInt8] = []
        for (i, piece) in sentencePieces.enumerated() {
            let score = Float(i < 260 ? 0 : -i), type = i == 0 ? 2 : i < 3 ? 3 : i == 3 ? 4 : i < 260 ? 6 : 1
            out += field(1, field(1, Array(piece.utf8)) + [0x15] + withUnsafeBytes(of: score.bitPattern.littleEndian, Array.init)
                         + [0x18] + varint(UInt64(type)))
        }
        out += field(2, [0x18, 0x02, 0x98, 0x02, 0x01])   // model_type BPE (3), byte_fallback (35)
        out += field(3, field(1, Array("identity".utf8)) + [0x18, 0x01, 0x20, 0x00])   // dummy prefix, whitespace kept
        return Data(out)
    }

    /// A model with a SentencePiece vocabulary (GGUF `tokenizer.ggml.model = llama`) and a Llama 2 chat template.
    static func sentencePiece() throws -> GGUFWriter {
        var model = try weights()
        let pieces = sentencePieces
        model.set("tokenizer.ggml.model", .string("llama"))
        model.set("tokenizer.ggml.tokens", .array(pieces.map { .string($0) }))
        model.set("tokenizer.ggml.scores", .array(pieces.indices.map { .float32($0 < 260 ? 0 : -Float($0)) }))
        model.set("tokenizer.ggml.token_type", .array(pieces.indices.map { .int32($0 == 0 ? 2 : $0 < 3 ? 3 : $0 == 3 ? 4 : $0 < 260 ? 6 : 1) }))
        model.set("tokenizer.ggml.add_space_prefix", .bool(true))
        model.set("tokenizer.ggml.bos_token_id", .uint32(1))
        model.set("tokenizer.ggml.eos_token_id", .uint32(2))
        model.set("tokenizer.chat_template", .string("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
            + "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}"
            + "{% endif %}{% for message in loop_messages %}{% if loop.index0 == 0 and system_message != false %}"
            + "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}"
            + "{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
            + "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
            + "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"))
        return model
    }

    /// A Phi-3 the loader accepts: fused attn_qkv (2 query heads and 1 key/value head of 16: 64 rows) and ffn_up
    /// (gate and up: 64 rows), partial rotary (12 of 16), LongRoPE's factor tensors and keys, a sliding window.
    static func phi3() throws -> GGUFWriter {
        var model = GGUFWriter()
        model.set("general.architecture", .string("phi3"))
        for (key, value) in [("context_length", 16), ("embedding_length", 32), ("block_count", 1), ("feed_forward_length", 32),
                             ("attention.head_count", 2), ("attention.head_count_kv", 1), ("vocab_size", 8),
                             ("rope.dimension_count", 12), ("rope.scaling.original_context_length", 8),
                             ("attention.sliding_window", 8)] {
            model.set("phi3.\(key)", .uint32(UInt32(value)))
        }
        model.set("phi3.rope.scaling.attn_factor", .float32(1.2))
        try model.addTensor(name: "token_embd.weight", dimensions: [32, 8], type: .q8_0, data: [UInt8](repeating: 1, count: 8 * 34))
        for (name, rows, columns) in [("attn_qkv", 64, 32), ("attn_output", 32, 32), ("ffn_up", 64, 32), ("ffn_down", 32, 32)] {
            try model.addTensor(name: "blk.0.\(name).weight", dimensions: [columns, rows], type: .q4_0,
                                data: [UInt8](repeating: 0x11, count: rows * 18))
        }
        func floats(_ values: [Float]) -> [UInt8] { values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) } }
        for name in ["blk.0.attn_norm.weight", "blk.0.ffn_norm.weight", "output_norm.weight"] {
            try model.addTensor(name: name, dimensions: [32], type: .f32, data: floats([Float](repeating: 1, count: 32)))
        }
        try model.addTensor(name: "rope_factors_short.weight", dimensions: [6], type: .f32, data: floats([1, 1, 1.5, 2, 3, 4]))
        try model.addTensor(name: "rope_factors_long.weight", dimensions: [6], type: .f32, data: floats([1, 2, 4, 8, 16, 32]))
        return model
    }

    /// A Gemma 2 the loader accepts: the four norms of its block (post_attention_norm, post_ffw_norm beside attn_norm and
    /// ffn_norm), both soft-capping keys, a head size (16) given by key_length, a sliding window; tied embeddings.
    static func gemma2() throws -> GGUFWriter {
        try gemma("gemma2", blocks: 1) { model in
            model.set("gemma2.attn_logit_softcapping", .float32(50))
            model.set("gemma2.final_logit_softcapping", .float32(30))
        }
    }

    /// A Gemma 3 the loader accepts: Gemma 2's block with per-head q/k norms (attn_q_norm, attn_k_norm), no soft-capping,
    /// two layers of which the second is global (sliding_window_pattern 2), the sliding layers' rope base, the global
    /// layer's linear rope scaling.
    static func gemma3() throws -> GGUFWriter {
        try gemma("gemma3", blocks: 2) { model in
            model.set("gemma3.attention.sliding_window_pattern", .uint32(2))
            model.set("gemma3.rope.freq_base", .float32(1_000_000))
            model.set("gemma3.rope.freq_base_swa", .float32(10_000))
            model.set("gemma3.rope.scaling.type", .string("linear"))
            model.set("gemma3.rope.scaling.factor", .float32(8))
        }
    }

    /// Gemma's block over width 32, two heads of 16 and one KV head, a window of 8, tied quantized embeddings; `keys`
    /// adds the architecture's own, and Gemma 3's blocks get its q/k norms.
    static func gemma(_ architecture: String, blocks: Int, keys: (inout GGUFWriter) -> Void) throws -> GGUFWriter {
        var model = GGUFWriter()
        model.set("general.architecture", .string(architecture))
        for (key, value) in [("context_length", 16), ("embedding_length", 32), ("block_count", blocks), ("feed_forward_length", 32),
                             ("attention.head_count", 2), ("attention.head_count_kv", 1), ("vocab_size", 8),
                             ("attention.key_length", 16), ("attention.value_length", 16), ("attention.sliding_window", 8)] {
            model.set("\(architecture).\(key)", .uint32(UInt32(value)))
        }
        keys(&model)
        try model.addTensor(name: "token_embd.weight", dimensions: [32, 8], type: .q8_0, data: [UInt8](repeating: 1, count: 8 * 34))
        let ones = { (count: Int) in [Float](repeating: 1, count: count).flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) } }
        for block in 0..<blocks {
            for (name, rows) in [("attn_q", 32), ("attn_k", 16), ("attn_v", 16), ("attn_output", 32), ("ffn_gate", 32),
                                 ("ffn_up", 32), ("ffn_down", 32)] {
                try model.addTensor(name: "blk.\(block).\(name).weight", dimensions: [32, rows], type: .q4_0,
                                    data: [UInt8](repeating: 0x11, count: rows * 18))
            }
            for name in ["attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm"] {
                try model.addTensor(name: "blk.\(block).\(name).weight", dimensions: [32], type: .f32, data: ones(32))
            }
            if architecture == "gemma3" {
                for name in ["attn_q_norm", "attn_k_norm"] {
                    try model.addTensor(name: "blk.\(block).\(name).weight", dimensions: [16], type: .f32, data: ones(16))
                }
            }
        }
        try model.addTensor(name: "output_norm.weight", dimensions: [32], type: .f32, data: ones(32))
        return model
    }

    /// A whole model the loader accepts: one layer of width 32, one head, a vocabulary of 8, quantized.
    static func weights() throws -> GGUFWriter {
        var model = GGUFWriter()
        model.set("general.architecture", .string("llama"))
        for (key, value) in [("context_length", 16), ("embedding_length", 32), ("block_count", 1), ("feed_forward_length", 32),
                             ("attention.head_count", 1), ("attention.head_count_kv", 1), ("vocab_size", 8)] {
            model.set("llama.\(key)", .uint32(UInt32(value)))
        }
        try model.addTensor(name: "token_embd.weight", dimensions: [32, 8], type: .q8_0, data: [UInt8](repeating: 1, count: 8 * 34))
        for name in ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"] {
            try model.addTensor(name: "blk.0.\(name).weight", dimensions: [32, 32], type: .q4_0,
                                data: [UInt8](repeating: 0x11, count: 32 * 18))
        }
        let ones = [Float](repeating: 1, count: 32).flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }
        for name in ["blk.0.attn_norm.weight", "blk.0.ffn_norm.weight", "output_norm.weight"] {
            try model.addTensor(name: name, dimensions: [32], type: .f32, data: ones)
        }
        return model
    }

    static func safetensors() throws -> [String: Data] {
        let f32 = try SafetensorsWriter.encode([("a", [2, 3], [1, 2, 3, 4, 5, 6]), ("b", [4], [0.5, -0.5, .infinity, 0])],
                                               metadata: ["format": "pt"])
        var half = Data()
        let header = #"{"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"g":{"dtype":"BF16","shape":[1,2],"data_offsets":[4,8]}}"#
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { half.append(contentsOf: $0) }
        half.append(Data(header.utf8))
        half.append(contentsOf: [0x00, 0x3c, 0x00, 0xc0, 0x80, 0x3f, 0x00, 0x40])
        return ["f32.safetensors": f32, "f16-bf16.safetensors": half]
    }

    static func tokenizer() throws -> [String: Data] {
        var vocab: [String: Int] = [:]
        for byte in 0..<256 { vocab[DatasetTarget.byteLevelText(UInt8(byte))] = byte }
        for (i, text) in ["Ġt", "he", "Ġthe", "ca", "cat", "Ġca", "12"].enumerated() { vocab[text] = 256 + i }
        let byteLevel: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "use_regex": true]
        func file(_ preTokenizer: Any, merges: [Any]) throws -> Data {
            let object: [String: Any] = [
                "version": "1.0",
                "added_tokens": [["id": 263, "content": "<|im_end|>", "special": true], ["id": 264, "content": "<tool>", "special": false]],
                "normalizer": NSNull(), "pre_tokenizer": preTokenizer, "decoder": ["type": "ByteLevel"],
                "model": ["type": "BPE", "vocab": vocab, "merges": merges, "ignore_merges": false] as [String: Any],
            ]
            return try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        }
        let sequence: [String: Any] = ["type": "Sequence", "pretokenizers": [["type": "Digits", "individual_digits": true], byteLevel]]
        // SentencePiece style: "▁" for spaces by the normaliser, byte fallback, merges by rank.
        var pieces: [String: Int] = [:]
        for (id, text) in sentencePieces.enumerated() { pieces[text] = id }
        let spm: [String: Any] = [
            "version": "1.0",
            "added_tokens": [["id": 0, "content": "<unk>", "special": true], ["id": 1, "content": "<s>", "special": true],
                             ["id": 2, "content": "</s>", "special": true], ["id": 3, "content": "<tool>", "special": false]],
            "normalizer": ["type": "Sequence", "normalizers": [["type": "Prepend", "prepend": "\u{2581}"],
                                                               ["type": "Replace", "pattern": ["String": " "], "content": "\u{2581}"]]],
            "pre_tokenizer": NSNull(), "decoder": NSNull(),
            "model": ["type": "BPE", "vocab": pieces, "merges": ["\u{2581} t", "h e", "\u{2581}t he", "1 2"], "byte_fallback": true,
                      "unk_token": "<unk>", "fuse_unk": true] as [String: Any],
        ]
        return ["gpt2.json": try file(byteLevel, merges: ["Ġ t", "h e", "Ġt he", "c a", "ca t", "Ġ ca", "1 2"]),
                "smollm-pairs.json": try file(sequence, merges: [["Ġ", "t"], ["h", "e"], ["Ġt", "he"], ["c", "a"], ["1", "2"]]),
                "sentencepiece.json": try JSONSerialization.data(withJSONObject: spm, options: [.sortedKeys]),
                "sentencepiece.model": sentencePieceModel()]
    }

    static let hfConfig = """
        {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 128, "rope_theta": 10000.0, "rms_norm_eps": 1e-05,
         "tie_word_embeddings": false, "hidden_act": "silu", "attention_bias": false, "mlp_bias": false,
         "architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "float32"}
        """

    /// Llama 3.x's rope scaling, as its config.json spells it (rope_scaling beside a top-level rope_theta).
    static let hfConfigLlama3 = """
        {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 256, "rope_theta": 500000.0, "rms_norm_eps": 1e-05,
         "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                          "original_max_position_embeddings": 64, "rope_type": "llama3"},
         "tie_word_embeddings": true, "hidden_act": "silu", "model_type": "llama"}
        """

    /// Phi-3 as transformers 5 writes it: the rope object with partial rotary and LongRoPE, a sliding window.
    static let hfConfigPhi3 = """
        {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 512, "original_max_position_embeddings": 256,
         "rope_parameters": {"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                             "short_factor": [1.0, 1.05, 1.2, 1.6, 2.5, 4.0], "long_factor": [1.0, 1.3, 2.0, 4.0, 8.0, 16.0],
                             "original_max_position_embeddings": 256},
         "sliding_window": 32, "rms_norm_eps": 1e-05, "tie_word_embeddings": false, "hidden_act": "silu",
         "model_type": "phi3"}
        """

    /// Gemma 2 as transformers 5 writes it: layer types with sliding layers, soft-capping, query_pre_attn_scalar.
    static let hfConfigGemma2 = """
        {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "head_dim": 32, "max_position_embeddings": 128,
         "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}, "rms_norm_eps": 1e-06,
         "hidden_activation": "gelu_pytorch_tanh", "hidden_act": "gelu_pytorch_tanh", "query_pre_attn_scalar": 32,
         "sliding_window": 32, "layer_types": ["sliding_attention", "full_attention"], "attn_logit_softcapping": 50.0,
         "final_logit_softcapping": 30.0, "tie_word_embeddings": true, "model_type": "gemma2"}
        """

    /// Gemma 3's text model as transformers 5 writes it: rope_parameters per layer type (the global layers' linear
    /// scaling, the sliding layers' own base), layer types, q/k norms implied, no soft-capping, a window of 5.
    static let hfConfigGemma3 = """
        {"vocab_size": 256, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 128,
         "rope_parameters": {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
                             "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
         "rms_norm_eps": 1e-06, "hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": 16, "sliding_window": 5,
         "layer_types": ["sliding_attention", "full_attention"], "attn_logit_softcapping": null,
         "final_logit_softcapping": null, "tie_word_embeddings": true, "model_type": "gemma3_text"}
        """

    static func peft() throws -> [String: Data] {
        let config = #"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "up_proj"], "bias": "none"}"#
        var tensors: [(name: String, shape: [Int], values: [Float])] = []
        for module in ["q_proj", "up_proj"] {
            let stem = PEFTAdapter.keyStem(layer: 0, module: module)
            tensors.append(("\(stem).lora_A.weight", [2, 4], (0..<8).map { Float($0) / 8 }))
            tensors.append(("\(stem).lora_B.weight", [4, 2], (0..<8).map { -Float($0) / 8 }))
        }
        var input = Data(config.utf8)
        input.append(0)
        input.append(try SafetensorsWriter.encode(tensors))
        return ["lora.bin": input]
    }

    /// The first byte is the target's flags (1: a tokenizer, 2: a maximum length, 4: users required).
    static func jsonl() -> [String: Data] {
        let text = """
            {"text": "Patient presents with a persistent cough and mild fever for three days.", "user": "p1"}
            {"prompt": "Chief complaint: headache.\\nAssessment:", "completion": " Tension-type headache.", "user": 7}

            {"messages": [{"role": "user", "content": "Normal heart rate?"}, {"role": "assistant", "content": "60 to 100."}], "user": "p2"}
            """
        let ids = """
            {"input_ids": [1, 2, 3, 4], "labels": [-100, 2, 3, 4]}
            {"input_ids": [5, 6, 7]}
            """
        return ["text.jsonl": Data([7]) + Data(text.utf8), "text-plain.jsonl": Data([1]) + Data(text.utf8),
                "ids.jsonl": Data([2]) + Data(ids.utf8)]
    }
}
