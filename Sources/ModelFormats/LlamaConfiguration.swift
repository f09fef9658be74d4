import Foundation
import SystemIO

/// The decoder families the model computes, by GGUF's `general.architecture` and HF's `model_type` (the same names,
/// but Gemma 3's text model is `gemma3_text` in HF: `hfModelType`), each with the block its `BlockDescription` describes.
public enum ModelArchitecture: String, CaseIterable, Sendable, Equatable {
    /// Llama (SmolLM, TinyLlama, MobileLLM, Llama 2, Llama 3.x with its `llama3` rope scaling).
    case llama
    /// Qwen2 and Qwen2.5: the Llama block with biases on q, k and v.
    case qwen2
    /// Qwen3 (dense): the Llama block with a per-head RMSNorm of q and k before RoPE.
    case qwen3
    /// Phi-3 and Phi-3.5 mini (`Phi3ForCausalLM`): the Llama block with q, k and v as one fused projection
    /// (`qkv_proj`, GGUF `attn_qkv`) and gate and up as another (`gate_up_proj`, GGUF `ffn_up` of 2·ff rows).
    case phi3
    /// Gemma 2 (`Gemma2ForCausalLM`): embeddings scaled by √hidden, (1 + w) RMSNorms before and after attention and
    /// the feed-forward, GeGLU (gelu-tanh), attention and final-logit soft-capping, a query scale of its own, sliding
    /// windows on the even layers, tied embeddings.
    case gemma2
    /// Gemma 3's text model (`Gemma3ForCausalLM`, HF `model_type` `gemma3_text`): Gemma 2's block with a per-head (1 + w)
    /// RMSNorm of q and k before RoPE and no attention soft-capping; five sliding-window layers of every six, which rotate
    /// with a rope base of their own (`rope_local_base_freq`), and the global layers with `rope_theta` and its linear scaling.
    case gemma3

    /// The family's name in prose ("the Qwen2 block").
    public var displayName: String {
        switch self {
        case .llama: return "Llama"
        case .qwen2: return "Qwen2"
        case .qwen3: return "Qwen3"
        case .phi3: return "Phi-3"
        case .gemma2: return "Gemma 2"
        case .gemma3: return "Gemma 3"
        }
    }

    /// HF's `model_type` for the family: its GGUF name, but `gemma3_text` for Gemma 3 (whose `gemma3` is the multimodal
    /// Gemma3ForConditionalGeneration, refused: its text weights live under other names).
    public var hfModelType: String { self == .gemma3 ? "gemma3_text" : rawValue }

    /// Whether the family is Gemma 2 or Gemma 3 (embedding scale, (1 + w) norms, post-norms, GeGLU, sliding layers).
    public var isGemma: Bool { self == .gemma2 || self == .gemma3 }

    /// The names the loaders accept, for errors: GGUF's, or (`hf`) HF's `model_type`s.
    public static func supportedList(hf: Bool = false) -> String {
        allCases.map { "'\(hf ? $0.hfModelType : $0.rawValue)'" }.joined(separator: ", ")
    }
}

/// How a model scales its rotary frequencies θ^(−2i/d), as the file says; what no case here computes exactly is
/// refused when the file is read.
public enum RopeScaling: Sendable, Equatable {
    /// The frequencies as they are.
    case none
    /// Every frequency divided by `factor` (positions divided by it): HF's `linear`, GGUF's
    /// `rope.scaling.type = linear` with `rope.scaling.factor` (a factor without a type is linear to llama.cpp).
    case linear(factor: Double)
    /// Llama 3.1's scaling (HF `rope_type: llama3`, transformers' `_compute_llama3_parameters`): frequencies whose
    /// wavelength exceeds `originalContext / lowFrequencyFactor` divided by `factor`, those below
    /// `originalContext / highFrequencyFactor` kept, and a smooth blend between.
    case llama3(factor: Double, lowFrequencyFactor: Double, highFrequencyFactor: Double, originalContext: Int)
    /// One divisor per frequency: GGUF's `rope_freqs.weight` (llama.cpp's `freq_factors`), which
    /// convert_hf_to_gguf.py writes for `llama3`.
    case frequencyFactors([Float])
    /// HF's `dynamic` (NTK-aware, transformers' `_compute_dynamic_ntk_parameters`): the frequencies change only
    /// once a sequence is longer than `max_position_embeddings`, which is the longest context inference and
    /// training accept (`LlamaModel.forward` and `lossAndGradient` refuse more), so they are the unscaled ones.
    case dynamic(factor: Double)
    /// Phi-3's LongRoPE (HF `rope_type: longrope`, transformers' `_compute_longrope_parameters`; GGUF
    /// `rope_factors_short.weight`, `rope_factors_long.weight`, `rope.scaling.attn_factor`): each frequency divided by
    /// its short factor, or by its long factor in a session whose context exceeds `originalContext` (llama.cpp's rule:
    /// one set for the whole session, `RopeFrequencies.longFactors`), and cos, sin multiplied by `attentionFactor`.
    case longrope(shortFactors: [Double], longFactors: [Double], attentionFactor: Double, originalContext: Int)

    /// YaRN (HF `rope_type: yarn`, transformers' `_compute_yarn_parameters`; GGUF `rope.scaling.type = yarn`, ggml's
    /// `rope_yarn`), Qwen2.5's and Qwen3's long-context recipe: each frequency f blended between f (kept) and
    /// f / `factor` (interpolated) by a ramp over the rotary pairs, from the pair that turns `betaFast` times within
    /// `originalContext` positions (kept) to the one that turns `betaSlow` times (interpolated), those two pair
    /// indices floored and ceiled when `truncate`; cos and sin multiplied by `attentionFactor` (the paper's
    /// 0.1·ln(factor) + 1 unless the file says otherwise).
    case yarn(factor: Double, originalContext: Int, betaFast: Double, betaSlow: Double, truncate: Bool,
              attentionFactor: Double)

    /// YaRN's default attention factor for `factor` (transformers' and llama.cpp's `get_mscale`): 0.1·m·ln s + 1,
    /// and 1 when s ≤ 1.
    public static func yarnMagnitude(_ factor: Double, _ m: Double = 1) -> Double {
        factor <= 1 ? 1 : 0.1 * m * log(factor) + 1
    }

    /// Whether this is Phi-3's LongRoPE.
    public var isLongrope: Bool {
        if case .longrope = self { return true }
        return false
    }
}

/// A Llama-family model's hyper-parameters, named as HF's `config.json` names them.
public struct LlamaConfiguration: Sendable, Equatable {
    /// Which family's block the layers are (Llama unless the file says otherwise).
    public var architecture: ModelArchitecture
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var headDim: Int
    /// How many of each head's first values RoPE rotates: the head dimension, or fewer with partial rotary
    /// (Phi-4-mini's `partial_rotary_factor` 0.75; GGUF `phi3.rope.dimension_count`), the rest passing through.
    public var rotaryDim: Int
    public var maxPositionEmbeddings: Int
    public var ropeTheta: Double
    /// The rotary frequencies' scaling (`rope_scaling` / `rope_parameters`, or GGUF's `rope.scaling.*` and
    /// `rope_freqs.weight`).
    public var ropeScaling: RopeScaling
    public var rmsNormEps: Double
    public var tieWordEmbeddings: Bool
    public var bosTokenId: Int?
    public var eosTokenId: Int?
    /// The attention window (HF `sliding_window`, GGUF `<arch>.attention.sliding_window`): on the layers
    /// `slidingLayers` marks, a key `window` or more positions before its query is masked (`attentionWindow(layer:)`).
    /// Phi-3's window is masked by no layer here (transformers masks it, llama.cpp switches it off: the two disagree past
    /// it); instead its longest context (`contextLength`) stops at the window, where every key lies inside it, so what is
    /// computed is exact. nil: no window.
    public var slidingWindow: Int?
    /// Which layers attend within `slidingWindow` (Gemma 2's even layers, Gemma 3's five of every six; HF `layer_types`,
    /// GGUF `<arch>.attention.sliding_window_pattern`); empty: none (Phi-3, and the families without a window).
    public var slidingLayers: [Bool] = []
    /// The rope base of the sliding layers, which rotate unscaled (Gemma 3's `rope_local_base_freq`, GGUF
    /// `gemma3.rope.freq_base_swa`); nil: they rotate as the other layers do.
    public var slidingRopeTheta: Double? = nil
    /// Gemma 2's soft-capping of the attention scores and of the final logits, c·tanh(x / c) (HF
    /// `attn_logit_softcapping`, `final_logit_softcapping`; GGUF `gemma2.attn_logit_softcapping`, ...); nil: none.
    public var attentionSoftcap: Double? = nil
    public var finalLogitSoftcap: Double? = nil
    /// Gemma 2's `query_pre_attn_scalar`: the attention scores are q·k / √(this) instead of / √headDim. GGUF has no
    /// key for it; llama.cpp takes the head size, or hidden / heads for Gemma-2-27B (46 layers), and so does the GGUF
    /// reader here. nil: the head size.
    public var queryPreAttentionScalar: Double? = nil

    /// Gemma's factor on the embedding rows: √hidden in the dtype transformers computes it in (`torch.tensor(hidden**0.5,
    /// dtype=...)` with config.json's `dtype` / `torch_dtype`: bfloat16 makes Gemma-2-9B's 59.867 59.75, float16 59.875),
    /// and in float32 for GGUF, as llama.cpp. nil: the rows are not scaled.
    public var embeddingScale: Float? = nil

    /// √hidden rounded to `dtype` (HF's names; float32 for any other).
    public static func embeddingScale(hidden: Int, dtype: String?) -> Float {
        let root = Double(hidden).squareRoot()
        switch dtype {
        case "bfloat16":
            let bits = Float(root).bitPattern  // round to nearest even on the upper 16 bits
            return Float(bitPattern: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) & 0xFFFF_0000)
        case "float16": return Float(Float16(root))
        default: return Float(root)
        }
    }

    /// The factor the attention scores q·k are multiplied by before any soft-capping and the softmax.
    public var attentionScale: Float { Float(1 / (queryPreAttentionScalar ?? Double(headDim)).squareRoot()) }

    /// The window layer `layer` attends within (`slidingWindow` on the layers `slidingLayers` marks), or nil: every
    /// earlier position.
    public func attentionWindow(layer: Int) -> Int? { isSliding(layer: layer) ? slidingWindow : nil }

    /// Whether `slidingLayers` marks layer `layer` (a Gemma sliding layer: its window, and Gemma 3's own rope base).
    public func isSliding(layer: Int) -> Bool { layer < slidingLayers.count && slidingLayers[layer] }

    /// The longest sequence inference and training accept: `max_position_embeddings`, or a window that no layer masks
    /// (Phi-3's) when that is shorter. (A LongRoPE session opened within the original context stops there:
    /// `RopeFrequencies.longest`.)
    public var contextLength: Int {
        min(maxPositionEmbeddings, slidingLayers.isEmpty ? slidingWindow ?? Int.max : Int.max)
    }

    public init(vocabSize: Int, hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int, numAttentionHeads: Int,
                numKeyValueHeads: Int, headDim: Int? = nil, maxPositionEmbeddings: Int, ropeTheta: Double = 10000,
                ropeScaling: RopeScaling = .none, rmsNormEps: Double = 1e-6, tieWordEmbeddings: Bool = false,
                bosTokenId: Int? = nil, eosTokenId: Int? = nil, architecture: ModelArchitecture = .llama,
                slidingWindow: Int? = nil) {
        self.architecture = architecture
        self.slidingWindow = slidingWindow
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads
        self.headDim = headDim ?? hiddenSize / max(1, numAttentionHeads)
        self.rotaryDim = self.headDim
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.ropeTheta = ropeTheta
        self.ropeScaling = ropeScaling
        self.rmsNormEps = rmsNormEps
        self.tieWordEmbeddings = tieWordEmbeddings
        self.bosTokenId = bosTokenId
        self.eosTokenId = eosTokenId
    }

    /// Checks the shape is one the model code can run, naming the first inconsistent field.
    func validate(file: String) throws {
        func fail(_ problem: String) -> ModelFormatError { ModelFormatError(file: file, problem) }
        for (name, value) in [("vocab_size", vocabSize), ("hidden_size", hiddenSize), ("intermediate_size", intermediateSize),
                              ("num_hidden_layers", numHiddenLayers), ("num_attention_heads", numAttentionHeads),
                              ("num_key_value_heads", numKeyValueHeads), ("max_position_embeddings", maxPositionEmbeddings)] {
            guard value >= 1 && value <= 1 << 24 else { throw fail("\(name) = \(value) is out of range") }
        }
        if let slidingWindow, !(slidingWindow >= 1 && slidingWindow <= 1 << 24) {
            throw fail("sliding_window = \(slidingWindow) is out of range")
        }
        guard numAttentionHeads % numKeyValueHeads == 0 else {
            throw fail("num_attention_heads (\(numAttentionHeads)) is not a multiple of num_key_value_heads (\(numKeyValueHeads))")
        }
        guard headDim >= 2, headDim % 2 == 0, headDim <= 1024 else { throw fail("head dimension \(headDim) must be even") }
        guard rotaryDim >= 2, rotaryDim % 2 == 0, rotaryDim <= headDim else {
            throw fail("rotary dimension \(rotaryDim) must be even, at least 2 and at most the head dimension \(headDim)")
        }
        if case .longrope(let short, let long, _, let original) = ropeScaling {
            for (name, factors) in [("short_factor", short), ("long_factor", long)] where factors.count != rotaryDim / 2 {
                throw fail("rope scaling \(name) has \(factors.count) values, expected \(rotaryDim / 2) (one per rotary pair)")
            }
            guard original >= 1 && original <= 1 << 30 else { throw fail("original_max_position_embeddings = \(original) is out of range") }
        }
        guard ropeTheta > 0 && ropeTheta.isFinite else { throw fail("rope_theta = \(ropeTheta) must be positive") }
        if let theta = slidingRopeTheta, !(theta > 0 && theta.isFinite) {
            throw fail("the sliding layers' rope base \(theta) must be positive")
        }
        guard slidingLayers.isEmpty || slidingLayers.count == numHiddenLayers else {
            throw fail("\(slidingLayers.count) layers marked sliding or not, expected one per layer (\(numHiddenLayers))")
        }
        guard rmsNormEps > 0 && rmsNormEps < 1 else { throw fail("rms_norm_eps = \(rmsNormEps) is out of range") }
        for (name, value) in [("attn_logit_softcapping", attentionSoftcap), ("final_logit_softcapping", finalLogitSoftcap),
                              ("query_pre_attn_scalar", queryPreAttentionScalar)] {
            if let value, !(value > 0 && value < 1e9) { throw fail("\(name) = \(value) must be positive") }
        }
    }

    /// Reads an HF `config.json` for a Llama model; missing or ill-typed keys are named with the file.
    public init(configJSON url: URL) throws {
        let file = url.path
        func fail(_ problem: String) -> ModelFormatError { ModelFormatError(file: file, problem) }
        guard let data = fileContents(atPath: file) else { throw fail("cannot read") }
        guard data.count < 16 << 20, let object = try? JSONSerialization.jsonObject(with: data),
              let json = object as? [String: Any] else { throw fail("not a JSON object") }
        func int(_ key: String) throws -> Int? {
            guard let value = json[key], !(value is NSNull) else { return nil }
            guard let number = value as? NSNumber, number.doubleValue == Double(number.intValue) else {
                throw fail("'\(key)' must be an integer")
            }
            return number.intValue
        }
        func required(_ key: String) throws -> Int {
            guard let value = try int(key) else { throw fail("missing required key '\(key)'") }
            return value
        }
        func double(_ key: String) throws -> Double? {
            guard let value = json[key], !(value is NSNull) else { return nil }
            guard let number = value as? NSNumber else { throw fail("'\(key)' must be a number") }
            return number.doubleValue
        }
        var architecture = ModelArchitecture.llama
        if let type = json["model_type"] as? String {
            guard let known = ModelArchitecture.allCases.first(where: { $0.hfModelType == type }) else {
                let multimodal = type == "gemma3" ? " (a multimodal Gemma 3; its text model's config is model_type 'gemma3_text')" : ""
                throw fail("model_type '\(type)' is not supported (only \(ModelArchitecture.supportedList(hf: true)))\(multimodal)")
            }
            architecture = known
        }
        try Self.checkActivationAndLayers(json, architecture: architecture, file: file)
        // Qwen2's q/k/v biases are part of its block (its config has no attention_bias); elsewhere a bias
        // would be a tensor the block does not have.
        if architecture != .qwen2, let bias = json["attention_bias"] as? Bool, bias {
            throw fail("attention_bias = true is not supported for model_type '\(architecture.hfModelType)'")
        }
        if let bias = json["mlp_bias"] as? Bool, bias { throw fail("mlp_bias = true is not supported") }
        // Phi-3's window (Phi-3-mini-4k: 2047) bounds the context rather than being masked (`slidingWindow`);
        // elsewhere the key is inert unless use_sliding_window says so (Qwen2's configs carry one).
        // Gemma's window is masked on its sliding layers (`slidingLayers`); Gemma2Config's and Gemma3TextConfig's default is 4096.
        // A null one is no window to mask: transformers 5.25 fails on it for both (Gemma 3 even with every layer global).
        if architecture.isGemma, json["sliding_window"] is NSNull {
            throw fail("'sliding_window' = null is not supported for model_type '\(architecture.hfModelType)' (its sliding layers need a window)")
        }
        let slidingWindow = architecture.isGemma && json["sliding_window"] == nil ? 4096
            : architecture == .phi3 || architecture.isGemma ? try int("sliding_window") : nil
        if let sliding = json["use_sliding_window"] as? Bool, sliding {
            throw fail("use_sliding_window = true is not supported (every layer attends to the whole context)")
        }
        // Partial rotary is Phi-3's (Phi-4-mini, model_type phi3: 0.75); the rope object's factor comes first, as
        // Phi3Config takes it, then the top-level one.
        let outsideFactor = try double("partial_rotary_factor")
        if let factor = outsideFactor, factor != 1, architecture != .phi3 {
            throw fail("partial_rotary_factor = \(factor) is not supported (every dimension of a head rotates)")
        }
        // Gemma 3's rope is per layer type: its global layers' object (scaling and theta) is read as any family's is.
        let gemma3Rope = architecture == .gemma3 ? try Self.gemma3Rope(json, file: file) : nil
        let rope = try Self.ropeParameters(gemma3Rope?.global ?? json, file: file,
                                           maxPositionEmbeddings: try required("max_position_embeddings"),
                                           phi3: architecture == .phi3)
        try Self.checkHFRopeScaling(rope.scaling, for: architecture, file: file)
        let heads = try required("num_attention_heads")
        self.init(vocabSize: try required("vocab_size"), hiddenSize: try required("hidden_size"),
                  intermediateSize: try required("intermediate_size"), numHiddenLayers: try required("num_hidden_layers"),
                  numAttentionHeads: heads, numKeyValueHeads: try int("num_key_value_heads") ?? heads,
                  headDim: try int("head_dim") ?? (architecture.isGemma ? 256 : nil), maxPositionEmbeddings: try required("max_position_embeddings"),
                  ropeTheta: try rope.theta ?? gemma3Rope?.globalTheta ?? double("rope_theta") ?? 10000, ropeScaling: rope.scaling,
                  rmsNormEps: try double("rms_norm_eps") ?? 1e-6,
                  tieWordEmbeddings: json["tie_word_embeddings"] as? Bool ?? false,
                  bosTokenId: try int("bos_token_id"), eosTokenId: try int("eos_token_id"), architecture: architecture,
                  slidingWindow: slidingWindow)
        rotaryDim = try Self.rotaryDimension(headDim: headDim, factor: rope.partialRotaryFactor ?? outsideFactor ?? 1, file: file)
        try validate(file: file)
        if architecture.isGemma {  // after validate: the layer count sizes the sliding layers' flags
            try readGemmaFields(json, file: file)
            slidingRopeTheta = gemma3Rope?.slidingTheta
            try validate(file: file)
        }
    }

    /// Whether rope `scaling` is computed for `architecture` (checked against transformers and llama.cpp there): every
    /// kind for Llama, YaRN for Qwen2 and Qwen3 too (their long-context recipe), Phi-3's LongRoPE, and the linear
    /// scaling of Gemma 3's global layers (Gemma-3-4B and up: factor 8).
    static func computesRopeScaling(_ scaling: RopeScaling, for architecture: ModelArchitecture) -> Bool {
        switch scaling {
        case .none: return true
        case .longrope: return architecture == .phi3
        case .yarn: return computesYarn(architecture)
        case .linear: return architecture == .llama || architecture == .gemma3
        case .llama3, .frequencyFactors, .dynamic: return architecture == .llama
        }
    }

    /// Refuses a config.json's rope scaling that `architecture`'s block does not compute (`computesRopeScaling`).
    static func checkHFRopeScaling(_ scaling: RopeScaling, for architecture: ModelArchitecture, file: String) throws {
        guard !computesRopeScaling(scaling, for: architecture) else { return }
        throw ModelFormatError(file: file, "rope_scaling / rope_parameters: this rope scaling is computed for model_type "
                               + "'llama' only (YaRN also for 'qwen2' and 'qwen3', linear also for the global layers of "
                               + "'gemma3_text'; where each is checked against transformers), not '\(architecture.hfModelType)'")
    }

    /// Whether `architecture`'s block computes YaRN (checked for Llama, Qwen2 and Qwen3).
    static func computesYarn(_ architecture: ModelArchitecture) -> Bool { [.llama, .qwen2, .qwen3].contains(architecture) }

    /// Gemma 2's and Gemma 3's fields of config.json, with Gemma2Config's and Gemma3TextConfig's defaults where a key is
    /// absent (transformers 5.25: soft-caps 50 and 30 for Gemma 2, none for Gemma 3; query_pre_attn_scalar 256; head_dim's
    /// 256 is read with the other sizes); a null cap is none, a null scalar refused (transformers refuses it); the
    /// sliding layers (`layer_types`, else every `sliding_window_pattern`-th layer global: Gemma 2's 2, Gemma 3's 6).
    mutating func readGemmaFields(_ json: [String: Any], file: String) throws {
        func number(_ key: String, default value: Double?) throws -> Double? {
            guard let raw = json[key] else { return value }
            if raw is NSNull { return nil }
            guard let number = raw as? NSNumber else { throw ModelFormatError(file: file, "'\(key)' must be a number") }
            return number.doubleValue
        }
        let gemma2 = architecture == .gemma2
        attentionSoftcap = try number("attn_logit_softcapping", default: gemma2 ? 50 : nil)
        finalLogitSoftcap = try number("final_logit_softcapping", default: gemma2 ? 30 : nil)
        guard let scalar = try number("query_pre_attn_scalar", default: 256) else {
            throw ModelFormatError(file: file, "'query_pre_attn_scalar' must be a number")
        }
        queryPreAttentionScalar = scalar
        embeddingScale = Self.embeddingScale(hidden: hiddenSize, dtype: (json["dtype"] ?? json["torch_dtype"]) as? String)
        if let types = json["layer_types"] as? [Any] {  // entries checked by checkActivationAndLayers
            guard types.count == numHiddenLayers else {
                throw ModelFormatError(file: file, "layer_types has \(types.count) entries, expected num_hidden_layers = \(numHiddenLayers)")
            }
            slidingLayers = types.map { $0 as? String == "sliding_attention" }
        } else {
            // Gemma2Config: sliding where (i + 1) % 2 ≠ 0; Gemma3TextConfig: (i + 1) % sliding_window_pattern ≠ 0 (default 6).
            var pattern = gemma2 ? 2 : 6
            if !gemma2, let value = json["sliding_window_pattern"], !(value is NSNull) {
                guard let number = value as? NSNumber, number.doubleValue == Double(number.intValue), number.intValue >= 1,
                      number.intValue <= 1 << 24 else {
                    throw ModelFormatError(file: file, "'sliding_window_pattern' must be a positive integer")
                }
                pattern = number.intValue
            }
            slidingLayers = (0..<numHiddenLayers).map { ($0 + 1) % pattern != 0 }
        }
        if let bidirectional = json["use_bidirectional_attention"] as? Bool, bidirectional {
            throw ModelFormatError(file: file, "use_bidirectional_attention = true is not supported (the model is causal)")
        }
    }

    /// Gemma 3's rope per layer type, as Gemma3TextConfig reads it (`convert_rope_params_to_dict`): transformers 5's
    /// `rope_parameters` of `full_attention` and `sliding_attention` objects, or the older top-level `rope_scaling` (the
    /// global layers'), `rope_theta` (1e6 when absent) and `rope_local_base_freq` (1e4). Returns a config holding the
    /// global layers' rope as `rope_parameters` for `ropeParameters`, and the sliding layers' theta; the sliding layers'
    /// rope must be the default (unscaled), and no other key is read.
    static func gemma3Rope(_ json: [String: Any], file: String)
        throws -> (global: [String: Any], globalTheta: Double, slidingTheta: Double) {
        func fail(_ problem: String) -> ModelFormatError { ModelFormatError(file: file, problem) }
        func theta(_ value: Any?, _ name: String, default fallback: Double) throws -> Double {
            guard let value, !(value is NSNull) else { return fallback }
            guard let number = value as? NSNumber, number.doubleValue.isFinite, number.doubleValue > 0 else {
                throw fail("\(name) must be a positive number")
            }
            return number.doubleValue
        }
        let globalTheta = try theta(json["rope_theta"], "rope_theta", default: 1_000_000)
        let localTheta = try theta(json["rope_local_base_freq"], "rope_local_base_freq", default: 10_000)
        guard let parameters = json["rope_parameters"], !(parameters is NSNull) else {
            return (json, globalTheta, localTheta)
        }
        guard let byType = parameters as? [String: Any] else { throw fail("'rope_parameters' must be an object") }
        if let other = byType.keys.sorted().first(where: { $0 != "full_attention" && $0 != "sliding_attention" }) {
            throw fail("rope_parameters.\(other) is not supported (Gemma 3's rope_parameters has full_attention and sliding_attention)")
        }
        var full = byType["full_attention"] as? [String: Any] ?? ["rope_type": "default"]
        if let scaling = json["rope_scaling"] as? [String: Any] { full.merge(scaling) { _, new in new } }
        if full["rope_theta"] == nil { full["rope_theta"] = globalTheta }
        let sliding = byType["sliding_attention"] as? [String: Any] ?? [:]
        let slidingType = sliding["rope_type"] ?? sliding["type"] ?? "default"
        guard slidingType as? String == "default" else {
            throw fail("rope_parameters.sliding_attention.rope_type '\(slidingType)' is not supported (only 'default': "
                       + "Gemma 3's sliding layers rotate unscaled)")
        }
        if let other = sliding.keys.sorted().first(where: { !["rope_type", "type", "rope_theta"].contains($0) }) {
            throw fail("rope_parameters.sliding_attention.\(other) is not supported (a parameter the model does not read)")
        }
        var global = json
        global["rope_scaling"] = nil
        global["rope_parameters"] = full
        return (global, globalTheta, try theta(sliding["rope_theta"], "rope_parameters.sliding_attention.rope_theta",
                                               default: localTheta))
    }

    /// The feed-forward's activation (`hidden_act`: SiLU; Gemma's `hidden_activation`, else `hidden_act`: gelu-tanh)
    /// and `layer_types` (full attention; Gemma's sliding layers too, masked to its window), each refused
    /// by field when the block does not compute it.
    static func checkActivationAndLayers(_ json: [String: Any], architecture: ModelArchitecture, file: String) throws {
        func fail(_ problem: String) -> ModelFormatError { ModelFormatError(file: file, problem) }
        if architecture.isGemma {
            let key = json["hidden_activation"] is String ? "hidden_activation" : "hidden_act"
            let act = json[key] as? String ?? "gelu_pytorch_tanh"
            guard act == "gelu_pytorch_tanh" else {
                throw fail("\(key) '\(act)' is not supported for model_type '\(architecture.hfModelType)' (only 'gelu_pytorch_tanh')")
            }
        } else if let act = json["hidden_act"] as? String, act != "silu" {
            throw fail("hidden_act '\(act)' is not supported (only 'silu')")
        }
        let layerTypes = architecture.isGemma ? ["full_attention", "sliding_attention"] : ["full_attention"]
        if let types = json["layer_types"] as? [Any],
           let other = types.first(where: { !layerTypes.contains($0 as? String ?? "") }) {
            throw fail("layer_types entry '\(other)' is not supported (only " + layerTypes.map { "'\($0)'" }.joined(separator: ", ") + ")")
        }
    }

    /// How many values of each head rotate with `partial_rotary_factor` = `factor`: transformers' int(head_dim ·
    /// factor) (Phi3RotaryEmbedding); a factor outside (0, 1], or one that leaves an odd count or none, is refused.
    static func rotaryDimension(headDim: Int, factor: Double, file: String) throws -> Int {
        guard factor != 1 else { return headDim }
        guard factor > 0, factor < 1 else { throw ModelFormatError(file: file, "partial_rotary_factor = \(factor) must be in (0, 1]") }
        let rotated = Int(Double(headDim) * factor)
        guard rotated >= 2, rotated % 2 == 0 else {
            throw ModelFormatError(file: file, "partial_rotary_factor = \(factor) rotates \(rotated) of the head's \(headDim) "
                                   + "values; that must be even and at least 2")
        }
        return rotated
    }

    /// The rope scaling of an HF config, as transformers reads it (`PreTrainedConfig.convert_rope_params_to_dict`,
    /// `standardize_rope_params`): the object `rope_scaling` (Llama 3.x's config.json) or, when that is absent,
    /// `rope_parameters` (what transformers 5 writes, `rope_theta` inside it); its type from `rope_type`, else
    /// `type`. `default`, `linear`, `llama3`, `dynamic` (within max_position_embeddings), `yarn` and, for Phi-3,
    /// `longrope` are computed; every other type and every key the type does not read is refused by name, never
    /// approximated.
    /// - Parameter phi3: whether the family is Phi-3, which computes partial rotary (its factor is returned rather
    ///   than refused) and LongRoPE.
    static func ropeParameters(_ json: [String: Any], file: String, maxPositionEmbeddings: Int, phi3: Bool = false)
        throws -> (scaling: RopeScaling, theta: Double?, partialRotaryFactor: Double?) {
        let field: String, object: Any
        if let scaling = json["rope_scaling"], !(scaling is NSNull) {
            (field, object) = ("rope_scaling", scaling)
        } else if let parameters = json["rope_parameters"], !(parameters is NSNull) {
            (field, object) = ("rope_parameters", parameters)
        } else {
            return (.none, nil, nil)
        }
        guard let parameters = object as? [String: Any] else { throw ModelFormatError(file: file, "'\(field)' must be an object") }
        let rope = RopeObject(field: field, parameters: parameters, json: json, file: file)
        let typeValue = parameters["rope_type"] ?? parameters["type"] ?? "default"
        guard let type = typeValue as? String else { throw rope.fail("\(field).rope_type must be a string") }
        let theta = try rope.number("rope_theta")
        if let theta, !(theta > 0) { throw rope.fail("\(field).rope_theta = \(theta) must be positive") }
        if field == "rope_parameters", theta == nil { throw rope.fail("rope_parameters.rope_theta is missing or not a number") }
        let partialRotaryFactor = try rope.number("partial_rotary_factor")
        if let factor = partialRotaryFactor, factor != 1, !phi3 {
            throw rope.fail("\(field).partial_rotary_factor = \(factor) is not supported (every dimension of a head rotates)")
        }
        var known: Set<String> = ["rope_type", "type", "rope_theta", "partial_rotary_factor"]
        let scaling: RopeScaling
        switch type {
        case "default":
            scaling = .none
        case "linear":
            known.insert("factor")
            scaling = .linear(factor: try rope.positive("factor"))
        case "llama3":
            known.formUnion(["factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"])
            let low = try rope.positive("low_freq_factor"), high = try rope.positive("high_freq_factor")
            guard high > low else {
                throw rope.fail("\(field).high_freq_factor (\(high)) must be greater than low_freq_factor (\(low))")
            }
            scaling = .llama3(factor: try rope.positive("factor"), lowFrequencyFactor: low, highFrequencyFactor: high,
                              originalContext: try rope.originalContext(default: maxPositionEmbeddings))
        case "dynamic":
            known.insert("factor")
            scaling = .dynamic(factor: try rope.positive("factor"))
        case "yarn" where !phi3:
            known.formUnion(["factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "truncate",
                             "attention_factor", "mscale", "mscale_all_dim"])
            scaling = try rope.yarn(maxPositionEmbeddings: maxPositionEmbeddings)
        case "longrope" where phi3:
            known.formUnion(["factor", "attention_factor", "short_factor", "long_factor", "original_max_position_embeddings"])
            scaling = try rope.longrope(maxPositionEmbeddings: maxPositionEmbeddings)
        default:
            throw rope.fail("\(field).rope_type '\(type)' is not supported (only 'default', 'linear', 'llama3', 'dynamic'"
                            + (phi3 ? " and, for Phi-3, 'longrope')" : " and 'yarn')"))
        }
        if let other = parameters.keys.sorted().first(where: { !known.contains($0) }) {
            throw rope.fail("\(field).\(other) is not supported with rope_type '\(type)' (a parameter the model does not read)")
        }
        return (scaling, theta, partialRotaryFactor)
    }

    /// Reads the `<architecture>.*` hyper-parameters of a GGUF file; tied when it has no `output.weight`.
    public init(gguf: GGUFFile) throws {
        let file = gguf.url.path
        guard let name = gguf.string("general.architecture") else {
            throw ModelFormatError(file: file, "missing general.architecture")
        }
        guard let architecture = ModelArchitecture(rawValue: name) else {
            throw ModelFormatError(file: file, "architecture '\(name)' is not supported (only \(ModelArchitecture.supportedList()))")
        }
        let p = name + "."
        func required(_ key: String) throws -> Int {
            guard let value = gguf.int(p + key) else { throw ModelFormatError(file: file, "missing or non-integer '\(p + key)'") }
            return value
        }
        let heads = try required("attention.head_count")
        let hidden = try required("embedding_length")
        var vocabulary = gguf.int(p + "vocab_size")
        if vocabulary == nil, case .array(let tokens)? = gguf.metadata["tokenizer.ggml.tokens"] { vocabulary = tokens.count }
        guard let vocabulary else { throw ModelFormatError(file: file, "missing \(p)vocab_size and tokenizer.ggml.tokens") }
        // The head size: key_length where the converter writes it (Qwen3's is not hidden / heads), else the
        // rotary dimension where that differs from hidden / heads (GGUFSupport refuses partial rotary). Phi-3's
        // head is always hidden / heads (transformers' Phi3Attention); its rope.dimension_count is the rotary part.
        var headDim: Int? = gguf.int(p + "attention.key_length")
        if headDim == nil, architecture != .phi3, let ropeDimensions = gguf.int(p + "rope.dimension_count"),
           ropeDimensions != hidden / max(1, heads) {
            headDim = ropeDimensions
        }
        // Phi-3's rope.dimension_count below the head is partial rotary (convert_hf_to_gguf.py writes
        // int(partial_rotary_factor · hidden) / heads).
        var rotaryDim: Int? = nil
        if architecture == .phi3, gguf.metadata[p + "rope.dimension_count"] != nil {
            guard let value = gguf.int(p + "rope.dimension_count") else {
                throw ModelFormatError(file: file, "metadata '\(p)rope.dimension_count' must be an integer")
            }
            rotaryDim = value
        }
        // llama.cpp reads Phi-3's window and then switches it off (its phi3 loader); 0 means none. Gemma's is masked on
        // its sliding layers (`readGemmaKeys`).
        var slidingWindow: Int? = nil
        if architecture == .phi3 || architecture.isGemma, gguf.metadata[p + "attention.sliding_window"] != nil {
            guard let window = gguf.int(p + "attention.sliding_window") else {
                throw ModelFormatError(file: file, "metadata '\(p)attention.sliding_window' must be an integer")
            }
            slidingWindow = window == 0 ? nil : window
        }
        self.init(vocabSize: vocabulary, hiddenSize: hidden, intermediateSize: try required("feed_forward_length"),
                  numHiddenLayers: try required("block_count"), numAttentionHeads: heads,
                  numKeyValueHeads: gguf.int(p + "attention.head_count_kv") ?? heads, headDim: headDim,
                  maxPositionEmbeddings: try required("context_length"),
                  ropeTheta: gguf.double(p + "rope.freq_base") ?? 10000,
                  rmsNormEps: gguf.double(p + "attention.layer_norm_rms_epsilon") ?? 1e-5,
                  tieWordEmbeddings: gguf.tensor(named: "output.weight") == nil,
                  bosTokenId: gguf.int("tokenizer.ggml.bos_token_id"), eosTokenId: gguf.int("tokenizer.ggml.eos_token_id"),
                  architecture: architecture, slidingWindow: slidingWindow)
        if let rotaryDim {
            guard rotaryDim >= 2, rotaryDim % 2 == 0, rotaryDim <= self.headDim else {
                throw ModelFormatError(file: file, "metadata '\(p)rope.dimension_count' = \(rotaryDim) must be even, at "
                                       + "least 2 and at most the head dimension \(self.headDim)")
            }
            self.rotaryDim = rotaryDim
        }
        try validate(file: file)
        if architecture.isGemma {  // after validate: the layer count sizes the sliding layers' flags
            try readGemmaKeys(gguf, prefix: p)
            try validate(file: file)
        }
        ropeScaling = try Self.ggufRopeScaling(gguf, prefix: p, headDim: self.headDim, context: maxPositionEmbeddings,
                                               architecture: architecture)
        if architecture == .phi3, ropeScaling == .none,
           let longrope = try Self.ggufLongrope(gguf, prefix: p, rotaryDim: self.rotaryDim) {
            ropeScaling = longrope
            try validate(file: file)
        }
        if !Self.computesRopeScaling(ropeScaling, for: architecture) {
            var source = "tensor 'rope_freqs.weight'"
            if case .linear = ropeScaling { source = "metadata '\(p)rope.scaling.*' (linear scaling)" }
            throw ModelFormatError(file: file, "\(source): rope scaling is computed for the Llama block only (where it "
                                   + "is checked against transformers), not '\(name)'")
        }
    }

    /// Gemma's keys as llama.cpp reads them (src/models/gemma2.cpp, gemma3.cpp): the soft-capping keys (optional; Gemma 3
    /// has no attention cap; Gemma 2's graph caps always, at its defaults 50 and 30 when a key is absent), the query
    /// scale llama.cpp assumes (`llamaCppGemmaQueryScalar`), the window (Gemma 2's default 4096; Gemma 3 without one has no sliding layers),
    /// the sliding layers (`attention.sliding_window_pattern`: every n-th layer global, n = 2 for Gemma 2 and 6 for Gemma 3
    /// by default, or one flag per layer) and Gemma 3's sliding layers' rope base (`rope.freq_base_swa`, default 10000).
    mutating func readGemmaKeys(_ gguf: GGUFFile, prefix p: String) throws {
        let file = gguf.url.path, gemma2 = architecture == .gemma2
        let caps = gemma2 ? [("attn_logit_softcapping", \LlamaConfiguration.attentionSoftcap),
                             ("final_logit_softcapping", \LlamaConfiguration.finalLogitSoftcap)]
            : [("final_logit_softcapping", \LlamaConfiguration.finalLogitSoftcap)]
        if gemma2 {  // llama_hparams: f_attn_logit_softcapping = 50.0f, f_final_logit_softcapping = 30.0f
            attentionSoftcap = 50
            finalLogitSoftcap = 30
        }
        for (key, path) in caps where gguf.metadata[p + key] != nil {
            guard let value = gguf.double(p + key) else {
                throw ModelFormatError(file: file, "metadata '\(p + key)' must be a number")
            }
            self[keyPath: path] = value
        }
        queryPreAttentionScalar = llamaCppGemmaQueryScalar
        embeddingScale = Float(hiddenSize).squareRoot()  // llama.cpp: ggml_scale(inpL, sqrtf(n_embd))
        // llama.cpp's gemma2 loader takes a window of 4096 when the file has none; 0, which init(gguf:) reads as none for
        // Phi-3, would be a window masking every key there: refused. Its gemma3 loader runs no sliding layer without a
        // window (nor with 0), every layer then global with the global rope.
        if gemma2, gguf.metadata[p + "attention.sliding_window"] == nil {
            slidingWindow = 4096
        } else if gemma2, slidingWindow == nil {
            throw ModelFormatError(file: file, "metadata '\(p)attention.sliding_window' = 0 is not a window Gemma 2 runs")
        }
        guard slidingWindow != nil else { return }
        let patternKey = p + "attention.sliding_window_pattern"
        switch gguf.metadata[patternKey] {
        case nil:
            slidingLayers = (0..<numHiddenLayers).map { $0 % (gemma2 ? 2 : 6) < (gemma2 ? 1 : 5) }
        case .array(let flags)?:
            guard flags.count == numHiddenLayers, flags.allSatisfy({ if case .bool = $0 { return true } else { return false } })
            else {
                throw ModelFormatError(file: file, "metadata '\(patternKey)' must be an integer or one boolean per layer "
                                       + "(\(numHiddenLayers))")
            }
            slidingLayers = flags.map { if case .bool(true) = $0 { return true } else { return false } }
        default:
            // llama_hparams::set_swa_pattern: layer l slides when l % n < n − 1 (n = 0: every layer slides).
            guard let n = gguf.int(patternKey), n >= 0, n <= 1 << 24 else {
                throw ModelFormatError(file: file, "metadata '\(patternKey)' must be an integer or one boolean per layer "
                                       + "(\(numHiddenLayers))")
            }
            slidingLayers = (0..<numHiddenLayers).map { n == 0 || $0 % n < n - 1 }
        }
        if !gemma2 {
            slidingRopeTheta = 10_000
            if gguf.metadata[p + "rope.freq_base_swa"] != nil {
                guard let theta = gguf.double(p + "rope.freq_base_swa") else {
                    throw ModelFormatError(file: file, "metadata '\(p)rope.freq_base_swa' must be a number")
                }
                slidingRopeTheta = theta
            }
        }
    }

    /// The query scale llama.cpp's gemma2 and gemma3 assume, GGUF having no key for it (src/models/gemma2.cpp,
    /// gemma3.cpp: 1/√ of the head size, or of hidden / heads for the 27B models: 46 layers of Gemma 2, 62 of Gemma 3).
    public var llamaCppGemmaQueryScalar: Double {
        Double(numHiddenLayers == (architecture == .gemma2 ? 46 : 62) ? hiddenSize / numAttentionHeads : headDim)
    }

    /// A GGUF's rope scaling as llama.cpp reads it (`llama_model::load_hparams`, ggml's `rope_yarn`): the type
    /// `rope.scaling.type` (linear when absent; none never scales), the factor `rope.scaling.factor` (else the old
    /// `rope.scale_linear`), and `rope_freqs.weight`, one F32 divisor per rotary pair (what ggml's rope reads).
    /// Types other than none, linear and yarn (`ggufYarn`) are refused naming the key and value, as are a factor
    /// that is not positive and a frequency tensor of another type, length or with values not positive.
    /// - Parameters:
    ///   - context: the file's `context_length`, YaRN's original context when the file names none.
    ///   - architecture: the family, whose block must compute YaRN before its keys are read.
    static func ggufRopeScaling(_ gguf: GGUFFile, prefix p: String, headDim: Int, context: Int,
                                architecture: ModelArchitecture) throws -> RopeScaling {
        let file = gguf.url.path
        func fail(_ problem: String) -> ModelFormatError { ModelFormatError(file: file, problem) }
        let typeKey = p + "rope.scaling.type"
        var type = "linear"
        if let value = gguf.metadata[typeKey] {
            guard let string = value.stringValue else { throw fail("metadata '\(typeKey)' must be a string") }
            type = string
        }
        if type == "yarn" {
            guard computesYarn(architecture) else {
                throw fail("metadata '\(typeKey)' = 'yarn': YaRN is computed for the Llama, Qwen2 and Qwen3 blocks only (where "
                           + "it is checked against transformers and llama.cpp), not '\(architecture.rawValue)'")
            }
            return try ggufYarn(gguf, prefix: p, context: context)
        }
        guard type == "none" || type == "linear" else {
            throw fail("metadata '\(typeKey)': rope scaling '\(type)' is not supported (only 'none', 'linear' and 'yarn'); "
                       + "this file needs computation the model does not do, so it is refused rather than run with wrong numbers")
        }
        var factor = 1.0, factorKey = p + "rope.scaling.factor"
        if gguf.metadata[factorKey] == nil { factorKey = p + "rope.scale_linear" }
        if gguf.metadata[factorKey] != nil {
            guard let value = gguf.double(factorKey), value.isFinite, value > 0 else {
                throw fail("metadata '\(factorKey)' = \(gguf.metadata[factorKey]!) must be a positive number")
            }
            if type == "linear" { factor = value }
        }
        guard let info = gguf.tensor(named: "rope_freqs.weight") else { return factor == 1 ? .none : .linear(factor: factor) }
        let name = "tensor 'rope_freqs.weight'"
        let factors = try factorTensor(gguf, info, count: headDim / 2, of: "the head dimension \(headDim)")
        guard factor == 1 else {
            throw fail("\(name) together with linear rope scaling ('\(factorKey)' = \(factor)) is not supported "
                       + "(no converter writes both, and no reference checks the two combined)")
        }
        return .frequencyFactors(factors)
    }

    /// YaRN in a GGUF as llama.cpp 0.3.36 computes it for the Llama, Qwen2 and Qwen3 blocks (`llama_context`'s
    /// yarn_attn_factor, ggml's `rope_yarn` and `ggml_rope_yarn_corr_dims`): the factor `rope.scaling.factor`
    /// (required: without it llama.cpp scales nothing), the original context `rope.scaling.original_context_length`
    /// (else `context`), beta_fast 32 and beta_slow 1 with the correction dimensions floored and ceiled, and cos, sin
    /// multiplied by get_mscale(factor) times `rope.scaling.attn_factor` (1 when absent).
    ///
    /// convert_hf_to_gguf.py also writes a config's beta_fast, beta_slow and attention_factor as
    /// `rope.scaling.yarn_beta_fast`, `yarn_beta_slow`, `yarn_attn_factor` (and llama.cpp knows `yarn_ext_factor` and
    /// `yarn_log_multiplier`), but these blocks' loaders never read them: where such a key's value is not the one
    /// llama.cpp uses anyway, transformers and llama.cpp compute two different models from the same file, so it is
    /// refused naming the key.
    static func ggufYarn(_ gguf: GGUFFile, prefix p: String, context: Int) throws -> RopeScaling {
        func fail(_ problem: String) -> ModelFormatError { ModelFormatError(file: gguf.url.path, problem) }
        func number(_ key: String) throws -> Double? {
            guard let value = gguf.metadata[p + key] else { return nil }
            guard let number = value.doubleValue, number.isFinite else { throw fail("metadata '\(p + key)' must be a number") }
            return number
        }
        guard gguf.tensor(named: "rope_freqs.weight") == nil else {
            throw fail("tensor 'rope_freqs.weight' together with YaRN is not supported (no converter writes both for these "
                       + "blocks, and no reference checks the two combined)")
        }
        guard let factor = try number("rope.scaling.factor"), factor > 0 else {
            throw fail("metadata '\(p)rope.scaling.type' = 'yarn' needs '\(p)rope.scaling.factor', which is missing or not positive")
        }
        var original = context
        if gguf.metadata[p + "rope.scaling.original_context_length"] != nil {
            guard let value = gguf.int(p + "rope.scaling.original_context_length"), value >= 1, value <= 1 << 30 else {
                throw fail("metadata '\(p)rope.scaling.original_context_length' must be a positive integer")
            }
            original = value
        }
        let multiplier = try number("rope.scaling.attn_factor") ?? 1
        guard multiplier > 0 else { throw fail("metadata '\(p)rope.scaling.attn_factor' = \(multiplier) must be positive") }
        let attention = RopeScaling.yarnMagnitude(factor) * multiplier
        // What llama.cpp uses in place of each key it does not read for these blocks.
        let unread: [(key: String, used: Double)] = [
            ("yarn_beta_fast", 32), ("yarn_beta_slow", 1), ("yarn_ext_factor", 1), ("yarn_log_multiplier", 0),
            ("yarn_attn_factor", attention),
        ]
        for (key, used) in unread {
            guard let value = try number("rope.scaling." + key) else { continue }
            guard abs(value - used) <= 1e-6 * max(1, abs(used)) else {
                throw fail("metadata '\(p)rope.scaling.\(key)' = \(value): llama.cpp does not read it for this block (it uses "
                           + "\(used)) while transformers would use the value, so the file describes two different models")
            }
        }
        return .yarn(factor: factor, originalContext: original, betaFast: 32, betaSlow: 1, truncate: true,
                     attentionFactor: attention)
    }

    /// One F32 factor per rotary pair (`rope_freqs.weight`, Phi-3's `rope_factors_*.weight`), each positive and
    /// finite; errors name the tensor and `pairs` (what the count is one factor per rotary pair of).
    static func factorTensor(_ gguf: GGUFFile, _ info: GGUFTensorInfo, count: Int, of pairs: String) throws -> [Float] {
        let name = "tensor '\(info.name)'"
        func fail(_ problem: String) -> ModelFormatError { ModelFormatError(file: gguf.url.path, problem) }
        guard info.type == .f32 else {
            throw fail("\(name) has type \(info.type), expected F32 (the frequency factors ggml's rope reads)")
        }
        guard info.dimensions == [count] else {
            throw fail("\(name) has dimensions \(info.dimensions), expected [\(count)] (one factor per rotary pair of \(pairs))")
        }
        let bytes = gguf.data(for: info)
        let factors = (0..<count).map {
            Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)))
        }
        if let bad = factors.firstIndex(where: { !($0 > 0 && $0.isFinite) }) {
            throw fail("\(name): element \(bad) is \(factors[bad]); every frequency factor must be positive and finite")
        }
        return factors
    }

    /// Phi-3's LongRoPE in a GGUF as convert_hf_to_gguf.py writes it and llama.cpp reads it: `rope_factors_short.weight`
    /// and `rope_factors_long.weight` (one F32 factor per rotary pair; llama.cpp takes the short ones while its
    /// context is within `rope.scaling.original_context_length`), and `rope.scaling.attn_factor` (1 when absent);
    /// nil when the file has neither tensor.
    static func ggufLongrope(_ gguf: GGUFFile, prefix p: String, rotaryDim: Int) throws -> RopeScaling? {
        let short = gguf.tensor(named: "rope_factors_short.weight"), long = gguf.tensor(named: "rope_factors_long.weight")
        guard short != nil || long != nil else { return nil }
        func fail(_ problem: String) -> ModelFormatError { ModelFormatError(file: gguf.url.path, problem) }
        guard let short, let long else {
            throw fail("tensor '\(short == nil ? "rope_factors_short.weight" : "rope_factors_long.weight")' is missing beside "
                       + "'\(short == nil ? "rope_factors_long.weight" : "rope_factors_short.weight")' (LongRoPE needs both)")
        }
        let pairs = "the rotary dimension \(rotaryDim)"
        let shortFactors = try factorTensor(gguf, short, count: rotaryDim / 2, of: pairs)
        let longFactors = try factorTensor(gguf, long, count: rotaryDim / 2, of: pairs)
        var attention = 1.0
        if gguf.metadata[p + "rope.scaling.attn_factor"] != nil {
            guard let value = gguf.double(p + "rope.scaling.attn_factor"), value.isFinite, value > 0 else {
                throw fail("metadata '\(p)rope.scaling.attn_factor' must be a positive number")
            }
            attention = value
        }
        guard let original = gguf.int(p + "rope.scaling.original_context_length"), original >= 1, original <= 1 << 30 else {
            throw fail("metadata '\(p)rope.scaling.original_context_length' is missing or not a positive integer (LongRoPE's "
                       + "short factors hold within it)")
        }
        return .longrope(shortFactors: shortFactors.map(Double.init), longFactors: longFactors.map(Double.init),
                         attentionFactor: attention, originalContext: original)
    }
}

/// One rope object of an HF config (`rope_scaling` or `rope_parameters`), read key by key with errors that name
/// `<field>.<key>` and the file.
struct RopeObject {
    let field: String
    let parameters: [String: Any]
    /// The whole config (a top-level original_max_position_embeddings).
    let json: [String: Any]
    let file: String

    func fail(_ problem: String) -> ModelFormatError { ModelFormatError(file: file, problem) }

    func number(_ key: String) throws -> Double? {
        guard let value = parameters[key], !(value is NSNull) else { return nil }
        guard let number = value as? NSNumber, number.doubleValue.isFinite else {
            throw fail("\(field).\(key) must be a finite number")
        }
        return number.doubleValue
    }

    func positive(_ key: String) throws -> Double {
        guard let value = try number(key) else { throw fail("\(field).\(key) is missing") }
        guard value > 0 else { throw fail("\(field).\(key) = \(value) must be positive") }
        return value
    }

    /// The pretraining context: transformers takes a top-level original_max_position_embeddings first, then the
    /// object's, then `default` (nil: required); two that differ are refused rather than one picked.
    func originalContext(default fallback: Int?) throws -> Int {
        let inside = try number("original_max_position_embeddings")
        let outside = (json["original_max_position_embeddings"] as? NSNumber)?.doubleValue
        if let inside, let outside, inside != outside {
            throw fail("\(field).original_max_position_embeddings (\(inside)) differs from the top-level "
                       + "original_max_position_embeddings (\(outside))")
        }
        guard let original = outside ?? inside ?? fallback.map(Double.init) else {
            throw fail("\(field).original_max_position_embeddings is missing (neither in \(field) nor at the top level)")
        }
        guard original >= 1, original <= Double(1 << 30), original == original.rounded() else {
            throw fail("\(field).original_max_position_embeddings = \(original) must be a positive integer")
        }
        return Int(original)
    }

    /// A list of positive finite numbers (LongRoPE's per-frequency factors), at most 4096 of them.
    func factors(_ key: String) throws -> [Double] {
        guard let list = parameters[key] as? [Any], !list.isEmpty, list.count <= 4096 else {
            throw fail("\(field).\(key) must be a list of 1 to 4096 numbers")
        }
        return try list.enumerated().map { index, value in
            guard let number = value as? NSNumber, number.doubleValue.isFinite, number.doubleValue > 0 else {
                throw fail("\(field).\(key)[\(index)] must be a positive finite number")
            }
            return number.doubleValue
        }
    }

    /// YaRN as transformers 5.25 computes it (`_compute_yarn_parameters`): factor (required; null means
    /// max_position_embeddings / original), the original context (else max_position_embeddings), beta_fast and
    /// beta_slow (32 and 1 when absent), truncate (true when absent), and the attention factor: attention_factor,
    /// else get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim) when both are given and non-zero, else
    /// get_mscale(factor).
    func yarn(maxPositionEmbeddings: Int) throws -> RopeScaling {
        let original = try originalContext(default: maxPositionEmbeddings)
        guard parameters["factor"] != nil else { throw fail("\(field).factor is missing") }
        let factor = try number("factor") ?? Double(maxPositionEmbeddings) / Double(original)
        guard factor > 0 else { throw fail("\(field).factor = \(factor) must be positive") }
        let betaFast = try parameters["beta_fast"] == nil ? 32 : positive("beta_fast")
        let betaSlow = try parameters["beta_slow"] == nil ? 1 : positive("beta_slow")
        guard betaFast > betaSlow else {
            throw fail("\(field).beta_fast (\(betaFast)) must be greater than beta_slow (\(betaSlow))")
        }
        var truncate = true
        if let value = parameters["truncate"], !(value is NSNull) {
            guard let flag = value as? Bool else { throw fail("\(field).truncate must be true or false") }
            truncate = flag
        }
        var attention = RopeScaling.yarnMagnitude(factor)
        if let explicit = try number("attention_factor") {
            attention = explicit
        } else if let m = try number("mscale"), let all = try number("mscale_all_dim"), m != 0, all != 0 {
            attention = RopeScaling.yarnMagnitude(factor, m) / RopeScaling.yarnMagnitude(factor, all)
        }
        guard attention > 0, attention.isFinite else { throw fail("\(field).attention_factor = \(attention) must be positive") }
        return .yarn(factor: factor, originalContext: original, betaFast: betaFast, betaSlow: betaSlow, truncate: truncate,
                     attentionFactor: attention)
    }

    /// Phi-3's LongRoPE as transformers computes it (`_compute_longrope_parameters`): the short factors within the
    /// original context, and cos, sin multiplied by attention_factor, which defaults to √(1 + ln s / ln original)
    /// with s = factor, or max_position_embeddings / original when factor is absent (1 when s ≤ 1).
    func longrope(maxPositionEmbeddings: Int) throws -> RopeScaling {
        let original = try originalContext(default: nil)
        let short = try factors("short_factor"), long = try factors("long_factor")
        let scale = try number("factor") ?? Double(maxPositionEmbeddings) / Double(original)
        guard scale > 0 else { throw fail("\(field).factor = \(scale) must be positive") }
        let attention = try number("attention_factor")
            ?? (scale <= 1 ? 1 : (1 + log(scale) / log(Double(original))).squareRoot())
        guard attention > 0, attention.isFinite else { throw fail("\(field).attention_factor = \(attention) must be positive") }
        return .longrope(shortFactors: short, longFactors: long, attentionFactor: attention, originalContext: original)
    }
}
