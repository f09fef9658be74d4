import SecureCrypto
@testable import SecureAggregation

/// Where a client stops taking part in a round.
enum DropPoint: CaseIterable {
    /// Never advertises keys.
    case beforeAdvertise
    /// Advertises, then sends no shares.
    case afterAdvertise
    /// Shares, then uploads no masked input.
    case afterShare
    /// Uploads its masked input, then never signs the survivor set.
    case afterMaskedInput
    /// Signs the survivor set, then never answers the unmask request.
    case afterConsistencyCheck
}

/// Drives one coordinator and n clients through a round in memory, recording what the coordinator
/// saw, so tests can drop clients at any stage and tamper with any message.
struct ProtocolRun {
    let session: SecureAggregationSession
    let identities: [ParticipantID: SigningKeyPair]
    var clients: [ParticipantID: SecureAggregationClient]
    var server: SecureAggregationServer
    let inputs: [ParticipantID: [UInt32]]
    /// Everything the coordinator received, stage by stage.
    var advertisements: [KeyAdvertisement] = []
    var shareMessages: [ShareKeysMessage] = []
    var maskedInputs: [ParticipantID: [UInt32]] = [:]
    /// Of each unmask response, the sender and the (owner, kind) of each share revealed (not the
    /// shares: a 100-client round would otherwise hold 10,000 guarded allocations).
    var revealedKinds: [(sender: ParticipantID, shares: [(owner: ParticipantID, kind: ShareKind)])] = []

    static let adapterHash = Hash.blake2b(Array("global adapter, round 0".utf8))

    /// A cohort with ids 3, 10, 17, ... (not contiguous, not starting at 0 or 1).
    static func cohort(_ count: Int) -> (participants: [Participant], identities: [ParticipantID: SigningKeyPair]) {
        var identities = [ParticipantID: SigningKeyPair]()
        var participants = [Participant]()
        for i in 0..<count {
            let id = ParticipantID(3 + 7 * i)
            let key = SigningKeyPair()
            identities[id] = key
            participants.append(Participant(id: id, signingKey: key.publicKey))
        }
        return (participants.shuffled(), identities)
    }

    /// A round over `count` clients whose inputs are `inputs(id)`.
    static func make(
        count: Int, vectorLength: Int, graph: NeighbourGraph = .complete, threshold: Int? = nil, roundID: UInt64 = 8,
        inputs makeInput: (ParticipantID) throws -> [UInt32]
    ) throws -> ProtocolRun {
        let (participants, identities) = cohort(count)
        let session = try SecureAggregationSession(
            roundID: roundID, plan: Array("steps=10 lr=1e-4".utf8), globalAdapterHash: adapterHash,
            participants: participants, vectorLength: vectorLength, graph: graph, threshold: threshold)
        var clients = [ParticipantID: SecureAggregationClient]()
        var inputs = [ParticipantID: [UInt32]]()
        for (id, identity) in identities {
            clients[id] = try SecureAggregationClient(session: session, id: id, identity: identity, localAdapterHash: adapterHash)
            inputs[id] = try makeInput(id)
        }
        return ProtocolRun(session: session, identities: identities, clients: clients,
                           server: SecureAggregationServer(session: session), inputs: inputs)
    }

    var ids: [ParticipantID] { session.participants.map(\.id) }

    /// The wrapping sum of the inputs of `survivors`.
    func plaintextSum(of survivors: [ParticipantID]) -> [UInt32] {
        var sum = [UInt32](repeating: 0, count: session.vectorLength)
        for id in survivors { for (i, word) in inputs[id]!.enumerated() { sum[i] &+= word } }
        return sum
    }

    mutating func advertise(dropping dropped: Set<ParticipantID> = []) throws -> [AdvertisementBroadcast] {
        for id in ids where !dropped.contains(id) {
            let advertisement = try clients[id]!.advertiseKeys()
            advertisements.append(advertisement)
            try server.receive(advertisement)
        }
        return try server.finishAdvertising()
    }

    mutating func share(_ broadcasts: [AdvertisementBroadcast], dropping dropped: Set<ParticipantID> = []) throws -> [ShareBundle] {
        for broadcast in broadcasts where !dropped.contains(broadcast.recipient) {
            let message = try clients[broadcast.recipient]!.shareKeys(broadcast)
            shareMessages.append(message)
            try server.receive(message)
        }
        return try server.finishSharing()
    }

    mutating func mask(_ bundles: [ShareBundle], dropping dropped: Set<ParticipantID> = []) throws -> [ConsistencyRequest] {
        for bundle in bundles where !dropped.contains(bundle.recipient) {
            let masked = try clients[bundle.recipient]!.maskInput(bundle, input: inputs[bundle.recipient]!)
            maskedInputs[masked.sender] = masked.words
            try server.receive(masked)
        }
        return try server.finishMaskedInput()
    }

    mutating func sign(_ requests: [ConsistencyRequest], dropping dropped: Set<ParticipantID> = []) throws -> [UnmaskRequest] {
        for request in requests where !dropped.contains(request.recipient) {
            try server.receive(try clients[request.recipient]!.signSurvivors(request))
        }
        return try server.finishConsistencyCheck()
    }

    /// Stages 2 and 3: masked inputs, then the survivors sign U3.
    mutating func maskAndSign(_ bundles: [ShareBundle]) throws -> [UnmaskRequest] {
        try sign(try mask(bundles))
    }

    mutating func unmask(_ requests: [UnmaskRequest], dropping dropped: Set<ParticipantID> = []) throws -> AggregationResult {
        for request in requests where !dropped.contains(request.recipient) {
            let response = try clients[request.recipient]!.unmask(request)
            revealedKinds.append((response.sender, response.shares.map { ($0.owner, $0.kind) }))
            try server.receive(response)
        }
        return try server.finishUnmasking()
    }

    /// A whole round, with clients dropping at the given points.
    mutating func run(dropping drops: [DropPoint: Set<ParticipantID>] = [:]) throws -> AggregationResult {
        var gone = drops[.beforeAdvertise] ?? []
        let broadcasts = try advertise(dropping: gone)
        gone.formUnion(drops[.afterAdvertise] ?? [])
        let bundles = try share(broadcasts, dropping: gone)
        gone.formUnion(drops[.afterShare] ?? [])
        let checks = try mask(bundles, dropping: gone)
        gone.formUnion(drops[.afterMaskedInput] ?? [])
        let requests = try sign(checks, dropping: gone)
        gone.formUnion(drops[.afterConsistencyCheck] ?? [])
        return try unmask(requests, dropping: gone)
    }
}

/// Random fixed-point inputs: floats in ±1.2 (so some are clipped at ±1), stochastically rounded.
func randomEncodedInput(_ encoding: FixedPointEncoding, count: Int) throws -> [UInt32] {
    let values = (0..<count).map { _ in Float.random(in: -1.2...1.2) }
    return try encoding.encode(values).words
}
