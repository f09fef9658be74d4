import SecureCrypto

/// The coordinator side of secure aggregation (Bonawitz et al., CCS 2017, Figure 4, with the
/// ConsistencyCheck round of the actively secure variant), as a state machine without I/O. For each stage the driver feeds every client message
/// that arrives before its deadline to `receive`, then calls the stage's `finish` method, which
/// either returns the messages to send to each client or aborts the round.
///
/// `receive` throws for a message that must be ignored (another session, a forged signature, a
/// stranger, a duplicate, a malformed field); its sender is then treated as dropped. A `finish`
/// method throws `SecureAggregationError.roundAborted` when fewer than t members of some client's
/// closed neighbourhood remain (for the complete graph: fewer than t clients), and the machine stays
/// aborted. The output is the sum of the surviving clients' inputs only; no individual input is
/// ever unmasked.
public struct SecureAggregationServer: Sendable {
    /// Round 1: U1's advertisements and the transcript-bound session id over them, fixed when the
    /// advertise stage closed; U2, the clients whose encrypted shares were accepted.
    private struct Sharing: Sendable {
        var advertisements: [ParticipantID: KeyAdvertisement]
        var transcript: [UInt8]
        var shareMessages: [ParticipantID: ShareKeysMessage] = [:]
    }

    /// Round 2: U2 (their shares are delivered), and U3 with the running sum of their masked inputs.
    private struct MaskedInputs: Sendable {
        var advertisements: [ParticipantID: KeyAdvertisement]
        var transcript: [UInt8]
        var sharers: Set<ParticipantID>
        var maskedSenders = Set<ParticipantID>()
        var maskedSum: [UInt32] = []
    }

    /// Round 3: U3 as sent to every survivor, the masked sum, and the signatures on U3 so far.
    private struct Consistency: Sendable {
        var advertisements: [ParticipantID: KeyAdvertisement]
        var transcript: [UInt8]
        var survivors: Set<ParticipantID>
        var droppedAfterSharing: Set<ParticipantID>
        var maskedSum: [UInt32]
        var signatures: [ParticipantID: [UInt8]] = [:]
    }

    /// Round 4: the survivor and dropped sets as sent in the unmask requests, the masked sum, and U5.
    private struct Unmasking: Sendable {
        var advertisements: [ParticipantID: KeyAdvertisement]
        var transcript: [UInt8]
        var survivors: Set<ParticipantID>
        var droppedAfterSharing: Set<ParticipantID>
        var maskedSum: [UInt32]
        /// Revealed shares by owner, each as its index and where its value lies: a row of the one
        /// protected buffer its response's values were copied into (`sodium_malloc` maps guard pages
        /// around every buffer, and one buffer per share exhausted the process's mappings at n = 500).
        var revealed: [ParticipantID: [(index: UInt16, values: SecretBytes, row: Int)]] = [:]
        /// Who was asked (the survivors that signed U3), and who answered.
        var asked = Set<ParticipantID>()
        var responders = Set<ParticipantID>()

        /// Dropped clients whose pairwise masks are in the sum: those with a surviving neighbour.
        func affectingDropped(_ session: SecureAggregationSession) -> Set<ParticipantID> {
            droppedAfterSharing.filter { session.neighbourhood(of: $0).contains(where: survivors.contains) }
        }
    }

    private enum State: Sendable {
        /// Round 0: U1, the clients whose advertisement verified.
        case collectingAdvertisements([ParticipantID: KeyAdvertisement])
        case collectingShares(Sharing)
        case collectingMaskedInputs(MaskedInputs)
        case collectingSignatures(Consistency)
        case collectingUnmaskResponses(Unmasking)
        case finished(transcript: [UInt8])
        case aborted(SecureAggregationError, transcript: [UInt8]?)

        var name: String {
            switch self {
            case .collectingAdvertisements: return "collectingAdvertisements"
            case .collectingShares: return "collectingShares"
            case .collectingMaskedInputs: return "collectingMaskedInputs"
            case .collectingSignatures: return "collectingSignatures"
            case .collectingUnmaskResponses: return "collectingUnmaskResponses"
            case .finished: return "finished"
            case let .aborted(reason, _): return "aborted (\(reason))"
            }
        }

        var transcript: [UInt8]? {
            switch self {
            case .collectingAdvertisements: return nil
            case let .collectingShares(stage): return stage.transcript
            case let .collectingMaskedInputs(stage): return stage.transcript
            case let .collectingSignatures(stage): return stage.transcript
            case let .collectingUnmaskResponses(stage): return stage.transcript
            case let .finished(transcript): return transcript
            case let .aborted(_, transcript): return transcript
            }
        }

        var advertising: [ParticipantID: KeyAdvertisement]? {
            if case let .collectingAdvertisements(advertisements) = self { return advertisements } else { return nil }
        }
        var sharing: Sharing? { if case let .collectingShares(stage) = self { return stage } else { return nil } }
        var masking: MaskedInputs? { if case let .collectingMaskedInputs(stage) = self { return stage } else { return nil } }
        var consistency: Consistency? { if case let .collectingSignatures(stage) = self { return stage } else { return nil } }
        var unmasking: Unmasking? { if case let .collectingUnmaskResponses(stage) = self { return stage } else { return nil } }
    }

    /// The session being aggregated.
    public let session: SecureAggregationSession
    private var state = State.collectingAdvertisements([:])

    /// A coordinator for `session`, ready to collect key advertisements.
    public init(session: SecureAggregationSession) {
        self.session = session
    }

    /// The transcript-bound session id every message after the advertise stage must carry (nil until
    /// `finishAdvertising`).
    public var transcriptID: [UInt8]? { state.transcript }

    /// Why the round was aborted, if it was.
    public var abortedBecause: SecureAggregationError? {
        if case let .aborted(reason, _) = state { return reason }
        return nil
    }

    // MARK: - Round 0: advertise keys

    /// Accepts a key advertisement after checking its session id, that its sender is in the cohort
    /// and has not advertised yet, and its signature under the sender's enrolled key.
    public mutating func receive(_ advertisement: KeyAdvertisement) throws {
        let stage = SecureAggregationStage.advertiseKeys
        let session = session
        try update("collectingAdvertisements", \.advertising, State.collectingAdvertisements) { advertisements in
            let sender = advertisement.sender
            guard advertisement.sessionID == session.sessionID else {
                throw SecureAggregationError.sessionMismatch(stage: stage, sender: sender)
            }
            guard let key = session.signingKey(of: sender) else {
                throw SecureAggregationError.unknownParticipant(stage: stage, participant: sender, reason: "is not in this round's cohort")
            }
            guard advertisements[sender] == nil else { throw SecureAggregationError.duplicateMessage(stage: stage, sender: sender) }
            guard advertisement.isSigned(by: key) else { throw SecureAggregationError.invalidSignature(participant: sender) }
            advertisements[sender] = advertisement
        }
    }

    /// Closes round 0: each client that advertised gets the advertisements of its neighbourhood and
    /// the digests of all the others, from which it derives the same transcript id as the coordinator.
    /// - Throws: `.roundAborted` if some advertising client has fewer than t neighbourhood members
    ///   (itself included) that advertised.
    public mutating func finishAdvertising() throws -> [AdvertisementBroadcast] {
        guard let advertisements = state.advertising else { throw invalidState("collectingAdvertisements") }
        let live = Set(advertisements.keys)
        try requireThreshold(live, among: live, stage: .advertiseKeys, what: "advertised keys")
        let digests = advertisements.values.sorted { $0.sender < $1.sender }
            .map { AdvertisementDigest(sender: $0.sender, digest: $0.transcriptDigest) }
        let transcript = session.transcriptID(digests: digests)
        state = .collectingShares(Sharing(advertisements: advertisements, transcript: transcript))
        return live.sorted().map { recipient in
            let neighbourhood = session.neighbourhood(of: recipient)
            let inside = Set(neighbourhood)
            return AdvertisementBroadcast(
                sessionID: session.sessionID, recipient: recipient,
                advertisements: neighbourhood.compactMap { advertisements[$0] },
                others: digests.filter { !inside.contains($0.sender) })
        }
    }

    // MARK: - Round 1: share keys

    /// Accepts a client's encrypted shares after checking its session id, that it advertised, and
    /// that it sent exactly one share of the right length to each neighbour that advertised.
    public mutating func receive(_ message: ShareKeysMessage) throws {
        let stage = SecureAggregationStage.shareKeys
        let session = session
        try update("collectingShares", \.sharing, State.collectingShares) { sharing in
            let sender = message.sender
            let advertisements = sharing.advertisements, transcript = sharing.transcript
            guard message.sessionID == transcript else { throw SecureAggregationError.sessionMismatch(stage: stage, sender: sender) }
            guard advertisements[sender] != nil else {
                throw SecureAggregationError.unknownParticipant(stage: stage, participant: sender, reason: "did not advertise keys")
            }
            guard sharing.shareMessages[sender] == nil else { throw SecureAggregationError.duplicateMessage(stage: stage, sender: sender) }
            let expected = session.neighbourhood(of: sender).filter { $0 != sender && advertisements[$0] != nil }
            let recipients = message.shares.map(\.recipient)
            guard recipients.sorted() == expected else {
                throw SecureAggregationError.malformedMessage(
                    stage: stage, sender: sender,
                    reason: "shares addressed to \(recipients.sorted()), expected one for each of \(expected)")
            }
            for share in message.shares {
                guard share.sender == sender else {
                    throw SecureAggregationError.malformedMessage(stage: stage, sender: sender, reason: "carries a share labelled from \(share.sender)")
                }
                guard share.ciphertext.count == EncryptedShare.ciphertextByteCount else {
                    throw SecureAggregationError.malformedMessage(
                        stage: stage, sender: sender,
                        reason: "share for \(share.recipient) is \(share.ciphertext.count) bytes, expected \(EncryptedShare.ciphertextByteCount)")
                }
            }
            sharing.shareMessages[sender] = message
        }
    }

    /// Closes round 1: each client that shared gets the shares addressed to it by the others that shared.
    /// - Throws: `.roundAborted` if some sharing client has fewer than t neighbourhood members that shared.
    public mutating func finishSharing() throws -> [ShareBundle] {
        guard let sharing = state.sharing else { throw invalidState("collectingShares") }
        let live = Set(sharing.shareMessages.keys)
        try requireThreshold(live, among: live, stage: .shareKeys, what: "shared their keys")
        var bundles = [ParticipantID: [EncryptedShare]]()
        for sender in live.sorted() {
            for share in sharing.shareMessages[sender]?.shares ?? [] where live.contains(share.recipient) {
                bundles[share.recipient, default: []].append(share)
            }
        }
        let transcript = sharing.transcript
        state = .collectingMaskedInputs(MaskedInputs(advertisements: sharing.advertisements, transcript: transcript, sharers: live))
        return live.sorted().map { ShareBundle(sessionID: transcript, recipient: $0, shares: bundles[$0] ?? []) }
    }

    // MARK: - Round 2: masked input

    /// Adds a client's masked input to the running sum after checking its session id, that the client
    /// completed the share stage, has not uploaded yet, and sent `vectorLength` words.
    public mutating func receive(_ input: MaskedInput) throws {
        let stage = SecureAggregationStage.maskedInput
        let session = session
        try update("collectingMaskedInputs", \.masking, State.collectingMaskedInputs) { masking in
            let sender = input.sender
            guard input.sessionID == masking.transcript else { throw SecureAggregationError.sessionMismatch(stage: stage, sender: sender) }
            guard masking.sharers.contains(sender) else {
                throw SecureAggregationError.unknownParticipant(stage: stage, participant: sender, reason: "did not complete the share stage")
            }
            guard !masking.maskedSenders.contains(sender) else { throw SecureAggregationError.duplicateMessage(stage: stage, sender: sender) }
            guard input.words.count == session.vectorLength else {
                throw SecureAggregationError.malformedMessage(
                    stage: stage, sender: sender, reason: "\(input.words.count) words, expected \(session.vectorLength)")
            }
            if masking.maskedSum.isEmpty {
                masking.maskedSum = input.words
            } else {
                masking.maskedSum.withUnsafeMutableBufferPointer { sum in
                    input.words.withUnsafeBufferPointer { words in
                        for i in 0..<sum.count { sum[i] &+= words[i] }
                    }
                }
            }
            masking.maskedSenders.insert(sender)
        }
    }

    /// Closes round 2: every survivor is sent U3, the set of clients whose masked input is in the sum,
    /// to sign (the same set for all).
    /// - Throws: `.roundAborted` if some client whose masks are in the sum has fewer than t surviving
    ///   neighbourhood members to reveal its shares.
    public mutating func finishMaskedInput() throws -> [ConsistencyRequest] {
        guard let masking = state.masking else { throw invalidState("collectingMaskedInputs") }
        let consistency = Consistency(advertisements: masking.advertisements, transcript: masking.transcript,
                                      survivors: masking.maskedSenders,
                                      droppedAfterSharing: masking.sharers.subtracting(masking.maskedSenders),
                                      maskedSum: masking.maskedSum)
        let survivors = consistency.survivors
        let affecting = affectingDropped(consistency.droppedAfterSharing, survivors: survivors)
        try requireThreshold(survivors.union(affecting), among: survivors, stage: .maskedInput, what: "sent their masked input")
        state = .collectingSignatures(consistency)
        let list = survivors.sorted()
        return list.map { ConsistencyRequest(sessionID: consistency.transcript, recipient: $0, survivors: list) }
    }

    // MARK: - Round 3: consistency check

    /// Accepts a survivor's signature on U3 after checking its session id, that it survived, has not
    /// signed yet, and that the signature verifies under its enrolled key.
    public mutating func receive(_ signature: ConsistencySignature) throws {
        let stage = SecureAggregationStage.consistencyCheck
        let session = session
        try update("collectingSignatures", \.consistency, State.collectingSignatures) { consistency in
            let sender = signature.sender
            guard signature.sessionID == consistency.transcript else { throw SecureAggregationError.sessionMismatch(stage: stage, sender: sender) }
            guard consistency.survivors.contains(sender), let key = session.signingKey(of: sender) else {
                throw SecureAggregationError.unknownParticipant(stage: stage, participant: sender, reason: "is not in the survivor set")
            }
            guard consistency.signatures[sender] == nil else { throw SecureAggregationError.duplicateMessage(stage: stage, sender: sender) }
            let signed = ConsistencySignature.signedBytes(transcript: consistency.transcript, survivors: consistency.survivors.sorted())
            guard key.isValidSignature(signature.signature, for: signed) else {
                throw SecureAggregationError.invalidSignature(participant: sender)
            }
            consistency.signatures[sender] = signature.signature
        }
    }

    /// Closes round 3: every survivor that signed is asked for the self-mask shares of its surviving
    /// neighbours and the masking-key shares of its neighbours that shared keys but sent no input,
    /// with the signatures of the signers within two hops (those in the neighbourhoods of its
    /// neighbours), which it checks before revealing anything.
    /// - Throws: `.roundAborted` if some client whose masks are in the sum has fewer than t signers in
    ///   its closed neighbourhood (its holders would refuse to reveal its shares).
    public mutating func finishConsistencyCheck() throws -> [UnmaskRequest] {
        guard let consistency = state.consistency else { throw invalidState("collectingSignatures") }
        let survivors = consistency.survivors, signers = Set(consistency.signatures.keys)
        let affecting = affectingDropped(consistency.droppedAfterSharing, survivors: survivors)
        try requireThreshold(survivors.union(affecting), among: signers, stage: .consistencyCheck, what: "signed the survivor set")
        state = .collectingUnmaskResponses(Unmasking(
            advertisements: consistency.advertisements, transcript: consistency.transcript, survivors: survivors,
            droppedAfterSharing: consistency.droppedAfterSharing, maskedSum: consistency.maskedSum, asked: signers))
        return signers.sorted().map { recipient in
            let neighbourhood = session.neighbourhood(of: recipient)
            var twoHops = Set<ParticipantID>()
            for member in neighbourhood { twoHops.formUnion(session.neighbourhood(of: member)) }
            return UnmaskRequest(
                sessionID: consistency.transcript, recipient: recipient,
                survivors: neighbourhood.filter { survivors.contains($0) },
                dropped: neighbourhood.filter { consistency.droppedAfterSharing.contains($0) },
                signatures: twoHops.filter(signers.contains).sorted().map {
                    SurvivorSignature(signer: $0, signature: consistency.signatures[$0]!)
                })
        }
    }

    /// Dropped clients whose pairwise masks are in the sum: those with a surviving neighbour.
    private func affectingDropped(_ dropped: Set<ParticipantID>, survivors: Set<ParticipantID>) -> Set<ParticipantID> {
        dropped.filter { session.neighbourhood(of: $0).contains(where: survivors.contains) }
    }

    // MARK: - Round 4: unmask

    /// Accepts a survivor's revealed shares after checking its session id, that it survived, has not
    /// answered yet, and revealed exactly the kind of share asked for each neighbour, at the index
    /// and threshold that neighbour dealt.
    public mutating func receive(_ response: UnmaskResponse) throws {
        let stage = SecureAggregationStage.unmask
        let session = session
        try update("collectingUnmaskResponses", \.unmasking, State.collectingUnmaskResponses) { unmasking in
            let sender = response.sender
            let survivors = unmasking.survivors, droppedAfterSharing = unmasking.droppedAfterSharing
            guard response.sessionID == unmasking.transcript else { throw SecureAggregationError.sessionMismatch(stage: stage, sender: sender) }
            guard unmasking.asked.contains(sender) else {
                throw SecureAggregationError.unknownParticipant(stage: stage, participant: sender, reason: "was not asked to unmask")
            }
            guard !unmasking.responders.contains(sender) else { throw SecureAggregationError.duplicateMessage(stage: stage, sender: sender) }
            var owners = Set<ParticipantID>()
            for item in response.shares {
                let owner = item.owner
                let expectedKind: ShareKind? = survivors.contains(owner) ? .selfMaskSeed
                    : droppedAfterSharing.contains(owner) ? .maskingKey : nil
                guard let expectedKind, item.kind == expectedKind,
                      let index = session.shareIndex(owner: owner, holder: sender), owners.insert(owner).inserted else {
                    throw SecureAggregationError.malformedMessage(
                        stage: stage, sender: sender, reason: "revealed an unrequested or repeated \(item.kind) share of participant \(owner)")
                }
                guard item.share.index == index, Int(item.share.threshold) == session.threshold,
                      item.share.secretByteCount == SecretShareLayout.secretByteCount else {
                    throw SecureAggregationError.malformedMessage(
                        stage: stage, sender: sender,
                        reason: "share of participant \(owner) has index \(item.share.index), threshold \(item.share.threshold), \(item.share.secretByteCount)-byte secret; expected \(index), \(session.threshold), \(SecretShareLayout.secretByteCount)")
                }
            }
            // Every share is kept: t reconstruct a secret, and one more singles out a wrong one.
            let width = SecretShareLayout.shareValueByteCount
            let kept = response.shares
            let values = SecretBytes(count: kept.count * width) { rows in
                for (row, item) in kept.enumerated() {
                    item.share.value.withUnsafeBytes {
                        UnsafeMutableRawBufferPointer(rebasing: rows[(row * width)..<((row + 1) * width)]).copyMemory(from: $0)
                    }
                }
            }
            for (row, item) in kept.enumerated() { unmasking.revealed[item.owner, default: []].append((item.share.index, values, row)) }
            unmasking.responders.insert(sender)
        }
    }

    /// Closes round 4: reconstructs each survivor's self-mask seed and each relevant dropped client's
    /// masking key from at least t shares, removes those masks from the sum, and returns the sum of
    /// the survivors' inputs.
    /// - Throws: `.roundAborted` if some secret has fewer than t shares, or if a reconstructed masking
    ///   key does not match the public key its owner advertised.
    public mutating func finishUnmasking() throws -> AggregationResult {
        guard let unmasking = state.unmasking else { throw invalidState("collectingUnmaskResponses") }
        let result = try aborting { try $0.unmaskSum(unmasking) }
        state = .finished(transcript: unmasking.transcript)
        return result
    }

    private func unmaskSum(_ unmasking: Unmasking) throws -> AggregationResult {
        let advertisements = unmasking.advertisements
        // Terms are applied in batches: each holds its seed in a guarded buffer, and n = 500 with 30%
        // dropped needs some 15,000 of them, more than a process may map at once.
        var sum = unmasking.maskedSum
        let survivors = unmasking.survivors
        var terms = [MaskTerm]()
        func add(_ term: MaskTerm) {
            terms.append(term)
            if terms.count == Self.termBatch {
                Masking.apply(terms, to: &sum)
                terms.removeAll(keepingCapacity: true)
            }
        }
        // Survivors added +PRG(b_u): subtract it, b_u checked against its signed commitment.
        for owner in survivors.sorted() {
            guard let advertised = advertisements[owner] else { preconditionFailure("survivors advertised") }
            let seed = try secret(of: owner, .selfMaskSeed, in: unmasking) {
                try KeyAdvertisement.seedCommitment(seed: $0, sessionID: advertised.sessionID, sender: owner) == advertised.seedCommitment
            }
            add(MaskTerm(stream: try MaskStream(seed: seed), sign: .minus))
        }
        // A survivor u with a dropped neighbour v added +PRG(s_uv) if v < u, −PRG(s_uv) if v > u: undo it.
        let maskContext = SecureAggregationSession.pairwiseMaskContext(transcript: unmasking.transcript)
        for owner in unmasking.affectingDropped(session).sorted() {
            guard let advertised = advertisements[owner] else { preconditionFailure("dropped clients advertised") }
            let keys = try KeyAgreementKeyPair(secretKey: try secret(of: owner, .maskingKey, in: unmasking) {
                try KeyAgreementKeyPair(secretKey: $0).publicKey == advertised.maskingKey
            })
            for survivor in session.neighbourhood(of: owner) where survivors.contains(survivor) {
                guard let peer = advertisements[survivor] else { continue }
                let seed = try keys.sharedKey(with: peer.maskingKey, context: maskContext)
                add(MaskTerm(stream: try MaskStream(seed: seed), sign: owner < survivor ? .minus : .plus))
            }
        }
        Masking.apply(terms, to: &sum)
        return AggregationResult(sum: sum, survivors: survivors.sorted(),
                                 dropped: session.participants.map(\.id).filter { !survivors.contains($0) })
    }

    /// `owner`'s secret of `kind` from t of its revealed shares, which must pass `matches` (the
    /// owner's signed commitment or public key). A wrong share would otherwise shift the sum
    /// silently; when more than t shares arrived, the one whose omission makes the rest reconstruct
    /// a matching secret is named.
    /// - Throws: `.roundAborted` below t shares, `.invalidRevealedShare` when no t of them match.
    private func secret(of owner: ParticipantID, _ kind: ShareKind, in unmasking: Unmasking,
                        matches: (SecretBytes) throws -> Bool) throws -> SecretBytes {
        let t = session.threshold
        let available = unmasking.revealed[owner] ?? []
        guard available.count >= t else {
            throw SecureAggregationError.roundAborted(
                stage: .unmask, reason: "only \(available.count) \(kind.rawValue) shares of participant \(owner) were revealed; threshold is \(t)")
        }
        let width = SecretShareLayout.shareValueByteCount
        let shares = try available.map { entry in
            try ShamirShare(index: entry.index, threshold: UInt16(t), secretByteCount: SecretShareLayout.secretByteCount, value: entry.values.withUnsafeBytes {
                SecretBytes(copying: UnsafeRawBufferPointer(rebasing: $0[(entry.row * width)..<((entry.row + 1) * width)]))
            })
        }
        func attempt(_ subset: ArraySlice<ShamirShare>) throws -> SecretBytes? {
            guard let secret = try? ShamirSharing.reconstruct(Array(subset)) else { return nil }
            return try matches(secret) ? secret : nil
        }
        if let secret = try attempt(shares.prefix(t)) { return secret }
        var culprit: ParticipantID?
        if shares.count > t {
            for skip in 0...t {
                var rest = shares
                rest.remove(at: skip)
                if try attempt(rest.prefix(t)) != nil {
                    culprit = session.neighbourhood(of: owner)[Int(shares[skip].index) - 1]
                    break
                }
            }
        }
        throw SecureAggregationError.invalidRevealedShare(owner: owner, kind: kind, holder: culprit)
    }

    // MARK: - Helpers

    /// Mask terms applied per pass over the sum in `unmaskSum`.
    static let termBatch = 256

    /// Aborts unless every client in `clients` has at least t members of its closed neighbourhood in `present`.
    private mutating func requireThreshold(_ clients: Set<ParticipantID>, among present: Set<ParticipantID>,
                                           stage: SecureAggregationStage, what: String) throws {
        try aborting { machine in
            let t = machine.session.threshold
            guard present.count >= t else {
                throw SecureAggregationError.roundAborted(
                    stage: stage, reason: "only \(present.count) of \(machine.session.participants.count) clients \(what); threshold is \(t)")
            }
            for client in clients.sorted() {
                let count = machine.session.neighbourhood(of: client).filter(present.contains).count
                guard count >= t else {
                    throw SecureAggregationError.roundAborted(
                        stage: stage, reason: "only \(count) of participant \(client)'s closed neighbourhood \(what); threshold is \(t)")
                }
            }
        }
    }

    /// Runs a stage's closing; on any error the round aborts, dropping every input and share it held.
    private mutating func aborting<R>(_ body: (inout Self) throws -> R) throws -> R {
        do {
            return try body(&self)
        } catch {
            state = .aborted(error as? SecureAggregationError ?? .roundAborted(stage: .unmask, reason: "\(error)"),
                             transcript: state.transcript)
            throw error
        }
    }

    /// Runs `body` on the open stage's data in place, when the machine is in the stage `extract`
    /// reads: the stored copy is released first (the state is a placeholder until `body` returns),
    /// so buffers such as the masked sum grow without being copied on every message.
    /// - Throws: `invalidState` in any other state, or what `body` throws (the data stays as it left it).
    private mutating func update<Stage, R>(_ expected: String, _ extract: (State) -> Stage?, _ embed: (Stage) -> State,
                                           _ body: (inout Stage) throws -> R) throws -> R {
        guard var stage = extract(state) else { throw invalidState(expected) }
        state = .finished(transcript: [])
        defer { state = embed(stage) }
        return try body(&stage)
    }

    private func invalidState(_ expected: String) -> SecureAggregationError {
        .invalidState(expected: expected, actual: state.name)
    }
}
