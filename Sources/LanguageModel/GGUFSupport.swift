import Foundation
import ModelFormats

/// What of a `llama`, `qwen2`, `qwen3`, `phi3`, `gemma2` or `gemma3` GGUF the model computes, so that anything else is refused rather
/// than approximated.
///
/// A GGUF names its architecture `llama` for SmolLM, TinyLlama and Llama 3.x alike, but llama.cpp reads
/// more than the architecture. Rope scaling is computed (`LlamaConfiguration.ggufRopeScaling` reads
/// `rope.scaling.type`, `rope.scaling.factor` and `rope_freqs.weight`, the llama3 frequency factors, YaRN's keys,
/// and refuses the types it does not compute); llama.cpp also reads partial rotary dimensions, extra tensors
/// (biases, q/k norms), mixtures of experts, sliding windows, soft-capping. Running such a file as a plain Llama gives wrong numbers with no
/// warning, so every `llama.*` key must be one the model reads (with a value it computes) and every tensor
/// one it loads. The same holds for the `<architecture>.*` keys and the block of each other family.
enum GGUFSupport {
    /// The `<architecture>.*` keys read into `LlamaConfiguration` (the block structure's hyper-parameters).
    static let readKeys: Set<String> = [
        "block_count", "context_length", "embedding_length", "feed_forward_length", "attention.head_count",
        "attention.head_count_kv", "rope.freq_base", "attention.layer_norm_rms_epsilon", "vocab_size",
        "rope.scaling.type", "rope.scaling.factor", "rope.scale_linear",
    ]

    /// YaRN's keys (`rope.scaling.*`), which `LlamaConfiguration.ggufYarn` reads or checks when the type is yarn.
    static let yarnKeys: Set<String> = [
        "rope.scaling.attn_factor", "rope.scaling.yarn_beta_fast", "rope.scaling.yarn_beta_slow",
        "rope.scaling.yarn_ext_factor", "rope.scaling.yarn_attn_factor", "rope.scaling.yarn_log_multiplier",
    ]

    /// Throws naming the file and the first key or tensor whose meaning the model does not compute.
    static func check(_ file: GGUFFile, _ c: LlamaConfiguration) throws {
        let path = file.url.path
        func refuse(_ problem: String) -> LanguageModelError { .unsupportedModel(file: path, problem: problem) }
        // The head size the projections have (q's rows per head), which the rope and key/value sizes must equal.
        var headDimension = c.headDim
        if let q = file.tensor(named: "blk.0.attn_q.weight"), q.dimensions.count == 2, c.numAttentionHeads > 0 {
            headDimension = q.dimensions[1] / c.numAttentionHeads
        }  // Phi-3 has no attn_q: its head is hidden / heads, and a fused attn_qkv of another size is refused by shape.
        let architecture = c.architecture.rawValue, prefix = architecture + "."
        for key in file.metadataKeys where key.hasPrefix(prefix) {
            let name = String(key.dropFirst(prefix.count))
            if readKeys.contains(name) { continue }
            // Phi-3's rotary dimension is read (partial rotary, `LlamaConfiguration.rotaryDim`) and validated there.
            if c.architecture == .phi3, name == "rope.dimension_count" { continue }
            if let problem = problem(ofKey: name, in: file, architecture: architecture, headDimension: headDimension) {
                throw refuse("metadata '\(key)': \(problem); this file needs computation the model does not do, "
                             + "so it is refused rather than run with wrong numbers")
            }
        }
        for tensor in file.tensors where !isExpected(tensor.name, c, block: .of(c.architecture)) {
            let why = tensor.name == "rope_freqs.weight"
                ? "rope frequency factors belong to the Llama block (llama.cpp reads them for 'llama' only)"
                : "the \(c.architecture.displayName) block has no such tensor (a bias, norm or other part of another architecture)"
            throw refuse("tensor '\(tensor.name)' is not supported: \(why); the file is refused rather than run "
                         + "with wrong numbers")
        }
    }

    /// Why an `<architecture>.<name>` key outside `readKeys` changes the computation, or nil when its value
    /// is the one the model computes anyway.
    static func problem(ofKey name: String, in file: GGUFFile, architecture: String = "llama", headDimension: Int)
        -> String? {
        let key = architecture + "." + name
        let scalingType = file.string(architecture + ".rope.scaling.type")
        switch name {
        case "rope.dimension_count", "attention.key_length", "attention.value_length":
            let value = file.int(key)
            return value == headDimension ? nil
                : "\(value.map(String.init) ?? "a non-integer") is not the head dimension \(headDimension) "
                    + "(partial rotary or unequal head sizes are not supported)"
        case "expert_count", "expert_used_count":
            return file.int(key) == 0 ? nil : "mixtures of experts are not supported"
        // (A `where` binds to one pattern only: each pattern carries its own.)
        case "attn_logit_softcapping" where architecture == "gemma2",
             "final_logit_softcapping" where architecture == "gemma2" || architecture == "gemma3",
             "attention.sliding_window_pattern" where architecture == "gemma2" || architecture == "gemma3",
             "rope.freq_base_swa" where architecture == "gemma3":
            return nil  // Gemma's soft-capping, sliding layers and Gemma 3's sliding rope base: `LlamaConfiguration.readGemmaKeys`
        case "rope.scaling.attn_factor" where architecture == "phi3":
            return nil  // LongRoPE's attention factor, read with its factor tensors (`LlamaConfiguration.ggufLongrope`)
        case _ where scalingType == "yarn" && yarnKeys.contains(name):
            return nil  // YaRN's, read or checked against what llama.cpp uses by `LlamaConfiguration.ggufYarn`
        case "attention.sliding_window":
            // Phi-3's window is read (`LlamaConfiguration.slidingWindow`: the context stops there), Gemma's masked on its
            // sliding layers; elsewhere a window would mask keys the model attends to.
            return architecture == "phi3" || architecture == "gemma2" || architecture == "gemma3" || file.int(key) == 0 ? nil
                : "sliding-window attention is not supported by the \(ModelArchitecture(rawValue: architecture)?.displayName ?? architecture) block"
        default:
            if name.hasPrefix("rope.scaling."), scalingType == "none" { return nil }
            // Linear scaling (the type when none is given) reads only the factor: the original context length
            // and the fine-tuned flag matter to YaRN's extrapolation, which llama.cpp switches off for it.
            if name == "rope.scaling.original_context_length" || name == "rope.scaling.finetuned" { return nil }
            return "this key is not one the \(ModelArchitecture(rawValue: architecture)?.displayName ?? architecture) block reads"
        }
    }

    /// Whether `name` is a tensor a file of this shape and block has: the embedding, the final norm, the
    /// output head, or one of a layer's tensors as the block description names them, for a layer below
    /// `block_count`. Asked per tensor, never by listing every expected name: `block_count` comes from the
    /// file and may be up to 2^24 (a fuzzed file with such a count made the list take over 2 GB).
    static func isExpected(_ name: String, _ c: LlamaConfiguration, block: BlockDescription = .llama) -> Bool {
        if ["token_embd.weight", "output_norm.weight", "output.weight"].contains(name) { return true }
        if name == "rope_freqs.weight" { return c.architecture == .llama }
        if name == "rope_factors_short.weight" || name == "rope_factors_long.weight" { return c.architecture == .phi3 }
        guard name.hasPrefix("blk.") else { return false }
        let rest = name.dropFirst(4)
        guard let dot = rest.firstIndex(of: "."), let layer = Int(rest[..<dot]), layer >= 0, layer < c.numHiddenLayers,
              String(layer) == rest[..<dot] else { return false }
        return block.ggufTensors(layer: layer).contains(name)
    }
}
