import Foundation
import LanguageModel
import ModelFormats
import SystemIO
import Wire

/// The tensors an adapter of a given shape has, for checking what a peer sends and for writing PEFT
/// directories.
public struct AdapterLayout: Sendable {
    public let rank: Int
    public let alpha: Double
    public let targets: [ProjectionModule]
    /// Every tensor name and its shape.
    public let shapes: [String: [Int]]
    /// The number of layers.
    public let layers: Int

    public init(configuration: LlamaConfiguration, rank: Int, alpha: Double, targets: [ProjectionModule]) {
        self.rank = rank
        self.alpha = alpha
        self.targets = targets
        layers = configuration.numHiddenLayers
        var shapes: [String: [Int]] = [:]
        for layer in 0..<configuration.numHiddenLayers {
            for module in targets {
                let (inFeatures, outFeatures) = LoRAAdapter.shape(of: module, configuration)
                let stem = PEFTAdapter.keyStem(layer: layer, module: module.rawValue)
                shapes["\(stem).lora_A.weight"] = [rank, inFeatures]
                shapes["\(stem).lora_B.weight"] = [outFeatures, rank]
            }
        }
        self.shapes = shapes
    }

    /// The layout of `plan` on a model.
    public init(configuration: LlamaConfiguration, plan: TrainingPlan) throws {
        let targets = try plan.targets.map { name -> ProjectionModule in
            guard let module = ProjectionModule(rawValue: name) else {
                throw FederationError.configuration(path: "plan", field: "targets", "unknown module '\(name)'")
            }
            return module
        }
        do { try configuration.checkTargets(targets, source: "plan") } catch {
            throw FederationError.configuration(path: "plan", field: "targets", "\(error)")
        }
        self.init(configuration: configuration, rank: plan.rank, alpha: plan.alpha, targets: targets)
    }

    /// The largest tensor, in values (the receiver's per-tensor limit).
    public var largestTensor: Int { shapes.values.map { $0.reduce(1, *) }.max() ?? 0 }

    /// Checks that `tensors` has exactly this layout's names and sizes, with finite values.
    public func check(_ tensors: AdapterTensors, from source: String) throws {
        for name in shapes.keys where tensors[name] == nil {
            throw FederationError.adapterShape("\(source): tensor '\(name)' is missing")
        }
        for (name, values) in tensors {
            guard let shape = shapes[name] else { throw FederationError.adapterShape("\(source): unexpected tensor '\(name)'") }
            guard values.count == shape.reduce(1, *) else {
                throw FederationError.adapterShape("\(source): tensor '\(name)' has \(values.count) values, expected \(shape)")
            }
            guard values.allSatisfy({ $0.isFinite }) else {
                throw FederationError.adapterShape("\(source): tensor '\(name)' has non-finite values")
            }
        }
    }

    /// The adapter with these tensors.
    public func adapter(_ tensors: AdapterTensors, from source: String) throws -> LoRAAdapter {
        try check(tensors, from: source)
        var layerPairs: [[ProjectionModule: LoRAPair]] = Array(repeating: [:], count: layers)
        for layer in 0..<layers {
            for module in targets {
                let stem = PEFTAdapter.keyStem(layer: layer, module: module.rawValue)
                let a = tensors["\(stem).lora_A.weight"]!, b = tensors["\(stem).lora_B.weight"]!
                let aShape = shapes["\(stem).lora_A.weight"]!, bShape = shapes["\(stem).lora_B.weight"]!
                layerPairs[layer][module] = LoRAPair(a: a, b: b, rank: rank, inFeatures: aShape[1], outFeatures: bShape[0])
            }
        }
        return LoRAAdapter(rank: rank, alpha: alpha, targets: targets, layers: layerPairs)
    }

    /// Writes `tensors` as a PEFT directory, replacing any directory there atomically
    /// (`replaceDirectoryAtomically`): a crash or a failure leaves the old adapter whole or the new one.
    public func write(_ tensors: AdapterTensors, to directory: URL, baseModel: String?) throws {
        try check(tensors, from: directory.path)
        try FileManager.default.createDirectory(at: directory.deletingLastPathComponent(), withIntermediateDirectories: true)
        var peft: [String: AdapterTensor] = [:]
        for (name, values) in tensors { peft[name] = AdapterTensor(shape: shapes[name]!, values: values) }
        try replaceDirectoryAtomically(directory) { temporary in
            try PEFTAdapter.write(rank: rank, alpha: alpha, targetModules: targets.map(\.rawValue), tensors: peft,
                                  to: temporary, baseModel: baseModel)
        }
    }
}

extension LoRAAdapter {
    /// The adapter's tensors by PEFT name.
    public var federationTensors: AdapterTensors { peftTensors().mapValues(\.values) }
}

extension TensorSetReceiver {
    /// A receiver for an adapter of `layout`.
    public init(round: UInt64, kind: TensorSetKind, layout: AdapterLayout) {
        self.init(round: round, kind: kind, shapes: layout.shapes)
    }
}
