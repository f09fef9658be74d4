import SecureCrypto
import XCTest
@testable import SecureAggregation

/// The client's checks of the consistency round (Bonawitz et al., Figure 4, round 3) one by one, each
/// against a request that differs from an honest one in that check only.
final class ConsistencyCheckTests: XCTestCase {
    /// A round of 6 (t = 5) at the consistency stage, one client dropped before its masked input.
    private func runAtConsistency() throws -> (ProtocolRun, [ConsistencyRequest]) {
        var run = try ProtocolRun.make(count: 6, vectorLength: 8) { _ in [UInt32](repeating: 1, count: 8) }
        let bundles = try run.share(try run.advertise())
        let checks = try run.mask(bundles, dropping: [run.ids[5]])
        return (run, checks)
    }

    private func refusal(_ body: () throws -> Any) -> String? {
        do { _ = try body() } catch let SecureAggregationError.refused(_, reason) { return reason } catch { return "\(error)" }
        return nil
    }

    /// The survivor set is signed only if it lists the signer, cohort members only, in order, only
    /// members the signer holds shares of, and t of its neighbourhood; a second set is never signed.
    func testSignerRefusesMalformedSurvivorSets() throws {
        let (run, checks) = try runAtConsistency()
        let check = checks[0], me = check.recipient, others = check.survivors.filter { $0 != me }
        let variants: [([ParticipantID], String)] = [
            (others, "does not list participant \(me) itself"),
            (check.survivors + [9999], "not in the cohort"),
            (check.survivors.reversed(), "not in increasing order"),
            (Array(check.survivors.prefix(4)), "only 4 survivors"),
        ]
        for (survivors, text) in variants {
            var client = run.clients[me]!
            let reason = refusal { try client.signSurvivors(ConsistencyRequest(sessionID: check.sessionID, recipient: me, survivors: survivors)) }
            XCTAssertTrue(reason?.contains(text) == true, "\(text): \(reason ?? "signed")")
        }
        var client = run.clients[me]!
        _ = try client.signSurvivors(check)
        XCTAssertThrowsError(try client.signSurvivors(check)) { error in
            XCTAssertEqual(error as? SecureAggregationError, .invalidState(expected: "masked", actual: "signed"))
        }
    }

    /// A client shown fewer than t valid signatures on the set it signed, a signature on another set,
    /// or a signer outside the set, reveals nothing; with t it reveals exactly what the set implies.
    func testUnmaskRequiresTValidSignaturesOnTheSignedSet() throws {
        var (run, checks) = try runAtConsistency()
        let t = run.session.threshold
        var signatures = [SurvivorSignature]()
        for check in checks {
            let signed = try run.clients[check.recipient]!.signSurvivors(check)
            signatures.append(SurvivorSignature(signer: signed.sender, signature: signed.signature))
            try run.server.receive(signed)
        }
        let requests = try run.server.finishConsistencyCheck()
        let request = requests[0], me = request.recipient
        XCTAssertEqual(request.signatures.count, checks.count)
        func asking(_ list: [SurvivorSignature]) -> UnmaskRequest {
            UnmaskRequest(sessionID: request.sessionID, recipient: me, survivors: request.survivors, dropped: request.dropped, signatures: list)
        }
        var short = run.clients[me]!
        XCTAssertThrowsError(try short.unmask(asking(Array(signatures.prefix(t - 1))))) { error in
            guard case let SecureAggregationError.consistencyCheckFailed(recipient, _, valid, threshold) = error else { return XCTFail("\(error)") }
            XCTAssertEqual([recipient, ParticipantID(valid), ParticipantID(threshold)], [me, ParticipantID(t - 1), ParticipantID(t)])
        }
        XCTAssertNotNil(short.failureReason, "a refused client is done")
        // A signature over another survivor set (the set without the last survivor) counts as forged.
        let other = checks.last!.recipient
        let otherSet = checks[0].survivors.filter { $0 != other }
        let wrong = SurvivorSignature(signer: other, signature: run.identities[other]!.signature(
            for: ConsistencySignature.signedBytes(transcript: request.sessionID, survivors: otherSet)))
        var misled = run.clients[me]!
        XCTAssertThrowsError(try misled.unmask(asking(signatures.filter { $0.signer != other } + [wrong]))) { error in
            XCTAssertEqual(error as? SecureAggregationError, .invalidSignature(participant: other))
        }
        var stranger = run.clients[me]!
        let dropped = run.ids[5]
        let outsider = SurvivorSignature(signer: dropped, signature: [UInt8](repeating: 0, count: 64))
        XCTAssertTrue(refusal { try stranger.unmask(asking(signatures + [outsider])) }?.contains("outside the survivor set") == true)
        var honest = run.clients[me]!
        let response = try honest.unmask(asking(signatures))
        XCTAssertEqual(response.shares.filter { $0.kind == .selfMaskSeed }.map(\.owner), request.survivors)
        XCTAssertEqual(response.shares.filter { $0.kind == .maskingKey }.map(\.owner), [dropped])
    }

    /// The coordinator forwards each client the signatures of the signers within two hops, and a
    /// survivor that does not sign is still unmasked by the others (its input is in the sum).
    func testSparseRoundWithASilentSignerSums() throws {
        var run = try ProtocolRun.make(count: 30, vectorLength: 8, graph: .harary(degree: 10)) { id in [id, 1, 2, 3, 4, 5, 6, 7] }
        let result = try run.run(dropping: [.afterMaskedInput: [run.ids[3]], .afterShare: [run.ids[9]]])
        let survivors = run.ids.filter { $0 != run.ids[9] }
        XCTAssertEqual(result.survivors, survivors)
        XCTAssertEqual(result.sum, run.plaintextSum(of: survivors))
    }
}
