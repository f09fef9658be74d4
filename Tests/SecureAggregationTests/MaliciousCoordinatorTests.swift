import SecureCrypto
import XCTest
@testable import SecureAggregation

/// A coordinator that lies about who dropped, as Bonawitz et al. (CCS 2017, §4 and the proof of
/// Theorem 6.3's active case) warn of: it delivers to a target u the shares of only t − 1
/// neighbours V (so u masks with those alone), receives every masked input, then tells u's
/// neighbourhood that u survived (they reveal shares of u's self-mask seed b_u) while telling the
/// holders of each v ∈ V that v dropped (they reveal shares of v's masking key s_v). With b_u and
/// every s_v it removes all of u's masks: y_u − PRG(b_u) − Σ ±PRG(s_uv) = x_u. No honest client
/// is ever asked for both kinds of share of one member, so the per-request refusals do not stop it,
/// and no client colludes.
struct DropoutLie {
    /// The member whose input the coordinator wants.
    let target: ParticipantID
    /// The t − 1 neighbours whose shares the target receives.
    let maskedWith: [ParticipantID]
    /// What each client is told: its survivors and dropped neighbours.
    let stories: [ParticipantID: (survivors: [ParticipantID], dropped: [ParticipantID])]

    /// A lie against `target` in which every honest holder lists at least t survivors and each
    /// v ∈ V is declared dropped by t holders of its shares, found greedily (nil if greedy fails).
    static func plan(session: SecureAggregationSession, target u: ParticipantID) -> DropoutLie? {
        let t = session.threshold
        let maskedWith = Array(session.neighbourhood(of: u).filter { $0 != u }.prefix(t - 1))
        var dropped = [ParticipantID: Set<ParticipantID>]()
        func capacity(_ w: ParticipantID) -> Int { session.neighbourhood(of: w).count - t - (dropped[w]?.count ?? 0) }
        for v in maskedWith {
            let holders = session.neighbourhood(of: v).filter { $0 != v && $0 != u && capacity($0) > 0 }
                .sorted { (capacity($0), $1) > (capacity($1), $0) }
            guard holders.count >= t else { return nil }
            for w in holders.prefix(t) { dropped[w, default: []].insert(v) }
        }
        var stories = [ParticipantID: (survivors: [ParticipantID], dropped: [ParticipantID])]()
        for w in session.participants.map(\.id) {
            if w == u {
                stories[w] = ((maskedWith + [u]).sorted(), [])
            } else {
                let down = dropped[w] ?? []
                stories[w] = (session.neighbourhood(of: w).filter { !down.contains($0) }, down.sorted())
            }
        }
        return DropoutLie(target: u, maskedWith: maskedWith, stories: stories)
    }
}

/// What a malicious coordinator collected, and who refused it.
private struct Haul {
    var seedShares = [ParticipantID: [ShamirShare]]()
    var keyShares = [ParticipantID: [ShamirShare]]()
    var refusals = [SecureAggregationError]()

    mutating func take(_ response: UnmaskResponse) {
        for item in response.shares {
            if item.kind == .selfMaskSeed { seedShares[item.owner, default: []].append(item.share) }
            else { keyShares[item.owner, default: []].append(item.share) }
        }
    }

    /// x_u from y_u once the haul holds t shares of b_u and, for every neighbour v u masked with,
    /// t shares of v's masking key or of u's own (nil otherwise).
    func unmask(_ u: ParticipantID, maskedWith: [ParticipantID], run: ProtocolRun, transcript: [UInt8]) throws -> [UInt32]? {
        let t = run.session.threshold
        guard let seed = seedShares[u], seed.count >= t else { return nil }
        let context = SecureAggregationSession.pairwiseMaskContext(transcript: transcript)
        let advertised = Dictionary(uniqueKeysWithValues: run.advertisements.map { ($0.sender, $0) })
        var words = run.maskedInputs[u]!
        var terms = [MaskTerm(stream: try MaskStream(seed: try ShamirSharing.reconstruct(seed)), sign: .minus)]
        for v in maskedWith {
            // s_uv from v's secret and u's public key, or from u's secret and v's public key.
            let pair: (KeyAgreementKeyPair, KeyAgreementPublicKey)
            if let own = keyShares[u], own.count >= t {
                pair = (try KeyAgreementKeyPair(secretKey: try ShamirSharing.reconstruct(own)), advertised[v]!.maskingKey)
            } else if let theirs = keyShares[v], theirs.count >= t {
                pair = (try KeyAgreementKeyPair(secretKey: try ShamirSharing.reconstruct(theirs)), advertised[u]!.maskingKey)
            } else {
                return nil
            }
            let seed = try pair.0.sharedKey(with: pair.1, context: context)
            // u added +PRG(s_uv) for v < u and −PRG(s_uv) for v > u.
            terms.append(MaskTerm(stream: try MaskStream(seed: seed), sign: v < u ? .minus : .plus))
        }
        Masking.apply(terms, to: &words)
        return words
    }
}

final class MaliciousCoordinatorTests: XCTestCase {
    private func randomRun(count: Int, graph: NeighbourGraph = .complete, threshold: Int) throws -> ProtocolRun {
        try ProtocolRun.make(count: count, vectorLength: 64, graph: graph, threshold: threshold) { _ in
            (0..<64).map { _ in UInt32.random(in: 0...UInt32.max) }
        }
    }

    /// Runs `DropoutLie` to the unmask stage. Without the check (`requiresConsistencyCheck` off, the
    /// protocol before issue 14) each client gets its story as an unmask request; with it, the
    /// coordinator first has each client sign the survivor set of its story and forwards to each
    /// client the signatures made on the same set (the most a liar can show).
    private func dropoutLie(count: Int, graph: NeighbourGraph = .complete, threshold: Int, consistencyCheck: Bool) throws
        -> (recovered: [UInt32]?, actual: [UInt32], refusals: [SecureAggregationError])
    {
        var run = try randomRun(count: count, graph: graph, threshold: threshold)
        let u = run.ids[count / 2]
        let lie = try XCTUnwrap(DropoutLie.plan(session: run.session, target: u), "no lie for n = \(count), t = \(threshold)")
        var bundles = try run.share(try run.advertise())
        // Stage 1: u receives the shares of V only.
        let keep = Set(lie.maskedWith)
        bundles = bundles.map { bundle in
            bundle.recipient != u ? bundle
                : ShareBundle(sessionID: bundle.sessionID, recipient: u, shares: bundle.shares.filter { keep.contains($0.sender) })
        }
        _ = try run.mask(bundles)
        let transcript = try XCTUnwrap(run.server.transcriptID)
        var haul = Haul()
        // Each client's story as a survivor set: everyone but those it is told dropped (u: V and itself).
        var sets = [ParticipantID: [ParticipantID]]()
        for w in run.ids {
            sets[w] = w == u ? lie.stories[w]!.survivors : run.ids.filter { !lie.stories[w]!.dropped.contains($0) }
        }
        var signatures = [ParticipantID: [UInt8]]()
        for w in run.ids {
            if consistencyCheck {
                do {
                    let signed = try run.clients[w]!.signSurvivors(ConsistencyRequest(sessionID: transcript, recipient: w, survivors: sets[w]!))
                    signatures[w] = signed.signature
                } catch let error as SecureAggregationError {
                    haul.refusals.append(error)
                }
            } else {
                run.clients[w]!.requiresConsistencyCheck = false
            }
        }
        for w in run.ids {
            let story = lie.stories[w]!
            let forwarded = signatures.keys.filter { sets[$0] == sets[w] }.sorted().map { SurvivorSignature(signer: $0, signature: signatures[$0]!) }
            let request = UnmaskRequest(sessionID: transcript, recipient: w, survivors: story.survivors, dropped: story.dropped,
                                        signatures: forwarded)
            do {
                haul.take(try run.clients[w]!.unmask(request))
            } catch let error as SecureAggregationError {
                haul.refusals.append(error)
            }
        }
        return (try haul.unmask(u, maskedWith: lie.maskedWith, run: run, transcript: transcript), run.inputs[u]!, haul.refusals)
    }

    /// Positive control, the protocol without the consistency check (the code before issue 14, through
    /// the test seam): the lie unmasks one honest client's input with no colluding client at all, for
    /// the complete graph of the issue (n = 100, t = 52), its Harary graph (k = 30, t = 16) and a small
    /// one. Seen on the commit before this one with the same lie and no seam: the complete graphs
    /// recovered x_u exactly.
    func testDropoutLieUnmasksOneInputWithoutTheConsistencyCheck() throws {
        for (count, graph, threshold) in [(10, NeighbourGraph.complete, 6), (100, .complete, 52), (100, .harary(degree: 30), 16)] {
            let outcome = try dropoutLie(count: count, graph: graph, threshold: threshold, consistencyCheck: false)
            XCTAssertEqual(outcome.recovered, outcome.actual, "n = \(count), \(graph), t = \(threshold): the lie should recover x_u")
            XCTAssertEqual(outcome.refusals, [])
        }
    }

    /// With the check, every client's story is a different survivor set, each signed by fewer than t
    /// of the holders concerned; the holders refuse (`consistencyCheckFailed`) and u's masks stay.
    func testConsistencyCheckStopsTheDropoutLie() throws {
        for (count, graph, threshold) in [(10, NeighbourGraph.complete, 6), (100, .complete, 52), (100, .harary(degree: 30), 16)] {
            let outcome = try dropoutLie(count: count, graph: graph, threshold: threshold, consistencyCheck: true)
            XCTAssertNil(outcome.recovered, "n = \(count), t = \(threshold)")
            XCTAssertTrue(outcome.refusals.contains { if case .consistencyCheckFailed = $0 { return true } else { return false } },
                          "\(outcome.refusals.prefix(3))")
        }
    }

    /// The split view of Bonawitz et al.: the coordinator tells one group of honest holders that u
    /// survived (they reveal shares of b_u) and another that u dropped (shares of u's masking key),
    /// while c colluders sign both survivor sets and reveal both kinds. With the check it succeeds
    /// exactly when c ≥ 2t − n, the count `CollusionResistance.withstood` (2t − n − 1) stands for:
    /// at c = 2t − n the input is recovered, at c = 2t − n − 1 the smaller group is short of t
    /// signatures and refuses.
    func testSplitViewNeedsTwoTMinusNColluders() throws {
        let n = 10, t = 7
        XCTAssertEqual(CollusionResistance.withstood(cohortSize: n, graph: .complete, threshold: t), 2 * t - n - 1)
        for colluders in [2 * t - n, 2 * t - n - 1] {
            var run = try randomRun(count: n, threshold: t)
            _ = try run.mask(try run.share(try run.advertise()))
            let transcript = try XCTUnwrap(run.server.transcriptID)
            let u = run.ids[0]
            let corrupt = Array(run.ids.suffix(colluders))
            let honest = run.ids.filter { !corrupt.contains($0) }  // u first
            let groupA = Array(honest.prefix((honest.count + 1) / 2)), groupB = Array(honest.dropFirst(groupA.count))
            let all = run.ids, withoutU = run.ids.filter { $0 != u }
            var copies = [ParticipantID: SecureAggregationClient]()  // a colluder answers both stories
            for c in corrupt { copies[c] = run.clients[c]! }
            /// Group B's side of a colluder is its copy.
            func sideB<R>(_ w: ParticipantID, _ body: (inout SecureAggregationClient) throws -> R) rethrows -> R {
                if corrupt.contains(w) { return try body(&copies[w]!) }
                return try body(&run.clients[w]!)
            }
            var signaturesA = [SurvivorSignature](), signaturesB = [SurvivorSignature]()
            for w in groupA + corrupt {
                let signed = try run.clients[w]!.signSurvivors(ConsistencyRequest(sessionID: transcript, recipient: w, survivors: all))
                signaturesA.append(SurvivorSignature(signer: w, signature: signed.signature))
            }
            for w in groupB + corrupt {
                let signed = try sideB(w) { try $0.signSurvivors(ConsistencyRequest(sessionID: transcript, recipient: w, survivors: withoutU)) }
                signaturesB.append(SurvivorSignature(signer: w, signature: signed.signature))
            }
            var haul = Haul()
            for w in groupA + corrupt {
                let request = UnmaskRequest(sessionID: transcript, recipient: w, survivors: all, dropped: [], signatures: signaturesA)
                do { haul.take(try run.clients[w]!.unmask(request)) } catch let error as SecureAggregationError { haul.refusals.append(error) }
            }
            for w in groupB + corrupt {
                let request = UnmaskRequest(sessionID: transcript, recipient: w, survivors: withoutU, dropped: [u], signatures: signaturesB)
                do { haul.take(try sideB(w) { try $0.unmask(request) }) }
                catch let error as SecureAggregationError { haul.refusals.append(error) }
            }
            let recovered = try haul.unmask(u, maskedWith: withoutU, run: run, transcript: transcript)
            if colluders == 2 * t - n {
                XCTAssertEqual(recovered, run.inputs[u], "c = \(colluders) colluders unmask u with the check")
            } else {
                XCTAssertNil(recovered, "c = \(colluders) colluders must not unmask u")
                XCTAssertTrue(haul.refusals.contains { if case .consistencyCheckFailed = $0 { return true } else { return false } })
            }
        }
    }
}
