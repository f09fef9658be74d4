import SecureCrypto
import XCTest
@testable import SecureAggregation

final class SessionAndGraphTests: XCTestCase {
    private let cohort = ProtocolRun.cohort(12).participants

    private func session(roundID: UInt64 = 1, plan: [UInt8] = [1, 2], adapter: [UInt8] = [3, 4], participants: [Participant]? = nil,
                         vectorLength: Int = 10, graph: NeighbourGraph = .complete, threshold: Int? = nil) throws -> SecureAggregationSession {
        try SecureAggregationSession(roundID: roundID, plan: plan, globalAdapterHash: adapter, participants: participants ?? cohort,
                                     vectorLength: vectorLength, graph: graph, threshold: threshold)
    }

    /// The session id changes with every bound field, and not with the order participants are listed in.
    func testSessionIDBindsEveryParameter() throws {
        let base = try session().sessionID
        XCTAssertEqual(base.count, 32)
        XCTAssertEqual(try session(participants: cohort.reversed()).sessionID, base)
        var replaced = cohort
        replaced[3] = Participant(id: replaced[3].id, signingKey: SigningKeyPair().publicKey)
        let variants = [
            try session(roundID: 2), try session(plan: [1, 3]), try session(adapter: [3, 5]),
            try session(participants: Array(cohort.dropLast())), try session(participants: replaced),
            try session(vectorLength: 11), try session(graph: .harary(degree: 4)), try session(threshold: 9),
            // Length framing: moving a byte from the plan to the adapter hash changes the id.
            try session(plan: [1], adapter: [2, 3, 4]),
        ]
        for (index, variant) in variants.enumerated() {
            XCTAssertNotEqual(variant.sessionID, base, "variant \(index)")
        }
    }

    /// Threshold and size limits: t must be a strict majority and at most the neighbourhood; the
    /// complete graph is limited to 255 members per neighbourhood (SecureAggregationSession.maximumNeighbourhoodSize).
    func testParameterValidation() throws {
        XCTAssertEqual(try session().threshold, 9)  // floor(2·12/3) + 1
        XCTAssertNoThrow(try session(threshold: 7))
        XCTAssertThrowsError(try session(threshold: 6))  // 6 of 12 is not a majority
        XCTAssertThrowsError(try session(threshold: 13))
        XCTAssertThrowsError(try session(vectorLength: 0))
        XCTAssertThrowsError(try session(graph: .harary(degree: 1)))
        XCTAssertThrowsError(try session(participants: [cohort[0]]))
        XCTAssertThrowsError(try session(participants: cohort + [cohort[0]]))
        let big = ProtocolRun.cohort(256).participants
        XCTAssertThrowsError(try session(participants: big)) { error in
            guard case let SecureAggregationError.invalidParameters(reason) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(reason.contains("exceed 255"), reason)
        }
        XCTAssertNoThrow(try session(participants: big, graph: .harary(degree: 16)))
    }

    /// The Harary graph is symmetric and k-regular (even k, and odd k with even n), has exactly one
    /// node of degree k + 1 for odd k and odd n, is the same for the same session and different for
    /// another round.
    func testHararyGraphShape() throws {
        for (n, k) in [(30, 6), (30, 7), (31, 7), (100, 20), (9, 8)] {
            let participants = ProtocolRun.cohort(n).participants
            let s = try session(participants: participants, graph: .harary(degree: k))
            var degrees = [Int]()
            for p in participants {
                let around = s.neighbourhood(of: p.id)
                XCTAssertTrue(around.contains(p.id))
                XCTAssertEqual(around, around.sorted())
                for q in around { XCTAssertTrue(s.neighbourhood(of: q).contains(p.id), "n \(n) k \(k): \(p.id)-\(q) not symmetric") }
                degrees.append(around.count - 1)
            }
            if k % 2 == 1 && n % 2 == 1 {
                XCTAssertEqual(degrees.filter { $0 == k + 1 }.count, 1, "n \(n) k \(k)")
                XCTAssertEqual(degrees.filter { $0 == k }.count, n - 1, "n \(n) k \(k)")
            } else {
                XCTAssertTrue(degrees.allSatisfy { $0 == min(k, n - 1) }, "n \(n) k \(k): degrees \(Set(degrees))")
            }
            let again = try session(participants: participants.shuffled(), graph: .harary(degree: k))
            let other = try session(roundID: 99, participants: participants, graph: .harary(degree: k))
            let same = participants.allSatisfy { again.neighbourhood(of: $0.id) == s.neighbourhood(of: $0.id) }
            let differs = participants.contains { other.neighbourhood(of: $0.id) != s.neighbourhood(of: $0.id) }
            XCTAssertTrue(same, "n \(n) k \(k)")
            if k < n - 1 { XCTAssertTrue(differs, "n \(n) k \(k): the graph ignores the session") }
        }
    }

    /// The permutation behind the graph is uniform: over 6,000 seeds each of the 6 permutations of
    /// 3 items occurs about 1,000 times (chi-square, 5 degrees of freedom, below 25).
    func testRandomPermutationIsUniform() throws {
        var counts = [[Int]: Int]()
        for i in 0..<6000 {
            counts[try NeighbourGraph.randomPermutation(count: 3, seed: Hash.blake2b(Array("seed \(i)".utf8))), default: 0] += 1
        }
        XCTAssertEqual(counts.count, 6)
        let chiSquare = counts.values.reduce(0.0) { $0 + pow(Double($1) - 1000, 2) / 1000 }
        XCTAssertLessThan(chiSquare, 25)
    }

    /// The default degree grows as 3 log2 n and is even.
    func testDefaultDegree() {
        XCTAssertEqual(NeighbourGraph.defaultDegree(cohortSize: 2), 1)
        XCTAssertEqual(NeighbourGraph.defaultDegree(cohortSize: 10), 9)  // 3·4 = 12, capped at n - 1
        XCTAssertEqual(NeighbourGraph.defaultDegree(cohortSize: 100), 22)  // ceil(log2 100) = 7
        XCTAssertEqual(NeighbourGraph.defaultDegree(cohortSize: 1000), 30)
    }
}
