import Foundation
import SecureCrypto
import XCTest
@testable import SecureAggregation

final class SecureAggregationCorrectnessTests: XCTestCase {
    /// The coordinator's output equals the wrapping sum of every client's encoded input, bit for bit,
    /// and decodes to the float sum within n times the rounding bound.
    private func checkExactSum(clients n: Int, graph: NeighbourGraph = .complete) throws {
        let d = 10_000
        // A coarse scale (f = 19 for clip 4 and up to 1000 clients), so the inputs are really rounded.
        let encoding = try FixedPointEncoding(clipBound: 4, maximumClients: 1000)
        var floats = [ParticipantID: [Float]]()
        var run = try ProtocolRun.make(count: n, vectorLength: d, graph: graph) { id in
            let values = (0..<d).map { _ in Float.random(in: -4.5...4.5) }
            floats[id] = values
            return try encoding.encode(values).words
        }
        let start = Date()
        let result = try run.run()
        print("n = \(n), d = \(d), \(graph), t = \(run.session.threshold): whole round in \(String(format: "%.2f", Date().timeIntervalSince(start))) s")
        XCTAssertEqual(result.survivors, run.ids)
        XCTAssertEqual(result.dropped, [])
        XCTAssertEqual(result.sum, run.plaintextSum(of: run.ids), "secure sum differs from the plaintext sum")

        let decoded = try encoding.decodeSum(result.sum, clientCount: n)
        let bound = Double(n) * encoding.maximumRoundingError(.stochastic)
        var worst = 0.0
        for i in 0..<d {
            let exact = run.ids.reduce(0.0) { $0 + Double(min(max(floats[$1]![i], -4), 4)) }
            worst = max(worst, abs(decoded[i] - exact))
        }
        print("  worst decoded error \(worst), bound n·2^-f = \(bound)")
        XCTAssertLessThanOrEqual(worst, bound)
    }

    func testExactSumFiveClients() throws { try checkExactSum(clients: 5) }
    func testExactSumTwentyClients() throws { try checkExactSum(clients: 20) }
    func testExactSumHundredClients() throws { try checkExactSum(clients: 100) }
    func testExactSumHundredClientsSparseGraph() throws {
        try checkExactSum(clients: 100, graph: .harary(degree: NeighbourGraph.defaultDegree(cohortSize: 100)))
    }

    /// Dropouts at each stage (and at all of them at once), up to what the threshold allows, leave
    /// exactly the survivors' sum.
    func testDropoutsAtEachStageGiveSurvivorsSum() throws {
        let n = 20
        let encoding = try FixedPointEncoding(clipBound: 1, maximumClients: n)
        let scenarios: [(String, [DropPoint: Set<Int>])] = [
            ("before advertise", [.beforeAdvertise: [0, 5]]),
            ("after advertise", [.afterAdvertise: [1, 7, 19]]),
            ("after share", [.afterShare: [2, 3, 11]]),
            ("after masked upload", [.afterMaskedInput: [0, 4, 9, 13]]),
            ("at every stage", [.beforeAdvertise: [6], .afterAdvertise: [8], .afterShare: [10, 12], .afterMaskedInput: [14, 15]]),
        ]
        for (name, positions) in scenarios {
            var run = try ProtocolRun.make(count: n, vectorLength: 1000) { _ in try randomEncodedInput(encoding, count: 1000) }
            XCTAssertEqual(run.session.threshold, 14)
            let drops = positions.mapValues { Set($0.map { run.ids[$0] }) }
            let result = try run.run(dropping: drops)
            let notUploaded = drops.filter { $0.key != .afterMaskedInput }.values.reduce(Set(), { $0.union($1) })
            let survivors = run.ids.filter { !notUploaded.contains($0) }
            XCTAssertEqual(result.survivors, survivors, name)
            XCTAssertEqual(result.dropped, run.ids.filter(notUploaded.contains), name)
            XCTAssertEqual(result.sum, run.plaintextSum(of: survivors), "\(name): not the survivors' sum")
        }
    }

    /// In the sparse graph, a survivor's dropped neighbour's pairwise mask is recomputed from its
    /// neighbourhood's shares; the survivors' sum is still exact.
    func testSparseGraphWithDropouts() throws {
        let n = 40
        let graph = NeighbourGraph.harary(degree: 12)
        var run = try ProtocolRun.make(count: n, vectorLength: 500, graph: graph) { _ in
            (0..<500).map { _ in UInt32.random(in: .min ... .max) }
        }
        XCTAssertEqual(run.session.threshold, 9)  // floor(2·13/3) + 1
        // Drop two clients that share a neighbourhood, so some survivor loses two neighbours.
        let first = run.ids[0]
        let neighbour = run.session.neighbourhood(of: first).first { $0 != first }!
        let result = try run.run(dropping: [.afterShare: [first, neighbour], .afterMaskedInput: [run.ids[20]]])
        let survivors = run.ids.filter { $0 != first && $0 != neighbour }
        XCTAssertEqual(result.survivors, survivors)
        XCTAssertEqual(result.sum, run.plaintextSum(of: survivors))
    }
}

final class SecureAggregationAbortTests: XCTestCase {
    private func abortReason(_ body: () throws -> Void) -> (SecureAggregationStage, String)? {
        do {
            try body()
        } catch let SecureAggregationError.roundAborted(stage, reason) {
            return (stage, reason)
        } catch {
            XCTFail("expected an abort, got \(error)")
        }
        return nil
    }

    /// Fewer than t at any stage aborts with a reason naming the stage and the counts, returns no sum,
    /// and leaves the coordinator aborted.
    func testTooManyDropoutsAbortAtEachStage() throws {
        let n = 20  // t = 14: seven dropouts are one too many
        let cases: [(DropPoint, SecureAggregationStage, String)] = [
            (.beforeAdvertise, .advertiseKeys, "only 13 of 20 clients advertised keys; threshold is 14"),
            (.afterAdvertise, .shareKeys, "only 13 of 20 clients shared their keys; threshold is 14"),
            (.afterShare, .maskedInput, "only 13 of 20 clients sent their masked input; threshold is 14"),
            (.afterMaskedInput, .consistencyCheck, "only 13 of 20 clients signed the survivor set; threshold is 14"),
            (.afterConsistencyCheck, .unmask, "self-mask seed shares of participant"),
        ]
        for (point, expectedStage, expectedReason) in cases {
            var run = try ProtocolRun.make(count: n, vectorLength: 64) { _ in [UInt32](repeating: 7, count: 64) }
            let dropped = Set(run.ids.prefix(7))
            let reason = abortReason { _ = try run.run(dropping: [point: dropped]) }
            XCTAssertEqual(reason?.0, expectedStage, "\(point)")
            XCTAssertTrue(reason?.1.contains(expectedReason) == true, "\(point): \(reason?.1 ?? "no abort")")
            XCTAssertNotNil(run.server.abortedBecause)
            XCTAssertThrowsError(try run.server.finishUnmasking()) { error in
                guard case SecureAggregationError.invalidState = error else { return XCTFail("\(error)") }
            }
        }
    }

    /// In the sparse graph the threshold applies per neighbourhood: dropping most of one client's
    /// neighbourhood aborts even though most of the cohort survives.
    func testSparseNeighbourhoodBelowThresholdAborts() throws {
        var run = try ProtocolRun.make(count: 30, vectorLength: 16, graph: .harary(degree: 6)) { _ in [UInt32](repeating: 1, count: 16) }
        let victim = run.ids[4]
        let around = run.session.neighbourhood(of: victim).filter { $0 != victim }
        XCTAssertEqual(around.count, 6)
        let reason = abortReason { _ = try run.run(dropping: [.afterShare: Set(around.prefix(3))]) }
        XCTAssertEqual(reason?.0, .maskedInput)
        XCTAssertTrue(reason?.1.contains("of participant \(victim)'s closed neighbourhood") == true
                      || reason?.1.contains("closed neighbourhood sent their masked input") == true, reason?.1 ?? "")
    }
}

final class SecureAggregationPrivacyTests: XCTestCase {
    /// What the coordinator receives from one client looks uniform: a zero input masks to words whose
    /// top bytes pass a chi-square test and whose bits are balanced, and an all-ones input's masked
    /// words look no different; neither equals the plaintext anywhere but by chance. The coordinator
    /// only ever receives one kind of share for each client.
    func testCoordinatorViewRevealsNoIndividualInput() throws {
        let d = 65_536
        var run = try ProtocolRun.make(count: 5, vectorLength: d) { id in
            [UInt32](repeating: id == 3 ? 0 : 0xFFFF_FFFF, count: d)
        }
        _ = try run.run()
        for (id, masked) in run.maskedInputs {
            let input = run.inputs[id]!
            let equal = zip(masked, input).filter { $0 == $1 }.count
            XCTAssertLessThan(equal, 5, "participant \(id): \(equal) masked words equal the plaintext")
            var bins = [Int](repeating: 0, count: 256)
            var ones = 0
            for word in masked {
                bins[Int(word >> 24)] += 1
                ones += word.nonzeroBitCount
            }
            let expected = Double(d) / 256
            let chiSquare = bins.reduce(0.0) { $0 + pow(Double($1) - expected, 2) / expected }
            // 255 degrees of freedom: mean 255, standard deviation about 22.6; allow six.
            XCTAssertLessThan(chiSquare, 255 + 6 * 22.6, "participant \(id)'s masked words are not uniform")
            let bitFraction = Double(ones) / Double(32 * d)
            XCTAssertEqual(bitFraction, 0.5, accuracy: 6 * 0.5 / sqrt(Double(32 * d)), "participant \(id)")
        }
        // The sum of any proper subset of masked inputs is still masked (pairwise masks do not cancel).
        let subset = run.ids.prefix(4)
        var partial = [UInt32](repeating: 0, count: d)
        for id in subset { for i in 0..<d { partial[i] &+= run.maskedInputs[id]![i] } }
        let plainPartial = run.plaintextSum(of: Array(subset))
        XCTAssertLessThan(zip(partial, plainPartial).filter { $0 == $1 }.count, 5)
        // Every share revealed of a survivor is a self-mask share: no masking-key share of anyone
        // whose input is in the sum reaches the coordinator.
        XCTAssertEqual(run.revealedKinds.count, 5)
        for response in run.revealedKinds {
            XCTAssertEqual(response.shares.count, 5, "participant \(response.sender)")
            XCTAssertTrue(response.shares.allSatisfy { $0.kind == .selfMaskSeed }, "participant \(response.sender)")
        }
    }

    /// With a dropout, the coordinator receives masking-key shares only of the dropped client and
    /// self-mask shares only of survivors.
    func testDroppedClientsRevealOnlyMaskingKeyShares() throws {
        var run = try ProtocolRun.make(count: 6, vectorLength: 8) { _ in [UInt32](repeating: 1, count: 8) }
        let gone = run.ids[2]
        _ = try run.run(dropping: [.afterShare: [gone]])
        XCTAssertEqual(run.revealedKinds.count, 5)
        for response in run.revealedKinds {
            for share in response.shares {
                XCTAssertEqual(share.kind, share.owner == gone ? .maskingKey : .selfMaskSeed)
            }
        }
    }
}

final class SecureAggregationRefusalTests: XCTestCase {
    private func makeRunAtUnmask(count: Int = 6, drop: Set<Int> = []) throws -> (ProtocolRun, [UnmaskRequest]) {
        var run = try ProtocolRun.make(count: count, vectorLength: 32) { _ in [UInt32](repeating: 5, count: 32) }
        let broadcasts = try run.advertise()
        let bundles = try run.share(broadcasts, dropping: Set(drop.map { run.ids[$0] }))
        let requests = try run.maskAndSign(bundles)
        return (run, requests)
    }

    private func assertRefused(_ body: () throws -> Any, contains text: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            guard case let SecureAggregationError.refused(_, reason) = error else {
                return XCTFail("expected a refusal, got \(error)", file: file, line: line)
            }
            XCTAssertTrue(reason.contains(text), "reason: \(reason)", file: file, line: line)
        }
    }

    /// A coordinator asking one client for both shares of the same peer (in one request, or in a
    /// second request after the first was answered) is refused, and the refusing client is done.
    func testClientRefusesToRevealBothSharesOfOnePeer() throws {
        var (run, requests) = try makeRunAtUnmask(drop: [1])
        let asked = requests[0]
        let victim = asked.survivors.first { $0 != asked.recipient }!
        let both = UnmaskRequest(sessionID: asked.sessionID, recipient: asked.recipient,
                                 survivors: asked.survivors, dropped: asked.dropped + [victim])
        assertRefused({ try run.clients[asked.recipient]!.unmask(both) }, contains: "differ from the survivor set participant")
        XCTAssertThrowsError(try run.clients[asked.recipient]!.unmask(asked))  // failed for good

        // A second request, claiming a survivor dropped after its self-mask share was revealed.
        let other = requests[1]
        _ = try run.clients[other.recipient]!.unmask(other)
        let secondAsk = UnmaskRequest(sessionID: other.sessionID, recipient: other.recipient,
                                      survivors: other.survivors.filter { $0 != victim }, dropped: [victim])
        XCTAssertThrowsError(try run.clients[other.recipient]!.unmask(secondAsk)) { error in
            guard case SecureAggregationError.invalidState = error else { return XCTFail("\(error)") }
        }
    }

    /// The client's other unmask checks: a request whose lists differ from the survivor set it signed
    /// (itself listed as dropped, a participant it holds no shares of, one listed twice, too few
    /// survivors), and another session.
    func testClientRefusesMalformedUnmaskRequests() throws {
        let (run, requests) = try makeRunAtUnmask(drop: [1])
        let request = requests[0]
        let me = request.recipient
        let variants: [(UnmaskRequest, String)] = [
            (UnmaskRequest(sessionID: request.sessionID, recipient: me, survivors: request.survivors.filter { $0 != me },
                           dropped: request.dropped + [me]), "differ from the survivor set participant \(me) signed"),
            (UnmaskRequest(sessionID: request.sessionID, recipient: me, survivors: request.survivors,
                           dropped: [9999]), "differ from the survivor set participant \(me) signed"),
            (UnmaskRequest(sessionID: request.sessionID, recipient: me, survivors: request.survivors + [request.survivors[1]],
                           dropped: request.dropped), "differ from the survivor set participant \(me) signed"),
            (UnmaskRequest(sessionID: request.sessionID, recipient: me, survivors: Array(request.survivors.prefix(3)),
                           dropped: request.dropped), "differ from the survivor set participant \(me) signed"),
            (UnmaskRequest(sessionID: Hash.blake2b([1, 2, 3]), recipient: me, survivors: request.survivors,
                           dropped: request.dropped), "another session id"),
        ]
        for (variant, text) in variants {
            var client = run.clients[me]!
            assertRefused({ try client.unmask(variant) }, contains: text)
        }
    }

    /// A forged advertisement (keys swapped after signing, or signed by another enrolled client) is
    /// refused by the coordinator and, if the coordinator forwards it anyway, by every client.
    func testForgedSignaturesAreRefused() throws {
        var run = try ProtocolRun.make(count: 5, vectorLength: 8) { _ in [UInt32](repeating: 0, count: 8) }
        let ids = run.ids
        let genuine = try run.clients[ids[0]]!.advertiseKeys()
        let otherKeys = KeyAgreementKeyPair().publicKey
        let swapped = KeyAdvertisement(sessionID: genuine.sessionID, sender: genuine.sender, encryptionKey: genuine.encryptionKey,
                                       maskingKey: otherKeys, seedCommitment: genuine.seedCommitment, signature: genuine.signature)
        let impostorBytes = KeyAdvertisement.signedBytes(sessionID: genuine.sessionID, sender: ids[0], encryptionKey: genuine.encryptionKey,
                                                         maskingKey: otherKeys, seedCommitment: genuine.seedCommitment)
        let impostor = KeyAdvertisement(sessionID: genuine.sessionID, sender: ids[0], encryptionKey: genuine.encryptionKey,
                                        maskingKey: otherKeys, seedCommitment: genuine.seedCommitment,
                                        signature: run.identities[ids[1]]!.signature(for: impostorBytes))
        // The seed commitment is signed too: another commitment under the genuine signature is a forgery.
        let recommitted = KeyAdvertisement(sessionID: genuine.sessionID, sender: genuine.sender, encryptionKey: genuine.encryptionKey,
                                           maskingKey: genuine.maskingKey, seedCommitment: Hash.blake2b(genuine.seedCommitment),
                                           signature: genuine.signature)
        for forged in [swapped, impostor, recommitted] {
            XCTAssertThrowsError(try run.server.receive(forged)) { error in
                XCTAssertEqual(error as? SecureAggregationError, .invalidSignature(participant: ids[0]))
            }
        }
        try run.server.receive(genuine)

        // A client receiving the forgery in its broadcast refuses the round.
        var advertisements = [genuine]
        for id in ids.dropFirst() { advertisements.append(try run.clients[id]!.advertiseKeys()) }
        let recipient = ids[1]
        let forgedBroadcast = AdvertisementBroadcast(
            sessionID: run.session.sessionID, recipient: recipient,
            advertisements: [swapped] + advertisements.dropFirst().sorted { $0.sender < $1.sender })
        XCTAssertThrowsError(try run.clients[recipient]!.shareKeys(forgedBroadcast)) { error in
            XCTAssertEqual(error as? SecureAggregationError, .invalidSignature(participant: ids[0]))
        }
        XCTAssertEqual(run.clients[recipient]!.failureReason, .invalidSignature(participant: ids[0]))
    }

    /// Messages from another session (round 7, same cohort) are refused in round 8: as they are
    /// (session id mismatch), with the session id rewritten (the signature no longer verifies), and
    /// an encrypted share from round 7 (the associated data and keys no longer match).
    func testReplayFromAnotherSessionIsRefused() throws {
        var old = try ProtocolRun.make(count: 5, vectorLength: 8, roundID: 7) { _ in [UInt32](repeating: 2, count: 8) }
        let oldBroadcasts = try old.advertise()
        let oldBundles = try old.share(oldBroadcasts)
        _ = try old.mask(oldBundles)

        // Round 8 with the same enrolled identities.
        let session = try SecureAggregationSession(
            roundID: 8, plan: old.session.plan, globalAdapterHash: ProtocolRun.adapterHash,
            participants: old.session.participants, vectorLength: 8)
        XCTAssertNotEqual(session.sessionID, old.session.sessionID)
        var server = SecureAggregationServer(session: session)
        let replayed = old.advertisements[0]
        XCTAssertThrowsError(try server.receive(replayed)) { error in
            XCTAssertEqual(error as? SecureAggregationError, .sessionMismatch(stage: .advertiseKeys, sender: replayed.sender))
        }
        let rewritten = KeyAdvertisement(sessionID: session.sessionID, sender: replayed.sender, encryptionKey: replayed.encryptionKey,
                                         maskingKey: replayed.maskingKey, seedCommitment: replayed.seedCommitment,
                                         signature: replayed.signature)
        XCTAssertThrowsError(try server.receive(rewritten)) { error in
            XCTAssertEqual(error as? SecureAggregationError, .invalidSignature(participant: replayed.sender))
        }

        // Run round 8 to the share stage, then deliver a round-7 share in place of a fresh one.
        var clients = [ParticipantID: SecureAggregationClient]()
        for (id, identity) in old.identities {
            clients[id] = try SecureAggregationClient(session: session, id: id, identity: identity, localAdapterHash: ProtocolRun.adapterHash)
            try server.receive(try clients[id]!.advertiseKeys())
        }
        for broadcast in try server.finishAdvertising() { try server.receive(try clients[broadcast.recipient]!.shareKeys(broadcast)) }
        let bundle = try server.finishSharing()[0]
        let staleShare = oldBundles.first { $0.recipient == bundle.recipient }!.shares[0]
        let tampered = ShareBundle(sessionID: bundle.sessionID, recipient: bundle.recipient,
                                   shares: bundle.shares.map { $0.sender == staleShare.sender ? staleShare : $0 })
        XCTAssertThrowsError(try clients[bundle.recipient]!.maskInput(tampered, input: [UInt32](repeating: 0, count: 8))) { error in
            XCTAssertEqual(error as? SecureAggregationError, .shareDecryptionFailed(sender: staleShare.sender, recipient: bundle.recipient))
        }
        // And a round-7 masked input is refused by the round-8 coordinator.
        let oldMasked = MaskedInput(sessionID: old.session.sessionID, sender: replayed.sender, words: old.maskedInputs[replayed.sender]!)
        XCTAssertThrowsError(try server.receive(oldMasked)) { error in
            XCTAssertEqual(error as? SecureAggregationError, .sessionMismatch(stage: .maskedInput, sender: replayed.sender))
        }
    }

    /// A share whose ciphertext was altered, or re-addressed to another recipient, fails
    /// authentication (the associated data binds sender and recipient).
    func testTamperedOrRedirectedShareIsRefused() throws {
        var run = try ProtocolRun.make(count: 5, vectorLength: 8) { _ in [UInt32](repeating: 0, count: 8) }
        let bundles = try run.share(try run.advertise())
        let bundle = bundles[0]
        var bytes = bundle.shares[0].ciphertext
        bytes[40] ^= 1
        let flipped = EncryptedShare(sender: bundle.shares[0].sender, recipient: bundle.recipient, ciphertext: bytes)
        var client = run.clients[bundle.recipient]!
        XCTAssertThrowsError(try client.maskInput(
            ShareBundle(sessionID: bundle.sessionID, recipient: bundle.recipient, shares: [flipped] + bundle.shares.dropFirst()),
            input: [UInt32](repeating: 0, count: 8))) { error in
            XCTAssertEqual(error as? SecureAggregationError, .shareDecryptionFailed(sender: flipped.sender, recipient: bundle.recipient))
        }
        // bundles[1]'s recipient gets a share that was sealed for bundles[0]'s recipient by a common sender.
        let other = bundles[1]
        let stolen = bundle.shares.first { $0.sender != other.recipient }!
        let redirected = EncryptedShare(sender: stolen.sender, recipient: other.recipient, ciphertext: stolen.ciphertext)
        var victim = run.clients[other.recipient]!
        XCTAssertThrowsError(try victim.maskInput(
            ShareBundle(sessionID: other.sessionID, recipient: other.recipient,
                        shares: other.shares.map { $0.sender == stolen.sender ? redirected : $0 }),
            input: [UInt32](repeating: 0, count: 8))) { error in
            XCTAssertEqual(error as? SecureAggregationError, .shareDecryptionFailed(sender: stolen.sender, recipient: other.recipient))
        }
    }

    /// A client refuses a session announced for another global adapter, and a neighbourhood with
    /// fewer than t advertisers.
    func testClientRefusesAdapterMismatchAndTooFewNeighbours() throws {
        var run = try ProtocolRun.make(count: 5, vectorLength: 8) { _ in [UInt32](repeating: 0, count: 8) }
        let id = run.ids[0]
        XCTAssertThrowsError(try SecureAggregationClient(session: run.session, id: id, identity: run.identities[id]!,
                                                         localAdapterHash: Hash.blake2b([9]))) { error in
            guard case SecureAggregationError.adapterHashMismatch = error else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try SecureAggregationClient(session: run.session, id: id, identity: SigningKeyPair(),
                                                         localAdapterHash: ProtocolRun.adapterHash))
        let own = try run.clients[id]!.advertiseKeys()
        let other = try run.clients[run.ids[1]]!.advertiseKeys()
        // t = 4 of 5: two advertisements are too few.
        assertRefused({ try run.clients[id]!.shareKeys(AdvertisementBroadcast(
            sessionID: run.session.sessionID, recipient: id, advertisements: [own, other])) },
            contains: "only 2 of participant \(id)'s closed neighbourhood advertised keys; threshold is 4")
    }

    /// The coordinator rejects strangers, duplicates, wrong recipient sets and wrong lengths.
    func testServerRejectsMalformedMessages() throws {
        var run = try ProtocolRun.make(count: 5, vectorLength: 8) { _ in [UInt32](repeating: 0, count: 8) }
        let broadcasts = try run.advertise()
        let first = try run.clients[broadcasts[0].recipient]!.shareKeys(broadcasts[0])
        let truncated = ShareKeysMessage(sessionID: first.sessionID, sender: first.sender, shares: Array(first.shares.dropLast()))
        XCTAssertThrowsError(try run.server.receive(truncated)) { error in
            guard case SecureAggregationError.malformedMessage(.shareKeys, first.sender, _) = error else { return XCTFail("\(error)") }
        }
        try run.server.receive(first)
        XCTAssertThrowsError(try run.server.receive(first)) { error in
            XCTAssertEqual(error as? SecureAggregationError, .duplicateMessage(stage: .shareKeys, sender: first.sender))
        }
        for broadcast in broadcasts.dropFirst() { try run.server.receive(try run.clients[broadcast.recipient]!.shareKeys(broadcast)) }
        _ = try run.server.finishSharing()
        // After the advertise stage messages carry the transcript-bound id, as the clients' do.
        XCTAssertThrowsError(try run.server.receive(MaskedInput(sessionID: first.sessionID, sender: first.sender, words: [1, 2]))) { error in
            guard case SecureAggregationError.malformedMessage(.maskedInput, first.sender, _) = error else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try run.server.receive(MaskedInput(sessionID: first.sessionID, sender: 4242,
                                                                words: [UInt32](repeating: 0, count: 8)))) { error in
            guard case SecureAggregationError.unknownParticipant(.maskedInput, 4242, _) = error else { return XCTFail("\(error)") }
        }
    }
}
