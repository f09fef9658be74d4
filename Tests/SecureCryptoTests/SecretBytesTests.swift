import XCTest
@testable import SecureCrypto

final class SecretBytesTests: XCTestCase {
    /// A copy holds exactly the caller's bytes, and the caller's array is left as it was.
    func testCopyingKeepsBytesAndLeavesSourceAlone() {
        let source: [UInt8] = [1, 2, 3, 250, 0, 7]
        let secret = SecretBytes(copying: source)
        XCTAssertEqual(secret.count, 6)
        XCTAssertEqual(secret.withUnsafeBytes { Array($0) }, source)
        XCTAssertEqual(source, [1, 2, 3, 250, 0, 7])
    }

    /// Random secrets are fresh, and zero-length secrets are usable.
    func testRandomAndEmpty() {
        let a = SecretBytes(randomCount: 32), b = SecretBytes(randomCount: 32)
        XCTAssertEqual(a.count, 32)
        XCTAssertFalse(constantTimeEqual(a, b))
        XCTAssertFalse(a.withUnsafeBytes { $0.allSatisfy { $0 == 0 } })
        let empty = SecretBytes(randomCount: 0)
        XCTAssertEqual(empty.count, 0)
        XCTAssertEqual(empty.withUnsafeBytes { $0.count }, 0)
        XCTAssertTrue(constantTimeEqual(empty, [UInt8]()))
    }

    /// Printing, debug-printing and dumping show the length and never a byte of the contents.
    func testNeverPrintsContents() {
        let secret = SecretBytes(copying: [UInt8](repeating: 0xAB, count: 16))
        XCTAssertEqual("\(secret)", "SecretBytes(16 bytes, redacted)")
        XCTAssertEqual(String(reflecting: secret), "SecretBytes(16 bytes, redacted)")
        var dumped = ""
        dump(secret, to: &dumped)
        XCTAssertFalse(dumped.contains("171"), dumped)  // 0xAB
        XCTAssertFalse(dumped.lowercased().contains("ab"), dumped)
        let mirror = Mirror(reflecting: secret)
        XCTAssertEqual(mirror.children.map { $0.label }, ["count"])
    }

    /// Equal contents compare equal across storage kinds; one flipped bit anywhere, or a different
    /// length, compares unequal.
    func testConstantTimeEqual() {
        let bytes = (0..<64).map { UInt8($0 * 3 & 0xFF) }
        let secret = SecretBytes(copying: bytes)
        XCTAssertTrue(constantTimeEqual(secret, bytes))
        XCTAssertTrue(constantTimeEqual(bytes, secret))
        XCTAssertTrue(constantTimeEqual(bytes[...], bytes))
        for position in [0, 31, 63] {
            var flipped = bytes
            flipped[position] ^= 0x01
            XCTAssertFalse(constantTimeEqual(secret, flipped), "bit flip at \(position) not noticed")
        }
        XCTAssertFalse(constantTimeEqual(secret, Array(bytes.dropLast())))
        XCTAssertFalse(constantTimeEqual(Array(bytes.dropLast()), secret))
        XCTAssertFalse(constantTimeEqual([UInt8](), bytes))
        XCTAssertFalse(constantTimeEqual(bytes, [UInt8]()))
    }

    /// An initializer that throws still yields its error (and the buffer is released, not leaked).
    func testThrowingInitializerPropagates() {
        struct Refused: Error {}
        XCTAssertThrowsError(try SecretBytes(count: 8) { _ in throw Refused() }) { XCTAssertTrue($0 is Refused) }
    }
}
