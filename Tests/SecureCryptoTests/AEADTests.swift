import XCTest
@testable import SecureCrypto

final class AEADTests: XCTestCase {
    private let key = SecretBytes(copying: (0x80..<0xA0).map { UInt8($0) })
    private let associatedData: [UInt8] = [0x50, 0x51, 0x52, 0x53, 0xC0, 0xC1, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7]
    private let sunscreen = Array(
        "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.".utf8)

    /// draft-irtf-cfrg-xchacha-03 §A.3.1: ciphertext and tag for the sunscreen message.
    func testMatchesXChaChaDraftVector() throws {
        let nonce = (0x40..<0x58).map { UInt8($0) }
        let sealed = try AEAD.seal(sunscreen, key: key, associatedData: associatedData, nonce: nonce)
        XCTAssertEqual(Array(sealed[0..<24]), nonce)
        XCTAssertEqual(Hex.encode(sealed[24...]),
                       "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff921f9664c97637da9768812f615c68b13b52e"
                           + "c0875924c1c7987947deafd8780acf49")
        let opened = try AEAD.open(sealed, key: key, associatedData: associatedData)
        XCTAssertTrue(constantTimeEqual(opened, sunscreen))
    }

    /// Random nonces: sealing twice differs, both open; an empty plaintext works too.
    func testRoundTripWithFreshNonces() throws {
        let first = try AEAD.seal(sunscreen, key: key, associatedData: associatedData)
        let second = try AEAD.seal(sunscreen, key: key, associatedData: associatedData)
        XCTAssertEqual(first.count, sunscreen.count + AEAD.overhead)
        XCTAssertNotEqual(Array(first[0..<24]), Array(second[0..<24]))
        XCTAssertTrue(constantTimeEqual(try AEAD.open(second, key: key, associatedData: associatedData), sunscreen))
        let empty = try AEAD.seal([UInt8](), key: key)
        XCTAssertEqual(empty.count, AEAD.overhead)
        XCTAssertEqual(try AEAD.open(empty, key: key).count, 0)
    }

    /// Any flipped bit (nonce, ciphertext, tag), other associated data, another key, or a truncation
    /// fails with `authenticationFailed`.
    func testTamperingIsDetected() throws {
        let sealed = try AEAD.seal(sunscreen, key: key, associatedData: associatedData)
        func expectFailure(_ candidate: [UInt8], key: SecretBytes? = nil, associatedData: [UInt8]? = nil,
                           _ label: String, line: UInt = #line) {
            XCTAssertThrowsError(try AEAD.open(candidate, key: key ?? self.key, associatedData: associatedData ?? self.associatedData),
                                 label, line: line) {
                XCTAssertEqual($0 as? SecureCryptoError, .authenticationFailed, label, line: line)
            }
        }
        for position in [0, 23, 24, 60, sealed.count - 17, sealed.count - 16, sealed.count - 1] {
            var changed = sealed
            changed[position] ^= 0x01
            expectFailure(changed, "bit flip at \(position)")
        }
        expectFailure(sealed, associatedData: [], "missing associated data")
        expectFailure(sealed, associatedData: associatedData + [0], "longer associated data")
        expectFailure(sealed, key: SecretBytes(randomCount: 32), "another key")
        expectFailure(Array(sealed.dropLast()), "truncated")
    }

    /// Short messages and wrong key lengths are refused with the field named.
    func testLengthErrors() throws {
        XCTAssertThrowsError(try AEAD.open([UInt8](repeating: 0, count: 39), key: key)) {
            XCTAssertEqual($0 as? SecureCryptoError, .invalidLength(what: "AEAD sealed message", expected: ">= 40", actual: 39))
        }
        XCTAssertThrowsError(try AEAD.seal([1], key: SecretBytes(randomCount: 16))) {
            XCTAssertEqual($0 as? SecureCryptoError, .invalidLength(what: "AEAD key", expected: "32", actual: 16))
        }
        XCTAssertThrowsError(try AEAD.open([UInt8](repeating: 0, count: 64), key: SecretBytes(randomCount: 33))) {
            XCTAssertEqual($0 as? SecureCryptoError, .invalidLength(what: "AEAD key", expected: "32", actual: 33))
        }
    }
}
