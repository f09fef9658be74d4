import Foundation
import SystemIO

/// A Llama-family model's hyper-parameters, named as HF's `config.json` names them.
public struct LlamaConfiguration: Sendable, Equatable {
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
                rmsNormEps: Double = 1e-6, tieWordEmbeddings: Bool = false, bosTokenId: Int? = nil, eosTokenId: Int? = nil) {
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
        if let type = json["model_type"] as? String, type != "llama" {
            throw fail("model_type '\(type)' is not supported (only 'llama')")
        }
        if let act = json["hidden_act"] as? String, act != "silu" {
            throw fail("hidden_act '\(act)' is not supported (only 'silu')")
        }
        if let bias = json["attention_bias"] as? Bool, bias { throw fail("attention_bias = true is not supported") }
        if let bias = json["mlp_bias"] as? Bool, bias { throw fail("mlp_bias = true is not supported") }
        if let scaling = json["rope_scaling"], !(scaling is NSNull) { throw fail("rope_scaling is not supported") }
        let heads = try required("num_attention_heads")
        self.init(vocabSize: try required("vocab_size"), hiddenSize: try required("hidden_size"),
                  intermediateSize: try required("intermediate_size"), numHiddenLayers: try required("num_hidden_layers"),
                  numAttentionHeads: heads, numKeyValueHeads: try int("num_key_value_heads") ?? heads,
                  headDim: try int("head_dim"), maxPositionEmbeddings: try required("max_position_embeddings"),
                  ropeTheta: try double("rope_theta") ?? 10000, rmsNormEps: try double("rms_norm_eps") ?? 1e-6,
                  tieWordEmbeddings: json["tie_word_embeddings"] as? Bool ?? false,
                  bosTokenId: try int("bos_token_id"), eosTokenId: try int("eos_token_id"))
        try validate(file: file)
    }

    /// Reads the `llama.*` hyper-parameters of a GGUF file; tied when it has no `output.weight`.
    public init(gguf: GGUFFile) throws {
        let file = gguf.url.path
        guard let architecture = gguf.string("general.architecture") else {
            throw ModelFormatError(file: file, "missing general.architecture")
        }
        guard architecture == "llama" else {
            throw ModelFormatError(file: file, "architecture '\(architecture)' is not supported (only 'llama')")
        }
        func required(_ key: String) throws -> Int {
            guard let value = gguf.int(key) else { throw ModelFormatError(file: file, "missing or non-integer '\(key)'") }
            return value
        }
        let heads = try required("llama.attention.head_count")
        let hidden = try required("llama.embedding_length")
        var vocabulary = gguf.int("llama.vocab_size")
        if vocabulary == nil, case .array(let tokens)? = gguf.metadata["tokenizer.ggml.tokens"] { vocabulary = tokens.count }
        guard let vocabulary else { throw ModelFormatError(file: file, "missing llama.vocab_size and tokenizer.ggml.tokens") }
        var headDim: Int? = nil
        if let ropeDimensions = gguf.int("llama.rope.dimension_count"), ropeDimensions != hidden / max(1, heads) {
            headDim = gguf.int("llama.attention.key_length") ?? ropeDimensions
        }
        self.init(vocabSize: vocabulary, hiddenSize: hidden, intermediateSize: try required("llama.feed_forward_length"),
                  numHiddenLayers: try required("llama.block_count"), numAttentionHeads: heads,
                  numKeyValueHeads: gguf.int("llama.attention.head_count_kv") ?? heads, headDim: headDim,
                  maxPositionEmbeddings: try required("llama.context_length"),
                  ropeTheta: gguf.double("llama.rope.freq_base") ?? 10000,
                  rmsNormEps: gguf.double("llama.attention.layer_norm_rms_epsilon") ?? 1e-5,
                  tieWordEmbeddings: gguf.tensor(named: "output.weight") == nil,
                  bosTokenId: gguf.int("tokenizer.ggml.bos_token_id"), eosTokenId: gguf.int("tokenizer.ggml.eos_token_id"))
        try validate(file: file)
    }
}
