import SecureCrypto

/// A client's number within a federation (its enrolment id); the order of ids decides the sign of
/// each pairwise mask.
public typealias ParticipantID = UInt32

/// A member of a round's cohort: its id and the Ed25519 key it enrolled with.
public struct Participant: Sendable, Hashable {
    /// The participant's id.
    public let id: ParticipantID
    /// The enrolled key that signs its per-round key advertisements.
    public let signingKey: SigningPublicKey

    /// A participant from its id and enrolled signing key.
    public init(id: ParticipantID, signingKey: SigningPublicKey) {
        self.id = id
        self.signingKey = signingKey
    }
}

/// The public parameters of one secure-aggregation session, which the coordinator and every client
/// construct independently from the round's announcement, and the session id that binds them.
///
/// The session id is BLAKE2b-256 over a domain tag, the round id, the plan bytes, the global
/// adapter's hash, the vector length, the neighbour graph, the threshold, and the participant list
/// sorted by id (each id with its enrolled signing key), every variable-length field prefixed with
/// its length. Clients sign their key advertisements over it and bind every encrypted share and
/// every pairwise mask key to it, so a message from any other round, plan, adapter or cohort is
/// refused.
public struct SecureAggregationSession: Sendable {
    /// The round this session aggregates.
    public let roundID: UInt64
    /// The training plan's canonical bytes, as announced.
    public let plan: [UInt8]
    /// The hash of the global adapter the clients trained from.
    public let globalAdapterHash: [UInt8]
    /// The cohort, sorted by id.
    public let participants: [Participant]
    /// Number of `UInt32` words in every client's input.
    public let vectorLength: Int
    /// Who masks with and shares among whom.
    public let graph: NeighbourGraph
    /// t: how many members of a closed neighbourhood (a client and its neighbours) must answer for
    /// that client's secrets to be reconstructed; fewer hold no information about them.
    public let threshold: Int
    /// The 32-byte session id.
    public let sessionID: [UInt8]

    private let neighbourhoods: [ParticipantID: [ParticipantID]]
    private let signingKeys: [ParticipantID: SigningPublicKey]

    /// The largest closed neighbourhood. Shamir shares (over GF(2^61 - 1)) allow 65,535 members; the
    /// protocol keeps its earlier limit of 255 until larger neighbourhoods are tested and measured.
    public static let maximumNeighbourhoodSize = 255

    /// The default threshold for a closed neighbourhood of m members: floor(2m/3) + 1, i.e. t > 2m/3,
    /// the bound Bonawitz et al. state for security against an actively malicious server colluding
    /// with fewer than a third of the clients. With the consistency check it withstands 2t − m − 1,
    /// about m/3, colluders against a coordinator that lies about who dropped (`CollusionResistance`;
    /// a strict majority alone withstands none). It tolerates up to a third of a neighbourhood
    /// dropping out.
    public static func defaultThreshold(neighbourhoodSize m: Int) -> Int { 2 * m / 3 + 1 }

    /// The session of a round.
    /// - Parameters:
    ///   - threshold: t; `nil` takes `defaultThreshold` of the smallest closed neighbourhood.
    /// - Throws: `SecureAggregationError.invalidParameters` for fewer than 2 participants, duplicate
    ///   ids, a vector length below 1, a degree below 2, a closed neighbourhood larger than 255, or a
    ///   threshold that is not a strict majority of every neighbourhood or exceeds the smallest one.
    public init(
        roundID: UInt64, plan: [UInt8], globalAdapterHash: [UInt8], participants: [Participant],
        vectorLength: Int, graph: NeighbourGraph = .complete, threshold: Int? = nil
    ) throws {
        let sorted = participants.sorted { $0.id < $1.id }
        guard sorted.count >= 2 else {
            throw SecureAggregationError.invalidParameters("a session needs at least 2 participants, got \(sorted.count)")
        }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.id == b.id {
            throw SecureAggregationError.invalidParameters("participant id \(a.id) appears more than once")
        }
        guard vectorLength >= 1, vectorLength <= MaskStream.maximumWordCount else {
            throw SecureAggregationError.invalidParameters("vector length \(vectorLength) outside 1...\(MaskStream.maximumWordCount)")
        }
        if case let .harary(degree) = graph, degree < 2 {
            throw SecureAggregationError.invalidParameters("Harary graph degree must be at least 2, got \(degree)")
        }

        var hasher = SessionHasher(tag: "conclave/secagg/v1/session")
        hasher.append(roundID)
        hasher.append(bytes: plan)
        hasher.append(bytes: globalAdapterHash)
        hasher.append(UInt64(vectorLength))
        switch graph {
        case .complete: hasher.append(UInt64(0))
        case let .harary(degree): hasher.append(UInt64(1)); hasher.append(UInt64(degree))
        }
        hasher.append(UInt64(threshold ?? 0))  // 0: "the default", itself a function of the hashed graph
        hasher.append(UInt64(sorted.count))
        for participant in sorted {
            hasher.append(UInt64(participant.id))
            hasher.append(bytes: participant.signingKey.bytes)
        }
        let sessionID = hasher.finalize()

        let graphSeed = Hash.blake2b(Array("conclave/secagg/v1/graph".utf8) + sessionID)
        let neighbourhoods = try graph.closedNeighbourhoods(participants: sorted.map(\.id), seed: graphSeed)
        let sizes = neighbourhoods.values.map(\.count)
        let smallest = sizes.min() ?? 0, largest = sizes.max() ?? 0
        guard largest <= Self.maximumNeighbourhoodSize else {
            throw SecureAggregationError.invalidParameters(
                "closed neighbourhoods of \(largest) exceed \(Self.maximumNeighbourhoodSize) members; use a sparse graph")
        }
        let t = threshold ?? Self.defaultThreshold(neighbourhoodSize: smallest)
        guard 2 * t > largest, t <= smallest else {
            throw SecureAggregationError.invalidParameters(
                "threshold \(t) must be a strict majority of the largest closed neighbourhood (\(largest)) and at most the smallest (\(smallest))")
        }

        self.roundID = roundID
        self.plan = plan
        self.globalAdapterHash = globalAdapterHash
        self.participants = sorted
        self.vectorLength = vectorLength
        self.graph = graph
        self.threshold = t
        self.sessionID = sessionID
        self.neighbourhoods = neighbourhoods
        self.signingKeys = Dictionary(uniqueKeysWithValues: sorted.map { ($0.id, $0.signingKey) })
    }

    /// Whether `id` is in the cohort.
    public func contains(_ id: ParticipantID) -> Bool { signingKeys[id] != nil }

    /// The enrolled signing key of `id`, if it is in the cohort.
    public func signingKey(of id: ParticipantID) -> SigningPublicKey? { signingKeys[id] }

    /// The closed neighbourhood of `id`: itself and its neighbours, sorted (empty if not in the cohort).
    public func neighbourhood(of id: ParticipantID) -> [ParticipantID] { neighbourhoods[id] ?? [] }

    /// The Shamir index (1-based position in `owner`'s closed neighbourhood) of the share `holder`
    /// keeps of `owner`'s secrets, or `nil` if `holder` is not in that neighbourhood.
    func shareIndex(owner: ParticipantID, holder: ParticipantID) -> UInt16? {
        guard let position = neighbourhood(of: owner).firstIndex(of: holder) else { return nil }
        return UInt16(position + 1)
    }

    /// The transcript-bound session id, which every message after the advertise stage carries and
    /// every share key, share's associated data and pairwise mask key derives from: BLAKE2b-256 over
    /// a domain tag, `sessionID`, the number of advertisements, and each (sender, digest) sorted by
    /// sender, where the digest binds the sender, both public keys and the signature
    /// (`KeyAdvertisement.transcriptDigest`). Bonawitz et al. and the issue ask that the session id
    /// bind every advertised key and signature; the keys are only known after the advertise stage,
    /// so this second id is computed then. Two clients shown different advertisement sets derive
    /// different ids, so their shares fail authentication and their masks do not cancel: a
    /// coordinator that equivocates makes the round fail instead of learning anything.
    /// - Parameter digests: one per advertising client, any order; the caller has checked that the
    ///   senders are distinct cohort members.
    public func transcriptID(digests: [AdvertisementDigest]) -> [UInt8] {
        var hasher = SessionHasher(tag: "conclave/secagg/v1/transcript")
        hasher.append(bytes: sessionID)
        hasher.append(UInt64(digests.count))
        for entry in digests.sorted(by: { $0.sender < $1.sender }) {
            hasher.append(UInt64(entry.sender))
            hasher.append(bytes: entry.digest)
        }
        return hasher.finalize()
    }

    /// Context for the X25519-derived key that encrypts shares between two clients.
    static func shareEncryptionContext(transcript: [UInt8]) -> String {
        "conclave/secagg/v1/share-encryption/" + Hex.encode(transcript)
    }

    /// Context for the X25519-derived pairwise mask seed s_uv.
    static func pairwiseMaskContext(transcript: [UInt8]) -> String {
        "conclave/secagg/v1/pairwise-mask/" + Hex.encode(transcript)
    }

    /// The associated data of an encrypted share: tag, transcript-bound session id, sender, recipient.
    static func shareAssociatedData(transcript: [UInt8], sender: ParticipantID, recipient: ParticipantID) -> [UInt8] {
        var hasher = SessionHasher(tag: "conclave/secagg/v1/share")
        hasher.append(bytes: transcript)
        hasher.append(UInt64(sender))
        hasher.append(UInt64(recipient))
        return hasher.bytes
    }
}

/// Length-prefixed, big-endian framing of the fields that go into session ids, signatures and
/// associated data, so no two different field lists give the same bytes.
struct SessionHasher {
    private(set) var bytes: [UInt8] = []

    init(tag: String) { append(bytes: Array(tag.utf8)) }

    mutating func append(_ value: UInt64) {
        for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt64(shift))) }
    }

    mutating func append(bytes field: [UInt8]) {
        append(UInt64(field.count))
        bytes += field
    }

    func finalize() -> [UInt8] { Hash.blake2b(bytes) }
}
