import Foundation
import Kernels
import ModelFormats

/// One LoRA pair on a projection: `y += scaling · B (A x)`, A: (rank, in), B: (out, rank), float32.
public struct LoRAPair: Sendable {
    public var a: [Float]
    public var b: [Float]
    public let rank: Int
    public let inFeatures: Int
    public let outFeatures: Int

    public init(a: [Float], b: [Float], rank: Int, inFeatures: Int, outFeatures: Int) {
        precondition(a.count == rank * inFeatures && b.count == outFeatures * rank, "LoRA pair shapes disagree")
        self.a = a
        self.b = b
        self.rank = rank
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
    }
}

/// A LoRA adapter over a model: pairs per (layer, module) and one scaling (`lora_alpha / r`).
///
/// Pairs are kept in HF's row order (as PEFT stores them). On a GGUF base, whose Q/K rows were
/// permuted for adjacent-pair RoPE, `LlamaModel` permutes B's rows for q_proj and k_proj to match.
public struct LoRAAdapter: Sendable {
    public var rank: Int
    public var alpha: Double
    public var scaling: Double { alpha / Double(rank) }
    public var targets: [ProjectionModule]
    /// layers[l][module]
    public var layers: [[ProjectionModule: LoRAPair]]

    public init(rank: Int, alpha: Double, targets: [ProjectionModule], layers: [[ProjectionModule: LoRAPair]]) {
        self.rank = rank
        self.alpha = alpha
        self.targets = targets
        self.layers = layers
    }

    /// Loads a PEFT adapter directory and checks every pair's shape against the model's configuration.
    public init(peft adapter: PEFTAdapter, configuration: LlamaConfiguration, source: String) throws {
        var targets: [ProjectionModule] = []
        for name in adapter.targetModules {
            guard let module = ProjectionModule(rawValue: name) else {
                throw LanguageModelError.adapter(source, "unsupported target module '\(name)'")
            }
            targets.append(module)
        }
        try configuration.checkTargets(targets, source: source)
        var layers: [[ProjectionModule: LoRAPair]] = []
        for layer in 0..<configuration.numHiddenLayers {
            var pairs: [ProjectionModule: LoRAPair] = [:]
            for module in targets {
                guard let pair = adapter.pair(layer: layer, module: module.rawValue) else { continue }
                let (inWant, outWant) = Self.shape(of: module, configuration)
                guard pair.inFeatures == inWant, pair.outFeatures == outWant, pair.rank == adapter.rank else {
                    throw LanguageModelError.adapter(source,
                        "layer \(layer) \(module.rawValue): LoRA shape in \(pair.inFeatures) out \(pair.outFeatures) r \(pair.rank), model needs in \(inWant) out \(outWant) r \(adapter.rank)")
                }
                pairs[module] = LoRAPair(a: pair.a, b: pair.b, rank: pair.rank, inFeatures: pair.inFeatures,
                                         outFeatures: pair.outFeatures)
            }
            layers.append(pairs)
        }
        guard layers.contains(where: { !$0.isEmpty }) else {
            throw LanguageModelError.adapter(source, "no LoRA tensor matches this model's layers")
        }
        self.init(rank: adapter.rank, alpha: adapter.alpha, targets: targets, layers: layers)
    }

    /// (in, out) features of a projection in this configuration.
    public static func shape(of module: ProjectionModule, _ c: LlamaConfiguration) -> (Int, Int) {
        let qWidth = c.numAttentionHeads * c.headDim, kvWidth = c.numKeyValueHeads * c.headDim
        switch module {
        case .qProj: return (c.hiddenSize, qWidth)
        case .kProj, .vProj: return (c.hiddenSize, kvWidth)
        case .oProj: return (qWidth, c.hiddenSize)
        case .gateProj, .upProj: return (c.hiddenSize, c.intermediateSize)
        case .downProj: return (c.intermediateSize, c.hiddenSize)
        case .qkvProj: return (c.hiddenSize, qWidth + 2 * kvWidth)
        case .gateUpProj: return (c.hiddenSize, 2 * c.intermediateSize)
        }
    }
}

/// Row permutation between HF's half-split RoPE layout and llama.cpp's adjacent pairs, per head.
///
/// llama.cpp's converter reorders each head's rows so that HF row `s·d/2 + i` becomes row `2i + s`
/// (s ∈ {0, 1}, i < d/2); rotating adjacent pairs of the permuted rows equals HF's rotate_half.
public enum RoPEPermutation {
    /// The GGUF row index of HF row `row` for a projection with heads of `headDimension` rows.
    @inline(__always)
    public static func ggufRow(ofHFRow row: Int, headDimension: Int) -> Int {
        let head = row / headDimension, within = row % headDimension, half = headDimension / 2
        let s = within / half, i = within % half
        return head * headDimension + 2 * i + s
    }

    /// B's rows (out, rank) reordered from HF order into GGUF order.
    public static func permuteRows(_ b: [Float], outFeatures: Int, rank: Int, headDimension: Int) -> [Float] {
        var out = [Float](repeating: 0, count: b.count)
        for row in 0..<outFeatures {
            let target = ggufRow(ofHFRow: row, headDimension: headDimension)
            for k in 0..<rank { out[target * rank + k] = b[row * rank + k] }
        }
        return out
    }

    /// The inverse: rows in GGUF order back to HF order (for gradients and adapters trained on GGUF).
    public static func unpermuteRows(_ b: [Float], outFeatures: Int, rank: Int, headDimension: Int) -> [Float] {
        var out = [Float](repeating: 0, count: b.count)
        for row in 0..<outFeatures {
            let source = ggufRow(ofHFRow: row, headDimension: headDimension)
            for k in 0..<rank { out[row * rank + k] = b[source * rank + k] }
        }
        return out
    }
}

extension LoRAAdapter {
    /// The adapter as PEFT tensors (`...layers.N.self_attn.q_proj.lora_A.weight`, HF row order).
    public func peftTensors() -> [String: AdapterTensor] {
        var tensors: [String: AdapterTensor] = [:]
        for (layer, pairs) in layers.enumerated() {
            for (module, pair) in pairs {
                let stem = PEFTAdapter.keyStem(layer: layer, module: module.rawValue)
                tensors["\(stem).lora_A.weight"] = AdapterTensor(shape: [pair.rank, pair.inFeatures], values: pair.a)
                tensors["\(stem).lora_B.weight"] = AdapterTensor(shape: [pair.outFeatures, pair.rank], values: pair.b)
            }
        }
        return tensors
    }

    /// Writes a PEFT adapter directory (adapter_config.json, adapter_model.safetensors) that HF PEFT
    /// loads; refuses non-finite values, so a NaN never reaches an adapter file.
    public func write(to directory: URL, baseModel: String? = nil) throws {
        try PEFTAdapter.write(rank: rank, alpha: alpha, targetModules: targets.map(\.rawValue), tensors: peftTensors(),
                              to: directory, baseModel: baseModel)
    }
}
