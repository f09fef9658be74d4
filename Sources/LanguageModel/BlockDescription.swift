import Kernels

/// A decoder block as a model family builds it: the tensors of each part, in GGUF's and HF's names, and
/// the structure the one layer pass (`TransformerLayer`) reads: which norm, which projections read which
/// input, the rotary embedding, the attention and the feed-forward.
///
/// Only the Llama block exists today. A later family (Qwen's q/k/v biases, Gemma's (1 + w) norms,
/// post-norms and soft-capping, Phi's fused projections) adds a case or a field here and the few lines of
/// the pass that read it, not a copy of the transformer; until then the loaders refuse what the
/// description does not cover (`GGUFSupport`, and `LlamaConfiguration` for HF configs).
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
    }

    /// One norm's weight tensor: the GGUF name (after `blk.N.`) and the HF name (after `model.layers.N.`).
    struct NormTensor: Sendable {
        let gguf: String
        let hf: String
    }

    let norm: Norm
    /// Before attention, and before the feed-forward (pre-norm residual blocks).
    let attentionNorm: NormTensor
    let feedForwardNorm: NormTensor
    /// Projections that read the attention norm's output, in the order q, k, v.
    let attentionInputs: [ProjectionModule]
    /// The projection of the attention's output back into the residual stream.
    let attentionOutput: ProjectionModule
    /// Whether q and k are rotated (RoPE over the whole head) before attention.
    let rotary: Bool
    let feedForward: FeedForward
    /// Projections that read the feed-forward norm's output: gate, up.
    let feedForwardInputs: [ProjectionModule]
    /// The projection of the activated feed-forward back into the residual stream.
    let feedForwardOutput: ProjectionModule

    /// Every projection of the block, in the order the forward pass runs them.
    var projections: [ProjectionModule] {
        attentionInputs + [attentionOutput] + feedForwardInputs + [feedForwardOutput]
    }

    /// The GGUF tensor names of layer `layer`.
    func ggufTensors(layer: Int) -> [String] {
        [attentionNorm.gguf, feedForwardNorm.gguf].map { "blk.\(layer).\($0).weight" }
            + projections.map { "blk.\(layer).\($0.ggufName).weight" }
    }

    /// Llama (SmolLM, TinyLlama, MobileLLM, Llama 2; Llama 3 without its rope scaling).
    static let llama = BlockDescription(
        norm: .rms, attentionNorm: NormTensor(gguf: "attn_norm", hf: "input_layernorm"),
        feedForwardNorm: NormTensor(gguf: "ffn_norm", hf: "post_attention_layernorm"),
        attentionInputs: [.qProj, .kProj, .vProj], attentionOutput: .oProj, rotary: true,
        feedForward: .swiglu, feedForwardInputs: [.gateProj, .upProj], feedForwardOutput: .downProj)
}
