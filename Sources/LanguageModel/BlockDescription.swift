import Kernels
import ModelFormats

/// A decoder block as a model family builds it: the tensors of each part, in GGUF's and HF's names, and
/// the structure the one layer pass (`TransformerLayer`) reads: which norm, which projections read which
/// input, the rotary embedding, the attention and the feed-forward.
///
/// Llama, Qwen2 (q/k/v biases), Qwen3 (per-head q/k norms), Phi-3 (fused projections), Gemma 2 ((1 + w) norms,
/// post-norms, GeGLU; its embedding scale, soft-capping, query scale and sliding layers are hyper-parameters in the
/// configuration) and Gemma 3 (Gemma 2's block with Qwen3's head norms, (1 + w) too) are described. A later family adds a case or a field here and the few lines of the pass that read it, not a copy
/// of the transformer; until then the loaders refuse what the description does not cover (`GGUFSupport`, and
/// `LlamaConfiguration` for HF configs).
///
/// A fused projection is one matrix whose output rows are several parts of the pass in order (Phi-3's
/// `qkv_proj`: q's rows, then k's, then v's; `gate_up_proj`: gate's, then up's). It is listed alone where the
/// parts' projections would be (`attentionInputs`, `feedForwardInputs`); the pass projects into one buffer
/// and splits it (`projectParts`), and goes back by joining the parts' gradients (`backwardParts`). Its
/// LoRA is PEFT's: one A and one B over the whole fused output.
struct BlockDescription: Sendable {
    /// How a norm normalises its input.
    enum Norm: Sendable {
        /// x / √(mean(x²) + ε) · w (Zhang & Sennrich 2019), ε = `rms_norm_eps`.
        case rms
    }

    /// What the feed-forward computes between its input projections and its output projection.
    enum FeedForward: Sendable {
        /// down(SiLU(gate x) · up x) (Shazeer 2020).
        case swiglu
        /// down(GELU_tanh(gate x) · up x) (Gemma's GeGLU, transformers' `gelu_pytorch_tanh`).
        case geglu
    }

    /// One norm's weight tensor: the GGUF name (after `blk.N.`) and the HF name (after `model.layers.N.`).
    struct NormTensor: Sendable {
        let gguf: String
        let hf: String
    }

    /// The per-head norms of q and k (Qwen3, Gemma 3): RMSNorm over each head's `headDim` values, after the
    /// projection (and its bias) and before RoPE. GGUF `attn_q_norm`/`attn_k_norm`, HF `self_attn.q_norm`/`k_norm`.
    struct HeadNorms: Sendable {
        let query: NormTensor
        let key: NormTensor
    }

    let norm: Norm
    /// Before attention, and before the feed-forward (pre-norm residual blocks).
    let attentionNorm: NormTensor
    let feedForwardNorm: NormTensor
    /// Projections that read the attention norm's output: q, k, v in that order, or one fused projection
    /// whose output is q, k and v (Phi-3's `qkv_proj`).
    let attentionInputs: [ProjectionModule]
    /// The projection of the attention's output back into the residual stream.
    let attentionOutput: ProjectionModule
    /// Attention inputs with an additive bias (Qwen2's q, k, v): GGUF `blk.N.<stem>.bias`, HF `<path>.bias`.
    let biased: [ProjectionModule]
    /// Per-head norms of q and k before RoPE, when the family has them.
    let headNorms: HeadNorms?
    /// Whether q and k are rotated (RoPE over the whole head) before attention.
    let rotary: Bool
    /// How a GGUF of this family lays out q's and k's rows for RoPE: llama.cpp's converter permutes Llama's
    /// into adjacent pairs; Qwen's (NEOX rope in llama.cpp) keep HF's half split.
    let ggufRopeLayout: RoPE.Layout
    let feedForward: FeedForward
    /// Projections that read the feed-forward norm's output: gate, up; or one fused projection whose output is
    /// gate, then up (Phi-3's `gate_up_proj`).
    let feedForwardInputs: [ProjectionModule]
    /// The projection of the activated feed-forward back into the residual stream.
    let feedForwardOutput: ProjectionModule
    /// Norms of the attention's and the feed-forward's outputs before each residual add (Gemma 2's
    /// post_attention_layernorm and post_feedforward_layernorm; GGUF `post_attention_norm`, `post_ffw_norm`).
    var postNorms: PostNorms? = nil
    /// What an HF checkpoint's norm weights are offset by: Gemma's RMSNorm multiplies by (1 + w), so its loader adds
    /// 1 to every norm weight read from safetensors, Gemma 3's head norms included (llama.cpp's converter writes 1 + w
    /// into the GGUF already).
    var hfNormOffset: Float = 0

    /// The norms after the attention and after the feed-forward.
    struct PostNorms: Sendable {
        let attention: NormTensor
        let feedForward: NormTensor
    }

    /// Every projection of the block, in the order the forward pass runs them.
    var projections: [ProjectionModule] {
        attentionInputs + [attentionOutput] + feedForwardInputs + [feedForwardOutput]
    }

    /// Floats per token of the widest fused projection's output (the pass's scratch `LayerBuffers.fused`), 0 when
    /// nothing is fused.
    func fusedWidth(_ c: LlamaConfiguration) -> Int {
        (attentionInputs + feedForwardInputs).filter { !c.fusedParts(of: $0).isEmpty }
            .map { LoRAAdapter.shape(of: $0, c).1 }.max() ?? 0
    }

    /// The GGUF tensor names of layer `layer`.
    func ggufTensors(layer: Int) -> [String] {
        var norms = [attentionNorm.gguf, feedForwardNorm.gguf]
        if let postNorms { norms += [postNorms.attention.gguf, postNorms.feedForward.gguf] }
        if let headNorms { norms += [headNorms.query.gguf, headNorms.key.gguf] }
        return norms.map { "blk.\(layer).\($0).weight" }
            + projections.map { "blk.\(layer).\($0.ggufName).weight" }
            + biased.map { "blk.\(layer).\($0.ggufName).bias" }
    }

    /// The block of `architecture`.
    static func of(_ architecture: ModelArchitecture) -> BlockDescription {
        switch architecture {
        case .llama: return .llama
        case .qwen2: return .qwen2
        case .qwen3: return .qwen3
        case .phi3: return .phi3
        case .gemma2: return .gemma2
        case .gemma3: return .gemma3
        }
    }

    /// Llama (SmolLM, TinyLlama, MobileLLM, Llama 2, Llama 3.x; its rope scaling is in the configuration).
    static let llama = BlockDescription(
        norm: .rms, attentionNorm: NormTensor(gguf: "attn_norm", hf: "input_layernorm"),
        feedForwardNorm: NormTensor(gguf: "ffn_norm", hf: "post_attention_layernorm"),
        attentionInputs: [.qProj, .kProj, .vProj], attentionOutput: .oProj, biased: [], headNorms: nil, rotary: true,
        ggufRopeLayout: .adjacentPairs, feedForward: .swiglu, feedForwardInputs: [.gateProj, .upProj],
        feedForwardOutput: .downProj)

    /// Qwen2 and Qwen2.5 (HF `Qwen2Attention`: q, k, v with bias, o without).
    static let qwen2 = BlockDescription(
        norm: .rms, attentionNorm: llama.attentionNorm, feedForwardNorm: llama.feedForwardNorm,
        attentionInputs: llama.attentionInputs, attentionOutput: .oProj, biased: [.qProj, .kProj, .vProj], headNorms: nil,
        rotary: true, ggufRopeLayout: .halfSplit, feedForward: .swiglu, feedForwardInputs: llama.feedForwardInputs,
        feedForwardOutput: .downProj)

    /// Qwen3 dense (HF `Qwen3Attention`: q_norm and k_norm over each head, no biases).
    static let qwen3 = BlockDescription(
        norm: .rms, attentionNorm: llama.attentionNorm, feedForwardNorm: llama.feedForwardNorm,
        attentionInputs: llama.attentionInputs, attentionOutput: .oProj, biased: [],
        headNorms: HeadNorms(query: NormTensor(gguf: "attn_q_norm", hf: "self_attn.q_norm"),
                             key: NormTensor(gguf: "attn_k_norm", hf: "self_attn.k_norm")),
        rotary: true, ggufRopeLayout: .halfSplit, feedForward: .swiglu, feedForwardInputs: llama.feedForwardInputs,
        feedForwardOutput: .downProj)

    /// Phi-3 (HF `Phi3ForCausalLM`, llama.cpp `phi3`): the Llama block with q, k, v fused into `qkv_proj` and gate,
    /// up into `gate_up_proj`; rotate_half RoPE (NEOX in llama.cpp, whose converter keeps HF's row order).
    static let phi3 = BlockDescription(
        norm: .rms, attentionNorm: llama.attentionNorm, feedForwardNorm: llama.feedForwardNorm,
        attentionInputs: [.qkvProj], attentionOutput: .oProj, biased: [], headNorms: nil, rotary: true,
        ggufRopeLayout: .halfSplit, feedForward: .swiglu, feedForwardInputs: [.gateUpProj], feedForwardOutput: .downProj)

    /// Gemma 2 (HF `Gemma2DecoderLayer`, llama.cpp `gemma2`): input_layernorm → attention → post_attention_layernorm →
    /// residual; pre_feedforward_layernorm → GeGLU → post_feedforward_layernorm → residual; every norm (1 + w); rotate_half
    /// RoPE (NEOX in llama.cpp, whose converter keeps HF's rows); the embedding times √hidden (`embeddingScale`).
    static let gemma2 = BlockDescription(
        norm: .rms, attentionNorm: llama.attentionNorm, feedForwardNorm: NormTensor(gguf: "ffn_norm", hf: "pre_feedforward_layernorm"),
        attentionInputs: llama.attentionInputs, attentionOutput: .oProj, biased: [], headNorms: nil, rotary: true,
        ggufRopeLayout: .halfSplit, feedForward: .geglu, feedForwardInputs: llama.feedForwardInputs,
        feedForwardOutput: .downProj,
        postNorms: PostNorms(attention: NormTensor(gguf: "post_attention_norm", hf: "post_attention_layernorm"),
                             feedForward: NormTensor(gguf: "post_ffw_norm", hf: "post_feedforward_layernorm")),
        hfNormOffset: 1)

    /// Gemma 3's text model (HF `Gemma3DecoderLayer`, llama.cpp `gemma3`): Gemma 2's block with q_norm and k_norm over each
    /// head ((1 + w), as every Gemma norm) before RoPE; its sliding layers, their rope base and the absence of the attention
    /// cap are in the configuration.
    static let gemma3 = BlockDescription(
        norm: .rms, attentionNorm: gemma2.attentionNorm, feedForwardNorm: gemma2.feedForwardNorm,
        attentionInputs: llama.attentionInputs, attentionOutput: .oProj, biased: [], headNorms: qwen3.headNorms, rotary: true,
        ggufRopeLayout: .halfSplit, feedForward: .geglu, feedForwardInputs: llama.feedForwardInputs,
        feedForwardOutput: .downProj, postNorms: gemma2.postNorms, hfNormOffset: 1)
}

extension LlamaConfiguration {
    /// What a LoRA adapts when no targets are named: the attention's projections (q, k, v, o; Phi-3's qkv, o).
    public var defaultTargets: [ProjectionModule] {
        let block = BlockDescription.of(architecture)
        return block.attentionInputs + [block.attentionOutput]
    }

    /// The projections a LoRA can adapt on this family's block, in the order the pass runs them.
    public var adaptableModules: [ProjectionModule] { BlockDescription.of(architecture).projections }

    /// Throws naming the first of `targets` that this family's block does not have (a LoRA on it would never
    /// be computed), and the modules it does have.
    public func checkTargets(_ targets: [ProjectionModule], source: String) throws {
        let available = adaptableModules
        guard let missing = targets.first(where: { !available.contains($0) }) else { return }
        var why = "the \(architecture.displayName) block has no projection '\(missing.rawValue)'"
        if let fused = available.first(where: { fusedParts(of: $0).contains(missing) }) {
            why += " (it is part of the fused '\(fused.rawValue)', which a LoRA adapts as one)"
        }
        throw LanguageModelError.adapter(source, why + "; choose from " + available.map(\.rawValue).joined(separator: ", "))
    }

    /// The separate projections a fused one stands for.
    func fusedParts(of module: ProjectionModule) -> [ProjectionModule] {
        switch module {
        case .qkvProj: return [.qProj, .kProj, .vProj]
        case .gateUpProj: return [.gateProj, .upProj]
        default: return []
        }
    }
}
