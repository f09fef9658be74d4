/// Writes message fields: integers big-endian, doubles as their IEEE-754 bits big-endian, strings
/// and byte blobs as a UInt32 length then the bytes, float arrays as a UInt32 count then
/// little-endian Float32 values (the layout of the tensors themselves, so bulk copies are cheap).
public struct WireEncoder: Sendable {
    /// The fields written so far.
    public private(set) var bytes: [UInt8] = []

    public init() {}

    public mutating func uint8(_ value: UInt8) { bytes.append(value) }
    public mutating func uint16(_ value: UInt16) { appendBigEndian(value, to: &bytes) }
    public mutating func uint32(_ value: UInt32) { appendBigEndian(value, to: &bytes) }
    public mutating func uint64(_ value: UInt64) { appendBigEndian(value, to: &bytes) }
    public mutating func int64(_ value: Int64) { appendBigEndian(value, to: &bytes) }
    public mutating func double(_ value: Double) { appendBigEndian(value.bitPattern, to: &bytes) }
    public mutating func bool(_ value: Bool) { bytes.append(value ? 1 : 0) }

    /// A UTF-8 string of at most `WireProtocol.maximumStringBytes` bytes.
    /// - Throws: `WireError.oversized` naming `field`.
    public mutating func string(_ value: String, field: String) throws {
        let utf8 = Array(value.utf8)
        guard utf8.count <= WireProtocol.maximumStringBytes else {
            throw WireError.oversized(field: field, length: utf8.count, limit: WireProtocol.maximumStringBytes)
        }
        uint32(UInt32(utf8.count))
        bytes.append(contentsOf: utf8)
    }

    /// A byte blob (its length is bounded by the frame's payload limit when the frame is encoded).
    public mutating func blob(_ value: [UInt8], field: String) throws {
        guard value.count <= Int(UInt32.max) else {
            throw WireError.oversized(field: field, length: value.count, limit: Int(UInt32.max))
        }
        uint32(UInt32(value.count))
        bytes.append(contentsOf: value)
    }

    /// Float32 values, little-endian.
    public mutating func floats<Values: Collection>(_ values: Values, field: String) throws where Values.Element == Float {
        guard values.count <= Int(UInt32.max) else {
            throw WireError.oversized(field: field, length: values.count, limit: Int(UInt32.max))
        }
        uint32(UInt32(values.count))
        bytes.reserveCapacity(bytes.count + values.count * 4)
        #if _endian(little)
        let copied: Void? = values.withContiguousStorageIfAvailable { buffer in
            bytes.append(contentsOf: UnsafeRawBufferPointer(buffer))
        }
        if copied != nil { return }
        #endif
        for value in values {
            var little = value.bitPattern.littleEndian
            withUnsafeBytes(of: &little) { bytes.append(contentsOf: $0) }
        }
    }

    /// UInt32 words, little-endian (e.g. a masked update modulo 2^32).
    public mutating func words(_ values: [UInt32], field: String) throws {
        guard values.count <= Int(UInt32.max) else {
            throw WireError.oversized(field: field, length: values.count, limit: Int(UInt32.max))
        }
        uint32(UInt32(values.count))
        bytes.reserveCapacity(bytes.count + values.count * 4)
        for value in values {
            var little = value.littleEndian
            withUnsafeBytes(of: &little) { bytes.append(contentsOf: $0) }
        }
    }
}

/// Reads message fields written by `WireEncoder`, checking every length against its limit and
/// against the bytes that remain before allocating anything for it. Errors name the field.
public struct WireDecoder: Sendable {
    /// The message being decoded, for errors (e.g. "tensorChunk").
    public let message: String
    private let bytes: [UInt8]
    private var position = 0

    /// A decoder over `bytes`, the payload of a `message` frame.
    public init(_ bytes: [UInt8], message: String) {
        self.bytes = bytes
        self.message = message
    }

    /// Bytes not yet read.
    public var remaining: Int { bytes.count - position }

    public mutating func uint8(_ field: String) throws -> UInt8 { try integer(field) }
    public mutating func uint16(_ field: String) throws -> UInt16 { try integer(field) }
    public mutating func uint32(_ field: String) throws -> UInt32 { try integer(field) }
    public mutating func uint64(_ field: String) throws -> UInt64 { try integer(field) }
    public mutating func int64(_ field: String) throws -> Int64 { try integer(field) }
    public mutating func double(_ field: String) throws -> Double { Double(bitPattern: try integer(field)) }

    /// A Boolean byte, which must be 0 or 1.
    public mutating func bool(_ field: String) throws -> Bool {
        switch try uint8(field) {
        case 0: return false
        case 1: return true
        case let other: throw WireError.invalidValue(field: qualified(field), reason: "Boolean byte \(other)")
        }
    }

    /// A UTF-8 string of at most `limit` bytes (default and ceiling `WireProtocol.maximumStringBytes`).
    public mutating func string(_ field: String, limit: Int = WireProtocol.maximumStringBytes) throws -> String {
        let length = try length(field, elementSize: 1, limit: min(limit, WireProtocol.maximumStringBytes))
        let slice = bytes[position..<(position + length)]
        guard let text = String(validating: slice, as: UTF8.self) else { throw WireError.invalidUTF8(field: qualified(field)) }
        position += length
        return text
    }

    /// A byte blob of at most `limit` bytes.
    public mutating func blob(_ field: String, limit: Int) throws -> [UInt8] {
        let length = try length(field, elementSize: 1, limit: limit)
        defer { position += length }
        return Array(bytes[position..<(position + length)])
    }

    /// Float32 values, little-endian, at most `limit` of them.
    public mutating func floats(_ field: String, limit: Int) throws -> [Float] {
        let count = try length(field, elementSize: 4, limit: limit)
        let values = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            bytes.withUnsafeBytes { raw in
                for index in 0..<count {
                    let bits = raw.loadUnaligned(fromByteOffset: position + 4 * index, as: UInt32.self)
                    buffer[index] = Float(bitPattern: UInt32(littleEndian: bits))
                }
            }
            initialized = count
        }
        position += 4 * count
        return values
    }

    /// UInt32 words, little-endian, at most `limit` of them.
    public mutating func words(_ field: String, limit: Int) throws -> [UInt32] {
        let count = try length(field, elementSize: 4, limit: limit)
        let values = [UInt32](unsafeUninitializedCapacity: count) { buffer, initialized in
            bytes.withUnsafeBytes { raw in
                for index in 0..<count {
                    buffer[index] = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: position + 4 * index, as: UInt32.self))
                }
            }
            initialized = count
        }
        position += 4 * count
        return values
    }

    /// The element count of an array whose elements take at least `minimumElementSize` bytes each:
    /// refused if above `limit` or if that many elements cannot fit in the bytes that remain.
    public mutating func count(_ field: String, minimumElementSize: Int, limit: Int) throws -> Int {
        precondition(minimumElementSize >= 1, "array elements take at least one byte")
        let count = Int(try uint32("\(field) count"))
        guard count <= limit else { throw WireError.oversized(field: qualified(field), length: count, limit: limit) }
        guard count <= remaining / minimumElementSize else {
            throw WireError.truncated(field: qualified(field), needed: count * minimumElementSize, available: remaining)
        }
        return count
    }

    /// Call after the last field: refuses bytes left over.
    public func finish() throws {
        guard remaining == 0 else { throw WireError.trailingBytes(message: message, count: remaining) }
    }

    private func qualified(_ field: String) -> String { "\(message).\(field)" }

    /// A UInt32 length prefix, checked against `limit` and against the bytes remaining.
    private mutating func length(_ field: String, elementSize: Int, limit: Int) throws -> Int {
        let length = Int(try uint32("\(field) length"))
        guard length <= limit else { throw WireError.oversized(field: qualified(field), length: length, limit: limit) }
        let needed = length * elementSize
        guard needed <= remaining else {
            throw WireError.truncated(field: qualified(field), needed: needed, available: remaining)
        }
        return length
    }

    private mutating func integer<T: FixedWidthInteger>(_ field: String) throws -> T {
        let size = MemoryLayout<T>.size
        guard remaining >= size else { throw WireError.truncated(field: qualified(field), needed: size, available: remaining) }
        var value: T = 0
        for index in 0..<size { value = value << 8 | T(bytes[position + index]) }
        position += size
        return value
    }
}
