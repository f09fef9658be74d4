import Kernels
import ModelFormats

/// The projection matrices LoRA can adapt, named as in HF checkpoints and PEFT adapters: Llama's seven, and
/// Phi-3's fused `qkv_proj` (q, k, v rows in that order) and `gate_up_proj` (gate rows, then up rows). A family's
/// block (`BlockDescription`) says which of them it has.
public enum ProjectionModule: String, CaseIterable, Sendable, Codable {
    case qProj = "q_proj", kProj = "k_proj", vProj = "v_proj", oProj = "o_proj"
    case gateProj = "gate_proj", upProj = "up_proj", downProj = "down_proj"
    case qkvProj = "qkv_proj", gateUpProj = "gate_up_proj"

    /// The HF checkpoint key prefix under a layer (`self_attn.q_proj`, `mlp.gate_proj`, ...).
    public var hfPath: String {
        switch self {
        case .qProj, .kProj, .vProj, .oProj, .qkvProj: return "self_attn.\(rawValue)"
        case .gateProj, .upProj, .downProj, .gateUpProj: return "mlp.\(rawValue)"
        }
    }

    /// The tensor name stem in a GGUF file (`attn_q`, `ffn_gate`, ...).
    public var ggufName: String {
        switch self {
        case .qProj: return "attn_q"
        case .kProj: return "attn_k"
        case .vProj: return "attn_v"
        case .oProj: return "attn_output"
        case .gateProj: return "ffn_gate"
        case .upProj: return "ffn_up"
        case .downProj: return "ffn_down"
        case .qkvProj: return "attn_qkv"
        // llama.cpp's phi3 keeps the fused gate and up under ffn_up (2·ff rows; its SwiGLU splits them).
        case .gateUpProj: return "ffn_up"
        }
    }
}

/// One transformer block's frozen weights.
public struct LayerWeights: @unchecked Sendable {
    public let attentionNorm: [Float]
    public let feedForwardNorm: [Float]
    /// The block's projections (q, k, v, o, gate, up, down; or Phi-3's qkv, o, gate_up, down), by `ProjectionModule`.
    public let projections: [ProjectionModule: WeightMatrix]
    /// Additive biases of the projections the block describes as biased (Qwen2's q, k, v), each of the
    /// projection's output size.
    public let biases: [ProjectionModule: [Float]]
    /// The per-head norm weights of q and k (`headDim` each) where the block has them (Qwen3).
    public let queryNorm: [Float]?
    public let keyNorm: [Float]?
    /// The norms of the attention's and the feed-forward's outputs before each residual add (Gemma 2), as the pass
    /// multiplies by them (1 + w for Gemma's HF weights).
    public var postAttentionNorm: [Float]? = nil
    public var postFeedForwardNorm: [Float]? = nil

    public init(attentionNorm: [Float], feedForwardNorm: [Float], projections: [ProjectionModule: WeightMatrix],
                biases: [ProjectionModule: [Float]] = [:], queryNorm: [Float]? = nil, keyNorm: [Float]? = nil) {
        self.attentionNorm = attentionNorm
        self.feedForwardNorm = feedForwardNorm
        self.projections = projections
        self.biases = biases
        self.queryNorm = queryNorm
        self.keyNorm = keyNorm
    }

    @inline(__always)
    public func projection(_ module: ProjectionModule) -> WeightMatrix { projections[module]! }
}

/// All frozen weights of a Llama-family model, plus how its Q/K rows are laid out for RoPE.
public struct ModelWeights: @unchecked Sendable {
    public let configuration: LlamaConfiguration
    /// (vocabulary, hidden)
    public let embedding: WeightMatrix
    /// (vocabulary, hidden); the embedding itself when tied.
    public let output: WeightMatrix
    public let finalNorm: [Float]
    public let layers: [LayerWeights]
    /// `.adjacentPairs` for GGUF files (Q/K permuted by llama.cpp's converter), `.halfSplit` for HF.
    public let ropeLayout: RoPE.Layout
    /// What the weights were loaded from, for reports.
    public let source: String
    /// Bytes of weight storage (mapped or owned).
    public let weightBytes: Int

    public init(configuration: LlamaConfiguration, embedding: WeightMatrix, output: WeightMatrix,
                finalNorm: [Float], layers: [LayerWeights], ropeLayout: RoPE.Layout, source: String) {
        self.configuration = configuration
        self.embedding = embedding
        self.output = output
        self.finalNorm = finalNorm
        self.layers = layers
        self.ropeLayout = ropeLayout
        self.source = source
        var bytes = embedding.rows * embedding.rowBytes
        if output.data != embedding.data { bytes += output.rows * output.rowBytes }
        for layer in layers {
            for matrix in layer.projections.values { bytes += matrix.rows * matrix.rowBytes }
        }
        self.weightBytes = bytes
    }
}
