/// A typed message: its frame type and how its fields are encoded.
public protocol WireMessage: Sendable {
    /// The frame type carrying this message.
    static var messageType: MessageType { get }
    /// Writes the fields, in order.
    func encode(into encoder: inout WireEncoder) throws
    /// Reads the fields, in order, checking each.
    init(from decoder: inout WireDecoder) throws
}

extension WireMessage {
    /// The message as a frame of the current protocol version.
    public func frame() throws -> Frame {
        var encoder = WireEncoder()
        try encode(into: &encoder)
        return Frame(type: Self.messageType, payload: encoder.bytes)
    }

    /// Decodes a frame, refusing one of another type or with bytes left after the last field.
    public init(frame: Frame) throws {
        guard frame.type == Self.messageType else {
            throw WireError.unexpectedType(expected: Self.messageType, actual: frame.type)
        }
        var decoder = WireDecoder(frame.payload, message: "\(Self.messageType)")
        try self.init(from: &decoder)
        try decoder.finish()
    }
}

/// Part of a named tensor: `values` are elements `offset ..< offset + values.count` of a tensor of
/// `totalCount` Float32 values, for round `round`. Large tensors travel as several chunks so that no
/// frame exceeds the payload limit; `TensorAssembler` puts them back together.
public struct TensorChunk: WireMessage, Equatable {
    public static let messageType = MessageType.tensorChunk

    /// The round the tensor belongs to.
    public var round: UInt64
    /// The tensor's name (e.g. a PEFT key such as "base_model.model.layers.0.self_attn.q_proj.lora_A.weight").
    public var name: String
    /// Index of the first value in the whole tensor.
    public var offset: UInt64
    /// Number of values in the whole tensor.
    public var totalCount: UInt64
    /// The chunk's values.
    public var values: [Float]

    public init(round: UInt64, name: String, offset: UInt64, totalCount: UInt64, values: [Float]) {
        self.round = round
        self.name = name
        self.offset = offset
        self.totalCount = totalCount
        self.values = values
    }

    public func encode(into encoder: inout WireEncoder) throws {
        encoder.uint64(round)
        try encoder.string(name, field: "name")
        encoder.uint64(offset)
        encoder.uint64(totalCount)
        try encoder.floats(values, field: "values")
    }

    public init(from decoder: inout WireDecoder) throws {
        round = try decoder.uint64("round")
        name = try decoder.string("name")
        offset = try decoder.uint64("offset")
        totalCount = try decoder.uint64("totalCount")
        // The frame's payload limit already bounds the bytes; the count is checked against them.
        values = try decoder.floats("values", limit: Int(UInt32.max))
    }

    /// `values` cut into chunks of at most `maximumValuesPerChunk` (an empty tensor is one empty chunk).
    public static func split(round: UInt64, name: String, values: [Float], maximumValuesPerChunk: Int) -> [TensorChunk] {
        precondition(maximumValuesPerChunk >= 1, "maximumValuesPerChunk must be at least 1")
        let total = UInt64(values.count)
        guard !values.isEmpty else { return [TensorChunk(round: round, name: name, offset: 0, totalCount: 0, values: [])] }
        return stride(from: 0, to: values.count, by: maximumValuesPerChunk).map { start in
            let end = min(start + maximumValuesPerChunk, values.count)
            return TensorChunk(round: round, name: name, offset: UInt64(start), totalCount: total,
                               values: Array(values[start..<end]))
        }
    }
}

/// A client declining a round, with a code from a fixed set: never the client's own text, which could
/// carry private data (`DeclineCode`). The details stay in the client's own log.
public struct Decline: WireMessage, Equatable {
    public static let messageType = MessageType.decline
    /// The round declined.
    public var round: UInt64
    /// Why, for the coordinator's log and audit record.
    public var code: DeclineCode

    public init(round: UInt64, code: DeclineCode) {
        self.round = round
        self.code = code
    }

    public func encode(into encoder: inout WireEncoder) throws {
        encoder.uint64(round)
        encoder.declineCode(code)
    }

    public init(from decoder: inout WireDecoder) throws {
        round = try decoder.uint64("round")
        code = try decoder.declineCode("code")
    }
}

/// Either side abandoning a round: a code and, from the coordinator only, a detail in words (e.g. "no
/// update within the round's 600 s"). A client's abort carries the code alone: its detail is empty,
/// and the coordinator's decoder (`ClientUplink`) refuses one that is not, so no text of a client's
/// reaches the coordinator's log or audit.
public struct Abort: WireMessage, Equatable {
    public static let messageType = MessageType.abort
    /// The round abandoned.
    public var round: UInt64
    public var code: DeclineCode
    /// Empty from a client; the coordinator's words to a client.
    public var detail: String

    public init(round: UInt64, code: DeclineCode, detail: String = "") {
        self.round = round
        self.code = code
        self.detail = detail
    }

    /// What the client's log says: the code, and the coordinator's detail when it gave one.
    public var reason: String { detail.isEmpty ? code.name : "\(code.name): \(detail)" }

    public func encode(into encoder: inout WireEncoder) throws {
        encoder.uint64(round)
        encoder.declineCode(code)
        try encoder.string(detail, field: "detail")
    }

    public init(from decoder: inout WireDecoder) throws {
        round = try decoder.uint64("round")
        code = try decoder.declineCode("code")
        detail = try decoder.string("detail")
    }
}
