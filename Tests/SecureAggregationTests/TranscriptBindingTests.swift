import SecureCrypto
import XCTest
@testable import SecureAggregation

/// The transcript-bound session id: every client derives it from the advertisements it was shown,
/// so a coordinator that shows different advertisement sets to different clients makes them refuse
/// (or, honest, drops the odd one out) and can unmask nothing.
final class TranscriptBindingTests: XCTestCase {
    private let zeros = [UInt32](repeating: 0, count: 8)

    /// Six clients, complete graph (t = 5); the coordinator hides the last client's advertisement
    /// from the first client only.
    private func equivocatedRun() throws -> (run: ProtocolRun, broadcasts: [AdvertisementBroadcast],
                                             victim: ParticipantID, hidden: ParticipantID) {
        var run = try ProtocolRun.make(count: 6, vectorLength: 8) { id in [UInt32](repeating: id, count: 8) }
        XCTAssertEqual(run.session.threshold, 5)
        let honest = try run.advertise()
        let victim = run.ids[0], hidden = run.ids[5]
        let broadcasts = honest.map { broadcast in
            broadcast.recipient != victim ? broadcast
                : AdvertisementBroadcast(sessionID: broadcast.sessionID, recipient: victim,
                                         advertisements: broadcast.advertisements.filter { $0.sender != hidden })
        }
        return (run, broadcasts, victim, hidden)
    }

    /// Clients shown the same advertisements derive the coordinator's transcript id; the one shown
    /// another set derives another id, and the honest coordinator drops it as from another session.
    /// The round then completes without it: its input is in no sum and nothing of it is revealed.
    func testHonestCoordinatorDropsAClientThatSawAnotherTranscript() throws {
        var (run, broadcasts, victim, _) = try equivocatedRun()
        let transcript = try XCTUnwrap(run.server.transcriptID)
        XCTAssertNotEqual(transcript, run.session.sessionID)
        var messages = [ShareKeysMessage]()
        for broadcast in broadcasts { messages.append(try run.clients[broadcast.recipient]!.shareKeys(broadcast)) }
        for id in run.ids where id != victim { XCTAssertEqual(run.clients[id]!.transcriptID, transcript) }
        let victimTranscript = try XCTUnwrap(run.clients[victim]!.transcriptID)
        XCTAssertNotEqual(victimTranscript, transcript)

        for message in messages {
            if message.sender == victim {
                XCTAssertEqual(message.sessionID, victimTranscript)
                XCTAssertThrowsError(try run.server.receive(message)) { error in
                    XCTAssertEqual(error as? SecureAggregationError, .sessionMismatch(stage: .shareKeys, sender: victim))
                }
            } else {
                try run.server.receive(message)
            }
        }
        let others = run.ids.filter { $0 != victim }
        let bundles = try run.server.finishSharing()
        XCTAssertFalse(bundles.contains { $0.recipient == victim })
        let result = try run.unmask(try run.maskAndSign(bundles))
        XCTAssertEqual(result.survivors, others)
        XCTAssertEqual(result.sum, run.plaintextSum(of: others))
        XCTAssertFalse(run.revealedKinds.contains { $0.shares.contains { $0.owner == victim } }, "a share of the victim was revealed")
    }

    /// A coordinator that relays every share anyway gets refusals: the victim cannot open shares
    /// sealed under the others' transcript, the others cannot open the victim's, and a bundle that
    /// carries the majority's transcript is refused by the victim outright. No client uploads a
    /// masked input whose masks anyone else can help remove, so nothing decodes.
    func testRelayingEquivocatedSharesMakesClientsRefuse() throws {
        var (run, broadcasts, victim, hidden) = try equivocatedRun()
        let transcript = try XCTUnwrap(run.server.transcriptID)
        var messages = [ShareKeysMessage]()
        for broadcast in broadcasts { messages.append(try run.clients[broadcast.recipient]!.shareKeys(broadcast)) }
        let victimTranscript = try XCTUnwrap(run.clients[victim]!.transcriptID)
        func bundle(for recipient: ParticipantID, sessionID: [UInt8]) -> ShareBundle {
            ShareBundle(sessionID: sessionID, recipient: recipient,
                        shares: messages.flatMap(\.shares)
                            .filter { $0.recipient == recipient && !(recipient == victim && $0.sender == hidden) }  // as the victim sees it
                            .sorted { $0.sender < $1.sender })
        }

        // The victim, sent the majority's transcript: refused before any share is opened.
        var copy = run.clients[victim]!
        XCTAssertThrowsError(try copy.maskInput(bundle(for: victim, sessionID: transcript), input: zeros)) { error in
            guard case let SecureAggregationError.refused(_, reason) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(reason.contains("another transcript"), reason)
        }
        // The victim, sent its own transcript: the others' shares fail authentication.
        XCTAssertThrowsError(try run.clients[victim]!.maskInput(bundle(for: victim, sessionID: victimTranscript), input: zeros)) { error in
            guard case SecureAggregationError.shareDecryptionFailed(_, victim) = error else { return XCTFail("\(error)") }
        }
        // Everyone the victim sent shares to fails on the victim's share.
        var refused = 0, masked = [ParticipantID]()
        for id in run.ids where id != victim {
            do {
                _ = try run.clients[id]!.maskInput(bundle(for: id, sessionID: transcript), input: zeros)
                masked.append(id)
            } catch let error as SecureAggregationError {
                XCTAssertEqual(error, .shareDecryptionFailed(sender: victim, recipient: id))
                refused += 1
            }
        }
        // Only the hidden client, to which the victim sent nothing, got to mask; with every other client
        // failed (secrets erased), nobody can reveal a share of its self mask.
        XCTAssertEqual(masked, [hidden])
        XCTAssertEqual(refused, 4)
        for id in run.ids where id != hidden { XCTAssertNotNil(run.clients[id]!.failureReason, "client \(id) did not refuse") }
    }

    /// In a sparse graph the transcript of the advertisements outside a client's neighbourhood comes
    /// as digests; one altered digest changes that client's transcript, and its shares then fail.
    func testAlteredOutsideDigestChangesTheTranscript() throws {
        var run = try ProtocolRun.make(count: 12, vectorLength: 8, graph: .harary(degree: 4)) { _ in [UInt32](repeating: 1, count: 8) }
        var broadcasts = try run.advertise()
        let transcript = try XCTUnwrap(run.server.transcriptID)
        let index = try XCTUnwrap(broadcasts.firstIndex { !$0.others.isEmpty })
        let original = broadcasts[index]
        XCTAssertEqual(original.advertisements.count + original.others.count, 12)
        var others = original.others
        var digest = others[0].digest
        digest[0] ^= 1
        others[0] = AdvertisementDigest(sender: others[0].sender, digest: digest)
        broadcasts[index] = AdvertisementBroadcast(sessionID: original.sessionID, recipient: original.recipient,
                                                   advertisements: original.advertisements, others: others)
        var messages = [ShareKeysMessage]()
        for broadcast in broadcasts { messages.append(try run.clients[broadcast.recipient]!.shareKeys(broadcast)) }
        for message in messages {
            XCTAssertEqual(message.sessionID == transcript, message.sender != original.recipient, "participant \(message.sender)")
        }

        // A digest for a neighbour, or twice for one outsider, is refused.
        var fresh = try ProtocolRun.make(count: 12, vectorLength: 8, graph: .harary(degree: 4)) { _ in [UInt32](repeating: 1, count: 8) }
        let broadcast = try XCTUnwrap(try fresh.advertise().first { !$0.others.isEmpty })
        let neighbour = try XCTUnwrap(broadcast.advertisements.first { $0.sender != broadcast.recipient })
        for bad in [broadcast.others + [AdvertisementDigest(sender: neighbour.sender, digest: neighbour.transcriptDigest)],
                    broadcast.others + [broadcast.others[0]]] {
            var client = fresh.clients[broadcast.recipient]!
            XCTAssertThrowsError(try client.shareKeys(AdvertisementBroadcast(
                sessionID: broadcast.sessionID, recipient: broadcast.recipient, advertisements: broadcast.advertisements, others: bad)))
            XCTAssertNotNil(client.failureReason)
        }
    }
}
