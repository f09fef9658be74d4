/// The wire protocol's constants.
///
/// A frame is a 12-byte header, then the payload:
/// `"CNCL"` (4 bytes) · version (UInt16) · message type (UInt16) · payload length (UInt32),
/// all big-endian. Payload fields are encoded by `WireEncoder`.
public enum WireProtocol {
    /// The four bytes every frame starts with.
    public static let magic: [UInt8] = Array("CNCL".utf8)
    /// The version this build writes. 2 (issue 13): declines and aborts carry codes, metrics carry the
    /// DP release instead of clear figures, the invitation its privacy unit, round results the signed
    /// audit head; a version-1 peer is refused by its header ("unknown protocol version"), not by a
    /// field it cannot decode. 3 (issue 14): secure aggregation's key advertisement commits to the
    /// self-mask seed, and the consistency check (survivor set, signatures) precedes unmasking; a
    /// version-2 client would skip the check, so it is refused. 4 (issue 17): the invitation's plan carries
    /// its noise placement (distributed DP) and metrics the client's trust assumption; a version-3 client
    /// would read a distributed plan as a local one and add all the noise itself, so it is refused. 5 (issue
    /// 17): a distributed round's metrics carry the client's cumulative ε trusting no one, which the audit
    /// and report show; a version-4 client would leave it out. 6 (issue 17): the invitation's plan says whether the
    /// round asks for the held-out loss release, and metrics carry that release behind a presence flag; a version-5
    /// client would misread both, so it is refused. 7 (issue 17): the invitation's plan carries adaptive clipping's
    /// count noise σ_b, which asks a client-level client for one more masked coordinate; a version-6 client would send
    /// a vector one word short, so it is refused.
    public static let version: UInt16 = 7
    /// The versions this build reads; any other is refused.
    public static let supportedVersions: Set<UInt16> = [7]
    /// Header size in bytes.
    public static let headerByteCount = 12
    /// Default limit on a frame's payload: 64 MiB (a LoRA update travels in several chunks).
    public static let defaultMaximumPayload = 64 << 20
    /// Limit on any string field, in UTF-8 bytes.
    public static let maximumStringBytes = 4096
}

/// What a frame carries. Every value is listed here: a peer sending any other is refused, so the
/// federation extends this enum (with a new raw value, never reusing one) as it adds messages.
public enum MessageType: UInt16, Sendable, CaseIterable, CustomStringConvertible {
    /// Client → coordinator, first frame on a connection: who the client is and what it runs.
    case hello = 1
    /// Coordinator → client: a round's invitation (round id, training plan, aggregation mode).
    case invite = 2
    /// Client → coordinator: the client takes part in the round.
    case accept = 3
    /// Client → coordinator: the client declines the round, with a code (`DeclineCode`: budget, policy, ...).
    case decline = 4
    /// Either way: part of a tensor (global adapter down, update up); see `TensorChunk`.
    case tensorChunk = 5
    /// Client → coordinator: evaluation and training metrics for the round.
    case metrics = 6
    /// Either way: the round is abandoned, with a code (and, from the coordinator only, a detail).
    case abort = 7
    /// Either way: the end of a set of tensors (global adapter down, update up), with its count and digest.
    case tensorsDone = 8
    /// Coordinator → client: how a round ended (committed with the new adapter's digest, or aborted).
    case roundResult = 9
    /// Coordinator → client, after an invitation with secure aggregation: the cohort's ids and
    /// enrolled signing keys and the session's parameters (graph, threshold, encoding).
    case secureSetup = 10
    /// Client → coordinator: its signed per-round key advertisement (secure aggregation, round 0).
    case secureAdvertise = 11
    /// Coordinator → client: its neighbours' key advertisements (secure aggregation, round 0 reply).
    case secureAdvertisements = 12
    /// Client → coordinator: its encrypted Shamir shares for its neighbours (round 1).
    case secureShares = 13
    /// Coordinator → client: the encrypted shares addressed to it (round 1 reply).
    case secureShareBundle = 14
    /// Client → coordinator: its masked, fixed-point encoded update (round 2).
    case secureMaskedInput = 15
    /// Coordinator → client: which neighbours survived and which dropped (round 4 request).
    case secureUnmaskRequest = 16
    /// Client → coordinator: the shares it reveals for unmasking (round 4 reply).
    case secureUnmaskResponse = 17
    /// Coordinator → survivor: the survivor set U3 to sign (round 3, consistency check).
    case secureConsistencyRequest = 18
    /// Survivor → coordinator: its signature on U3 (round 3 reply).
    case secureConsistencySignature = 19

    public var description: String {
        switch self {
        case .hello: return "hello"
        case .invite: return "invite"
        case .accept: return "accept"
        case .decline: return "decline"
        case .tensorChunk: return "tensorChunk"
        case .metrics: return "metrics"
        case .abort: return "abort"
        case .tensorsDone: return "tensorsDone"
        case .roundResult: return "roundResult"
        case .secureSetup: return "secureSetup"
        case .secureAdvertise: return "secureAdvertise"
        case .secureAdvertisements: return "secureAdvertisements"
        case .secureShares: return "secureShares"
        case .secureShareBundle: return "secureShareBundle"
        case .secureMaskedInput: return "secureMaskedInput"
        case .secureUnmaskRequest: return "secureUnmaskRequest"
        case .secureUnmaskResponse: return "secureUnmaskResponse"
        case .secureConsistencyRequest: return "secureConsistencyRequest"
        case .secureConsistencySignature: return "secureConsistencySignature"
        }
    }
}

/// One message on the wire: its type and its encoded payload.
public struct Frame: Equatable, Sendable {
    /// The protocol version the frame was written with.
    public var version: UInt16
    /// What the payload holds.
    public var type: MessageType
    /// The encoded fields.
    public var payload: [UInt8]

    /// A frame of the current protocol version.
    public init(type: MessageType, payload: [UInt8], version: UInt16 = WireProtocol.version) {
        self.type = type
        self.payload = payload
        self.version = version
    }

    /// Header and payload, ready to write.
    /// - Throws: `WireError.oversized` if the payload exceeds `maximumPayload`.
    public func encoded(maximumPayload: Int = WireProtocol.defaultMaximumPayload) throws -> [UInt8] {
        let limit = min(maximumPayload, Int(UInt32.max))
        guard payload.count <= limit else {
            throw WireError.oversized(field: "\(type) frame payload", length: payload.count, limit: limit)
        }
        var bytes = WireProtocol.magic
        bytes.reserveCapacity(WireProtocol.headerByteCount + payload.count)
        appendBigEndian(version, to: &bytes)
        appendBigEndian(type.rawValue, to: &bytes)
        appendBigEndian(UInt32(payload.count), to: &bytes)
        bytes.append(contentsOf: payload)
        return bytes
    }

    /// Decodes exactly one complete frame (no bytes before or after it).
    public static func decode(_ bytes: [UInt8], maximumPayload: Int = WireProtocol.defaultMaximumPayload) throws -> Frame {
        var reader = FrameReader(maximumPayload: maximumPayload)
        reader.feed(bytes)
        guard let frame = try reader.next() else {
            try reader.finish()
            throw WireError.truncated(field: "frame", needed: WireProtocol.headerByteCount, available: bytes.count)
        }
        guard reader.bufferedByteCount == 0 else {
            throw WireError.trailingBytes(message: "\(frame.type) frame", count: reader.bufferedByteCount)
        }
        return frame
    }
}

/// Cuts a byte stream into frames, incrementally: feed chunks as they arrive, take complete frames.
///
/// Each header field is checked as soon as its bytes are in (magic, then version, type and length),
/// so garbage is refused after its first bytes and an oversized length before its payload arrives.
/// Nothing is allocated from a declared length: the buffer grows only with bytes actually received.
/// After an error the reader is spent: every later call throws the same error.
public struct FrameReader: Sendable {
    /// The largest payload accepted; may change between frames (a server reads a hello under a small
    /// limit, then the frames after it under the default).
    public var maximumPayload: Int
    private var buffer: [UInt8] = []
    private var start = 0
    private var failure: WireError?

    /// - Parameter maximumPayload: limit on each frame's payload (capped at UInt32.max).
    public init(maximumPayload: Int = WireProtocol.defaultMaximumPayload) {
        precondition(maximumPayload >= 0, "maximumPayload must not be negative")
        self.maximumPayload = min(maximumPayload, Int(UInt32.max))
    }

    /// Bytes received but not yet returned as a frame.
    public var bufferedByteCount: Int { buffer.count - start }

    /// Appends bytes received from the peer.
    public mutating func feed<Bytes: Collection>(_ bytes: Bytes) where Bytes.Element == UInt8 {
        if start > 0 && start >= buffer.count / 2 {
            buffer.removeFirst(start)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// The next complete frame, or nil until more bytes arrive.
    /// - Throws: `WireError.badMagic`, `.unknownVersion`, `.unknownType`, `.oversized`.
    public mutating func next() throws -> Frame? {
        if let failure { throw failure }
        do {
            return try parse()
        } catch let error as WireError {
            failure = error
            throw error
        }
    }

    /// Call at end of stream: throws `WireError.truncated` if part of a frame is left over.
    public mutating func finish() throws {
        if let failure { throw failure }
        let available = bufferedByteCount
        guard available > 0 else { return }
        if available < WireProtocol.headerByteCount {
            throw WireError.truncated(field: "frame header", needed: WireProtocol.headerByteCount, available: available)
        }
        let length = Int(readBigEndian(UInt32.self, at: start + 8))
        throw WireError.truncated(field: "frame payload", needed: length, available: available - WireProtocol.headerByteCount)
    }

    /// Reads from `read` (e.g. a TLS connection's `read(into:)`, which returns 0 at end of stream)
    /// until a frame is complete. Returns nil at a clean end of stream between frames.
    /// - Throws: the `WireError`s of `next()`, `.truncated` if the stream ends inside a frame, and
    ///   whatever `read` throws.
    public mutating func nextFrame(reading read: (UnsafeMutableRawBufferPointer) throws -> Int) throws -> Frame? {
        var scratch = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            if let frame = try next() { return frame }
            let count = try scratch.withUnsafeMutableBytes { try read($0) }
            guard count > 0 else {
                try finish()
                return nil
            }
            feed(scratch[..<count])
        }
    }

    private mutating func parse() throws -> Frame? {
        let available = bufferedByteCount
        let magicBytes = min(available, 4)
        for index in 0..<magicBytes where buffer[start + index] != WireProtocol.magic[index] {
            throw WireError.badMagic(prefix: Array(buffer[start..<(start + magicBytes)]))
        }
        guard available >= 6 else { return nil }
        let version = readBigEndian(UInt16.self, at: start + 4)
        guard WireProtocol.supportedVersions.contains(version) else { throw WireError.unknownVersion(version) }
        guard available >= 8 else { return nil }
        let rawType = readBigEndian(UInt16.self, at: start + 6)
        guard let type = MessageType(rawValue: rawType) else { throw WireError.unknownType(rawType) }
        guard available >= WireProtocol.headerByteCount else { return nil }
        let length = Int(readBigEndian(UInt32.self, at: start + 8))
        guard length <= maximumPayload else {
            throw WireError.oversized(field: "\(type) frame payload", length: length, limit: maximumPayload)
        }
        guard available >= WireProtocol.headerByteCount + length else { return nil }
        let payloadStart = start + WireProtocol.headerByteCount
        let payload = Array(buffer[payloadStart..<(payloadStart + length)])
        start = payloadStart + length
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: buffer.capacity <= 1 << 20)
            start = 0
        }
        return Frame(type: type, payload: payload, version: version)
    }

    private func readBigEndian<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        var value: T = 0
        for index in 0..<MemoryLayout<T>.size { value = value << 8 | T(buffer[offset + index]) }
        return value
    }
}

func appendBigEndian<T: FixedWidthInteger>(_ value: T, to bytes: inout [UInt8]) {
    var bigEndian = value.bigEndian
    withUnsafeBytes(of: &bigEndian) { bytes.append(contentsOf: $0) }
}
