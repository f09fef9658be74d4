import XCTest
@testable import SecureCrypto

final class PrimeFieldTests: XCTestCase {
    private let p: UInt64 = (1 << 61) - 1

    /// Reduction at the boundary: p - 1 is the largest element, (p-1) + 1 = 0, 0 - 1 = p - 1,
    /// (p-1)^2 = 1, (p-1)(p-2) = 2, and (2^60 + 5)^2 = 0x80000000000001E (computed with Python's
    /// exact integers: 2^120 = 2^(61+59) ≡ 2^59, plus 10·2^60 + 25).
    func testReductionAtTheBoundary() {
        XCTAssertEqual(PrimeField.modulus, p)
        XCTAssertEqual(PrimeField.add(p - 1, 1), 0)
        XCTAssertEqual(PrimeField.add(p - 1, p - 1), p - 2)
        XCTAssertEqual(PrimeField.subtract(0, 1), p - 1)
        XCTAssertEqual(PrimeField.subtract(5, 5), 0)
        XCTAssertEqual(PrimeField.multiply(p - 1, p - 1), 1)
        XCTAssertEqual(PrimeField.multiply(p - 1, p - 2), 2)
        XCTAssertEqual(PrimeField.multiply(1 << 60, 2), 1)
        XCTAssertEqual(PrimeField.multiply((1 << 60) + 5, (1 << 60) + 5), 0x80000000000001E)
        XCTAssertEqual(PrimeField.multiply(0, p - 1), 0)
    }

    /// Multiplication against an independent route: 128-bit remainder by `dividingFullWidth`.
    func testMultiplyMatchesFullWidthRemainder() {
        for _ in 0..<20_000 {
            let a = SecureRandom.uint64() % p, b = SecureRandom.uint64() % p
            let (high, low) = a.multipliedFullWidth(by: b)
            XCTAssertEqual(PrimeField.multiply(a, b), p.dividingFullWidth((high, low)).remainder, "\(a) · \(b)")
        }
    }

    /// Inverses: 2^-1 = 2^60, 3^-1 = 0x1555555555555555, 12345678901234567^-1 = 0x164A20E339E48A32
    /// (Python's pow(a, -1, p)), (p-1)^-1 = p-1, and a · a^-1 = 1 for random a.
    func testInverse() {
        XCTAssertEqual(PrimeField.inverse(2), 1 << 60)
        XCTAssertEqual(PrimeField.inverse(3), 0x1555555555555555)
        XCTAssertEqual(PrimeField.inverse(12345678901234567), 0x164A20E339E48A32)
        XCTAssertEqual(PrimeField.inverse(p - 1), p - 1)
        XCTAssertEqual(PrimeField.inverse(1), 1)
        for _ in 0..<200 {
            let a = SecureRandom.uint64() % (p - 1) + 1
            XCTAssertEqual(PrimeField.multiply(a, PrimeField.inverse(a)), 1, "a = \(a)")
        }
    }

    /// The "not below p" flag: p - 1 and 0 are elements; p, 2^61, 2^63 + p and 2^64 - 1 are not.
    func testNotReducedFlag() {
        for x: UInt64 in [0, 1, p - 1, 1 << 60] { XCTAssertEqual(PrimeField.notReducedFlag(x), 0, "\(x)") }
        for x: UInt64 in [p, p + 1, 1 << 61, (1 << 63) + p, (1 << 63) + 1, UInt64.max] {
            XCTAssertNotEqual(PrimeField.notReducedFlag(x), 0, "\(x)")
        }
    }
}

final class ShamirSharingTests: XCTestCase {
    private let p: UInt64 = (1 << 61) - 1

    private func element(_ share: ShamirShare, _ k: Int) -> UInt64 {
        share.value.withUnsafeBytes { PrimeField.load($0, k) }
    }

    private func share(index: UInt16, threshold: UInt16, secretByteCount: Int, elements: [UInt64]) throws -> ShamirShare {
        let value = SecretBytes(count: 8 * elements.count) { out in
            for (k, x) in elements.enumerated() { PrimeField.store(x, out, k) }
        }
        return try ShamirShare(index: index, threshold: threshold, secretByteCount: secretByteCount, value: value)
    }

    /// For every n in 1...7 and every t in 1...n, every subset of t or more shares (in both orders)
    /// reconstructs the 32-byte secret; shares carry indices 1...n, the threshold, 5 elements below p.
    func testEveryThresholdSubsetReconstructsForSmallN() throws {
        var checked = 0
        for n in 1...7 {
            for t in 1...n {
                let secret = SecretBytes(randomCount: 32)
                let shares = try ShamirSharing.split(secret, threshold: t, shareCount: n)
                XCTAssertEqual(shares.map(\.index), (1...n).map(UInt16.init))
                XCTAssertTrue(shares.allSatisfy { Int($0.threshold) == t && $0.value.count == 40 && $0.secretByteCount == 32 })
                XCTAssertTrue(shares.allSatisfy { s in (0..<5).allSatisfy { element(s, $0) < p } })
                for mask in 1..<(1 << n) where mask.nonzeroBitCount >= t {
                    let subset = shares.indices.filter { mask >> $0 & 1 == 1 }.map { shares[$0] }
                    XCTAssertTrue(constantTimeEqual(try ShamirSharing.reconstruct(subset), secret), "n \(n) t \(t) mask \(mask)")
                    XCTAssertTrue(constantTimeEqual(try ShamirSharing.reconstruct(subset.reversed()), secret), "reversed \(mask)")
                    checked += 1
                }
            }
        }
        // Σ_n Σ_t Σ_{k>=t} C(n, k) = Σ_n Σ_k k·C(n, k) = Σ_n n·2^(n-1).
        XCTAssertEqual(checked, (1...7).reduce(0) { $0 + $1 << ($1 - 1) })
    }

    /// Secret lengths that are not multiples of 7 (1, 6, 7, 8, 13, 14, 15, 33, 100 bytes) round-trip.
    func testOddSecretLengthsRoundTrip() throws {
        for length in [1, 6, 7, 8, 13, 14, 15, 33, 100] {
            let secret = SecretBytes(randomCount: length)
            let shares = try ShamirSharing.split(secret, threshold: 2, shareCount: 3)
            XCTAssertEqual(shares[0].value.count, 8 * ((length + 6) / 7))
            XCTAssertEqual(ShamirShare.serializedByteCount(secretByteCount: length), 4 + 8 * ((length + 6) / 7))
            XCTAssertTrue(constantTimeEqual(try ShamirSharing.reconstruct([shares[2], shares[0]]), secret), "\(length) bytes")
        }
    }

    /// Below the threshold: reconstruct refuses with the counts.
    func testFewerThanThresholdSharesAreRefused() throws {
        let shares = try ShamirSharing.split(SecretBytes(randomCount: 32), threshold: 3, shareCount: 5)
        for pair in [[0, 1], [1, 4], [2, 3]] {
            XCTAssertThrowsError(try ShamirSharing.reconstruct(pair.map { shares[$0] })) {
                XCTAssertEqual($0 as? SecureCryptoError, .notEnoughShares(have: 2, need: 3))
            }
        }
        XCTAssertThrowsError(try ShamirSharing.reconstruct([])) {
            XCTAssertEqual($0 as? SecureCryptoError, .notEnoughShares(have: 0, need: 1))
        }
    }

    /// t - 1 shares are consistent with every secret: for a 1-chunk secret dealt 3-of-5, shares 1 and
    /// 2 plus the point (0, s') for any candidate s' determine a degree-2 polynomial, whose value at 3
    /// is s' - 3·y1 + 3·y2 (Lagrange basis at x = 3 through 0, 1, 2: 1, -3, 3). Reconstruction from
    /// shares 1, 2 and that third point gives s', for random candidates, 0 and 2^56 - 1.
    func testThresholdMinusOneSharesAreConsistentWithEverySecret() throws {
        let secret = SecretBytes(randomCount: 7)
        let shares = try ShamirSharing.split(secret, threshold: 3, shareCount: 5)
        let y1 = element(shares[0], 0), y2 = element(shares[1], 0)
        var candidates: [UInt64] = [0, (1 << 56) - 1]
        for _ in 0..<100 { candidates.append(SecureRandom.uint64() >> 8) }
        for candidate in candidates {
            let y3 = PrimeField.add(PrimeField.subtract(candidate, PrimeField.multiply(3, y1)), PrimeField.multiply(3, y2))
            let third = try share(index: 3, threshold: 3, secretByteCount: 7, elements: [y3])
            let bytes = try ShamirSharing.reconstruct([shares[0], shares[1], third]).withUnsafeBytes { Array($0) }
            XCTAssertEqual(bytes, (0..<7).map { UInt8(truncatingIfNeeded: candidate >> (8 * UInt64($0))) }, "candidate \(candidate)")
        }
    }

    /// A single share of a 2-of-2 split of the all-zero secret is a_1, uniform in GF(p): over 3,200
    /// splits its top 4 bits (x >> 57, 16 buckets of 2^57 elements; the last is one short) pass a
    /// chi-square test at the 0.999 quantile for 15 degrees of freedom (37.70).
    func testSingleShareLooksUniform() throws {
        let zero = SecretBytes(copying: [UInt8](repeating: 0, count: 7))
        var buckets = [Int](repeating: 0, count: 16)
        let samples = 3200
        for _ in 0..<samples {
            let shares = try ShamirSharing.split(zero, threshold: 2, shareCount: 2)
            buckets[Int(element(shares[0], 0) >> 57)] += 1
        }
        let expected = Double(samples) / 16
        let chiSquare = buckets.reduce(0.0) { $0 + (Double($1) - expected) * (Double($1) - expected) / expected }
        XCTAssertLessThan(chiSquare, 37.70, "buckets \(buckets)")
    }

    /// Hand-computed 2-of-n shares of the 10-byte secret 01 02 ... 0A (chunks 0x07060504030201 and
    /// 0x0A0908) with coefficients p - 2 and 2^60 + 7, as Python's exact integers give them:
    /// f(2) = (0x070605040301FD, 0x0A0917), f(5) = (0x070605040301F7, 0x10000000000A092D); they
    /// reconstruct the secret, pinning the field, the chunking and the wire format.
    func testHandComputedSharesReconstruct() throws {
        func wire(_ index: UInt8, _ hex: String) -> [UInt8] {
            var bytes: [UInt8] = [0, index, 0, 2]
            var digits = hex[...]
            while !digits.isEmpty {
                bytes.append(UInt8(digits.prefix(2), radix: 16) ?? 0)
                digits = digits.dropFirst(2)
            }
            return bytes
        }
        let two = try ShamirShare(serialized: wire(2, "fd01030405060700" + "17090a0000000000"), secretByteCount: 10)
        let five = try ShamirShare(serialized: wire(5, "f701030405060700" + "2d090a0000000010"), secretByteCount: 10)
        XCTAssertEqual(try ShamirSharing.reconstruct([five, two]).withUnsafeBytes { Array($0) }, Array(1...10))
    }

    /// Large neighbourhoods: n = 300 (t = 201) and n = 1000 (t = 667) round-trip from a random
    /// t-subset and from all shares; the last index is n, serialized as two big-endian bytes.
    func testLargeShareCountsRoundTrip() throws {
        for (n, t) in [(300, 201), (1000, 667)] {
            let secret = SecretBytes(randomCount: 32)
            let shares = try ShamirSharing.split(secret, threshold: t, shareCount: n)
            XCTAssertEqual(shares.last?.index, UInt16(n))
            let wire = try XCTUnwrap(shares.last).serialized().withUnsafeBytes { Array($0) }
            XCTAssertEqual(Array(wire[0..<4]), [UInt8(n >> 8), UInt8(n & 0xFF), UInt8(t >> 8), UInt8(t & 0xFF)])
            let subset = Array(shares.shuffled().prefix(t))
            XCTAssertTrue(constantTimeEqual(try ShamirSharing.reconstruct(subset), secret), "n \(n) t-subset")
            XCTAssertTrue(constantTimeEqual(try ShamirSharing.reconstruct(shares), secret), "n \(n) all")
            XCTAssertThrowsError(try ShamirSharing.reconstruct(Array(subset.dropLast()))) {
                XCTAssertEqual($0 as? SecureCryptoError, .notEnoughShares(have: t - 1, need: t))
            }
        }
    }

    /// Edge thresholds: 1-of-n shares all hold the secret's chunks; 65535 shares may be dealt (t = 2).
    func testEdgeThresholds() throws {
        let secret = SecretBytes(randomCount: 32)
        let copies = try ShamirSharing.split(secret, threshold: 1, shareCount: 3)
        XCTAssertTrue(copies.allSatisfy { constantTimeEqual($0.value, copies[0].value) })
        XCTAssertTrue(constantTimeEqual(try ShamirSharing.reconstruct([copies[2]]), secret))
        let most = try ShamirSharing.split(secret, threshold: 2, shareCount: 65535)
        XCTAssertEqual(most.last?.index, 65535)
        XCTAssertTrue(constantTimeEqual(try ShamirSharing.reconstruct([most[65534], most[0]]), secret))
    }

    /// Serialization round-trips (index, threshold, value: 44 bytes for a 32-byte secret) and
    /// reconstructs; wrong lengths, zero index, zero threshold and elements >= p are refused precisely.
    func testSerializationRoundTripAndRefusals() throws {
        let secret = SecretBytes(randomCount: 32)
        let shares = try ShamirSharing.split(secret, threshold: 2, shareCount: 3)
        let wire = shares.map { $0.serialized().withUnsafeBytes { Array($0) } }
        XCTAssertEqual(ShamirShare.serializedByteCount(secretByteCount: 32), 44)
        XCTAssertEqual(wire[1].count, 44)
        XCTAssertEqual(Array(wire[1][0..<4]), [0, 2, 0, 2])
        let parsed = try wire.map { try ShamirShare(serialized: $0, secretByteCount: 32) }
        XCTAssertEqual(parsed.map(\.index), [1, 2, 3])
        XCTAssertTrue(constantTimeEqual(parsed[2].value, shares[2].value))
        XCTAssertTrue(constantTimeEqual(try ShamirSharing.reconstruct([parsed[2], parsed[0]]), secret))

        for bad in [Array(wire[0].dropLast()), wire[0] + [0], []] {
            XCTAssertThrowsError(try ShamirShare(serialized: bad, secretByteCount: 32)) {
                XCTAssertEqual($0 as? SecureCryptoError, .invalidLength(what: "Shamir share", expected: "44", actual: bad.count))
            }
        }
        var zeroIndex = wire[0]
        zeroIndex[1] = 0
        XCTAssertThrowsError(try ShamirShare(serialized: zeroIndex, secretByteCount: 32)) {
            XCTAssertEqual($0 as? SecureCryptoError, .zeroShareIndex)
        }
        var zeroThreshold = wire[0]
        zeroThreshold[3] = 0
        XCTAssertThrowsError(try ShamirShare(serialized: zeroThreshold, secretByteCount: 32)) {
            XCTAssertEqual($0 as? SecureCryptoError, .invalidShare(reason: "threshold 0 (share index 1)"))
        }
        // Element 3 set to p (little-endian ff..ff 1f), then to 2^64 - 1.
        for top: UInt8 in [0x1F, 0xFF] {
            var outOfField = wire[2]
            for k in 0..<7 { outOfField[4 + 24 + k] = 0xFF }
            outOfField[4 + 24 + 7] = top
            XCTAssertThrowsError(try ShamirShare(serialized: outOfField, secretByteCount: 32)) {
                XCTAssertEqual($0 as? SecureCryptoError,
                               .invalidShare(reason: "share 3 holds a field element not below p = 2^61 - 1"))
            }
        }
        var largestElement = wire[2]
        for k in 0..<7 { largestElement[4 + 24 + k] = 0xFF }
        largestElement[4 + 24 + 7] = 0x1F
        largestElement[4 + 24] = 0xFE  // p - 1 is accepted
        XCTAssertNoThrow(try ShamirShare(serialized: largestElement, secretByteCount: 32))
        XCTAssertEqual("\(shares[0])", "ShamirShare(index: 1, threshold: 2, 32-byte secret, 40 bytes redacted)")
    }

    /// Duplicate indices, mixed thresholds, mixed lengths, shares of different secrets that
    /// interpolate out of range, and impossible parameters are refused.
    func testInconsistentInputsAreRefused() throws {
        let shares = try ShamirSharing.split(SecretBytes(randomCount: 32), threshold: 2, shareCount: 3)
        XCTAssertThrowsError(try ShamirSharing.reconstruct([shares[1], shares[0], shares[1]])) {
            XCTAssertEqual($0 as? SecureCryptoError, .duplicateShareIndex(2))
        }
        let otherThreshold = try ShamirSharing.split(SecretBytes(randomCount: 32), threshold: 3, shareCount: 4)
        XCTAssertThrowsError(try ShamirSharing.reconstruct([shares[0], otherThreshold[3]])) {
            XCTAssertEqual($0 as? SecureCryptoError, .inconsistentShares(reason: "share 4 has threshold 3, share 1 has 2"))
        }
        let shorter = try ShamirSharing.split(SecretBytes(randomCount: 31), threshold: 2, shareCount: 3)
        XCTAssertThrowsError(try ShamirSharing.reconstruct([shares[0], shorter[1]])) {
            XCTAssertEqual($0 as? SecureCryptoError,
                           .inconsistentShares(reason: "share 2 is of a 31-byte secret, share 1 of a 32-byte one"))
        }
        // The points (1, 0) and (2, 1) lie on f(x) = x - 1, so f(0) = p - 1: no 7-byte chunk.
        let one = try share(index: 1, threshold: 2, secretByteCount: 7, elements: [0])
        let two = try share(index: 2, threshold: 2, secretByteCount: 7, elements: [1])
        XCTAssertThrowsError(try ShamirSharing.reconstruct([one, two])) {
            XCTAssertEqual($0 as? SecureCryptoError, .inconsistentShares(
                reason: "the interpolated secret does not fit 7 bytes (shares of different secrets, or altered)"))
        }
        for (t, n) in [(0, 3), (4, 3), (2, 65536), (-1, 5)] {
            XCTAssertThrowsError(try ShamirSharing.split(SecretBytes(randomCount: 32), threshold: t, shareCount: n)) {
                XCTAssertEqual($0 as? SecureCryptoError, .invalidThreshold(threshold: t, shareCount: n))
            }
        }
        XCTAssertThrowsError(try ShamirSharing.split(SecretBytes(randomCount: 0), threshold: 2, shareCount: 3)) {
            XCTAssertEqual($0 as? SecureCryptoError, .invalidLength(what: "Shamir secret", expected: ">= 1", actual: 0))
        }
        XCTAssertThrowsError(try ShamirShare(index: 0, threshold: 2, secretByteCount: 32, value: SecretBytes(randomCount: 40))) {
            XCTAssertEqual($0 as? SecureCryptoError, .zeroShareIndex)
        }
        XCTAssertThrowsError(try ShamirShare(index: 1, threshold: 2, secretByteCount: 32, value: SecretBytes(randomCount: 32))) {
            XCTAssertEqual($0 as? SecureCryptoError, .invalidLength(what: "Shamir share 1 value", expected: "40", actual: 32))
        }
    }
}
