/// Every way bytes from a peer can fail to be a valid message. Each case names the field, value or
/// limit concerned, so that the connection's log line says exactly what the peer sent.
public enum WireError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The frame did not start with "CNCL"; `prefix` holds the bytes that were there.
    case badMagic(prefix: [UInt8])
    /// A protocol version this build does not speak.
    case unknownVersion(UInt16)
    /// A message type this build does not know.
    case unknownType(UInt16)
    /// A declared length above its limit (checked before anything is allocated for it).
    case oversized(field: String, length: Int, limit: Int)
    /// The bytes ended before `field` was complete.
    case truncated(field: String, needed: Int, available: Int)
    /// A string field that is not valid UTF-8.
    case invalidUTF8(field: String)
    /// Bytes left over after the last field of `message`.
    case trailingBytes(message: String, count: Int)
    /// A field whose value is impossible (e.g. a Boolean byte of 7).
    case invalidValue(field: String, reason: String)
    /// A frame of one type was decoded as another.
    case unexpectedType(expected: MessageType, actual: MessageType)
    /// A tensor chunk that does not belong to the tensor being assembled.
    case chunkMismatch(tensor: String, field: String, expected: String, actual: String)
    /// A tensor chunk reaching outside `0..<total`.
    case chunkOutOfRange(tensor: String, offset: UInt64, count: Int, total: Int)
    /// A tensor chunk overlapping values already received.
    case chunkOverlaps(tensor: String, offset: UInt64, count: Int, existing: Range<Int>)
    /// A tensor declared larger than the receiver accepts.
    case tensorTooLarge(tensor: String, count: UInt64, limit: Int)
    /// A tensor finished before all its values arrived.
    case tensorIncomplete(tensor: String, received: Int, total: Int)

    public var description: String {
        switch self {
        case let .badMagic(prefix):
            return "bad frame magic \(prefix.map { String($0, radix: 16) }) (expected \"CNCL\")"
        case let .unknownVersion(version):
            return "unknown protocol version \(version) (this build speaks \(WireProtocol.supportedVersions.sorted()))"
        case let .unknownType(type):
            return "unknown message type \(type)"
        case let .oversized(field, length, limit):
            return "\(field) length \(length) exceeds the limit of \(limit)"
        case let .truncated(field, needed, available):
            return "truncated \(field): needs \(needed) bytes, \(available) available"
        case let .invalidUTF8(field):
            return "\(field) is not valid UTF-8"
        case let .trailingBytes(message, count):
            return "\(count) unexpected bytes after the last field of \(message)"
        case let .invalidValue(field, reason):
            return "invalid \(field): \(reason)"
        case let .unexpectedType(expected, actual):
            return "expected a \(expected) message, got \(actual)"
        case let .chunkMismatch(tensor, field, expected, actual):
            return "chunk for tensor '\(tensor)' has \(field) \(actual), expected \(expected)"
        case let .chunkOutOfRange(tensor, offset, count, total):
            return "chunk \(offset)+\(count) of tensor '\(tensor)' reaches outside its \(total) values"
        case let .chunkOverlaps(tensor, offset, count, existing):
            return "chunk \(offset)+\(count) of tensor '\(tensor)' overlaps values \(existing.lowerBound)..<\(existing.upperBound) already received"
        case let .tensorTooLarge(tensor, count, limit):
            return "tensor '\(tensor)' declares \(count) values, more than the limit of \(limit)"
        case let .tensorIncomplete(tensor, received, total):
            return "tensor '\(tensor)' incomplete: \(received) of \(total) values received"
        }
    }
}
