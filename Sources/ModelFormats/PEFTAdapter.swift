import Foundation
import SystemIO

/// One LoRA tensor of an adapter file.
public struct AdapterTensor: Sendable, Equatable {
    public let shape: [Int]
    public let values: [Float]

    public init(shape: [Int], values: [Float]) {
        self.shape = shape
        self.values = values
    }
}

/// A HF PEFT LoRA adapter directory: `adapter_config.json` and `adapter_model.safetensors`.
///
/// Tensor keys look like `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`;
/// A is (r, in), B is (out, r), and the update is `scaling · B A` with scaling = lora_alpha / r
/// (lora_alpha / √r with rsLoRA).
public struct PEFTAdapter: Sendable {
    public let rank: Int
    public let alpha: Double
    public let scaling: Double
    public let targetModules: [String]
    public let tensors: [String: AdapterTensor]

    static let layerPrefix = "base_model.model.model.layers."

    public init(directory: URL) throws {
        let configURL = directory.appendingPathComponent("adapter_config.json")
        let weightsURL = directory.appendingPathComponent("adapter_model.safetensors")
        func fail(_ file: URL, _ problem: String) -> ModelFormatError { ModelFormatError(file: file.path, problem) }
        guard let data = fileContents(atPath: configURL.path) else { throw fail(configURL, "cannot read") }
        guard let object = try? JSONSerialization.jsonObject(with: data), let json = object as? [String: Any] else {
            throw fail(configURL, "not a JSON object")
        }
        if let type = json["peft_type"] as? String, type != "LORA" { throw fail(configURL, "peft_type '\(type)' is not LORA") }
        guard let rank = (json["r"] as? NSNumber)?.intValue, rank >= 1, rank <= 4096 else {
            throw fail(configURL, "missing or bad 'r'")
        }
        guard let alpha = (json["lora_alpha"] as? NSNumber)?.doubleValue, alpha > 0 else {
            throw fail(configURL, "missing or bad 'lora_alpha'")
        }
        if json["use_dora"] as? Bool == true { throw fail(configURL, "DoRA adapters are not supported") }
        if json["fan_in_fan_out"] as? Bool == true { throw fail(configURL, "fan_in_fan_out adapters are not supported") }
        if let bias = json["bias"] as? String, bias != "none" { throw fail(configURL, "bias '\(bias)' is not supported") }
        if let pattern = json["rank_pattern"] as? [String: Any], !pattern.isEmpty { throw fail(configURL, "rank_pattern is not supported") }
        var targets: [String]
        if let list = json["target_modules"] as? [String] { targets = list } else if let one = json["target_modules"] as? String {
            targets = [one]
        } else { throw fail(configURL, "missing 'target_modules'") }
        targets.sort()
        let rs = json["use_rslora"] as? Bool == true
        guard FileManager.default.fileExists(atPath: weightsURL.path) else { throw fail(weightsURL, "missing") }
        let file = try SafetensorsFile(url: weightsURL)
        var tensors: [String: AdapterTensor] = [:]
        for (name, info) in file.tensors {
            tensors[name] = AdapterTensor(shape: info.shape, values: try file.floats(name))
        }
        // Every A must have its B, with matching rank.
        for (name, a) in tensors where name.hasSuffix(".lora_A.weight") {
            let bName = name.replacingOccurrences(of: ".lora_A.weight", with: ".lora_B.weight")
            guard let b = tensors[bName] else { throw fail(weightsURL, "'\(name)' has no matching lora_B") }
            guard a.shape.count == 2, b.shape.count == 2, a.shape[0] == rank, b.shape[1] == rank else {
                throw fail(weightsURL, "'\(name)' shape \(a.shape) and its B \(b.shape) disagree with r = \(rank)")
            }
        }
        self.init(rank: rank, alpha: alpha, scaling: rs ? alpha / Double(rank).squareRoot() : alpha / Double(rank),
                  targetModules: targets, tensors: tensors)
    }

    public init(rank: Int, alpha: Double, scaling: Double, targetModules: [String], tensors: [String: AdapterTensor]) {
        self.rank = rank
        self.alpha = alpha
        self.scaling = scaling
        self.targetModules = targetModules
        self.tensors = tensors
    }

    /// The key stem of a projection: `...layers.3.self_attn.q_proj` or `...layers.3.mlp.up_proj` (Phi-3's fused
    /// `gate_up_proj` is under `mlp` too, its `qkv_proj` under `self_attn`).
    public static func keyStem(layer: Int, module: String) -> String {
        let group = ["gate_proj", "up_proj", "down_proj", "gate_up_proj"].contains(module) ? "mlp" : "self_attn"
        return "\(layerPrefix)\(layer).\(group).\(module)"
    }

    /// The (A, B) pair of one projection, if the adapter has it.
    public func pair(layer: Int, module: String) -> (a: [Float], b: [Float], rank: Int, inFeatures: Int, outFeatures: Int)? {
        let stem = Self.keyStem(layer: layer, module: module)
        guard let a = tensors["\(stem).lora_A.weight"], let b = tensors["\(stem).lora_B.weight"] else { return nil }
        return (a.values, b.values, a.shape[0], a.shape[1], b.shape[0])
    }

    /// Writes a directory that HF PEFT loads: adapter_config.json and adapter_model.safetensors.
    public static func write(rank: Int, alpha: Double, targetModules: [String], tensors: [String: AdapterTensor],
                             to directory: URL, baseModel: String? = nil) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        for (name, tensor) in tensors where !tensor.values.allSatisfy({ $0.isFinite }) {
            throw ModelFormatError(file: directory.path, "tensor '\(name)' has non-finite values; the adapter was not written")
        }
        let config: [String: Any] = [
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": alpha,
            "target_modules": targetModules.sorted(), "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": false,
            "use_rslora": false, "use_dora": false, "inference_mode": true, "init_lora_weights": true,
            "base_model_name_or_path": baseModel ?? NSNull(), "modules_to_save": NSNull(),
            "layers_to_transform": NSNull(), "layers_pattern": NSNull(), "rank_pattern": [String: Any](),
            "alpha_pattern": [String: Any](), "revision": NSNull(),
        ]
        let json = try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys, .prettyPrinted])
        try SafetensorsWriter.write(tensors.map { ($0.key, $0.value.shape, $0.value.values) },
                                    metadata: ["format": "pt"], to: directory.appendingPathComponent("adapter_model.safetensors"))
        try writeFileAtomically(json, to: directory.appendingPathComponent("adapter_config.json"))
    }
}
