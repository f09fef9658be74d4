import Foundation
import SystemIO

/// Builds a GGUF v3 file: metadata in insertion order, then tensors, each aligned.
public struct GGUFWriter {
    public let alignment: Int
    private var entries: [(String, GGUFValue)] = []
    private var tensors: [(name: String, dimensions: [Int], type: TensorType, data: [UInt8])] = []

    public init(alignment: Int = 32) {
        precondition(alignment > 0 && alignment & (alignment - 1) == 0, "alignment must be a power of two")
        self.alignment = alignment
    }

    /// Sets a metadata value (replacing an earlier one with the same key, keeping its position).
    public mutating func set(_ key: String, _ value: GGUFValue) {
        if let i = entries.firstIndex(where: { $0.0 == key }) { entries[i].1 = value } else { entries.append((key, value)) }
    }

    /// Adds a tensor; `dimensions` in ggml order (contiguous first); `data` must be exactly its size.
    public mutating func addTensor(name: String, dimensions: [Int], type: TensorType, data: [UInt8]) throws {
        guard !dimensions.isEmpty, dimensions.count <= 4, dimensions.allSatisfy({ $0 >= 1 }) else {
            throw ModelFormatError(file: name, "bad dimensions \(dimensions)")
        }
        guard dimensions[0] % type.blockSize == 0 else {
            throw ModelFormatError(file: name, "first dimension \(dimensions[0]) is not a multiple of \(type)'s block")
        }
        let expected = dimensions.reduce(1, *) / type.blockSize * type.bytesPerBlock
        guard data.count == expected else {
            throw ModelFormatError(file: name, "\(data.count) bytes given, \(type) \(dimensions) needs \(expected)")
        }
        guard !tensors.contains(where: { $0.name == name }) else { throw ModelFormatError(file: name, "duplicate tensor") }
        tensors.append((name, dimensions, type, data))
    }

    /// The file's bytes.
    public func encoded() -> Data {
        var out = Data()
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func string(_ s: String) {
            u64(UInt64(s.utf8.count))
            out.append(contentsOf: Array(s.utf8))
        }
        func typeCode(_ value: GGUFValue) -> UInt32 {
            switch value {
            case .uint8: return 0
            case .int8: return 1
            case .uint16: return 2
            case .int16: return 3
            case .uint32: return 4
            case .int32: return 5
            case .float32: return 6
            case .bool: return 7
            case .string: return 8
            case .array: return 9
            case .uint64: return 10
            case .int64: return 11
            case .float64: return 12
            }
        }
        func value(_ v: GGUFValue) {
            switch v {
            case .uint8(let x): out.append(x)
            case .int8(let x): out.append(UInt8(bitPattern: x))
            case .uint16(let x): withUnsafeBytes(of: x.littleEndian) { out.append(contentsOf: $0) }
            case .int16(let x): withUnsafeBytes(of: x.littleEndian) { out.append(contentsOf: $0) }
            case .uint32(let x): u32(x)
            case .int32(let x): u32(UInt32(bitPattern: x))
            case .float32(let x): u32(x.bitPattern)
            case .bool(let x): out.append(x ? 1 : 0)
            case .string(let s): string(s)
            case .array(let a):
                // An empty array's element type is written as uint8 (any type is valid for it).
                u32(a.first.map(typeCode) ?? 0)
                u64(UInt64(a.count))
                a.forEach(value)
            case .uint64(let x): u64(x)
            case .int64(let x): u64(UInt64(bitPattern: x))
            case .float64(let x): u64(x.bitPattern)
            }
        }
        out.append(contentsOf: Array("GGUF".utf8))
        u32(3)
        u64(UInt64(tensors.count))
        var metadata = entries
        if alignment != 32 && !metadata.contains(where: { $0.0 == "general.alignment" }) {
            metadata.append(("general.alignment", .uint32(UInt32(alignment))))
        }
        u64(UInt64(metadata.count))
        for (key, v) in metadata {
            string(key)
            u32(typeCode(v))
            value(v)
        }
        var offset = 0
        var offsets: [Int] = []
        for tensor in tensors {
            offsets.append(offset)
            offset = (offset + tensor.data.count + alignment - 1) / alignment * alignment
        }
        for (tensor, tensorOffset) in zip(tensors, offsets) {
            string(tensor.name)
            u32(UInt32(tensor.dimensions.count))
            tensor.dimensions.forEach { u64(UInt64($0)) }
            u32(tensor.type.rawValue)
            u64(UInt64(tensorOffset))
        }
        func pad() {
            let extra = (alignment - out.count % alignment) % alignment
            out.append(contentsOf: [UInt8](repeating: 0, count: extra))
        }
        pad()
        for tensor in tensors {
            out.append(contentsOf: tensor.data)
            pad()
        }
        return out
    }

    /// Writes the file atomically (temporary file, fsync, rename, fsync of the directory).
    public func write(to url: URL) throws {
        try writeFileAtomically(encoded(), to: url)
    }
}
