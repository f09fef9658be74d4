import Foundation
import SystemIO

/// The decoder families the model computes, by HF's `model_type` and GGUF's `general.architecture` (the
/// same names), each with the block its `BlockDescription` describes.
public enum ModelArchitecture: String, CaseIterable, Sendable, Equatable {
    /// Llama (SmolLM, TinyLlama, MobileLLM, Llama 2; Llama 3 without its rope scaling).
    case llama
    /// Qwen2 and Qwen2.5: the Llama block with biases on q, k and v.
    case qwen2
    /// Qwen3 (dense): the Llama block with a per-head RMSNorm of q and k before RoPE.
    case qwen3

    /// The family's name in prose ("the Qwen2 block").
    public var displayName: String {
        switch self {
        case .llama: return "Llama"
        case .qwen2: return "Qwen2"
        case .qwen3: return "Qwen3"
        }
    }

    /// The names the loaders accept, for errors.
    public static var supportedList: String { allCases.map { "'\($0.rawValue)'" }.joined(separator: ", ") }
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
    public var maxPositionEmbeddings: Int
    public var ropeTheta: Double
    public var rmsNormEps: Double
    public var tieWordEmbeddings: Bool
    public var bosTokenId: Int?
    public var eosTokenId: Int?

    public init(vocabSize: Int, hiddenSize: Int, intermediateSize: Int, numHiddenLayers: Int, numAttentionHeads: Int,
                numKeyValueHeads: Int, headDim: Int? = nil, maxPositionEmbeddings: Int, ropeTheta: Double = 10000,
                rmsNormEps: Double = 1e-6, tieWordEmbeddings: Bool = false, bosTokenId: Int? = nil, eosTokenId: Int? = nil,
                architecture: ModelArchitecture = .llama) {
        self.architecture = architecture
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numHiddenLayers = numHiddenLayers
        self.numAttentionHeads = numAttentionHeads
        self.numKeyValueHeads = numKeyValueHeads
        self.headDim = headDim ?? hiddenSize / max(1, numAttentionHeads)
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.ropeTheta = ropeTheta
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
        guard numAttentionHeads % numKeyValueHeads == 0 else {
            throw fail("num_attention_heads (\(numAttentionHeads)) is not a multiple of num_key_value_heads (\(numKeyValueHeads))")
        }
        guard headDim >= 2, headDim % 2 == 0, headDim <= 1024 else { throw fail("head dimension \(headDim) must be even") }
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
        if let scaling = json["rope_scaling"], !(scaling is NSNull) { throw fail("rope_scaling is not supported") }
        if let sliding = json["use_sliding_window"] as? Bool, sliding {
            throw fail("use_sliding_window = true is not supported (every layer attends to the whole context)")
        }
        if let types = json["layer_types"] as? [Any], let other = types.first(where: { $0 as? String != "full_attention" }) {
            throw fail("layer_types entry '\(other)' is not supported (only 'full_attention')")
        }
        // transformers 5 writes rope_theta inside rope_parameters, with the scaling's type beside it.
        var ropeTheta = try double("rope_theta")
        if let parameters = json["rope_parameters"], !(parameters is NSNull) {
            guard let parameters = parameters as? [String: Any] else { throw fail("'rope_parameters' must be an object") }
            if let type = parameters["rope_type"] as? String, type != "default" {
                throw fail("rope_parameters.rope_type '\(type)' is not supported (only 'default')")
            }
            guard let theta = parameters["rope_theta"] as? NSNumber else {
                throw fail("rope_parameters.rope_theta is missing or not a number")
            }
            ropeTheta = theta.doubleValue
        }
        let heads = try required("num_attention_heads")
        self.init(vocabSize: try required("vocab_size"), hiddenSize: try required("hidden_size"),
                  intermediateSize: try required("intermediate_size"), numHiddenLayers: try required("num_hidden_layers"),
                  numAttentionHeads: heads, numKeyValueHeads: try int("num_key_value_heads") ?? heads,
                  headDim: try int("head_dim"), maxPositionEmbeddings: try required("max_position_embeddings"),
                  ropeTheta: ropeTheta ?? 10000, rmsNormEps: try double("rms_norm_eps") ?? 1e-6,
                  tieWordEmbeddings: json["tie_word_embeddings"] as? Bool ?? false,
                  bosTokenId: try int("bos_token_id"), eosTokenId: try int("eos_token_id"), architecture: architecture)
        try validate(file: file)
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
        // rotary dimension where that differs from hidden / heads (GGUFSupport refuses partial rotary).
        var headDim: Int? = gguf.int(p + "attention.key_length")
        if headDim == nil, let ropeDimensions = gguf.int(p + "rope.dimension_count"), ropeDimensions != hidden / max(1, heads) {
            headDim = ropeDimensions
        }
        self.init(vocabSize: vocabulary, hiddenSize: hidden, intermediateSize: try required("feed_forward_length"),
                  numHiddenLayers: try required("block_count"), numAttentionHeads: heads,
                  numKeyValueHeads: gguf.int(p + "attention.head_count_kv") ?? heads, headDim: headDim,
                  maxPositionEmbeddings: try required("context_length"),
                  ropeTheta: gguf.double(p + "rope.freq_base") ?? 10000,
                  rmsNormEps: gguf.double(p + "attention.layer_norm_rms_epsilon") ?? 1e-5,
                  tieWordEmbeddings: gguf.tensor(named: "output.weight") == nil,
                  bosTokenId: gguf.int("tokenizer.ggml.bos_token_id"), eosTokenId: gguf.int("tokenizer.ggml.eos_token_id"),
                  architecture: architecture)
        try validate(file: file)
    }
}
