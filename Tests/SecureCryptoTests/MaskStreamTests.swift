import XCTest
@testable import SecureCrypto

final class MaskStreamTests: XCTestCase {
    /// RFC 8439 §A.1 test vector #1: the all-zero key, zero nonce, block 0 keystream.
    func testZeroSeedMatchesRFC8439BlockVector() throws {
        let stream = try MaskStream(seed: SecretBytes(copying: [UInt8](repeating: 0, count: 32)))
        let words = stream.words(count: 16)
        let bytes = words.flatMap { word in (0..<4).map { UInt8(truncatingIfNeeded: word >> (8 * $0)) } }
        XCTAssertEqual(Hex.encode(bytes),
                       "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
                           + "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586")
    }

    /// Seed 00..1f: words computed independently with Python `cryptography`'s ChaCha20 (OpenSSL),
    /// at the start, mid-block after a random-access start, and far into the stream.
    func testKnownWordsFromIndependentImplementation() throws {
        let stream = try MaskStream(seed: SecretBytes(copying: (0..<32).map { UInt8($0) }))
        XCTAssertEqual(stream.words(count: 6), [0x7d2bfd39, 0x6a19c5d9, 0x7703bd8d, 0x494adcb8, 0x6fd8358a, 0xcc6adebc])
        XCTAssertEqual(stream.words(count: 1, startingAtWord: 17), [0xd1a6e6ad])
        XCTAssertEqual(stream.words(count: 6, startingAtWord: 1_000_003),
                       [0x265cc980, 0xbea6b391, 0x367efc3a, 0x16fe3aa5, 0x8447a1ef, 0xc6edc31b])
    }

    /// Filling in uneven chunks at any offsets reproduces one long fill; the same seed gives the same
    /// words, another seed different ones.
    func testChunkedFillsEqualOneFillAndSeedsDiffer() throws {
        let seed = SecretBytes(randomCount: 32)
        let stream = try MaskStream(seed: seed)
        let whole = stream.words(count: 5000)
        var pieces = [UInt32](repeating: 0, count: 5000)
        var start = 0
        for length in [1, 15, 16, 17, 3, 64, 1000, 2888, 996] {
            pieces.withUnsafeMutableBufferPointer {
                stream.fill(UnsafeMutableBufferPointer(rebasing: $0[start..<(start + length)]), startingAtWord: start)
            }
            start += length
        }
        XCTAssertEqual(start, 5000)
        XCTAssertEqual(pieces, whole)
        XCTAssertEqual(try MaskStream(seed: SecretBytes(copying: seed)).words(count: 5000), whole)
        XCTAssertNotEqual(try MaskStream(seed: SecretBytes(randomCount: 32)).words(count: 16), Array(whole[0..<16]))
    }

    /// Masking mod 2^32 cancels: x + PRG(s) - PRG(s) = x with wrapping arithmetic; and the words look
    /// uniform (mean of 1M words within 5 standard errors of 2^31).
    func testMaskCancelsAndWordsLookUniform() throws {
        let stream = try MaskStream(seed: SecretBytes(randomCount: 32))
        let values: [UInt32] = (0..<1000).map { UInt32($0 * 7919) }
        let mask = stream.words(count: 1000)
        let masked = zip(values, mask).map { $0 &+ $1 }
        XCTAssertNotEqual(masked, values)
        XCTAssertEqual(zip(masked, stream.words(count: 1000)).map { $0 &- $1 }, values)
        let many = stream.words(count: 1_000_000)
        let mean = many.reduce(0.0) { $0 + Double($1) } / Double(many.count)
        let standardError = (pow(2.0, 64) / 12).squareRoot() / Double(many.count).squareRoot()
        XCTAssertEqual(mean, pow(2.0, 31), accuracy: 5 * standardError)
    }

    /// 10 million words in well under 100 ms (best of three, ChaCha20 runs in libsodium's SIMD code).
    func testTenMillionWordsAreFast() throws {
        let stream = try MaskStream(seed: SecretBytes(randomCount: 32))
        var out = [UInt32](repeating: 0, count: 10_000_000)
        var best = Double.infinity
        for _ in 0..<3 {
            let start = DispatchTime.now().uptimeNanoseconds
            out.withUnsafeMutableBufferPointer { stream.fill($0) }
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
        }
        print("MaskStream: 10M words in \(best) ms (best of 3)")
        XCTAssertLessThan(best, 100)
        XCTAssertNotEqual(out[9_999_999], 0)
    }

    /// A wrong seed length is refused with the field named.
    func testSeedLengthIsChecked() {
        XCTAssertThrowsError(try MaskStream(seed: SecretBytes(randomCount: 31))) {
            XCTAssertEqual($0 as? SecureCryptoError, .invalidLength(what: "mask seed", expected: "32", actual: 31))
        }
    }
}
