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
        var out = GGUFEncoder()
        out.bytes.append(contentsOf: Array("GGUF".utf8))
        out.u32(3)
        out.u64(UInt64(tensors.count))
        var metadata = entries
        if alignment != 32 && !metadata.contains(where: { $0.0 == "general.alignment" }) {
            metadata.append(("general.alignment", .uint32(UInt32(alignment))))
        }
        out.u64(UInt64(metadata.count))
        for (key, v) in metadata {
            out.string(key)
            out.u32(v.typeCode)
            out.value(v)
        }
        for (tensor, tensorOffset) in zip(tensors, dataOffsets()) {
            out.string(tensor.name)
            out.u32(UInt32(tensor.dimensions.count))
            tensor.dimensions.forEach { out.u64(UInt64($0)) }
            out.u32(tensor.type.rawValue)
            out.u64(UInt64(tensorOffset))
        }
        out.pad(to: alignment)
        for tensor in tensors {
            out.bytes.append(contentsOf: tensor.data)
            out.pad(to: alignment)
        }
        return out.bytes
    }

    /// Each tensor's offset in the data section: the tensors follow one another, each starting aligned.
    private func dataOffsets() -> [Int] {
        var offset = 0
        var offsets: [Int] = []
        for tensor in tensors {
            offsets.append(offset)
            offset = (offset + tensor.data.count + alignment - 1) / alignment * alignment
        }
        return offsets
    }

    /// Writes the file atomically (temporary file, fsync, rename, fsync of the directory).
    public func write(to url: URL) throws {
        try writeFileAtomically(encoded(), to: url)
    }
}

/// Appends GGUF's little-endian encodings of integers, strings and metadata values.
private struct GGUFEncoder {
    var bytes = Data()

    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }

    /// A string: its UTF-8 length as u64, then its bytes.
    mutating func string(_ s: String) {
        u64(UInt64(s.utf8.count))
        bytes.append(contentsOf: Array(s.utf8))
    }

    /// A metadata value without its type code; an array is its element type, its count, then its elements.
    mutating func value(_ v: GGUFValue) {
        switch v {
        case .uint8(let x): bytes.append(x)
        case .int8(let x): bytes.append(UInt8(bitPattern: x))
        case .uint16(let x): withUnsafeBytes(of: x.littleEndian) { bytes.append(contentsOf: $0) }
        case .int16(let x): withUnsafeBytes(of: x.littleEndian) { bytes.append(contentsOf: $0) }
        case .uint32(let x): u32(x)
        case .int32(let x): u32(UInt32(bitPattern: x))
        case .float32(let x): u32(x.bitPattern)
        case .bool(let x): bytes.append(x ? 1 : 0)
        case .string(let s): string(s)
        case .array(let a):
            // An empty array's element type is written as uint8 (any type is valid for it).
            u32(a.first?.typeCode ?? 0)
            u64(UInt64(a.count))
            for element in a { value(element) }
        case .uint64(let x): u64(x)
        case .int64(let x): u64(UInt64(bitPattern: x))
        case .float64(let x): u64(x.bitPattern)
        }
    }

    /// Zero bytes up to the next multiple of `alignment`.
    mutating func pad(to alignment: Int) {
        let extra = (alignment - bytes.count % alignment) % alignment
        bytes.append(contentsOf: [UInt8](repeating: 0, count: extra))
    }
}

private extension GGUFValue {
    /// The value's `gguf_type` code, written before it in the file.
    var typeCode: UInt32 {
        switch self {
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
}
