import Foundation
import Wire
import SecureAggregation
import SecureCrypto
import ModelFormats
import FederationProtocol

/// The federation's frames: a byte stream cut by `FrameReader` (fed in pieces whose sizes the input's
/// first byte chooses, as a socket delivers them), each frame decoded as its type says.
enum WireTargets {
    /// The largest tensor an assembler accepts here (the real limit comes from the adapter's layout).
    static let maximumTensorCount = 1 << 16

    static func frames(_ data: Data) throws {
        var assemblers: [String: TensorAssembler] = [:]
        var uplink = uplinkLayout.map { ClientUplink(client: "fuzz", layout: $0) }
        for frame in try cut(data) {
            // The coordinator's decoder of a client's frames, until its first refusal (which ends the connection).
            do { _ = try uplink?.receive(frame, isActive: { _ in true }) } catch { uplink = nil }
            if let chunk = try decode(frame) as? TensorChunk {
                if var assembler = assemblers[chunk.name] {
                    try assembler.add(chunk)
                    assemblers[chunk.name] = assembler
                } else {
                    assemblers[chunk.name] = try TensorAssembler(first: chunk, maximumCount: maximumTensorCount)
                }
            }
        }
        for assembler in assemblers.values where assembler.isComplete { _ = try assembler.finish() }
    }

    /// The update layout the uplink expects: rank 1 on q_proj of the tiny Llama of `ModelSeeds.hfConfig`.
    static let uplinkLayout: AdapterLayout? = {
        guard let url = try? Scratch.shared.write(Data(ModelSeeds.hfConfig.utf8), as: "uplink-config.json"),
              let configuration = try? LlamaConfiguration(configJSON: url) else { return nil }
        return AdapterLayout(configuration: configuration, rank: 1, alpha: 2, targets: [.qProj])
    }()

    /// The frames of a stream: byte 0 is the feeding step (1...256 bytes at a time), the rest the stream.
    static func cut(_ data: Data) throws -> [Frame] {
        guard let first = data.first else { return [] }
        let step = Int(first) + 1
        let bytes = [UInt8](data.dropFirst())
        var reader = FrameReader()
        var frames: [Frame] = []
        var offset = 0
        while offset < bytes.count {
            reader.feed(bytes[offset..<min(offset + step, bytes.count)])
            offset += step
            while let frame = try reader.next() { frames.append(frame) }
        }
        try reader.finish()
        return frames
    }

    /// Decodes a frame as the message its type names (every message of the protocol).
    static func decode(_ frame: Frame) throws -> any WireMessage {
        switch frame.type {
        case .hello: return try Hello(frame: frame)
        case .invite: return try Invite(frame: frame)
        case .accept: return try Accept(frame: frame)
        case .decline: return try Decline(frame: frame)
        case .tensorChunk: return try TensorChunk(frame: frame)
        case .metrics: return try MetricsReport(frame: frame)
        case .abort: return try Abort(frame: frame)
        case .tensorsDone: return try TensorsDone(frame: frame)
        case .roundResult: return try RoundResult(frame: frame)
        case .secureSetup: return try SecureRoundSetup(frame: frame)
        case .secureAdvertise: return try SecureAdvertise(frame: frame)
        case .secureAdvertisements: return try SecureAdvertisements(frame: frame)
        case .secureShares: return try SecureShares(frame: frame)
        case .secureShareBundle: return try SecureShareBundle(frame: frame)
        case .secureMaskedInput: return try SecureMaskedInput(frame: frame)
        case .secureConsistencyRequest: return try SecureConsistencyRequest(frame: frame)
        case .secureConsistencySignature: return try SecureConsistencySignature(frame: frame)
        case .secureUnmaskRequest: return try SecureUnmaskRequest(frame: frame)
        case .secureUnmaskResponse: return try SecureUnmaskResponse(frame: frame)
        }
    }

    /// A secure-aggregation round from the coordinator's side and one client's: the stream's first two
    /// frames are the invitation and the secure setup; the coordinator's state machine then gets every
    /// client → coordinator message and member 1 (whose identity `SecureSeeds.identity` derives) every
    /// coordinator → client message, each stage finished when the stream moves past it.
    static func secureAggregation(_ data: Data) throws {
        let frames = try cut(data)
        guard frames.count >= 2 else { return }
        let invite = try Invite(frame: frames[0])
        let setup = try SecureRoundSetup(frame: frames[1])
        _ = try? setup.valueEncoding()
        _ = try? setup.participationEncoding()
        let session = try setup.session(invite: invite)
        var round = SecureRoundDriver(server: SecureAggregationServer(session: session))
        if let id = setup.members.first?.id {
            round.client = try? SecureAggregationClient(session: session, id: id, identity: SecureSeeds.identity(1),
                                                        localAdapterHash: Array(invite.adapterSHA256.utf8))
            _ = try? round.client?.advertiseKeys()
        }
        round.vectorLength = Int(setup.vectorLength)
        for frame in frames.dropFirst(2) { round.handle(try decode(frame)) }
        _ = try? round.server.finishUnmasking()
    }
}

/// Feeds decoded secure messages to the two state machines, ignoring their (thrown) refusals.
struct SecureRoundDriver {
    var server: SecureAggregationServer
    var client: SecureAggregationClient?
    var vectorLength = 0

    mutating func handle(_ message: any WireMessage) {
        switch message {
        case let m as SecureAdvertise: try? server.receive(m.advertisement)
        case let m as SecureShares:
            _ = try? server.finishAdvertising()
            try? server.receive(m.message)
        case let m as SecureMaskedInput:
            _ = try? server.finishSharing()
            try? server.receive(m.input)
        case let m as SecureConsistencySignature:
            _ = try? server.finishMaskedInput()
            try? server.receive(m.signature)
        case let m as SecureUnmaskResponse:
            _ = try? server.finishConsistencyCheck()
            try? server.receive(m.response)
        case let m as SecureAdvertisements: _ = try? client?.shareKeys(m.broadcast)
        case let m as SecureShareBundle:
            _ = try? client?.maskInput(m.bundle, input: [UInt32](repeating: 7, count: min(vectorLength, 1 << 16)))
        case let m as SecureConsistencyRequest: _ = try? client?.signSurvivors(m.request)
        case let m as SecureUnmaskRequest: _ = try? client?.unmask(m.request)
        default: break
        }
    }
}

/// The fixed identities of the secure-aggregation corpus: member i signs with the Ed25519 key whose
/// seed is 32 bytes of value i (public test keys, never used outside fuzzing).
public enum SecureSeeds {
    public static func identity(_ member: UInt8) -> SigningKeyPair {
        // A 32-byte seed is the right length by construction.
        try! SigningKeyPair(seed: SecretBytes(copying: [UInt8](repeating: member, count: 32)))
    }
}
