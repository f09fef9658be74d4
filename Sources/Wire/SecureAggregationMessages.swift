import Foundation
import SecureAggregation
import SecureCrypto

// The secure-aggregation stages on the wire: each `SecureAggregation` message wrapped with its round
// id, every length bounded before anything is allocated. The protocol checks (session ids,
// signatures, membership, thresholds) are the state machines'; these types only carry bytes.

/// Longest array of per-neighbour items: a closed neighbourhood has at most 255 members.
let maximumNeighbourhoodItems = SecureAggregationSession.maximumNeighbourhoodSize

/// Coordinator → client, right after a secure round's `Invite`: who is in the cohort (each member's
/// session id, client name and pinned Ed25519 key) and the session's public parameters. Both sides
/// build the same `SecureAggregationSession` from the invitation and this setup; the session's plan
/// bytes are the two messages' encodings, so the session id binds all of it.
///
/// Encoding: a client's update becomes `vectorLength` words: the tensors of the adapter layout in
/// name order, each value `Δ` encoded with `valueEncoding` (clip `updateClip`), then one
/// participation word, 1 encoded with `participationEncoding` (clip 1). Every client weighs the same
/// (its record count is private and never travels, issue 13): summed over the survivors, the
/// coordinator decodes `Σ Δ` and the survivor count, which must equal the survivors it unmasked.
public struct SecureRoundSetup: WireMessage, Equatable {
    public static let messageType = MessageType.secureSetup
    /// The largest cohort a secure round accepts.
    public static let maximumCohort = 10_000

    /// One cohort member: its number in the session, its client id, its pinned signing key.
    public struct Member: Sendable, Equatable {
        public var id: ParticipantID
        public var name: String
        public var signingKey: SigningPublicKey
        public init(id: ParticipantID, name: String, signingKey: SigningPublicKey) {
            self.id = id
            self.name = name
            self.signingKey = signingKey
        }
    }

    public var round: UInt64
    /// The cohort, sorted by id (ids 1...n in client-name order).
    public var members: [Member]
    /// SecAgg+ degree; 0 for the complete graph.
    public var degree: UInt32
    /// t: shares needed per closed neighbourhood.
    public var threshold: UInt32
    /// Every update value `Δ` is clipped to ±updateClip before encoding.
    public var updateClip: Double
    /// Words per client input: the adapter's parameter count, plus the participation word.
    public var vectorLength: UInt64

    public init(round: UInt64, members: [Member], degree: UInt32, threshold: UInt32, updateClip: Double,
                vectorLength: UInt64) {
        self.round = round
        self.members = members
        self.degree = degree
        self.threshold = threshold
        self.updateClip = updateClip
        self.vectorLength = vectorLength
    }

    public func encode(into encoder: inout WireEncoder) throws {
        encoder.uint64(round)
        encoder.uint32(UInt32(members.count))
        for member in members {
            encoder.uint32(member.id)
            try encoder.string(member.name, field: "members.name")
            try encoder.blob(member.signingKey.bytes, field: "members.signingKey")
        }
        encoder.uint32(degree)
        encoder.uint32(threshold)
        encoder.double(updateClip)
        encoder.uint64(vectorLength)
    }

    public init(from decoder: inout WireDecoder) throws {
        round = try decoder.uint64("round")
        let count = try decoder.count("members", minimumElementSize: 4 + 4 + 1 + 4 + 32, limit: Self.maximumCohort)
        members = []
        members.reserveCapacity(count)
        for _ in 0..<count {
            let id = try decoder.uint32("members.id")
            let name = try decoder.string("members.name", limit: ClientID.maximumLength)
            let key = try decoder.blob("members.signingKey", limit: SigningPublicKey.byteCount)
            do {
                members.append(Member(id: id, name: name, signingKey: try SigningPublicKey(bytes: key)))
            } catch {
                throw WireError.invalidValue(field: "secureSetup.members.signingKey", reason: "\(error)")
            }
        }
        degree = try decoder.uint32("degree")
        threshold = try decoder.uint32("threshold")
        updateClip = try decoder.double("updateClip")
        vectorLength = try decoder.uint64("vectorLength")
        guard members.count >= 2 else {
            throw WireError.invalidValue(field: "secureSetup.members", reason: "\(members.count) members; a session needs 2")
        }
        for (a, b) in zip(members, members.dropFirst()) where a.id >= b.id {
            throw WireError.invalidValue(field: "secureSetup.members", reason: "ids not strictly increasing at \(b.id)")
        }
        guard updateClip.isFinite, updateClip > 0 else {
            throw WireError.invalidValue(field: "secureSetup.updateClip", reason: "\(updateClip)")
        }
        guard vectorLength >= 2, vectorLength <= UInt64(MaskStream.maximumWordCount) else {
            throw WireError.invalidValue(field: "secureSetup.vectorLength", reason: "\(vectorLength)")
        }
    }

    /// The neighbour graph: complete, or a random Harary graph of `degree`.
    public var graph: NeighbourGraph { degree == 0 ? .complete : .harary(degree: Int(degree)) }

    /// The encoding of the update values: clip `updateClip`, for the whole cohort.
    public func valueEncoding() throws -> FixedPointEncoding {
        try FixedPointEncoding(clipBound: updateClip, maximumClients: members.count)
    }

    /// The encoding of the participation word: clip 1 (each client sends exactly 1), for the whole cohort.
    public func participationEncoding() throws -> FixedPointEncoding {
        try FixedPointEncoding(clipBound: 1, maximumClients: members.count)
    }

    /// The session id of `name` in this cohort.
    public func id(of name: String) -> ParticipantID? { members.first { $0.name == name }?.id }

    /// The client name of session id `id`.
    public func name(of id: ParticipantID) -> String? { members.first { $0.id == id }?.name }

    /// The session both sides build: round, plan bytes (the invitation's and this setup's
    /// encodings), the global adapter's digest, the cohort's pinned keys, the graph and threshold.
    /// - Throws: `SecureAggregationError.invalidParameters` for an unusable graph or threshold.
    public func session(invite: Invite) throws -> SecureAggregationSession {
        var plan = WireEncoder()
        try invite.encode(into: &plan)
        try encode(into: &plan)
        return try SecureAggregationSession(
            roundID: round, plan: plan.bytes, globalAdapterHash: Array(invite.adapterSHA256.utf8),
            participants: members.map { Participant(id: $0.id, signingKey: $0.signingKey) },
            vectorLength: Int(vectorLength), graph: graph, threshold: Int(threshold))
    }
}

// MARK: - Helpers shared by the messages

private func encodeAdvertisement(_ advertisement: KeyAdvertisement, into encoder: inout WireEncoder) throws {
    try encoder.blob(advertisement.sessionID, field: "sessionID")
    encoder.uint32(advertisement.sender)
    try encoder.blob(advertisement.encryptionKey.bytes, field: "encryptionKey")
    try encoder.blob(advertisement.maskingKey.bytes, field: "maskingKey")
    try encoder.blob(advertisement.seedCommitment, field: "seedCommitment")
    try encoder.blob(advertisement.signature, field: "signature")
}

private func decodeAdvertisement(from decoder: inout WireDecoder) throws -> KeyAdvertisement {
    let session = try decoder.blob("sessionID", limit: 32)
    let sender = try decoder.uint32("sender")
    let encryption = try decoder.blob("encryptionKey", limit: KeyAgreementPublicKey.byteCount)
    let masking = try decoder.blob("maskingKey", limit: KeyAgreementPublicKey.byteCount)
    let commitment = try decoder.blob("seedCommitment", limit: KeyAdvertisement.seedCommitmentByteCount)
    let signature = try decoder.blob("signature", limit: SigningKeyPair.signatureByteCount)
    guard commitment.count == KeyAdvertisement.seedCommitmentByteCount else {
        throw WireError.invalidValue(field: "advertisement of participant \(sender)",
                                     reason: "seed commitment of \(commitment.count) bytes, expected \(KeyAdvertisement.seedCommitmentByteCount)")
    }
    do {
        return KeyAdvertisement(sessionID: session, sender: sender, encryptionKey: try KeyAgreementPublicKey(bytes: encryption),
                                maskingKey: try KeyAgreementPublicKey(bytes: masking), seedCommitment: commitment, signature: signature)
    } catch {
        throw WireError.invalidValue(field: "advertisement of participant \(sender)", reason: "\(error)")
    }
}

private func encodeShares(_ shares: [EncryptedShare], into encoder: inout WireEncoder) throws {
    encoder.uint32(UInt32(shares.count))
    for share in shares {
        encoder.uint32(share.sender)
        encoder.uint32(share.recipient)
        try encoder.blob(share.ciphertext, field: "ciphertext")
    }
}

private func decodeShares(from decoder: inout WireDecoder) throws -> [EncryptedShare] {
    let count = try decoder.count("shares", minimumElementSize: 12 + EncryptedShare.ciphertextByteCount,
                                  limit: maximumNeighbourhoodItems)
    return try (0..<count).map { _ in
        EncryptedShare(sender: try decoder.uint32("shares.sender"), recipient: try decoder.uint32("shares.recipient"),
                       ciphertext: try decoder.blob("shares.ciphertext", limit: EncryptedShare.ciphertextByteCount))
    }
}

private func decodeIDs(_ field: String, from decoder: inout WireDecoder, limit: Int = maximumNeighbourhoodItems) throws -> [ParticipantID] {
    let count = try decoder.count(field, minimumElementSize: 4, limit: limit)
    return try (0..<count).map { _ in try decoder.uint32(field) }
}

// MARK: - Round 0: advertise keys

/// Client → coordinator: its signed key advertisement for `round`.
public struct SecureAdvertise: WireMessage {
    public static let messageType = MessageType.secureAdvertise
    public var round: UInt64
    public var advertisement: KeyAdvertisement
    public init(round: UInt64, advertisement: KeyAdvertisement) {
        self.round = round
        self.advertisement = advertisement
    }
    public func encode(into encoder: inout WireEncoder) throws {
        encoder.uint64(round)
        try encodeAdvertisement(advertisement, into: &encoder)
    }
    public init(from decoder: inout WireDecoder) throws {
        round = try decoder.uint64("round")
        advertisement = try decodeAdvertisement(from: &decoder)
    }
}

/// Coordinator → client: the advertisements of its closed neighbourhood, then the transcript digests
/// of the other advertisements (empty for the complete graph).
public struct SecureAdvertisements: WireMessage {
    public static let messageType = MessageType.secureAdvertisements
    public var round: UInt64
    public var broadcast: AdvertisementBroadcast
    public init(round: UInt64, broadcast: AdvertisementBroadcast) {
        self.round = round
        self.broadcast = broadcast
    }
    public func encode(into encoder: inout WireEncoder) throws {
        encoder.uint64(round)
        try encoder.blob(broadcast.sessionID, field: "sessionID")
        encoder.uint32(broadcast.recipient)
        encoder.uint32(UInt32(broadcast.advertisements.count))
        for advertisement in broadcast.advertisements { try encodeAdvertisement(advertisement, into: &encoder) }
        encoder.uint32(UInt32(broadcast.others.count))
        for entry in broadcast.others {
            encoder.uint32(entry.sender)
            try encoder.blob(entry.digest, field: "others.digest")
        }
    }
    public init(from decoder: inout WireDecoder) throws {
        round = try decoder.uint64("round")
        let session = try decoder.blob("sessionID", limit: 32)
        let recipient = try decoder.uint32("recipient")
        let count = try decoder.count("advertisements", minimumElementSize: 5 * 4 + 4 + 32 * 4 + 64,
                                      limit: maximumNeighbourhoodItems)
        let advertisements = try (0..<count).map { _ in try decodeAdvertisement(from: &decoder) }
        let otherCount = try decoder.count("others", minimumElementSize: 4 + 4,
                                           limit: SecureRoundSetup.maximumCohort)
        let others = try (0..<otherCount).map { _ in
            AdvertisementDigest(sender: try decoder.uint32("others.sender"),
                                digest: try decoder.blob("others.digest", limit: AdvertisementDigest.byteCount))
        }
        broadcast = AdvertisementBroadcast(sessionID: session, recipient: recipient, advertisements: advertisements, others: others)
    }
}

// MARK: - Round 1: share keys

/// Client → coordinator: its sealed shares, one per neighbour that advertised.
public struct SecureShares: WireMessage {
    public static let messageType = MessageType.secureShares
    public var round: UInt64
    public var message: ShareKeysMessage
    public init(round: UInt64, message: ShareKeysMessage) {
        self.round = round
        self.message = message
    }
    public func encode(into encoder: inout WireEncoder) throws {
        encoder.uint64(round)
        try encoder.blob(message.sessionID, field: "sessionID")
        encoder.uint32(message.sender)
        try encodeShares(message.shares, into: &encoder)
    }
    public init(from decoder: inout WireDecoder) throws {
        round = try decoder.uint64("round")
        let session = try decoder.blob("sessionID", limit: 32)
        let sender = try decoder.uint32("sender")
        message = ShareKeysMessage(sessionID: session, sender: sender, shares: try decodeShares(from: &decoder))
    }
}

/// Coordinator → client: the sealed shares its neighbours addressed to it.
public struct SecureShareBundle: WireMessage {
    public static let messageType = MessageType.secureShareBundle
    public var round: UInt64
    public var bundle: ShareBundle
    public init(round: UInt64, bundle: ShareBundle) {
        self.round = round
        self.bundle = bundle
    }
    public func encode(into encoder: inout WireEncoder) throws {
        encoder.uint64(round)
        try encoder.blob(bundle.sessionID, field: "sessionID")
        encoder.uint32(bundle.recipient)
        try encodeShares(bundle.shares, into: &encoder)
    }
    public init(from decoder: inout WireDecoder) throws {
        round = try decoder.uint64("round")
        let session = try decoder.blob("sessionID", limit: 32)
        let recipient = try decoder.uint32("recipient")
        bundle = ShareBundle(sessionID: session, recipient: recipient, shares: try decodeShares(from: &decoder))
    }
}

// MARK: - Round 2: masked input

/// Client → coordinator: its masked update (its `MetricsReport` follows in clear).
public struct SecureMaskedInput: WireMessage {
    public static let messageType = MessageType.secureMaskedInput
    public var round: UInt64
    public var input: MaskedInput
    public init(round: UInt64, input: MaskedInput) {
        self.round = round
        self.input = input
    }
    public func encode(into encoder: inout WireEncoder) throws {
        encoder.uint64(round)
        try encoder.blob(input.sessionID, field: "sessionID")
        encoder.uint32(input.sender)
        try encoder.words(input.words, field: "words")
    }
    public init(from decoder: inout WireDecoder) throws {
        round = try decoder.uint64("round")
        let session = try decoder.blob("sessionID", limit: 32)
        let sender = try decoder.uint32("sender")
        // The frame's payload limit bounds the bytes; the session checks the count.
        input = MaskedInput(sessionID: session, sender: sender, words: try decoder.words("words", limit: MaskStream.maximumWordCount))
    }
}

// MARK: - Round 3: consistency check

/// Coordinator → survivor: U3, the clients whose masked input is in the sum, to sign.
public struct SecureConsistencyRequest: WireMessage {
    public static let messageType = MessageType.secureConsistencyRequest
    public var round: UInt64
    public var request: ConsistencyRequest
    public init(round: UInt64, request: ConsistencyRequest) {
        self.round = round
        self.request = request
    }
    public func encode(into encoder: inout WireEncoder) throws {
        encoder.uint64(round)
        try encoder.blob(request.sessionID, field: "sessionID")
        encoder.uint32(request.recipient)
        encoder.uint32(UInt32(request.survivors.count))
        for id in request.survivors { encoder.uint32(id) }
    }
    public init(from decoder: inout WireDecoder) throws {
        round = try decoder.uint64("round")
        let session = try decoder.blob("sessionID", limit: 32)
        let recipient = try decoder.uint32("recipient")
        let survivors = try decodeIDs("survivors", from: &decoder, limit: SecureRoundSetup.maximumCohort)
        request = ConsistencyRequest(sessionID: session, recipient: recipient, survivors: survivors)
    }
}

/// Survivor → coordinator: its signature on U3.
public struct SecureConsistencySignature: WireMessage {
    public static let messageType = MessageType.secureConsistencySignature
    public var round: UInt64
    public var signature: ConsistencySignature
    public init(round: UInt64, signature: ConsistencySignature) {
        self.round = round
        self.signature = signature
    }
    public func encode(into encoder: inout WireEncoder) throws {
        encoder.uint64(round)
        try encoder.blob(signature.sessionID, field: "sessionID")
        encoder.uint32(signature.sender)
        try encoder.blob(signature.signature, field: "signature")
    }
    public init(from decoder: inout WireDecoder) throws {
        round = try decoder.uint64("round")
        let session = try decoder.blob("sessionID", limit: 32)
        let sender = try decoder.uint32("sender")
        signature = ConsistencySignature(sessionID: session, sender: sender,
                                         signature: try decoder.blob("signature", limit: SigningKeyPair.signatureByteCount))
    }
}

// MARK: - Round 4: unmask

/// Coordinator → client: which of its neighbours survived and which dropped, and the consistency
/// signatures on U3 of the survivors within two hops.
public struct SecureUnmaskRequest: WireMessage {
    public static let messageType = MessageType.secureUnmaskRequest
    public var round: UInt64
    public var request: UnmaskRequest
    public init(round: UInt64, request: UnmaskRequest) {
        self.round = round
        self.request = request
    }
    public func encode(into encoder: inout WireEncoder) throws {
        encoder.uint64(round)
        try encoder.blob(request.sessionID, field: "sessionID")
        encoder.uint32(request.recipient)
        encoder.uint32(UInt32(request.survivors.count))
        for id in request.survivors { encoder.uint32(id) }
        encoder.uint32(UInt32(request.dropped.count))
        for id in request.dropped { encoder.uint32(id) }
        encoder.uint32(UInt32(request.signatures.count))
        for item in request.signatures {
            encoder.uint32(item.signer)
            try encoder.blob(item.signature, field: "signatures.signature")
        }
    }
    public init(from decoder: inout WireDecoder) throws {
        round = try decoder.uint64("round")
        let session = try decoder.blob("sessionID", limit: 32)
        let recipient = try decoder.uint32("recipient")
        let survivors = try decodeIDs("survivors", from: &decoder)
        let dropped = try decodeIDs("dropped", from: &decoder)
        // Signers within two hops: at most the cohort.
        let count = try decoder.count("signatures", minimumElementSize: 4 + 4 + SigningKeyPair.signatureByteCount,
                                      limit: SecureRoundSetup.maximumCohort)
        let signatures = try (0..<count).map { _ in
            SurvivorSignature(signer: try decoder.uint32("signatures.signer"),
                              signature: try decoder.blob("signatures.signature", limit: SigningKeyPair.signatureByteCount))
        }
        request = UnmaskRequest(sessionID: session, recipient: recipient, survivors: survivors, dropped: dropped, signatures: signatures)
    }
}

/// Client → coordinator: the shares it reveals.
public struct SecureUnmaskResponse: WireMessage {
    public static let messageType = MessageType.secureUnmaskResponse
    /// Serialized share of a 32-byte secret: 2-byte index, 2-byte threshold, 40-byte value (44 bytes).
    static let shareByteCount = ShamirShare.serializedByteCount(secretByteCount: 32)
    public var round: UInt64
    public var response: UnmaskResponse
    public init(round: UInt64, response: UnmaskResponse) {
        self.round = round
        self.response = response
    }
    public func encode(into encoder: inout WireEncoder) throws {
        encoder.uint64(round)
        try encoder.blob(response.sessionID, field: "sessionID")
        encoder.uint32(response.sender)
        encoder.uint32(UInt32(response.shares.count))
        for item in response.shares {
            encoder.uint32(item.owner)
            encoder.uint8(item.kind == .selfMaskSeed ? 1 : 2)
            // Revealing this share to the coordinator is the point of the stage.
            try encoder.blob(item.share.serialized().withUnsafeBytes { Array($0) }, field: "share")
        }
    }
    public init(from decoder: inout WireDecoder) throws {
        round = try decoder.uint64("round")
        let session = try decoder.blob("sessionID", limit: 32)
        let sender = try decoder.uint32("sender")
        let count = try decoder.count("shares", minimumElementSize: 4 + 1 + 4 + Self.shareByteCount,
                                      limit: maximumNeighbourhoodItems)
        var shares: [RevealedShare] = []
        for _ in 0..<count {
            let owner = try decoder.uint32("shares.owner")
            let rawKind = try decoder.uint8("shares.kind")
            guard let kind: ShareKind = rawKind == 1 ? .selfMaskSeed : rawKind == 2 ? .maskingKey : nil else {
                throw WireError.invalidValue(field: "secureUnmaskResponse.shares.kind", reason: "unknown kind \(rawKind)")
            }
            let bytes = SecretBytes(copying: try decoder.blob("shares.share", limit: Self.shareByteCount))
            do {
                shares.append(RevealedShare(owner: owner, kind: kind,
                                            share: try ShamirShare(serialized: bytes, secretByteCount: 32)))
            } catch {
                throw WireError.invalidValue(field: "secureUnmaskResponse.shares.share", reason: "\(error)")
            }
        }
        response = UnmaskResponse(sessionID: session, sender: sender, shares: shares)
    }
}
