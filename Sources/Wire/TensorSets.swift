import Foundation
import SecureCrypto

/// A LoRA adapter as the federation moves it: PEFT tensor names (HF row order) to Float32 values.
/// Shapes are not sent: both sides derive them from the plan (rank, targets) and the model.
public typealias AdapterTensors = [String: [Float]]


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

    /// `shapes`: the tensors the set must hold (names to dimensions), from the plan and the model.
    public init(round: UInt64, kind: TensorSetKind, shapes: [String: [Int]]) {
        self.round = round
        self.kind = kind
        self.shapes = shapes
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
