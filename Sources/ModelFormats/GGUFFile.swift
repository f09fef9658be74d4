import Foundation

/// One tensor's entry in a GGUF file.
public struct GGUFTensorInfo: Sendable, Equatable {
    public let name: String
    /// ggml order: dimensions[0] is the contiguous (innermost) one.
    public let dimensions: [Int]
    public let type: TensorType
    /// Offset from the start of the data section.
    public let offset: Int

    public var elementCount: Int { dimensions.reduce(1, *) }
    public var byteCount: Int { elementCount / type.blockSize * type.bytesPerBlock }
}

/// A GGUF v2/v3 file (ggml's model format), memory-mapped; weights are never copied.
///
/// Layout (ggml docs/gguf.md): magic "GGUF", version u32, tensor count u64, metadata count u64,
/// metadata key/value pairs, tensor infos, padding to `general.alignment`, then tensor data.
/// Every count and length is checked against the bytes that remain before anything is allocated.
public final class GGUFFile: @unchecked Sendable {
    public let url: URL
    public let version: UInt32
    public let alignment: Int
    public let metadata: [String: GGUFValue]
    /// Metadata keys in file order.
    public let metadataKeys: [String]
    /// Tensors in file order.
    public let tensors: [GGUFTensorInfo]
    private let index: [String: Int]
    private let mapping: MappedFile
    /// Absolute offset of the data section.
    public let dataOffset: Int

    /// Limits that no real model approaches; anything beyond is treated as a corrupt file.
    static let maximumTensors = 1 << 20
    static let maximumMetadata = 1 << 20
    static let maximumDimensions = 4
    static let maximumNesting = 3
    /// Elements in all metadata arrays together. Each costs 24 bytes in memory (a `GGUFValue`) however
    /// few it takes in the file (a one-byte array was 24 times its size: 2 GB for a crafted 50 MB file);
    /// the largest real tokenizers (262k tokens with scores and types, 500k merges) take about 1.3 M.
    static let maximumArrayElements = 1 << 22

    public init(url: URL) throws {
        self.url = url
        mapping = try MappedFile(url: url)
        let fileSize = mapping.bytes.count
        var reader = ByteReader(bytes: mapping.bytes, file: url.path)
        let magic = try reader.readBytes(4, "magic")
        guard Array(magic) == Array("GGUF".utf8) else {
            throw reader.fail("not a GGUF file (magic \(Array(magic).map { String(format: "%02x", $0) }.joined()), expected 'GGUF')")
        }
        version = try reader.read(UInt32.self, "version")
        guard version == 2 || version == 3 else { throw reader.fail("unsupported GGUF version \(version) (2 and 3 are read)") }
        let tensorCount = try reader.read(UInt64.self, "tensor count")
        let metadataCount = try reader.read(UInt64.self, "metadata count")
        // Each metadata entry takes at least 13 bytes and each tensor info at least 32.
        guard tensorCount <= UInt64(Self.maximumTensors), tensorCount <= UInt64(reader.remaining / 32) else {
            throw reader.fail("tensor count \(tensorCount) is impossible for a file of \(fileSize) bytes")
        }
        guard metadataCount <= UInt64(Self.maximumMetadata), metadataCount <= UInt64(reader.remaining / 13) else {
            throw reader.fail("metadata count \(metadataCount) is impossible for a file of \(fileSize) bytes")
        }

        (metadata, metadataKeys) = try Self.readMetadata(&reader, count: Int(metadataCount))
        alignment = try Self.declaredAlignment(in: metadata, reader)
        (tensors, index) = try Self.readTensorInfos(&reader, count: Int(tensorCount), alignment: alignment,
                                                    fileSize: fileSize)
        dataOffset = (reader.offset + alignment - 1) / alignment * alignment
        try Self.checkTensorData(tensors, dataOffset: dataOffset, fileSize: fileSize, reader)
    }

    /// The metadata key/value pairs, by key and with the keys in file order; a repeated key is an error.
    private static func readMetadata(_ reader: inout ByteReader,
                                     count: Int) throws -> ([String: GGUFValue], [String]) {
        var metadata: [String: GGUFValue] = [:]
        var keys: [String] = []
        var elementsLeft = maximumArrayElements
        for i in 0..<count {
            let key = try readString(&reader, "metadata key \(i)")
            let typeCode = try reader.read(UInt32.self, "type of '\(key)'")
            let value = try readValue(&reader, type: typeCode, key: key, depth: 0, elementsLeft: &elementsLeft)
            guard metadata[key] == nil else { throw reader.fail("duplicate metadata key '\(key)'") }
            metadata[key] = value
            keys.append(key)
        }
        return (metadata, keys)
    }

    /// `general.alignment`, 32 when absent; a power of two up to 65536.
    private static func declaredAlignment(in metadata: [String: GGUFValue], _ reader: ByteReader) throws -> Int {
        guard let value = metadata["general.alignment"] else { return 32 }
        guard let a = value.intValue, a > 0, a <= 1 << 16, a & (a - 1) == 0 else {
            throw reader.fail("general.alignment must be a power of two up to 65536, got \(value)")
        }
        return a
    }

    /// The tensor infos in file order and each name's position among them; a repeated name is an error.
    private static func readTensorInfos(_ reader: inout ByteReader, count: Int, alignment: Int,
                                        fileSize: Int) throws -> ([GGUFTensorInfo], [String: Int]) {
        var tensors: [GGUFTensorInfo] = []
        var index: [String: Int] = [:]
        for i in 0..<count {
            let tensor = try readTensorInfo(&reader, number: i, alignment: alignment, fileSize: fileSize)
            guard index[tensor.name] == nil else { throw reader.fail("duplicate tensor name '\(tensor.name)'") }
            index[tensor.name] = tensors.count
            tensors.append(tensor)
        }
        return (tensors, index)
    }

    /// One tensor info: name, dimensions (each bounded, their product within what the file can hold), a
    /// supported type whose block divides the first dimension, and an aligned offset inside the file.
    private static func readTensorInfo(_ reader: inout ByteReader, number i: Int, alignment: Int,
                                       fileSize: Int) throws -> GGUFTensorInfo {
        let name = try readString(&reader, "name of tensor \(i)")
        let dimensionCount = try reader.read(UInt32.self, "dimension count of '\(name)'")
        guard (1...UInt32(maximumDimensions)).contains(dimensionCount) else {
            throw reader.fail("tensor '\(name)' has \(dimensionCount) dimensions (1 to \(maximumDimensions) allowed)")
        }
        var dimensions: [Int] = []
        var elements = 1
        for d in 0..<Int(dimensionCount) {
            let size = try reader.read(UInt64.self, "dimension \(d) of '\(name)'")
            guard size >= 1, size <= UInt64(Int32.max) else {
                throw reader.fail("tensor '\(name)' dimension \(d) is \(size)")
            }
            let (product, overflow) = elements.multipliedReportingOverflow(by: Int(size))
            guard !overflow, product <= fileSize * 2 else {
                throw reader.fail("tensor '\(name)' has more elements than the file can hold")
            }
            elements = product
            dimensions.append(Int(size))
        }
        let typeCode = try reader.read(UInt32.self, "type of '\(name)'")
        guard let type = TensorType(rawValue: typeCode) else {
            throw reader.fail("tensor '\(name)' has unsupported type \(typeCode) (supported: "
                + TensorType.allCases.map(\.description).joined(separator: ", ") + ")")
        }
        guard dimensions[0] % type.blockSize == 0 else {
            // llama-quantize itself keeps such rows out of the K-quants (falling back to Q5_0, Q5_1 or Q8_0).
            let fix = type.blockSize == 256 ? "; a K-quant row must hold whole 256-value super-blocks: requantize "
                + "the file with llama-quantize or `conclave-client quantize`, which pick another type for such rows" : ""
            throw reader.fail("tensor '\(name)': first dimension \(dimensions[0]) is not a multiple of \(type)'s block of \(type.blockSize)" + fix)
        }
        let offset = try reader.read(UInt64.self, "offset of '\(name)'")
        guard offset <= UInt64(fileSize), Int(offset) % alignment == 0 else {
            throw reader.fail("tensor '\(name)' offset \(offset) is beyond the file or not aligned to \(alignment)")
        }
        return GGUFTensorInfo(name: name, dimensions: dimensions, type: type, offset: Int(offset))
    }

    /// Throws unless every tensor's data lies inside the file.
    private static func checkTensorData(_ tensors: [GGUFTensorInfo], dataOffset: Int, fileSize: Int,
                                        _ reader: ByteReader) throws {
        for tensor in tensors {
            let (end, overflow) = (dataOffset + tensor.offset).addingReportingOverflow(tensor.byteCount)
            guard !overflow, end <= fileSize else {
                throw reader.fail("tensor '\(tensor.name)' data (\(tensor.byteCount) bytes at \(dataOffset + tensor.offset)) lies beyond the end of the file (\(fileSize) bytes)")
            }
        }
    }

    public func tensor(named name: String) -> GGUFTensorInfo? { index[name].map { tensors[$0] } }

    /// The tensor's bytes, a slice of the mapping (valid while this object lives).
    public func data(for tensor: GGUFTensorInfo) -> UnsafeRawBufferPointer {
        let start = dataOffset + tensor.offset
        return UnsafeRawBufferPointer(rebasing: mapping.bytes[start..<(start + tensor.byteCount)])
    }

    public func string(_ key: String) -> String? { metadata[key]?.stringValue }
    public func int(_ key: String) -> Int? { metadata[key]?.intValue }
    public func double(_ key: String) -> Double? { metadata[key]?.doubleValue }
    public func bool(_ key: String) -> Bool? { metadata[key]?.boolValue }

    /// An array of strings; nil when absent; an error naming the key when it holds something else.
    public func stringArray(_ key: String) throws -> [String]? {
        guard let value = metadata[key] else { return nil }
        guard let array = value.arrayValue else { throw ModelFormatError(file: url.path, "'\(key)' is not an array") }
        return try array.enumerated().map { i, element in
            guard let s = element.stringValue else { throw ModelFormatError(file: url.path, "'\(key)'[\(i)] is not a string") }
            return s
        }
    }

    /// An array of integers; nil when absent; an error naming the key when it holds something else.
    public func intArray(_ key: String) throws -> [Int]? {
        guard let value = metadata[key] else { return nil }
        guard let array = value.arrayValue else { throw ModelFormatError(file: url.path, "'\(key)' is not an array") }
        return try array.enumerated().map { i, element in
            guard let n = element.intValue else { throw ModelFormatError(file: url.path, "'\(key)'[\(i)] is not an integer") }
            return n
        }
    }

    static func readString(_ reader: inout ByteReader, _ what: @autoclosure () -> String) throws -> String {
        let length = try reader.read(UInt64.self, "length of \(what())")
        guard length <= UInt64(reader.remaining) else {
            throw reader.fail("\(what()): string length \(length) exceeds the \(reader.remaining) bytes left")
        }
        let bytes = try reader.readBytes(Int(length), what())
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Smallest encoded size of one value of a type, for bounding array counts before allocating.
    static func minimumSize(_ type: UInt32) -> Int {
        switch type {
        case 0, 1, 7: return 1
        case 2, 3: return 2
        case 4, 5, 6: return 4
        case 8: return 8
        case 9: return 12
        default: return 8
        }
    }

    /// One metadata value; `elementsLeft` is what remains of `maximumArrayElements` for arrays.
    static func readValue(_ reader: inout ByteReader, type: UInt32, key: String, depth: Int,
                          elementsLeft: inout Int) throws -> GGUFValue {
        switch type {
        case 0: return .uint8(try reader.read(UInt8.self, "'\(key)'"))
        case 1: return .int8(try reader.read(Int8.self, "'\(key)'"))
        case 2: return .uint16(try reader.read(UInt16.self, "'\(key)'"))
        case 3: return .int16(try reader.read(Int16.self, "'\(key)'"))
        case 4: return .uint32(try reader.read(UInt32.self, "'\(key)'"))
        case 5: return .int32(try reader.read(Int32.self, "'\(key)'"))
        case 6: return .float32(Float(bitPattern: try reader.read(UInt32.self, "'\(key)'")))
        case 7:
            let byte = try reader.read(UInt8.self, "'\(key)'")
            guard byte <= 1 else { throw reader.fail("'\(key)': boolean byte \(byte) is neither 0 nor 1") }
            return .bool(byte == 1)
        case 8: return .string(try readString(&reader, "'\(key)'"))
        case 9:
            guard depth < maximumNesting else { throw reader.fail("'\(key)': arrays nested deeper than \(maximumNesting)") }
            let elementType = try reader.read(UInt32.self, "element type of '\(key)'")
            guard elementType <= 12 else { throw reader.fail("'\(key)': unknown array element type \(elementType)") }
            let count = try reader.read(UInt64.self, "length of '\(key)'")
            guard count <= UInt64(reader.remaining / minimumSize(elementType)) else {
                throw reader.fail("'\(key)': array of \(count) elements cannot fit in the \(reader.remaining) bytes left")
            }
            guard count <= UInt64(elementsLeft) else {
                throw reader.fail("'\(key)': array of \(count) elements is more than the \(maximumArrayElements) "
                                  + "metadata array elements a model file may hold (\(elementsLeft) left); the file is corrupt or crafted")
            }
            elementsLeft -= Int(count)
            var values: [GGUFValue] = []
            values.reserveCapacity(Int(count))
            for _ in 0..<Int(count) {
                values.append(try readValue(&reader, type: elementType, key: key, depth: depth + 1, elementsLeft: &elementsLeft))
            }
            return .array(values)
        case 10: return .uint64(try reader.read(UInt64.self, "'\(key)'"))
        case 11: return .int64(try reader.read(Int64.self, "'\(key)'"))
        case 12: return .float64(Double(bitPattern: try reader.read(UInt64.self, "'\(key)'")))
        default: throw reader.fail("'\(key)' has unknown value type \(type)")
        }
    }
}

extension GGUFFile: ResidentPageReleasing {
    public func releaseResidentPages(start: UnsafeRawPointer, count: Int) {
        mapping.releaseResidentPages(start: start, count: count)
    }
}
