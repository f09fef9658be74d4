import XCTest
@testable import SecureCrypto

final class GF256Tests: XCTestCase {
    /// Schoolbook carry-less multiplication then reduction by 0x11B: the naive twin of `GF256.multiply`.
    private func naiveMultiply(_ a: UInt8, _ b: UInt8) -> UInt8 {
        var wide: UInt16 = 0
        for bit in 0..<8 where (b >> bit) & 1 == 1 { wide ^= UInt16(a) << bit }
        for bit in stride(from: 15, through: 8, by: -1) where (wide >> bit) & 1 == 1 { wide ^= 0x11B << (bit - 8) }
        return UInt8(wide)
    }

    /// FIPS-197 §4.2 examples, then all 65,536 products against the naive twin.
    func testMultiplyMatchesFIPS197AndNaiveTwin() {
        XCTAssertEqual(GF256.multiply(0x57, 0x83), 0xC1)
        XCTAssertEqual(GF256.multiply(0x57, 0x13), 0xFE)
        var mismatches = 0
        for a in 0...255 {
            for b in 0...255 where GF256.multiply(UInt8(a), UInt8(b)) != naiveMultiply(UInt8(a), UInt8(b)) { mismatches += 1 }
        }
        XCTAssertEqual(mismatches, 0)
    }

    /// Every non-zero element times its inverse is 1; inverse(0x53) = 0xCA (FIPS-197 §5.1.1 example).
    func testInverse() {
        XCTAssertEqual(GF256.inverse(0x53), 0xCA)
        XCTAssertEqual(GF256.inverse(0), 0)
        for a in 1...255 { XCTAssertEqual(GF256.multiply(UInt8(a), GF256.inverse(UInt8(a))), 1, "a = \(a)") }
    }
}

final class ShamirSharingTests: XCTestCase {
    /// Every 3-subset of a 3-of-5 split (and every larger subset, in any order) reconstructs the
    /// 32-byte secret; shares carry indices 1...5 and the threshold.
    func testAllThresholdSubsetsReconstruct() throws {
        let secret = SecretBytes(randomCount: 32)
        let shares = try ShamirSharing.split(secret, threshold: 3, shareCount: 5)
        XCTAssertEqual(shares.map(\.index), [1, 2, 3, 4, 5])
        XCTAssertTrue(shares.allSatisfy { $0.threshold == 3 && $0.value.count == 32 })
        var subsets = 0
        for mask in 1..<(1 << 5) where mask.nonzeroBitCount >= 3 {
            let subset = shares.indices.filter { mask >> $0 & 1 == 1 }.map { shares[$0] }
            XCTAssertTrue(constantTimeEqual(try ShamirSharing.reconstruct(subset), secret), "subset mask \(mask)")
            XCTAssertTrue(constantTimeEqual(try ShamirSharing.reconstruct(subset.reversed()), secret), "reversed \(mask)")
            subsets += 1
        }
        XCTAssertEqual(subsets, 10 + 5 + 1)
    }

    /// Below the threshold: reconstruct refuses, and interpolating the t-1 points anyway does not give
    /// the secret (it gives an unrelated value: matching 32 bytes by chance has probability 2^-256).
    func testFewerThanThresholdSharesRevealNothing() throws {
        let secret = SecretBytes(randomCount: 32)
        let shares = try ShamirSharing.split(secret, threshold: 3, shareCount: 5)
        for pair in [[0, 1], [1, 4], [2, 3]] {
            let subset = pair.map { shares[$0] }
            XCTAssertThrowsError(try ShamirSharing.reconstruct(subset)) {
                XCTAssertEqual($0 as? SecureCryptoError, .notEnoughShares(have: 2, need: 3))
            }
            XCTAssertFalse(constantTimeEqual(ShamirSharing.interpolateAtZero(subset), secret))
        }
        XCTAssertThrowsError(try ShamirSharing.reconstruct([])) {
            XCTAssertEqual($0 as? SecureCryptoError, .notEnoughShares(have: 0, need: 1))
        }
    }

    /// Any single share is uniform whatever the secret: over 4,000 splits of the all-zero secret,
    /// byte 0 of share 1 takes every one of the 256 values.
    func testSingleShareLooksUniform() throws {
        let zero = SecretBytes(copying: [UInt8](repeating: 0, count: 1))
        var seen = Set<UInt8>()
        for _ in 0..<4000 {
            let shares = try ShamirSharing.split(zero, threshold: 2, shareCount: 2)
            shares[0].value.withUnsafeBytes { _ = seen.insert($0[0]) }
        }
        XCTAssertEqual(seen.count, 256)
    }

    /// Hand-computed 2-of-n shares of the byte 0x42 with coefficient 0x83 (f(x) = 0x83·x + 0x42 in
    /// GF(2^8)/0x11B: f(2) = 0x1D ^ 0x42 = 0x5F, f(3) = 0x9E ^ 0x42 = 0xDC) reconstruct 0x42,
    /// pinning the field and the wire format.
    func testHandComputedSharesReconstruct() throws {
        let two = try ShamirShare(serialized: [2, 2, 0x5F], secretByteCount: 1)
        let three = try ShamirShare(serialized: [3, 2, 0xDC], secretByteCount: 1)
        XCTAssertEqual(try ShamirSharing.reconstruct([three, two]).withUnsafeBytes { Array($0) }, [0x42])
    }

    /// Edge thresholds: 1-of-n shares are copies of the secret; 255-of-255 reconstructs.
    func testEdgeThresholds() throws {
        let secret = SecretBytes(randomCount: 32)
        let copies = try ShamirSharing.split(secret, threshold: 1, shareCount: 3)
        XCTAssertTrue(copies.allSatisfy { constantTimeEqual($0.value, secret) })
        XCTAssertTrue(constantTimeEqual(try ShamirSharing.reconstruct([copies[2]]), secret))
        let all = try ShamirSharing.split(secret, threshold: 255, shareCount: 255)
        XCTAssertEqual(all.last?.index, 255)
        XCTAssertTrue(constantTimeEqual(try ShamirSharing.reconstruct(all.shuffled()), secret))
    }

    /// Serialization round-trips (index, threshold, value) and reconstructs; wrong lengths, zero index
    /// and zero threshold are refused precisely.
    func testSerializationRoundTripAndRefusals() throws {
        let secret = SecretBytes(randomCount: 32)
        let shares = try ShamirSharing.split(secret, threshold: 2, shareCount: 3)
        let wire = shares.map { $0.serialized().withUnsafeBytes { Array($0) } }
        XCTAssertEqual(wire[1].count, 34)
        XCTAssertEqual(Array(wire[1][0..<2]), [2, 2])
        let parsed = try wire.map { try ShamirShare(serialized: $0, secretByteCount: 32) }
        XCTAssertEqual(parsed.map(\.index), [1, 2, 3])
        XCTAssertTrue(constantTimeEqual(parsed[2].value, shares[2].value))
        XCTAssertTrue(constantTimeEqual(try ShamirSharing.reconstruct([parsed[2], parsed[0]]), secret))

        for bad in [Array(wire[0].dropLast()), wire[0] + [0], []] {
            XCTAssertThrowsError(try ShamirShare(serialized: bad, secretByteCount: 32)) {
                XCTAssertEqual($0 as? SecureCryptoError, .invalidLength(what: "Shamir share", expected: "34", actual: bad.count))
            }
        }
        var zeroIndex = wire[0]
        zeroIndex[0] = 0
        XCTAssertThrowsError(try ShamirShare(serialized: zeroIndex, secretByteCount: 32)) {
            XCTAssertEqual($0 as? SecureCryptoError, .zeroShareIndex)
        }
        var zeroThreshold = wire[0]
        zeroThreshold[1] = 0
        XCTAssertThrowsError(try ShamirShare(serialized: zeroThreshold, secretByteCount: 32)) {
            XCTAssertEqual($0 as? SecureCryptoError, .invalidShare(reason: "threshold 0 (share index 1)"))
        }
        XCTAssertEqual("\(shares[0])", "ShamirShare(index: 1, threshold: 2, 32 bytes redacted)")
    }

    /// Duplicate indices, mixed thresholds, mixed lengths and impossible parameters are refused.
    func testInconsistentInputsAreRefused() throws {
        let shares = try ShamirSharing.split(SecretBytes(randomCount: 32), threshold: 2, shareCount: 3)
        XCTAssertThrowsError(try ShamirSharing.reconstruct([shares[1], shares[0], shares[1]])) {
            XCTAssertEqual($0 as? SecureCryptoError, .duplicateShareIndex(2))
        }
        let otherThreshold = try ShamirSharing.split(SecretBytes(randomCount: 32), threshold: 3, shareCount: 4)
        XCTAssertThrowsError(try ShamirSharing.reconstruct([shares[0], otherThreshold[3]])) {
            XCTAssertEqual($0 as? SecureCryptoError, .inconsistentShares(reason: "share 4 has threshold 3, share 1 has 2"))
        }
        let shorter = try ShamirSharing.split(SecretBytes(randomCount: 16), threshold: 2, shareCount: 3)
        XCTAssertThrowsError(try ShamirSharing.reconstruct([shares[0], shorter[1]])) {
            XCTAssertEqual($0 as? SecureCryptoError, .inconsistentShares(reason: "share 2 has 16 bytes, share 1 has 32"))
        }
        for (t, n) in [(0, 3), (4, 3), (2, 256), (-1, 5)] {
            XCTAssertThrowsError(try ShamirSharing.split(SecretBytes(randomCount: 32), threshold: t, shareCount: n)) {
                XCTAssertEqual($0 as? SecureCryptoError, .invalidThreshold(threshold: t, shareCount: n))
            }
        }
        XCTAssertThrowsError(try ShamirSharing.split(SecretBytes(randomCount: 0), threshold: 2, shareCount: 3)) {
            XCTAssertEqual($0 as? SecureCryptoError, .invalidLength(what: "Shamir secret", expected: ">= 1", actual: 0))
        }
        XCTAssertThrowsError(try ShamirShare(index: 0, threshold: 2, value: SecretBytes(randomCount: 32))) {
            XCTAssertEqual($0 as? SecureCryptoError, .zeroShareIndex)
        }
    }
}
