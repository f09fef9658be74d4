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

/// A client declining a round, with its reason (e.g. "privacy budget: epsilon 7.9 of 8.0 spent").
public struct Decline: WireMessage, Equatable {
    public static let messageType = MessageType.decline
    /// The round declined.
    public var round: UInt64
    /// Why, for the coordinator's log and audit record.
    public var reason: String

    public init(round: UInt64, reason: String) {
        self.round = round
        self.reason = reason
    }

    public func encode(into encoder: inout WireEncoder) throws {
        encoder.uint64(round)
        try encoder.string(reason, field: "reason")
    }

    public init(from decoder: inout WireDecoder) throws {
        round = try decoder.uint64("round")
        reason = try decoder.string("reason")
    }
}

/// Either side abandoning a round, with the reason.
public struct Abort: WireMessage, Equatable {
    public static let messageType = MessageType.abort
    /// The round abandoned.
    public var round: UInt64
    /// Why (e.g. "too few survivors: 1 of minimum 2").
    public var reason: String

    public init(round: UInt64, reason: String) {
        self.round = round
        self.reason = reason
    }

    public func encode(into encoder: inout WireEncoder) throws {
        encoder.uint64(round)
        try encoder.string(reason, field: "reason")
    }

    public init(from decoder: inout WireDecoder) throws {
        round = try decoder.uint64("round")
        reason = try decoder.string("reason")
    }
}
