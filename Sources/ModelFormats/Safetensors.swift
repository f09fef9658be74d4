import Foundation
import SystemIO

/// Element types read from safetensors files.
public enum SafetensorsDType: String, Sendable {
    case F32, F16, BF16

    public var size: Int { self == .F32 ? 4 : 2 }
}

public struct SafetensorsTensorInfo: Sendable, Equatable {
    public let name: String
    public let dtype: SafetensorsDType
    /// Row-major, as in the file.
    public let shape: [Int]
    /// Absolute byte range in the file.
    public let byteRange: Range<Int>
}

/// A safetensors file (8-byte little-endian header length, JSON header, data), memory-mapped.
///
/// The header is checked before use: its length against the file, every tensor's offsets against the
/// data section and against shape × dtype size, and overlaps between tensors.
public final class SafetensorsFile: @unchecked Sendable {
    public let url: URL
    public let tensors: [String: SafetensorsTensorInfo]
    public let metadata: [String: String]
    private let mapping: MappedFile

    /// Headers larger than this are refused (real headers are kilobytes).
    static let maximumHeader = 100 << 20

    public init(url: URL) throws {
        self.url = url
        mapping = try MappedFile(url: url)
        let bytes = mapping.bytes
        func fail(_ problem: String) -> ModelFormatError { ModelFormatError(file: url.path, problem) }
        guard bytes.count >= 8 else { throw fail("truncated: \(bytes.count) bytes, no header length") }
        let headerLength = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
        guard headerLength >= 2, headerLength <= UInt64(min(Self.maximumHeader, bytes.count - 8)) else {
            throw fail("header length \(headerLength) does not fit in a file of \(bytes.count) bytes")
        }
        let header = Data(bytes[8..<(8 + Int(headerLength))])
        guard let object = try? JSONSerialization.jsonObject(with: header), let entries = object as? [String: Any] else {
            throw fail("header is not a JSON object")
        }
        let dataStart = 8 + Int(headerLength)
        let dataLength = bytes.count - dataStart
        var tensors: [String: SafetensorsTensorInfo] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in entries {
            if name == "__metadata__" {
                guard let dictionary = value as? [String: Any] else { throw fail("__metadata__ is not an object") }
                for (k, v) in dictionary {
                    guard let s = v as? String else { throw fail("__metadata__.\(k) is not a string") }
                    metadata[k] = s
                }
                continue
            }
            guard let entry = value as? [String: Any] else { throw fail("tensor '\(name)': entry is not an object") }
            guard let dtypeName = entry["dtype"] as? String else { throw fail("tensor '\(name)': missing dtype") }
            guard let dtype = SafetensorsDType(rawValue: dtypeName) else {
                throw fail("tensor '\(name)': unsupported dtype \(dtypeName) (F32, F16 and BF16 are read)")
            }
            guard let shapeValues = entry["shape"] as? [Any], shapeValues.count <= 8 else {
                throw fail("tensor '\(name)': missing or bad shape")
            }
            var shape: [Int] = []
            var elements = 1
            for dimension in shapeValues {
                guard let n = (dimension as? NSNumber)?.intValue, n >= 0 else { throw fail("tensor '\(name)': bad shape \(shapeValues)") }
                let (product, overflow) = elements.multipliedReportingOverflow(by: n)
                guard !overflow, product <= bytes.count else { throw fail("tensor '\(name)': shape \(shapeValues) is larger than the file") }
                elements = product
                shape.append(n)
            }
            guard let offsets = entry["data_offsets"] as? [Any], offsets.count == 2,
                  let begin = (offsets[0] as? NSNumber)?.intValue, let end = (offsets[1] as? NSNumber)?.intValue else {
                throw fail("tensor '\(name)': missing or bad data_offsets")
            }
            guard begin >= 0, begin <= end, end <= dataLength else {
                throw fail("tensor '\(name)': data_offsets [\(begin), \(end)] lie outside the \(dataLength)-byte data section")
            }
            guard end - begin == elements * dtype.size else {
                throw fail("tensor '\(name)': data_offsets span \(end - begin) bytes but shape \(shape) of \(dtype) needs \(elements * dtype.size)")
            }
            tensors[name] = SafetensorsTensorInfo(name: name, dtype: dtype, shape: shape,
                                                  byteRange: (dataStart + begin)..<(dataStart + end))
        }
        let ordered = tensors.values.sorted { $0.byteRange.lowerBound < $1.byteRange.lowerBound }
        for (a, b) in zip(ordered, ordered.dropFirst()) where a.byteRange.upperBound > b.byteRange.lowerBound {
            throw fail("tensors '\(a.name)' and '\(b.name)' overlap")
        }
        self.tensors = tensors
        self.metadata = metadata
    }

    func info(_ name: String) throws -> SafetensorsTensorInfo {
        guard let info = tensors[name] else { throw ModelFormatError(file: url.path, "no tensor '\(name)'") }
        return info
    }

    /// The tensor's raw bytes (valid while this object lives).
    public func data(_ name: String) throws -> UnsafeRawBufferPointer {
        let info = try info(name)
        return UnsafeRawBufferPointer(rebasing: mapping.bytes[info.byteRange])
    }

    /// The tensor converted to float32.
    public func floats(_ name: String) throws -> [Float] {
        let info = try info(name)
        let raw = try data(name)
        let count = raw.count / info.dtype.size
        switch info.dtype {
        case .F32: return (0..<count).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
        case .F16: return (0..<count).map { floatFromHalf(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self))) }
        case .BF16: return (0..<count).map { floatFromBFloat16(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self))) }
        }
    }
}

/// Writes float32 safetensors files.
public enum SafetensorsWriter {
    /// Encodes tensors (sorted by name, F32) with optional string metadata.
    public static func encode(_ tensors: [(name: String, shape: [Int], values: [Float])],
                              metadata: [String: String] = [:]) throws -> Data {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        let sorted = tensors.sorted { $0.name < $1.name }
        for tensor in sorted {
            guard tensor.shape.reduce(1, *) == tensor.values.count else {
                throw ModelFormatError(file: tensor.name, "shape \(tensor.shape) does not match \(tensor.values.count) values")
            }
            header[tensor.name] = ["dtype": "F32", "shape": tensor.shape, "data_offsets": [offset, offset + 4 * tensor.values.count]]
            offset += 4 * tensor.values.count
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        // Pad the header with spaces so the data section starts 8-byte aligned, as the reference writer does.
        while (8 + json.count) % 8 != 0 { json.append(0x20) }
        var out = Data()
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(json)
        for tensor in sorted {
            tensor.values.withUnsafeBufferPointer { buffer in
                for value in buffer { withUnsafeBytes(of: value.bitPattern.littleEndian) { out.append(contentsOf: $0) } }
            }
        }
        return out
    }

    /// Writes the file atomically.
    public static func write(_ tensors: [(name: String, shape: [Int], values: [Float])], metadata: [String: String] = [:],
                             to url: URL) throws {
        try writeFileAtomically(try encode(tensors, metadata: metadata), to: url)
    }
}

/// IEEE binary16 bits to float32.
public func floatFromHalf(_ bits: UInt16) -> Float { Float(Float16(bitPattern: bits)) }

/// bfloat16 bits to float32 (exact).
public func floatFromBFloat16(_ bits: UInt16) -> Float { Float(bitPattern: UInt32(bits) << 16) }

/// float32 to IEEE binary16 bits, rounding to nearest even.
public func halfFromFloat(_ value: Float) -> UInt16 { Float16(value).bitPattern }

extension SafetensorsFile: ResidentPageReleasing {
    public func releaseResidentPages(start: UnsafeRawPointer, count: Int) {
        mapping.releaseResidentPages(start: start, count: count)
    }
}
