import SecureCrypto

/// The client side of secure aggregation (Bonawitz et al., CCS 2017, Figure 4, with the
/// ConsistencyCheck round of the actively secure variant), as a state machine without I/O: each
/// method takes the coordinator's message for a stage and returns the client's reply. Any refusal
/// moves the machine to a failed state: the client takes no further part in the round, and its
/// secrets are never revealed.
///
/// Stages, in order: `advertiseKeys()`, `shareKeys(_:)`, `maskInput(_:input:)`,
/// `signSurvivors(_:)`, `unmask(_:)`.
public struct SecureAggregationClient: Sendable {
    /// This client's secrets for the round, made when it advertises.
    private struct Keys: Sendable {
        /// c: encrypts the shares this client sends and receives.
        var encryption: KeyAgreementKeyPair
        /// s: its secret is Shamir-shared; pairwise masks derive from it.
        var masking: KeyAgreementKeyPair
        /// b: the self-mask seed.
        var selfMaskSeed: SecretBytes
        var advertisement: KeyAdvertisement
    }

    /// What the share stage fixed, kept until the input is masked.
    private struct Dealt: Sendable {
        var keys: Keys
        /// The transcript-bound session id, derived from the advertisements this client was shown.
        var transcript: [UInt8]
        /// The neighbourhood members that advertised (this client included), by id.
        var neighbourKeys: [ParticipantID: KeyAdvertisement]
        /// This client's shares of its own secrets.
        var ownShares: (maskingKey: ShamirShare, selfMaskSeed: ShamirShare)
    }

    /// The shares a masked client holds for the unmask stage.
    private struct Held: Sendable {
        var transcript: [UInt8]
        /// Every share held (of each neighbour's secrets and of its own), in one protected buffer: per
        /// owner a row of the masking-key share's value then the self-mask-seed share's value. One
        /// allocation, not two per neighbour: `sodium_malloc` maps guard pages around each buffer, and a
        /// process has a bounded number of mappings.
        var values: SecretBytes
        /// The row of each owner in `values`.
        var rows: [ParticipantID: Int]

        /// The held share of `owner`'s secret of `kind` (the caller checked that it is held).
        func share(of owner: ParticipantID, _ kind: ShareKind, holder: ParticipantID,
                   session: SecureAggregationSession) throws -> RevealedShare {
            guard let row = rows[owner], let index = session.shareIndex(owner: owner, holder: holder) else {
                preconditionFailure("participant \(owner)'s shares are held")
            }
            let start = row * SecureAggregationClient.rowByteCount + (kind == .maskingKey ? 0 : SecretShareLayout.shareValueByteCount)
            let value = values.withUnsafeBytes {
                SecretBytes(copying: UnsafeRawBufferPointer(rebasing: $0[start..<(start + SecretShareLayout.shareValueByteCount)]))
            }
            let share = try ShamirShare(index: index, threshold: UInt16(session.threshold),
                                        secretByteCount: SecretShareLayout.secretByteCount, value: value)
            return RevealedShare(owner: owner, kind: kind, share: share)
        }
    }

    /// Each stage's state holds only the secrets later stages need; finishing or failing drops them all.
    private enum State: Sendable {
        case ready
        case advertised(Keys)
        case shared(Dealt)
        case masked(Held)
        /// Signed U3 (sorted); shares are revealed only against it.
        case signed(Held, survivors: [ParticipantID])
        case finished(transcript: [UInt8])
        case failed(SecureAggregationError, transcript: [UInt8]?)

        var name: String {
            switch self {
            case .ready: return "ready"
            case .advertised: return "advertised"
            case .shared: return "shared"
            case .masked: return "masked"
            case .signed: return "signed"
            case .finished: return "finished"
            case let .failed(reason, _): return "failed (\(reason))"
            }
        }
    }

    /// The session this client takes part in.
    public let session: SecureAggregationSession
    /// This client's id.
    public let id: ParticipantID

    private let identity: SigningKeyPair
    private var state = State.ready
    private static let rowByteCount = 2 * SecretShareLayout.shareValueByteCount

    /// Whether `unmask` demands the consistency check. Tests turn it off (an internal seam, never set
    /// by production code) to show the attacks it stops succeeding on the protocol without it.
    var requiresConsistencyCheck = true

    /// A client for `session`, signing with its enrolled `identity`.
    /// - Parameter localAdapterHash: the hash of the global adapter this client trained from; the
    ///   client refuses a session announced for another one.
    /// - Throws: `SecureAggregationError.unknownParticipant` if `id` is not in the cohort,
    ///   `.invalidParameters` if `identity` is not the key the cohort lists for `id`,
    ///   `.adapterHashMismatch` if the adapter hashes differ.
    public init(session: SecureAggregationSession, id: ParticipantID, identity: SigningKeyPair, localAdapterHash: [UInt8]) throws {
        guard let enrolled = session.signingKey(of: id) else {
            throw SecureAggregationError.unknownParticipant(stage: .advertiseKeys, participant: id, reason: "is not in this round's cohort")
        }
        guard enrolled == identity.publicKey else {
            throw SecureAggregationError.invalidParameters("participant \(id)'s signing key differs from the one the cohort lists for it")
        }
        guard constantTimeEqual(localAdapterHash, session.globalAdapterHash) else {
            throw SecureAggregationError.adapterHashMismatch(
                expected: Hex.encode(localAdapterHash), announced: Hex.encode(session.globalAdapterHash))
        }
        self.session = session
        self.id = id
        self.identity = identity
    }

    /// The transcript-bound session id this client derived in the share stage (nil before it).
    public var transcriptID: [UInt8]? {
        switch state {
        case .ready, .advertised: return nil
        case let .shared(dealt): return dealt.transcript
        case let .masked(held): return held.transcript
        case let .signed(held, _): return held.transcript
        case let .finished(transcript): return transcript
        case let .failed(_, transcript): return transcript
        }
    }

    /// The reason this client failed, if it did.
    public var failureReason: SecureAggregationError? {
        if case let .failed(reason, _) = state { return reason }
        return nil
    }

    /// Round 0: fresh X25519 key pairs c and s and a fresh self-mask seed b, and the signed advertisement.
    public mutating func advertiseKeys() throws -> KeyAdvertisement {
        guard case .ready = state else { throw invalidState(expected: "ready") }
        let c = KeyAgreementKeyPair(), s = KeyAgreementKeyPair()
        let b = SecretBytes(randomCount: MaskStream.seedByteCount)
        let commitment = try KeyAdvertisement.seedCommitment(seed: b, sessionID: session.sessionID, sender: id)
        let signed = KeyAdvertisement.signedBytes(sessionID: session.sessionID, sender: id, encryptionKey: c.publicKey,
                                                  maskingKey: s.publicKey, seedCommitment: commitment)
        let advertisement = KeyAdvertisement(sessionID: session.sessionID, sender: id, encryptionKey: c.publicKey,
                                             maskingKey: s.publicKey, seedCommitment: commitment,
                                             signature: identity.signature(for: signed))
        state = .advertised(Keys(encryption: c, masking: s, selfMaskSeed: b, advertisement: advertisement))
        return advertisement
    }

    /// Round 1: checks the neighbours' advertisements (session, membership, signatures, distinct keys,
    /// this client's own keys unaltered, at least t of them), then Shamir-shares s and b t-of-m over
    /// the closed neighbourhood and seals each neighbour's shares to it.
    /// - Throws: `SecureAggregationError` naming the offending neighbour or count; the client fails.
    public mutating func shareKeys(_ broadcast: AdvertisementBroadcast) throws -> ShareKeysMessage {
        guard case let .advertised(keys) = state else { throw invalidState(expected: "advertised") }
        return try failing { try $0.shareKeysChecked(broadcast, keys: keys) }
    }

    private mutating func shareKeysChecked(_ broadcast: AdvertisementBroadcast, keys ownKeys: Keys) throws -> ShareKeysMessage {
        let stage = SecureAggregationStage.advertiseKeys
        try checkSession(broadcast.sessionID, expected: session.sessionID, stage: stage, recipient: broadcast.recipient)
        let c = ownKeys.encryption, s = ownKeys.masking, b = ownKeys.selfMaskSeed, own = ownKeys.advertisement
        let neighbourhood = session.neighbourhood(of: id)
        var keys = [ParticipantID: KeyAdvertisement]()
        var publicKeys = Set<[UInt8]>()
        for advertisement in broadcast.advertisements {
            let sender = advertisement.sender
            guard advertisement.sessionID == session.sessionID else {
                throw SecureAggregationError.sessionMismatch(stage: stage, sender: sender)
            }
            guard neighbourhood.contains(sender), let key = session.signingKey(of: sender) else {
                throw SecureAggregationError.unknownParticipant(stage: stage, participant: sender,
                                                                reason: "is not in participant \(id)'s neighbourhood")
            }
            guard keys[sender] == nil else { throw SecureAggregationError.duplicateMessage(stage: stage, sender: sender) }
            guard advertisement.isSigned(by: key) else { throw SecureAggregationError.invalidSignature(participant: sender) }
            // Distinct keys: a key reflected back as someone else's would let its owner's masks cancel.
            guard publicKeys.insert(advertisement.encryptionKey.bytes).inserted,
                  publicKeys.insert(advertisement.maskingKey.bytes).inserted else {
                throw SecureAggregationError.malformedMessage(stage: stage, sender: sender, reason: "advertises a public key already advertised")
            }
            keys[sender] = advertisement
        }
        guard keys[id] == own else {
            throw SecureAggregationError.refused(stage: stage, reason: "the broadcast omits or alters participant \(id)'s own advertisement")
        }
        guard keys.count >= session.threshold else {
            throw SecureAggregationError.refused(
                stage: stage, reason: "only \(keys.count) of participant \(id)'s closed neighbourhood advertised keys; threshold is \(session.threshold)")
        }

        // The transcript: this client's neighbourhood from the advertisements it verified, everyone
        // else from the digests the coordinator relays. Whatever the coordinator shows, another client
        // shown anything else derives another id, and the round fails rather than mixing views.
        var digests = keys.values.map { AdvertisementDigest(sender: $0.sender, digest: $0.transcriptDigest) }
        let neighbours = Set(neighbourhood)
        var outside = Set<ParticipantID>()
        for entry in broadcast.others {
            guard session.contains(entry.sender), !neighbours.contains(entry.sender) else {
                throw SecureAggregationError.malformedMessage(
                    stage: stage, sender: entry.sender,
                    reason: "transcript digest relayed for a participant outside the cohort or inside participant \(id)'s neighbourhood")
            }
            guard outside.insert(entry.sender).inserted else { throw SecureAggregationError.duplicateMessage(stage: stage, sender: entry.sender) }
            guard entry.digest.count == AdvertisementDigest.byteCount else {
                throw SecureAggregationError.malformedMessage(
                    stage: stage, sender: entry.sender, reason: "transcript digest of \(entry.digest.count) bytes, expected \(AdvertisementDigest.byteCount)")
            }
            digests.append(entry)
        }
        let transcript = session.transcriptID(digests: digests)
        let encryptionContext = SecureAggregationSession.shareEncryptionContext(transcript: transcript)

        let maskingShares = try ShamirSharing.split(s.secretKey, threshold: session.threshold, shareCount: neighbourhood.count)
        let seedShares = try ShamirSharing.split(b, threshold: session.threshold, shareCount: neighbourhood.count)
        var sealed = [EncryptedShare]()
        var ownShares: (maskingKey: ShamirShare, selfMaskSeed: ShamirShare)?
        for (position, recipient) in neighbourhood.enumerated() {
            guard let peer = keys[recipient] else { continue }  // did not advertise: gets nothing
            if recipient == id {
                ownShares = (maskingShares[position], seedShares[position])
                continue
            }
            let key = try c.sharedKey(with: peer.encryptionKey, context: encryptionContext)
            let plaintext = Self.sharePlaintext(sender: id, recipient: recipient,
                                                maskingKey: maskingShares[position], selfMaskSeed: seedShares[position])
            let ciphertext = try AEAD.seal(plaintext, key: key,
                                           associatedData: SecureAggregationSession.shareAssociatedData(
                                               transcript: transcript, sender: id, recipient: recipient))
            sealed.append(EncryptedShare(sender: id, recipient: recipient, ciphertext: ciphertext))
        }
        guard let ownShares else { preconditionFailure("this client is in its own neighbourhood and advertised") }
        state = .shared(Dealt(keys: ownKeys, transcript: transcript, neighbourKeys: keys, ownShares: ownShares))
        return ShareKeysMessage(sessionID: transcript, sender: id, shares: sealed)
    }

    /// Round 2: opens the shares addressed to this client, then masks `input`:
    /// y = x + PRG(b) + Σ_{v<u} PRG(s_uv) − Σ_{v>u} PRG(s_uv) mod 2^32 over the neighbours v whose
    /// shares arrived, s_uv being the X25519 key of the s pairs bound to the session id.
    /// - Parameter input: the fixed-point encoded update, `session.vectorLength` words.
    /// - Throws: `SecureAggregationError` for a share that fails authentication or carries the wrong
    ///   ids, index or threshold, or when fewer than t neighbourhood members (this client included)
    ///   completed the share stage; the client fails.
    public mutating func maskInput(_ bundle: ShareBundle, input: [UInt32]) throws -> MaskedInput {
        guard case let .shared(dealt) = state else { throw invalidState(expected: "shared") }
        guard input.count == session.vectorLength else {
            throw SecureAggregationError.invalidParameters(
                "participant \(id)'s input has \(input.count) words; the session expects \(session.vectorLength)")
        }
        return try failing { try $0.maskInputChecked(bundle, input: input, dealt: dealt) }
    }

    private mutating func maskInputChecked(_ bundle: ShareBundle, input: [UInt32], dealt: Dealt) throws -> MaskedInput {
        let stage = SecureAggregationStage.shareKeys
        let transcript = dealt.transcript, neighbourKeys = dealt.neighbourKeys, own = dealt.ownShares
        try checkSession(bundle.sessionID, expected: transcript, stage: stage, recipient: bundle.recipient)
        let c = dealt.keys.encryption, s = dealt.keys.masking, b = dealt.keys.selfMaskSeed
        let encryptionContext = SecureAggregationSession.shareEncryptionContext(transcript: transcript)
        // Envelopes first (public fields), then one buffer filled share by share as each is opened.
        var opened = [(encrypted: EncryptedShare, peer: KeyAdvertisement)]()
        var seen: Set<ParticipantID> = [id]
        for encrypted in bundle.shares {
            let sender = encrypted.sender
            guard sender != id, let peer = neighbourKeys[sender] else {
                throw SecureAggregationError.unknownParticipant(
                    stage: stage, participant: sender, reason: "did not advertise keys to participant \(id)")
            }
            guard seen.insert(sender).inserted else { throw SecureAggregationError.duplicateMessage(stage: stage, sender: sender) }
            guard encrypted.recipient == id else {
                throw SecureAggregationError.malformedMessage(stage: stage, sender: sender,
                                                              reason: "share addressed to \(encrypted.recipient), delivered to \(id)")
            }
            guard encrypted.ciphertext.count == EncryptedShare.ciphertextByteCount else {
                throw SecureAggregationError.malformedMessage(
                    stage: stage, sender: sender,
                    reason: "encrypted share is \(encrypted.ciphertext.count) bytes, expected \(EncryptedShare.ciphertextByteCount)")
            }
            opened.append((encrypted, peer))
        }
        let rowBytes = Self.rowByteCount, half = SecretShareLayout.shareValueByteCount
        let values = try SecretBytes(count: (opened.count + 1) * rowBytes) { out in
            func store(_ row: Int, _ shares: (maskingKey: ShamirShare, selfMaskSeed: ShamirShare)) {
                shares.maskingKey.value.withUnsafeBytes {
                    UnsafeMutableRawBufferPointer(rebasing: out[(row * rowBytes)..<(row * rowBytes + half)]).copyMemory(from: $0)
                }
                shares.selfMaskSeed.value.withUnsafeBytes {
                    UnsafeMutableRawBufferPointer(rebasing: out[(row * rowBytes + half)..<((row + 1) * rowBytes)]).copyMemory(from: $0)
                }
            }
            store(0, own)
            for (row, (encrypted, peer)) in opened.enumerated() {
                let key = try c.sharedKey(with: peer.encryptionKey, context: encryptionContext)
                let plaintext: SecretBytes
                do {
                    plaintext = try AEAD.open(encrypted.ciphertext, key: key,
                                              associatedData: SecureAggregationSession.shareAssociatedData(
                                                  transcript: transcript, sender: encrypted.sender, recipient: id))
                } catch SecureCryptoError.authenticationFailed {
                    throw SecureAggregationError.shareDecryptionFailed(sender: encrypted.sender, recipient: id)
                }
                store(row + 1, try parseSharePlaintext(plaintext, sender: encrypted.sender))
            }
        }
        let peers = opened.map(\.encrypted.sender)
        var rows = [id: 0]
        for (row, peer) in peers.enumerated() { rows[peer] = row + 1 }
        let completed = peers.count + 1
        guard completed >= session.threshold else {
            throw SecureAggregationError.refused(
                stage: .maskedInput,
                reason: "only \(completed) of participant \(id)'s closed neighbourhood completed the share stage; threshold is \(session.threshold)")
        }

        var terms = [try MaskTerm(stream: MaskStream(seed: b), sign: .plus)]
        let maskContext = SecureAggregationSession.pairwiseMaskContext(transcript: transcript)
        for peer in peers.sorted() {
            guard let advertisement = neighbourKeys[peer] else { continue }
            let seed = try s.sharedKey(with: advertisement.maskingKey, context: maskContext)
            terms.append(MaskTerm(stream: try MaskStream(seed: seed), sign: peer < id ? .plus : .minus))
        }
        var masked = input
        Masking.apply(terms, to: &masked)
        state = .masked(Held(transcript: transcript, values: values, rows: rows))
        return MaskedInput(sessionID: transcript, sender: id, words: masked)
    }

    /// Round 3 (ConsistencyCheck): signs U3 once, with the enrolled key, after checking that it lists
    /// this client, only cohort members, each once, in order, only neighbours this client holds
    /// shares of (it masked with them), and at least t members of its closed neighbourhood.
    /// One signature per session: an honest client never signs two survivor sets, so a coordinator
    /// cannot show t signatures on two different sets to two groups of holders unless at least
    /// 2t − m of some neighbourhood of m collude (`CollusionResistance`).
    public mutating func signSurvivors(_ request: ConsistencyRequest) throws -> ConsistencySignature {
        guard case let .masked(held) = state else { throw invalidState(expected: "masked") }
        return try failing { try $0.signSurvivorsChecked(request, held: held) }
    }

    private mutating func signSurvivorsChecked(_ request: ConsistencyRequest, held: Held) throws -> ConsistencySignature {
        let stage = SecureAggregationStage.consistencyCheck
        try checkSession(request.sessionID, expected: held.transcript, stage: stage, recipient: request.recipient)
        let survivors = request.survivors
        for (a, b) in zip(survivors, survivors.dropFirst()) where a >= b {
            throw SecureAggregationError.refused(stage: stage, reason: "the survivor set is not in increasing order at \(b)")
        }
        if let stranger = survivors.first(where: { !session.contains($0) }) {
            throw SecureAggregationError.refused(stage: stage, reason: "the survivor set lists \(stranger), who is not in the cohort")
        }
        let listed = Set(survivors)
        guard listed.contains(id) else {
            throw SecureAggregationError.refused(stage: stage, reason: "the survivor set does not list participant \(id) itself")
        }
        let local = session.neighbourhood(of: id).filter(listed.contains)
        // A survivor this client holds no shares of did not share with it, or was withheld from it: in
        // an honest run every survivor shared with all its neighbours. Refusing here stops a coordinator
        // that made this client mask with few neighbours from claiming the others survived.
        if let unknown = local.first(where: { held.rows[$0] == nil }) {
            throw SecureAggregationError.refused(
                stage: stage, reason: "the survivor set lists participant \(unknown), of whom participant \(id) holds no shares")
        }
        guard local.count >= session.threshold else {
            throw SecureAggregationError.refused(
                stage: stage, reason: "only \(local.count) survivors in participant \(id)'s neighbourhood; threshold is \(session.threshold)")
        }
        let signature = identity.signature(for: ConsistencySignature.signedBytes(transcript: held.transcript, survivors: survivors))
        state = .signed(held, survivors: survivors)
        return ConsistencySignature(sessionID: held.transcript, sender: id, signature: signature)
    }

    /// Round 4: reveals, for each neighbour in the survivor set this client signed, the share of its
    /// self-mask seed, and for each neighbour it holds shares of but that set omits (dropped after
    /// sharing), the share of its masking key; never both for one member. Before revealing anything
    /// it verifies the forwarded consistency signatures on that same set and requires, for every
    /// member whose share it reveals, at least t valid ones from distinct members of that member's
    /// closed neighbourhood (the holders of its shares): then any other holder told another story
    /// saw fewer than t honest signatures on it. The request's survivor and dropped lists must be
    /// exactly what the signed set implies.
    /// - Throws: `.consistencyCheckFailed` naming the member short of signatures, `.refused` for a
    ///   request that differs from the signed set, a signature list with a duplicate, a stranger or
    ///   a signer outside the set, or a second request; the client fails and reveals nothing.
    public mutating func unmask(_ request: UnmaskRequest) throws -> UnmaskResponse {
        switch state {
        case let .signed(held, survivors):
            return try failing { try $0.unmaskConsistent(request, held: held, signedSurvivors: survivors) }
        case let .masked(held) where !requiresConsistencyCheck:
            return try failing { try $0.unmaskChecked(request, held: held) }
        default:
            throw invalidState(expected: "signed")
        }
    }

    private mutating func unmaskConsistent(_ request: UnmaskRequest, held: Held, signedSurvivors: [ParticipantID]) throws -> UnmaskResponse {
        let stage = SecureAggregationStage.unmask
        try checkSession(request.sessionID, expected: held.transcript, stage: stage, recipient: request.recipient)
        let signedSet = Set(signedSurvivors)
        let expectedSurvivors = session.neighbourhood(of: id).filter(signedSet.contains)
        let expectedDropped = held.rows.keys.filter { !signedSet.contains($0) }.sorted()
        guard request.survivors.sorted() == expectedSurvivors, request.dropped.sorted() == expectedDropped else {
            throw SecureAggregationError.refused(
                stage: stage, reason: "the unmask request's survivors \(request.survivors.sorted()) and dropped \(request.dropped.sorted()) "
                    + "differ from the survivor set participant \(id) signed")
        }
        let signed = ConsistencySignature.signedBytes(transcript: held.transcript, survivors: signedSurvivors)
        var valid = Set<ParticipantID>()
        for item in request.signatures {
            guard signedSet.contains(item.signer), let key = session.signingKey(of: item.signer) else {
                throw SecureAggregationError.refused(
                    stage: .consistencyCheck, reason: "a consistency signature from participant \(item.signer), outside the survivor set")
            }
            guard valid.insert(item.signer).inserted else {
                throw SecureAggregationError.refused(stage: .consistencyCheck, reason: "two consistency signatures from participant \(item.signer)")
            }
            // A signature on another set (or forged) counts for nothing, and says the coordinator equivocates.
            guard key.isValidSignature(item.signature, for: signed) else {
                throw SecureAggregationError.invalidSignature(participant: item.signer)
            }
        }
        for owner in expectedSurvivors + expectedDropped {
            let count = session.neighbourhood(of: owner).filter(valid.contains).count
            guard count >= session.threshold else {
                throw SecureAggregationError.consistencyCheckFailed(recipient: id, owner: owner, validSignatures: count,
                                                                    threshold: session.threshold)
            }
        }
        return try reveal(survivors: expectedSurvivors, dropped: expectedDropped, held: held)
    }

    /// Round 4 without the consistency check (the semi-honest protocol; tests only, through
    /// `requiresConsistencyCheck`): refuses a neighbour listed in both sets, twice, or one this client
    /// holds no shares of, itself listed as dropped or not listed, and fewer than t survivors.
    private mutating func unmaskChecked(_ request: UnmaskRequest, held: Held) throws -> UnmaskResponse {
        let stage = SecureAggregationStage.unmask
        try checkSession(request.sessionID, expected: held.transcript, stage: stage, recipient: request.recipient)
        let survivors = Set(request.survivors), dropped = Set(request.dropped)
        guard survivors.count == request.survivors.count, dropped.count == request.dropped.count else {
            throw SecureAggregationError.refused(stage: stage, reason: "the request lists a participant twice")
        }
        if let both = survivors.intersection(dropped).min() {
            throw SecureAggregationError.refused(
                stage: stage,
                reason: "participant \(both) is listed as both survivor and dropped; revealing both of its shares would expose its input")
        }
        guard !dropped.contains(id), survivors.contains(id) else {
            throw SecureAggregationError.refused(stage: stage, reason: "the request does not list participant \(id) itself as a survivor")
        }
        if let stranger = survivors.union(dropped).sorted().first(where: { held.rows[$0] == nil }) {
            throw SecureAggregationError.refused(
                stage: stage, reason: "participant \(id) holds no shares of participant \(stranger)")
        }
        guard survivors.count >= session.threshold else {
            throw SecureAggregationError.refused(
                stage: stage, reason: "only \(survivors.count) survivors listed in participant \(id)'s neighbourhood; threshold is \(session.threshold)")
        }
        return try reveal(survivors: request.survivors.sorted(), dropped: request.dropped.sorted(), held: held)
    }

    /// The self-mask seed shares of `survivors` and the masking-key shares of `dropped` (disjoint).
    private mutating func reveal(survivors: [ParticipantID], dropped: [ParticipantID], held: Held) throws -> UnmaskResponse {
        var revealed = [RevealedShare]()
        for owner in survivors { revealed.append(try held.share(of: owner, .selfMaskSeed, holder: id, session: session)) }
        for owner in dropped { revealed.append(try held.share(of: owner, .maskingKey, holder: id, session: session)) }
        state = .finished(transcript: held.transcript)
        return UnmaskResponse(sessionID: held.transcript, sender: id, shares: revealed)
    }

    // MARK: - Helpers

    private func invalidState(expected: String) -> SecureAggregationError {
        .invalidState(expected: expected, actual: state.name)
    }

    /// Runs a stage; on any error the client fails, dropping its secrets with the state that held them.
    private mutating func failing<R>(_ body: (inout Self) throws -> R) throws -> R {
        do {
            return try body(&self)
        } catch {
            state = .failed(error as? SecureAggregationError ?? .refused(stage: .advertiseKeys, reason: "\(error)"),
                            transcript: transcriptID)
            throw error
        }
    }

    /// Refuses a coordinator message whose session id is not `expected` (the first session id in the
    /// advertise stage, the transcript-bound one after it) or that is addressed to another client.
    private func checkSession(_ sessionID: [UInt8], expected: [UInt8], stage: SecureAggregationStage,
                              recipient: ParticipantID) throws {
        guard sessionID == expected else {
            throw SecureAggregationError.refused(
                stage: stage,
                reason: expected == session.sessionID ? "the coordinator's message carries another session id"
                    : "the coordinator's message carries another session id than the transcript this client derived "
                        + "(another round, or another transcript: other clients were shown other key advertisements)")
        }
        guard recipient == id else {
            throw SecureAggregationError.refused(stage: stage, reason: "message addressed to participant \(recipient), delivered to \(id)")
        }
    }

    /// sender ‖ recipient (4 bytes each, big-endian) ‖ masking-key share ‖ self-mask-seed share.
    static func sharePlaintext(sender: ParticipantID, recipient: ParticipantID,
                               maskingKey: ShamirShare, selfMaskSeed: ShamirShare) -> SecretBytes {
        let first = maskingKey.serialized(), second = selfMaskSeed.serialized()
        return SecretBytes(count: EncryptedShare.plaintextByteCount) { out in
            for (offset, value) in [(0, sender), (4, recipient)] {
                for k in 0..<4 { out[offset + k] = UInt8(truncatingIfNeeded: value >> (24 - 8 * k)) }
            }
            first.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: out[8..<(8 + $0.count)]).copyMemory(from: $0) }
            second.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: out[(8 + first.count)...]).copyMemory(from: $0) }
        }
    }

    private func parseSharePlaintext(_ plaintext: SecretBytes, sender: ParticipantID) throws
        -> (maskingKey: ShamirShare, selfMaskSeed: ShamirShare)
    {
        let stage = SecureAggregationStage.shareKeys
        let shareBytes = SecretShareLayout.serializedShareByteCount
        guard plaintext.count == EncryptedShare.plaintextByteCount else {
            throw SecureAggregationError.malformedMessage(stage: stage, sender: sender, reason: "share plaintext of \(plaintext.count) bytes")
        }
        let (ids, first, second) = try plaintext.withUnsafeBytes { raw -> ((UInt32, UInt32), ShamirShare, ShamirShare) in
            func word(_ offset: Int) -> UInt32 { (0..<4).reduce(UInt32(0)) { $0 << 8 | UInt32(raw[offset + $1]) } }
            let first = try ShamirShare(serialized: UnsafeRawBufferPointer(rebasing: raw[8..<(8 + shareBytes)]),
                                        secretByteCount: SecretShareLayout.secretByteCount)
            let second = try ShamirShare(serialized: UnsafeRawBufferPointer(rebasing: raw[(8 + shareBytes)...]),
                                         secretByteCount: SecretShareLayout.secretByteCount)
            return ((word(0), word(4)), first, second)
        }
        guard ids == (sender, id) else {
            throw SecureAggregationError.malformedMessage(stage: stage, sender: sender,
                                                          reason: "sealed ids \(ids.0) -> \(ids.1) differ from the envelope's \(sender) -> \(id)")
        }
        let expectedIndex = session.shareIndex(owner: sender, holder: id)
        for share in [first, second] where share.index != expectedIndex || Int(share.threshold) != session.threshold {
            throw SecureAggregationError.malformedMessage(
                stage: stage, sender: sender,
                reason: "share index \(share.index) / threshold \(share.threshold); expected \(expectedIndex.map(String.init) ?? "none") / \(session.threshold)")
        }
        return (first, second)
    }
}
