import Foundation
import Kernels
import ModelFormats

/// Where one LoRA pair lives in the flat parameter vector.
public struct LoRASlot: Sendable {
    public let layer: Int
    public let module: ProjectionModule
    public let rank: Int
    public let inFeatures: Int
    public let outFeatures: Int
    /// Offset of A (rank × in, row-major).
    public let aOffset: Int
    /// Offset of B (out × rank, row-major, rows in the base model's order).
    public let bOffset: Int
}

/// LoRA parameters laid out as one flat vector, so clipping, noise and the optimiser see one tensor.
///
/// B's rows follow the base model's row order: for a GGUF base (adjacent-pair RoPE), the q/k rows
/// are permuted as llama.cpp's converter permutes the base weights. `adapter()` converts back to HF order.
public struct TrainableLoRA: Sendable {
    public let rank: Int
    public let alpha: Double
    public let targets: [ProjectionModule]
    public let slots: [LoRASlot]
    /// slotIndex[layer][module] = index into `slots`.
    let slotIndex: [[ProjectionModule: Int]]
    public var parameters: [Float]
    public let ropeLayout: RoPE.Layout
    public let headDimension: Int
    public var scaling: Float { Float(alpha / Double(rank)) }
    public var count: Int { parameters.count }

    init(configuration c: LlamaConfiguration, rank: Int, alpha: Double, targets: [ProjectionModule],
         ropeLayout: RoPE.Layout) {
        precondition(rank >= 1 && !targets.isEmpty)
        precondition(targets.allSatisfy(c.adaptableModules.contains), "targets checked against the block (checkTargets)")
        self.rank = rank
        self.alpha = alpha
        self.targets = ProjectionModule.allCases.filter { targets.contains($0) }
        self.ropeLayout = ropeLayout
        headDimension = c.headDim
        var slots: [LoRASlot] = [], index: [[ProjectionModule: Int]] = [], offset = 0
        for layer in 0..<c.numHiddenLayers {
            var row: [ProjectionModule: Int] = [:]
            for module in self.targets {
                let (inFeatures, outFeatures) = LoRAAdapter.shape(of: module, c)
                row[module] = slots.count
                slots.append(LoRASlot(layer: layer, module: module, rank: rank, inFeatures: inFeatures,
                                      outFeatures: outFeatures, aOffset: offset, bOffset: offset + rank * inFeatures))
                offset += rank * (inFeatures + outFeatures)
            }
            index.append(row)
        }
        self.slots = slots
        slotIndex = index
        parameters = [Float](repeating: 0, count: offset)
    }

    /// PEFT's initialisation: A ~ Kaiming-uniform with a = √5, i.e. U(−1/√in, 1/√in); B = 0.
    ///
    /// The initialisation is public (it carries no private data), so a seeded generator is fine here.
    public static func initialized(for model: LlamaModel, rank: Int, alpha: Double, targets: [ProjectionModule],
                                   seed: UInt64) -> TrainableLoRA {
        var lora = TrainableLoRA(configuration: model.configuration, rank: rank, alpha: alpha, targets: targets,
                                 ropeLayout: model.weights.ropeLayout)
        var generator = SamplingRandomGenerator(seed: seed)
        for slot in lora.slots {
            let bound = 1 / Float(slot.inFeatures).squareRoot()
            for i in 0..<(slot.rank * slot.inFeatures) {
                lora.parameters[slot.aOffset + i] = Float.random(in: -bound...bound, using: &generator)
            }
        }
        return lora
    }

    /// Trainable parameters starting from an existing adapter (for example the federation's global one).
    public static func from(_ adapter: LoRAAdapter, for model: LlamaModel) -> TrainableLoRA {
        var lora = TrainableLoRA(configuration: model.configuration, rank: adapter.rank, alpha: adapter.alpha,
                                 targets: adapter.targets, ropeLayout: model.weights.ropeLayout)
        for slot in lora.slots {
            guard let pair = adapter.layers[slot.layer][slot.module] else { continue }
            lora.parameters.replaceSubrange(slot.aOffset..<(slot.aOffset + pair.a.count), with: pair.a)
            let b = lora.permutesRows(slot.module)
                ? RoPEPermutation.permuteRows(pair.b, outFeatures: slot.outFeatures, rank: slot.rank, headDimension: lora.headDimension)
                : pair.b
            lora.parameters.replaceSubrange(slot.bOffset..<(slot.bOffset + b.count), with: b)
        }
        return lora
    }

    func permutesRows(_ module: ProjectionModule) -> Bool {
        ropeLayout == .adjacentPairs && (module == .qProj || module == .kProj)
    }

    /// The slot for (layer, module), if that projection is adapted.
    public func slot(layer: Int, module: ProjectionModule) -> LoRASlot? {
        slotIndex[layer][module].map { slots[$0] }
    }

    /// The parameters as an adapter in HF/PEFT row order.
    public func adapter() -> LoRAAdapter {
        adapter(from: parameters)
    }

    /// Any flat vector with this layout (parameters or gradients) as per-tensor arrays in HF row order.
    public func adapter(from flat: [Float]) -> LoRAAdapter {
        precondition(flat.count == parameters.count)
        var layers: [[ProjectionModule: LoRAPair]] = Array(repeating: [:], count: slotIndex.count)
        for slot in slots {
            let a = Array(flat[slot.aOffset..<(slot.aOffset + slot.rank * slot.inFeatures)])
            var b = Array(flat[slot.bOffset..<(slot.bOffset + slot.outFeatures * slot.rank)])
            if permutesRows(slot.module) {
                b = RoPEPermutation.unpermuteRows(b, outFeatures: slot.outFeatures, rank: slot.rank, headDimension: headDimension)
            }
            layers[slot.layer][slot.module] = LoRAPair(a: a, b: b, rank: slot.rank, inFeatures: slot.inFeatures,
                                                       outFeatures: slot.outFeatures)
        }
        return LoRAAdapter(rank: rank, alpha: alpha, targets: targets, layers: layers)
    }
}
