import XCTest
@testable import SecureCrypto

final class HashTests: XCTestCase {
    /// RFC 7693 Appendix A: BLAKE2b-512("abc").
    func testBlake2b512OfAbcMatchesRFC7693() {
        XCTAssertEqual(
            Hex.encode(Hash.blake2b(Array("abc".utf8), outputLength: 64)),
            "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1"
                + "7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923")
    }

    /// Default length is 32 bytes; values computed independently with Python's hashlib.blake2b.
    func testBlake2b256AndKeyedDigestsMatchHashlib() throws {
        XCTAssertEqual(Hex.encode(Hash.blake2b([UInt8]())),
                       "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8")
        let fox = Array("The quick brown fox jumps over the lazy dog".utf8)
        let key32 = SecretBytes(copying: (0..<32).map { UInt8($0) })
        XCTAssertEqual(Hex.encode(try Hash.blake2b(fox, key: key32)),
                       "5d9461aff732d77d0cc98725ea29298c914fd5193b4c08ec9e3ad6b28c3e2faf")
        let long = (0..<1000).map { UInt8($0 % 251) }
        let key64 = SecretBytes(copying: (0..<64).map { UInt8($0) })
        XCTAssertEqual(Hex.encode(try Hash.blake2b(long, key: key64, outputLength: 64)),
                       "715377e0611515b904d259ce52fc8e5d2c50468b1680b2984786b6949cc571f4"
                           + "53d28cfb6969cb523ec84e06bf2a4465f3f37511db7792228d038942935750c1")
    }

    /// Feeding the same 1000 bytes in uneven pieces gives the one-shot digest (hashlib value).
    func testIncrementalEqualsOneShot() {
        let long = (0..<1000).map { UInt8($0 % 251) }
        let hasher = Blake2bHasher()
        var start = 0
        for piece in [0, 1, 127, 128, 129, 300, 315] {
            hasher.update(long[start..<(start + piece)])
            start += piece
        }
        XCTAssertEqual(start, 1000)
        XCTAssertEqual(Hex.encode(hasher.finalize()), "b372d0608f720c8c3dd41e9c8eecb10143b41abe520b616607e754bf79c08331")
        let secretHasher = Blake2bHasher()
        secretHasher.update(long)
        XCTAssertTrue(constantTimeEqual(secretHasher.finalizeSecret(), Hash.blake2b(long)))
    }

    /// Keys shorter than 16 or longer than 64 bytes are refused with the length named.
    func testBadKeyLengthsAreRefused() {
        for length in [0, 15, 65] {
            XCTAssertThrowsError(try Hash.blake2b([1, 2, 3], key: SecretBytes(randomCount: length))) {
                XCTAssertEqual($0 as? SecureCryptoError,
                               .invalidLength(what: "BLAKE2b key", expected: "16...64", actual: length))
            }
        }
    }

    /// Hex round-trips, accepts upper case, and names the first bad position.
    func testHexRoundTripAndErrors() throws {
        let bytes: [UInt8] = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff]
        XCTAssertEqual(Hex.encode(bytes), "00017f80feff")
        XCTAssertEqual(try Hex.decode("00017F80FEff"), bytes)
        XCTAssertEqual(try Hex.decode(""), [])
        XCTAssertThrowsError(try Hex.decode("abc")) {
            XCTAssertEqual($0 as? SecureCryptoError, .invalidHex(position: 3, reason: "odd number of digits (3)"))
        }
        XCTAssertThrowsError(try Hex.decode("00g1")) {
            XCTAssertEqual($0 as? SecureCryptoError, .invalidHex(position: 2, reason: "not a hex digit"))
        }
        XCTAssertThrowsError(try Hex.decode("000x")) {
            XCTAssertEqual($0 as? SecureCryptoError, .invalidHex(position: 3, reason: "not a hex digit"))
        }
    }
}
