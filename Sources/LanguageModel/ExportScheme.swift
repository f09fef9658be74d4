import ModelFormats

/// What `quantize` writes: one type for every weight matrix, or one of llama.cpp's K-quant mixes.
public enum ExportScheme: Sendable, Equatable, CustomStringConvertible {
    /// Every 2-D weight in this type; for Q4_0 and Q4_1 the embedding (and output head) stays Q8_0.
    case uniform(TensorType)
    /// llama.cpp's Q4_K_M, Q5_K_M or Q6_K (`llama-quantize`'s names and choices, without an importance matrix).
    case kQuantMix(TensorType)

    /// The schemes by the names `quantize --type` takes.
    public static let byName: [String: ExportScheme] = [
        "q8_0": .uniform(.q8_0), "q4_0": .uniform(.q4_0), "q4_1": .uniform(.q4_1), "f16": .uniform(.f16),
        "f32": .uniform(.f32), "q4_k_m": .kQuantMix(.q4_K), "q5_k_m": .kQuantMix(.q5_K), "q6_k": .kQuantMix(.q6_K),
    ]

    public var description: String {
        switch self {
        case .uniform(let type): return "\(type)"
        case .kQuantMix(let base): return base == .q6_K ? "Q6_K" : "\(base)_M"
        }
    }

    /// llama.cpp's `general.file_type` (enum llama_ftype): MOSTLY_Q4_K_M = 15, Q5_K_M = 17, Q6_K = 18.
    var fileType: UInt32 {
        switch self {
        case .uniform(let type): return ModelExporter.fileType(type)
        case .kQuantMix(let base): return base == .q4_K ? 15 : base == .q5_K ? 17 : 18
        }
    }

    /// Which matrix of the model a tensor is: the embedding serves as the output head when the two are tied.
    enum Role: Equatable {
        case embedding(tied: Bool)
        case output
        case projection(ProjectionModule, layer: Int, layers: Int)
    }

    /// The type of one matrix with rows of `columns` values.
    ///
    /// The mixes follow llama.cpp's `llama_tensor_get_type` for these files: the output head (the tied
    /// embedding included) in Q6_K; attn_v (or attn_qkv) and ffn_down in Q6_K on the layers its `use_more_bits` picks (the
    /// first and last eighth and every third between), the base type elsewhere; a K-quant on rows that are not
    /// whole super-blocks of 256 falls back as llama.cpp's does (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0).
    func type(of role: Role, columns: Int) -> TensorType {
        switch self {
        case .uniform(let type):
            if case .projection = role { return type }
            return type == .q4_0 || type == .q4_1 ? .q8_0 : type
        case .kQuantMix(let base):
            let chosen: TensorType
            switch role {
            case .embedding(tied: false): chosen = base
            case .embedding(tied: true), .output: chosen = .q6_K
            case .projection(let module, let layer, let layers):
                // llama.cpp counts Phi-3's attn_qkv as attn_v (its `category_is_attn_v`).
                let finer = [.vProj, .qkvProj, .downProj].contains(module) && Self.usesMoreBits(layer: layer, of: layers)
                chosen = finer ? .q6_K : base
            }
            guard columns % chosen.blockSize != 0 else { return chosen }
            return chosen == .q4_K ? .q5_0 : chosen == .q5_K ? .q5_1 : .q8_0
        }
    }

    /// llama.cpp's `use_more_bits(i, n)`: layers in the first or last eighth, and every third one between.
    static func usesMoreBits(layer i: Int, of n: Int) -> Bool {
        i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
    }
}
