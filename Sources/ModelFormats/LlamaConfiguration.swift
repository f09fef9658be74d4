import Foundation
import SystemIO

/// The decoder families the model computes, by HF's `model_type` and GGUF's `general.architecture` (the
/// same names), each with the block its `BlockDescription` describes.
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

    /// The family's name in prose ("the Qwen2 block").
    public var displayName: String {
        switch self {
        case .llama: return "Llama"
        case .qwen2: return "Qwen2"
        case .qwen3: return "Qwen3"
        case .phi3: return "Phi-3"
        }
    }

    /// The names the loaders accept, for errors.
    public static var supportedList: String { allCases.map { "'\($0.rawValue)'" }.joined(separator: ", ") }
}

/// How a model scales its rotary frequencies θ^(−2i/d), as the file says; what no case here computes exactly
/// (`yarn`, `longrope`, partial rotary) is refused when the file is read.
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
    /// Phi-3's attention window (HF `sliding_window`, GGUF `phi3.attention.sliding_window`): a key `window` or more
    /// positions before its query is masked. No pass here masks it; instead the longest context (`contextLength`)
    /// stops at the window, where every key lies inside it, so what is computed is exact. nil: no window.
    public var slidingWindow: Int?

    /// The longest sequence inference and training accept: `max_position_embeddings`, or the sliding window
    /// when that is shorter.
    public var contextLength: Int { min(maxPositionEmbeddings, slidingWindow ?? Int.max) }

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
        guard ropeTheta > 0 && ropeTheta.isFinite else { throw fail("rope_theta = \(ropeTheta) must be positive") }
        guard rmsNormEps > 0 && rmsNormEps < 1 else { throw fail("rms_norm_eps = \(rmsNormEps) is out of range") }
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
            guard let known = ModelArchitecture(rawValue: type) else {
                throw fail("model_type '\(type)' is not supported (only \(ModelArchitecture.supportedList))")
            }
            architecture = known
        }
        if let act = json["hidden_act"] as? String, act != "silu" {
            throw fail("hidden_act '\(act)' is not supported (only 'silu')")
        }
        // Qwen2's q/k/v biases are part of its block (its config has no attention_bias); elsewhere a bias
        // would be a tensor the block does not have.
        if architecture != .qwen2, let bias = json["attention_bias"] as? Bool, bias {
            throw fail("attention_bias = true is not supported for model_type '\(architecture.rawValue)'")
        }
        if let bias = json["mlp_bias"] as? Bool, bias { throw fail("mlp_bias = true is not supported") }
        // Phi-3's window (Phi-3-mini-4k: 2047) bounds the context rather than being masked (`slidingWindow`);
        // elsewhere the key is inert unless use_sliding_window says so (Qwen2's configs carry one).
        let slidingWindow = architecture == .phi3 ? try int("sliding_window") : nil
        if let sliding = json["use_sliding_window"] as? Bool, sliding {
            throw fail("use_sliding_window = true is not supported (every layer attends to the whole context)")
        }
        if let types = json["layer_types"] as? [Any], let other = types.first(where: { $0 as? String != "full_attention" }) {
            throw fail("layer_types entry '\(other)' is not supported (only 'full_attention')")
        }
        // Partial rotary is Phi-3's (Phi-4-mini, model_type phi3: 0.75); the rope object's factor comes first, as
        // Phi3Config takes it, then the top-level one.
        let outsideFactor = try double("partial_rotary_factor")
        if let factor = outsideFactor, factor != 1, architecture != .phi3 {
            throw fail("partial_rotary_factor = \(factor) is not supported (every dimension of a head rotates)")
        }
        let rope = try Self.ropeParameters(json, file: file, maxPositionEmbeddings: try required("max_position_embeddings"),
                                           partialRotary: architecture == .phi3)
        if rope.scaling != .none, architecture != .llama {
            throw fail("rope_scaling / rope_parameters: rope scaling is computed for model_type 'llama' only (where it is "
                       + "checked against transformers), not '\(architecture.rawValue)'")
        }
        let heads = try required("num_attention_heads")
        self.init(vocabSize: try required("vocab_size"), hiddenSize: try required("hidden_size"),
                  intermediateSize: try required("intermediate_size"), numHiddenLayers: try required("num_hidden_layers"),
                  numAttentionHeads: heads, numKeyValueHeads: try int("num_key_value_heads") ?? heads,
                  headDim: try int("head_dim"), maxPositionEmbeddings: try required("max_position_embeddings"),
                  ropeTheta: try rope.theta ?? double("rope_theta") ?? 10000, ropeScaling: rope.scaling,
                  rmsNormEps: try double("rms_norm_eps") ?? 1e-6,
                  tieWordEmbeddings: json["tie_word_embeddings"] as? Bool ?? false,
                  bosTokenId: try int("bos_token_id"), eosTokenId: try int("eos_token_id"), architecture: architecture,
                  slidingWindow: slidingWindow)
        rotaryDim = try Self.rotaryDimension(headDim: headDim, factor: rope.partialRotaryFactor ?? outsideFactor ?? 1, file: file)
        try validate(file: file)
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
    /// `type`. `default`, `linear`, `llama3` and `dynamic` (within max_position_embeddings) are computed; every
    /// other type (`yarn`, `longrope`, ...) and every key the type does not read is refused by name, never
    /// approximated.
    /// - Parameter partialRotary: whether the family computes partial rotary (Phi-3): its factor is returned
    ///   rather than refused.
    static func ropeParameters(_ json: [String: Any], file: String, maxPositionEmbeddings: Int, partialRotary: Bool = false)
        throws -> (scaling: RopeScaling, theta: Double?, partialRotaryFactor: Double?) {
        func fail(_ problem: String) -> ModelFormatError { ModelFormatError(file: file, problem) }
        let field: String, object: Any
        if let scaling = json["rope_scaling"], !(scaling is NSNull) {
            (field, object) = ("rope_scaling", scaling)
        } else if let parameters = json["rope_parameters"], !(parameters is NSNull) {
            (field, object) = ("rope_parameters", parameters)
        } else {
            return (.none, nil, nil)
        }
        guard let parameters = object as? [String: Any] else { throw fail("'\(field)' must be an object") }
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
        let typeValue = parameters["rope_type"] ?? parameters["type"] ?? "default"
        guard let type = typeValue as? String else { throw fail("\(field).rope_type must be a string") }
        let theta = try number("rope_theta")
        if let theta, !(theta > 0) { throw fail("\(field).rope_theta = \(theta) must be positive") }
        if field == "rope_parameters", theta == nil { throw fail("rope_parameters.rope_theta is missing or not a number") }
        let partialRotaryFactor = try number("partial_rotary_factor")
        if let factor = partialRotaryFactor, factor != 1, !partialRotary {
            throw fail("\(field).partial_rotary_factor = \(factor) is not supported (every dimension of a head rotates)")
        }
        var known: Set<String> = ["rope_type", "type", "rope_theta", "partial_rotary_factor"]
        let scaling: RopeScaling
        switch type {
        case "default":
            scaling = .none
        case "linear":
            known.insert("factor")
            scaling = .linear(factor: try positive("factor"))
        case "llama3":
            known.formUnion(["factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"])
            let low = try positive("low_freq_factor"), high = try positive("high_freq_factor")
            guard high > low else {
                throw fail("\(field).high_freq_factor (\(high)) must be greater than low_freq_factor (\(low))")
            }
            // transformers takes a top-level original_max_position_embeddings first, then the object's, then
            // max_position_embeddings; two that differ are refused rather than one picked.
            let inside = try number("original_max_position_embeddings")
            let outside = (json["original_max_position_embeddings"] as? NSNumber)?.doubleValue
            if let inside, let outside, inside != outside {
                throw fail("\(field).original_max_position_embeddings (\(inside)) differs from the top-level "
                           + "original_max_position_embeddings (\(outside))")
            }
            let original = outside ?? inside ?? Double(maxPositionEmbeddings)
            guard original >= 1, original <= Double(1 << 30), original == original.rounded() else {
                throw fail("\(field).original_max_position_embeddings = \(original) must be a positive integer")
            }
            scaling = .llama3(factor: try positive("factor"), lowFrequencyFactor: low, highFrequencyFactor: high,
                              originalContext: Int(original))
        case "dynamic":
            known.insert("factor")
            scaling = .dynamic(factor: try positive("factor"))
        default:
            throw fail("\(field).rope_type '\(type)' is not supported (only 'default', 'linear', 'llama3' and 'dynamic')")
        }
        if let other = parameters.keys.sorted().first(where: { !known.contains($0) }) {
            throw fail("\(field).\(other) is not supported with rope_type '\(type)' (a parameter the model does not read)")
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
            throw ModelFormatError(file: file, "architecture '\(name)' is not supported (only \(ModelArchitecture.supportedList))")
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
        // llama.cpp reads Phi-3's window and then switches it off (its phi3 loader); 0 means none.
        var slidingWindow: Int? = nil
        if architecture == .phi3, gguf.metadata[p + "attention.sliding_window"] != nil {
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
        ropeScaling = try Self.ggufRopeScaling(gguf, prefix: p, headDim: self.headDim)
        if ropeScaling != .none, architecture != .llama {
            var source = "tensor 'rope_freqs.weight'"
            if case .linear = ropeScaling { source = "metadata '\(p)rope.scaling.*' (linear scaling)" }
            throw ModelFormatError(file: file, "\(source): rope scaling is computed for the Llama block only (where it "
                                   + "is checked against transformers), not '\(name)'")
        }
    }

    /// A GGUF's rope scaling as llama.cpp reads it (`llama_model::load_hparams`, ggml's `rope_yarn`): the type
    /// `rope.scaling.type` (linear when absent; none never scales), the factor `rope.scaling.factor` (else the old
    /// `rope.scale_linear`), and `rope_freqs.weight`, one F32 divisor per rotary pair (what ggml's rope reads).
    /// Types other than none and linear (`yarn`, `longrope`) are refused naming the key and value, as are a
    /// factor that is not positive and a frequency tensor of another type, length or with values not positive.
    static func ggufRopeScaling(_ gguf: GGUFFile, prefix p: String, headDim: Int) throws -> RopeScaling {
        let file = gguf.url.path
        func fail(_ problem: String) -> ModelFormatError { ModelFormatError(file: file, problem) }
        let typeKey = p + "rope.scaling.type"
        var type = "linear"
        if let value = gguf.metadata[typeKey] {
            guard let string = value.stringValue else { throw fail("metadata '\(typeKey)' must be a string") }
            type = string
        }
        guard type == "none" || type == "linear" else {
            throw fail("metadata '\(typeKey)': rope scaling '\(type)' is not supported (only 'none' and 'linear'); "
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
        guard info.type == .f32 else {
            throw fail("\(name) has type \(info.type), expected F32 (the frequency factors ggml's rope reads)")
        }
        guard info.dimensions == [headDim / 2] else {
            throw fail("\(name) has dimensions \(info.dimensions), expected [\(headDim / 2)] (one factor per rotary pair "
                       + "of the head dimension \(headDim))")
        }
        let bytes = gguf.data(for: info)
        let factors = (0..<(headDim / 2)).map {
            Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)))
        }
        if let bad = factors.firstIndex(where: { !($0 > 0 && $0.isFinite) }) {
            throw fail("\(name): element \(bad) is \(factors[bad]); every frequency factor must be positive and finite")
        }
        guard factor == 1 else {
            throw fail("\(name) together with linear rope scaling ('\(factorKey)' = \(factor)) is not supported "
                       + "(no converter writes both, and no reference checks the two combined)")
        }
        return .frequencyFactors(factors)
    }
}
