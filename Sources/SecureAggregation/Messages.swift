import SecureCrypto

// The messages of the four stages, as plain values. Their binary codec and length limits belong to
// `Wire`; the state machines check every field they rely on (lengths, ids, session) themselves.

/// Round 0, client to coordinator: two fresh X25519 public keys and a commitment to the self-mask
/// seed, signed with the enrolled Ed25519 key.
public struct KeyAdvertisement: Sendable, Equatable {
    /// The session this advertisement belongs to.
    public let sessionID: [UInt8]
    /// The advertising client.
    public let sender: ParticipantID
    /// c_pk: the key that encrypts shares addressed to and from this client.
    public let encryptionKey: KeyAgreementPublicKey
    /// s_pk: the key from which this client's pairwise masks derive.
    public let maskingKey: KeyAgreementPublicKey
    /// A commitment to b, the self-mask seed (`seedCommitment(seed:sessionID:sender:)`): the
    /// coordinator checks every reconstructed seed against it, so a share holder who reveals a wrong
    /// share cannot shift the sum unnoticed (the masking key has its public key for that check).
    public let seedCommitment: [UInt8]
    /// Ed25519 over `signedBytes`.
    public let signature: [UInt8]

    /// A key advertisement from its parts (the client state machine makes and signs these).
    public init(sessionID: [UInt8], sender: ParticipantID, encryptionKey: KeyAgreementPublicKey,
                maskingKey: KeyAgreementPublicKey, seedCommitment: [UInt8], signature: [UInt8]) {
        self.sessionID = sessionID
        self.sender = sender
        self.encryptionKey = encryptionKey
        self.maskingKey = maskingKey
        self.seedCommitment = seedCommitment
        self.signature = signature
    }

    /// Byte length of a seed commitment.
    public static let seedCommitmentByteCount = 32

    /// The commitment to a self-mask seed b: BLAKE2b-256 keyed by b over a domain tag, the session id
    /// and the sender. Binding (another seed with the same commitment is a BLAKE2b collision) and
    /// hiding (b is 256 uniform bits, and the output is a PRF of it).
    public static func seedCommitment(seed: SecretBytes, sessionID: [UInt8], sender: ParticipantID) throws -> [UInt8] {
        var framing = SessionHasher(tag: "conclave/secagg/v1/seed-commitment")
        framing.append(bytes: sessionID)
        framing.append(UInt64(sender))
        let hasher = try Blake2bHasher(key: seed, outputLength: seedCommitmentByteCount)
        hasher.update(framing.bytes)
        return hasher.finalize()
    }

    /// What the signature covers: a domain tag, the session id, the sender, both public keys, the
    /// seed commitment.
    public static func signedBytes(sessionID: [UInt8], sender: ParticipantID, encryptionKey: KeyAgreementPublicKey,
                                   maskingKey: KeyAgreementPublicKey, seedCommitment: [UInt8]) -> [UInt8] {
        var framing = SessionHasher(tag: "conclave/secagg/v2/advertise")
        framing.append(bytes: sessionID)
        framing.append(UInt64(sender))
        framing.append(bytes: encryptionKey.bytes)
        framing.append(bytes: maskingKey.bytes)
        framing.append(bytes: seedCommitment)
        return framing.bytes
    }

    /// The advertisement's entry in the session transcript: BLAKE2b-256 over a domain tag, the
    /// session id, the sender, both public keys, the seed commitment and the signature, each
    /// length-prefixed.
    public var transcriptDigest: [UInt8] {
        var framing = SessionHasher(tag: "conclave/secagg/v2/advertisement-digest")
        framing.append(bytes: sessionID)
        framing.append(UInt64(sender))
        framing.append(bytes: encryptionKey.bytes)
        framing.append(bytes: maskingKey.bytes)
        framing.append(bytes: seedCommitment)
        framing.append(bytes: signature)
        return framing.finalize()
    }

    /// Whether the signature verifies under `key` for this advertisement's own fields.
    public func isSigned(by key: SigningPublicKey) -> Bool {
        key.isValidSignature(signature, for: Self.signedBytes(sessionID: sessionID, sender: sender, encryptionKey: encryptionKey,
                                                               maskingKey: maskingKey, seedCommitment: seedCommitment))
    }
}

/// A transcript entry: the sender of an advertisement and its `transcriptDigest`.
public struct AdvertisementDigest: Sendable, Equatable {
    /// Byte length of a digest.
    public static let byteCount = 32
    /// The advertising client.
    public let sender: ParticipantID
    /// BLAKE2b-256 of its advertisement (`KeyAdvertisement.transcriptDigest`).
    public let digest: [UInt8]

    /// An entry from its parts.
    public init(sender: ParticipantID, digest: [UInt8]) {
        self.sender = sender
        self.digest = digest
    }
}

/// Round 0 reply, coordinator to one client: the advertisements of its closed neighbourhood's
/// members that advertised (its own included), sorted by sender, and the digests of every other
/// advertisement the coordinator accepted, so the client can compute the session transcript
/// (`SecureAggregationSession.transcriptID(digests:)`) without O(n) full advertisements in a sparse
/// graph. With the complete graph `others` is empty.
public struct AdvertisementBroadcast: Sendable, Equatable {
    /// The session (the first, pre-transcript id: the keys are not known before this stage ends).
    public let sessionID: [UInt8]
    /// The client this broadcast is for.
    public let recipient: ParticipantID
    /// The live neighbours' advertisements.
    public let advertisements: [KeyAdvertisement]
    /// Digests of the accepted advertisements outside the recipient's neighbourhood, sorted by sender.
    public let others: [AdvertisementDigest]

    /// A broadcast from its parts.
    public init(sessionID: [UInt8], recipient: ParticipantID, advertisements: [KeyAdvertisement],
                others: [AdvertisementDigest] = []) {
        self.sessionID = sessionID
        self.recipient = recipient
        self.advertisements = advertisements
        self.others = others
    }
}

/// One client's shares for one neighbour, sealed with XChaCha20-Poly1305 under their pairwise
/// encryption key; the associated data binds the session id, sender and recipient.
public struct EncryptedShare: Sendable, Equatable {
    /// The client whose secrets these are shares of.
    public let sender: ParticipantID
    /// The neighbour that may open them.
    public let recipient: ParticipantID
    /// nonce ‖ ciphertext ‖ tag of sender ‖ recipient ‖ masking-key share ‖ self-mask-seed share.
    public let ciphertext: [UInt8]

    /// Plaintext: two 4-byte ids and two serialized 32-byte-secret shares (44 bytes each).
    static let plaintextByteCount = 4 + 4 + 2 * SecretShareLayout.serializedShareByteCount
    /// The exact sealed length every share must have.
    public static let ciphertextByteCount = plaintextByteCount + AEAD.overhead

    /// An encrypted share from its parts.
    public init(sender: ParticipantID, recipient: ParticipantID, ciphertext: [UInt8]) {
        self.sender = sender
        self.recipient = recipient
        self.ciphertext = ciphertext
    }
}

/// Round 1, client to coordinator: an encrypted share for every live neighbour.
public struct ShareKeysMessage: Sendable, Equatable {
    /// The transcript-bound session id (`SecureAggregationSession.transcriptID(digests:)`).
    public let sessionID: [UInt8]
    /// The sharing client.
    public let sender: ParticipantID
    /// One per neighbour that advertised keys, sorted by recipient.
    public let shares: [EncryptedShare]

    /// A message from its parts.
    public init(sessionID: [UInt8], sender: ParticipantID, shares: [EncryptedShare]) {
        self.sessionID = sessionID
        self.sender = sender
        self.shares = shares
    }
}

/// Round 1 reply, coordinator to one client: the shares its neighbours addressed to it.
public struct ShareBundle: Sendable, Equatable {
    /// The transcript-bound session id (`SecureAggregationSession.transcriptID(digests:)`).
    public let sessionID: [UInt8]
    /// The client these shares are for.
    public let recipient: ParticipantID
    /// One per neighbour that completed the share stage, sorted by sender.
    public let shares: [EncryptedShare]

    /// A bundle from its parts.
    public init(sessionID: [UInt8], recipient: ParticipantID, shares: [EncryptedShare]) {
        self.sessionID = sessionID
        self.recipient = recipient
        self.shares = shares
    }
}

/// Round 2, client to coordinator: y = x + PRG(b) + Σ±PRG(s_uv) mod 2^32.
public struct MaskedInput: Sendable, Equatable {
    /// The transcript-bound session id (`SecureAggregationSession.transcriptID(digests:)`).
    public let sessionID: [UInt8]
    /// The client.
    public let sender: ParticipantID
    /// The masked words, `vectorLength` of them.
    public let words: [UInt32]

    /// A masked input from its parts.
    public init(sessionID: [UInt8], sender: ParticipantID, words: [UInt32]) {
        self.sessionID = sessionID
        self.sender = sender
        self.words = words
    }
}

/// Round 3 (ConsistencyCheck, Bonawitz et al. Figure 4, active variant), coordinator to each
/// survivor: U3, every cohort member whose masked input was accepted. The same list goes to every
/// survivor; each signs it once, and reveals shares later only against enough signatures on it.
public struct ConsistencyRequest: Sendable, Equatable {
    /// The transcript-bound session id.
    public let sessionID: [UInt8]
    /// The survivor asked to sign.
    public let recipient: ParticipantID
    /// U3, sorted.
    public let survivors: [ParticipantID]

    /// A request from its parts.
    public init(sessionID: [UInt8], recipient: ParticipantID, survivors: [ParticipantID]) {
        self.sessionID = sessionID
        self.recipient = recipient
        self.survivors = survivors
    }
}

/// Round 3 reply, survivor to coordinator: its Ed25519 signature (enrolled key, the one that signed its
/// advertisement) over the transcript-bound session id and U3.
public struct ConsistencySignature: Sendable, Equatable {
    /// The transcript-bound session id.
    public let sessionID: [UInt8]
    /// The signer.
    public let sender: ParticipantID
    /// Ed25519 over `signedBytes(transcript:survivors:)`.
    public let signature: [UInt8]

    /// A signature from its parts.
    public init(sessionID: [UInt8], sender: ParticipantID, signature: [UInt8]) {
        self.sessionID = sessionID
        self.sender = sender
        self.signature = signature
    }

    /// What a survivor signs: a domain tag, the transcript-bound session id, and U3 (count, then
    /// each id in increasing order).
    public static func signedBytes(transcript: [UInt8], survivors: [ParticipantID]) -> [UInt8] {
        var framing = SessionHasher(tag: "conclave/secagg/v2/consistency")
        framing.append(bytes: transcript)
        framing.append(UInt64(survivors.count))
        for id in survivors { framing.append(UInt64(id)) }
        return framing.bytes
    }
}

/// A survivor's consistency signature as the coordinator forwards it in an unmask request.
public struct SurvivorSignature: Sendable, Equatable {
    /// The signer.
    public let signer: ParticipantID
    /// Its signature over the transcript and U3.
    public let signature: [UInt8]

    /// A forwarded signature from its parts.
    public init(signer: ParticipantID, signature: [UInt8]) {
        self.signer = signer
        self.signature = signature
    }
}

/// Round 4, coordinator to one surviving client: which of its neighbours survived the masked-input
/// stage (reveal their self-mask-seed shares) and which dropped (reveal their masking-key shares),
/// with the consistency signatures on U3 of the survivors within two hops (whose neighbourhoods
/// overlap the recipient's).
public struct UnmaskRequest: Sendable, Equatable {
    /// The transcript-bound session id (`SecureAggregationSession.transcriptID(digests:)`).
    public let sessionID: [UInt8]
    /// The client asked.
    public let recipient: ParticipantID
    /// Neighbours (the recipient included) whose masked input arrived.
    public let survivors: [ParticipantID]
    /// Neighbours that completed the share stage but whose masked input did not arrive.
    public let dropped: [ParticipantID]
    /// Consistency signatures on U3, sorted by signer.
    public let signatures: [SurvivorSignature]

    /// A request from its parts.
    public init(sessionID: [UInt8], recipient: ParticipantID, survivors: [ParticipantID], dropped: [ParticipantID],
                signatures: [SurvivorSignature] = []) {
        self.sessionID = sessionID
        self.recipient = recipient
        self.survivors = survivors
        self.dropped = dropped
        self.signatures = signatures
    }
}

/// Which secret a revealed share belongs to.
public enum ShareKind: String, Sendable, Equatable {
    /// b_u, the seed of the self-mask: revealed for survivors.
    case selfMaskSeed = "self-mask seed"
    /// s_u^SK, the X25519 secret of the pairwise masks: revealed for dropped clients.
    case maskingKey = "masking key"
}

/// One share a client reveals in the unmask stage.
public struct RevealedShare: Sendable {
    /// Whose secret this is a share of.
    public let owner: ParticipantID
    /// Which secret.
    public let kind: ShareKind
    /// The share itself.
    public let share: ShamirShare

    /// A revealed share from its parts.
    public init(owner: ParticipantID, kind: ShareKind, share: ShamirShare) {
        self.owner = owner
        self.kind = kind
        self.share = share
    }
}

/// Round 4 reply, client to coordinator.
public struct UnmaskResponse: Sendable {
    /// The transcript-bound session id (`SecureAggregationSession.transcriptID(digests:)`).
    public let sessionID: [UInt8]
    /// The answering client.
    public let sender: ParticipantID
    /// One share per neighbour named in the request.
    public let shares: [RevealedShare]

    /// A response from its parts.
    public init(sessionID: [UInt8], sender: ParticipantID, shares: [RevealedShare]) {
        self.sessionID = sessionID
        self.sender = sender
        self.shares = shares
    }
}

/// The coordinator's output: the sum of the survivors' inputs, and who they were.
public struct AggregationResult: Sendable, Equatable {
    /// Σ x_u mod 2^32 over `survivors`.
    public let sum: [UInt32]
    /// Clients whose input is in the sum, sorted.
    public let survivors: [ParticipantID]
    /// Cohort members whose input is not in the sum, sorted.
    public let dropped: [ParticipantID]
}

/// Layout of the two secrets every client shares.
enum SecretShareLayout {
    /// Both the X25519 secret and the self-mask seed are 32 bytes.
    static let secretByteCount = 32
    /// A share's value: 5 field elements of GF(2^61 - 1), 8 bytes each.
    static let shareValueByteCount = ShamirShare.valueByteCount(secretByteCount: secretByteCount)
    /// A serialized share: 2-byte index, 2-byte threshold, value.
    static let serializedShareByteCount = ShamirShare.serializedByteCount(secretByteCount: secretByteCount)
}
