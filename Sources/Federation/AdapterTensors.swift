import Foundation
import LanguageModel
import ModelFormats
import SecureCrypto
import Wire

/// A LoRA adapter as the federation moves it: PEFT tensor names (HF row order) to Float32 values.
/// Shapes are not sent: both sides derive them from the plan (rank, targets) and the model.
public typealias AdapterTensors = [String: [Float]]

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

    /// Writes `tensors` as a PEFT directory (atomically: a temporary directory renamed into place).
    public func write(_ tensors: AdapterTensors, to directory: URL, baseModel: String?) throws {
        try check(tensors, from: directory.path)
        let parent = directory.deletingLastPathComponent()
        try FileManager.default.createDirectory(at: parent, withIntermediateDirectories: true)
        let temporary = parent.appendingPathComponent(".\(directory.lastPathComponent).\(getpid()).tmp")
        try? FileManager.default.removeItem(at: temporary)
        var peft: [String: AdapterTensor] = [:]
        for (name, values) in tensors { peft[name] = AdapterTensor(shape: shapes[name]!, values: values) }
        try PEFTAdapter.write(rank: rank, alpha: alpha, targetModules: targets.map(\.rawValue), tensors: peft,
                              to: temporary, baseModel: baseModel)
        for file in ["adapter_model.safetensors", "adapter_config.json"] {
            let fd = open(temporary.appendingPathComponent(file).path, O_RDONLY)
            if fd >= 0 { fsync(fd); close(fd) }
        }
        if FileManager.default.fileExists(atPath: directory.path) {
            try FileManager.default.removeItem(at: directory)
        }
        guard rename(temporary.path, directory.path) == 0 else {
            throw FederationError.state(path: directory.path, "cannot rename into place: \(String(cString: strerror(errno)))")
        }
        let fd = open(parent.path, O_RDONLY)
        if fd >= 0 { fsync(fd); close(fd) }
    }
}

extension LoRAAdapter {
    /// The adapter's tensors by PEFT name.
    public var federationTensors: AdapterTensors { peftTensors().mapValues(\.values) }
}

/// Digests and arithmetic on adapter tensors.
public enum AdapterMath {
    /// SHA-256 (hex) over the tensors in name order: each name's UTF-8 bytes, a zero byte, the value
    /// count as 8 bytes little-endian, then the values as little-endian Float32.
    public static func digest(_ tensors: AdapterTensors) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(tensors.values.reduce(0) { $0 + 4 * $1.count } + 128 * tensors.count)
        for name in tensors.keys.sorted() {
            let values = tensors[name]!
            bytes.append(contentsOf: Array(name.utf8))
            bytes.append(0)
            withUnsafeBytes(of: UInt64(values.count).littleEndian) { bytes.append(contentsOf: $0) }
            for value in values { withUnsafeBytes(of: value.bitPattern.littleEndian) { bytes.append(contentsOf: $0) } }
        }
        return Hex.encode(Hash.sha256(bytes))
    }

    /// `a − b` per tensor (same names and sizes).
    public static func difference(_ a: AdapterTensors, _ b: AdapterTensors) -> AdapterTensors {
        var out: AdapterTensors = [:]
        for (name, values) in a {
            guard let other = b[name], other.count == values.count else { continue }
            out[name] = zip(values, other).map { $0 - $1 }
        }
        return out
    }

    /// The sha256 (hex) of a file, e.g. a PEFT directory's adapter_model.safetensors.
    public static func fileSHA256(_ url: URL) throws -> String {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw FederationError.state(path: url.path, "cannot read")
        }
        return Hex.encode(Hash.sha256(Array(data)))
    }
}

/// Frames that carry a tensor set: its chunks, then `TensorsDone`.
public enum TensorSetFrames {
    /// Values per chunk: 1 Mi floats = 4 MiB frames, well under the payload limit.
    public static let valuesPerChunk = 1 << 20

    public static func frames(round: UInt64, kind: TensorSetKind, tensors: AdapterTensors) throws -> [Frame] {
        var frames: [Frame] = []
        for name in tensors.keys.sorted() {
            for chunk in TensorChunk.split(round: round, name: name, values: tensors[name]!,
                                           maximumValuesPerChunk: valuesPerChunk) {
                frames.append(try chunk.frame())
            }
        }
        frames.append(try TensorsDone(round: round, kind: kind, tensorCount: UInt32(tensors.count),
                                      sha256: AdapterMath.digest(tensors)).frame())
        return frames
    }
}

/// Receives one tensor set from a peer: chunks for the layout's tensors only, each within its size,
/// then a `TensorsDone` whose count and digest must match what arrived.
public struct TensorSetReceiver: Sendable {
    public let round: UInt64
    public let kind: TensorSetKind
    private let shapes: [String: [Int]]
    private var assemblers: [String: TensorAssembler] = [:]

    public init(round: UInt64, kind: TensorSetKind, layout: AdapterLayout) {
        self.round = round
        self.kind = kind
        shapes = layout.shapes
    }

    /// Adds a chunk; refuses a tensor the layout does not have, of the wrong size or round.
    public mutating func add(_ chunk: TensorChunk) throws {
        guard chunk.round == round else {
            throw FederationError.round(chunk.round, "tensor chunk for round \(chunk.round) while receiving round \(round)")
        }
        guard let shape = shapes[chunk.name] else { throw FederationError.adapterShape("unexpected tensor '\(chunk.name)'") }
        let count = shape.reduce(1, *)
        guard chunk.totalCount == UInt64(count) else {
            throw FederationError.adapterShape("tensor '\(chunk.name)' declared \(chunk.totalCount) values, expected \(count)")
        }
        if assemblers[chunk.name] == nil {
            assemblers[chunk.name] = try TensorAssembler(first: chunk, maximumCount: count)
        } else {
            try assemblers[chunk.name]!.add(chunk)
        }
    }

    /// The complete set, once `done` arrives: every tensor complete, count and digest equal.
    public func finish(_ done: TensorsDone) throws -> AdapterTensors {
        guard done.round == round, done.kind == kind else {
            throw FederationError.round(done.round, "end of \(done.kind) tensors while receiving \(kind) of round \(round)")
        }
        var tensors: AdapterTensors = [:]
        for (name, assembler) in assemblers {
            guard assembler.isComplete else { throw FederationError.adapterShape("tensor '\(name)' is incomplete") }
            tensors[name] = try assembler.finish()
        }
        guard tensors.count == Int(done.tensorCount), tensors.count == shapes.count else {
            throw FederationError.adapterShape("received \(tensors.count) tensors, announced \(done.tensorCount), expected \(shapes.count)")
        }
        let digest = AdapterMath.digest(tensors)
        guard constantTimeEqual(Array(digest.utf8), Array(done.sha256.utf8)) else {
            throw FederationError.adapterShape("digest \(digest) does not match the announced \(done.sha256)")
        }
        return tensors
    }
}
