import SecureCrypto
import XCTest
@testable import SecureAggregation

/// GF(2^61 − 1), the field of `ShamirSharing`, for a liar that crafts its share.
private enum Field {
    static let p: UInt64 = (1 << 61) - 1
    static func reduce(_ x: UInt64) -> UInt64 { let r = (x & p) + (x >> 61); return r >= p ? r - p : r }
    static func multiply(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (hi, lo) = a.multipliedFullWidth(by: b)
        return reduce((lo & p) + (lo >> 61) + (hi << 3))  // 2^64 ≡ 8 (mod p)
    }
    static func power(_ a: UInt64, _ e: UInt64) -> UInt64 {
        var result: UInt64 = 1, base = a, e = e
        while e > 0 { if e & 1 == 1 { result = multiply(result, base) }; base = multiply(base, base); e >>= 1 }
        return result
    }
    static func inverse(_ a: UInt64) -> UInt64 { power(a, p - 2) }
    /// λ_i = Π_{j ≠ i} j / (j − i): the weight of share i in the interpolation at 0 over `indices`.
    static func lagrange(_ i: UInt64, over indices: [UInt64]) -> UInt64 {
        indices.filter { $0 != i }.reduce(1) { multiply($0, multiply($1, inverse(reduce($1 &+ p &- i)))) }
    }
}

/// A share holder who reveals a wrong share must not shift the sum silently (issue 14, item 4).
final class SumIntegrityTests: XCTestCase {
    /// One survivor (the first to answer) reveals its share of another survivor's self-mask seed
    /// with δ·λ_i⁻¹ added to the first field element, λ_i being its Lagrange weight among the first t
    /// answers: the coordinator's interpolation yields b + δ, a valid-looking 32-byte seed (a random
    /// share would fail `ShamirSharing`'s fit check), and subtracts the wrong mask, so the sum is
    /// garbage. Without a commitment to b nothing notices; with it the coordinator names the liar.
    func testShiftedSelfMaskSeedShareIsDetectedAndNamed() throws {
        var run = try ProtocolRun.make(count: 6, vectorLength: 32) { _ in (0..<32).map { _ in UInt32.random(in: 0...1000) } }
        let requests = try run.maskAndSign(try run.share(try run.advertise()))
        let t = run.session.threshold
        let liar = requests[0].recipient
        let victim = requests[0].survivors.first { $0 != liar }!
        let firstAnswers = requests.prefix(t).map { UInt64(run.session.shareIndex(owner: victim, holder: $0.recipient)!) }
        for request in requests {
            var response = try run.clients[request.recipient]!.unmask(request)
            if request.recipient == liar {
                let forged = try response.shares.map { item -> RevealedShare in
                    guard item.owner == victim, item.kind == .selfMaskSeed else { return item }
                    let shift = Field.multiply(1, Field.inverse(Field.lagrange(UInt64(item.share.index), over: firstAnswers)))
                    let value = SecretBytes(count: item.share.value.count) { out in
                        item.share.value.withUnsafeBytes { out.copyMemory(from: $0) }
                        let first = UInt64(littleEndian: out.loadUnaligned(as: UInt64.self))
                        out.storeBytes(of: Field.reduce(first + shift).littleEndian, as: UInt64.self)
                    }
                    let share = try ShamirShare(index: item.share.index, threshold: item.share.threshold, secretByteCount: 32, value: value)
                    return RevealedShare(owner: victim, kind: .selfMaskSeed, share: share)
                }
                response = UnmaskResponse(sessionID: response.sessionID, sender: liar, shares: forged)
            }
            try run.server.receive(response)
        }
        // Seen on the code before seed commitments: finishUnmasking returned a wrong sum without a word.
        XCTAssertThrowsError(try run.server.finishUnmasking(), "a shifted self-mask seed share must not pass") { error in
            XCTAssertEqual(error as? SecureAggregationError, .invalidRevealedShare(owner: victim, kind: .selfMaskSeed, holder: liar))
        }
    }

    /// With exactly t shares of the victim's seed the liar cannot be singled out, but the round still
    /// aborts with the named error rather than a wrong sum.
    func testShiftedShareAmongExactlyTIsDetected() throws {
        var run = try ProtocolRun.make(count: 6, vectorLength: 8) { _ in [UInt32](repeating: 3, count: 8) }
        let requests = try run.maskAndSign(try run.share(try run.advertise()))
        let t = run.session.threshold
        let liar = requests[0].recipient
        let victim = requests[0].survivors.first { $0 != liar }!
        let answering = requests.prefix(t)
        let indices = answering.map { UInt64(run.session.shareIndex(owner: victim, holder: $0.recipient)!) }
        for request in answering {
            var response = try run.clients[request.recipient]!.unmask(request)
            if request.recipient == liar {
                response = UnmaskResponse(sessionID: response.sessionID, sender: liar, shares: try response.shares.map { item in
                    guard item.owner == victim, item.kind == .selfMaskSeed else { return item }
                    let shift = Field.inverse(Field.lagrange(UInt64(item.share.index), over: indices))
                    let value = SecretBytes(count: item.share.value.count) { out in
                        item.share.value.withUnsafeBytes { out.copyMemory(from: $0) }
                        let first = UInt64(littleEndian: out.loadUnaligned(as: UInt64.self))
                        out.storeBytes(of: Field.reduce(first + shift).littleEndian, as: UInt64.self)
                    }
                    return RevealedShare(owner: victim, kind: .selfMaskSeed, share: try ShamirShare(
                        index: item.share.index, threshold: item.share.threshold, secretByteCount: 32, value: value))
                })
            }
            try run.server.receive(response)
        }
        XCTAssertThrowsError(try run.server.finishUnmasking()) { error in
            XCTAssertEqual(error as? SecureAggregationError, .invalidRevealedShare(owner: victim, kind: .selfMaskSeed, holder: nil))
        }
    }
}
