import XCTest
@testable import SecureCrypto

final class SodiumLinkTests: XCTestCase {
    /// Proves libsodium is installed and linked: the version must be 1.0.18 or newer.
    func testLibsodiumInitialisesAndReportsVersion() {
        let version = Sodium.initialize()
        let parts = version.split(separator: ".").compactMap { Int($0) }
        XCTAssertEqual(parts.count, 3, "unexpected libsodium version string \(version)")
        XCTAssertGreaterThanOrEqual(parts[0] * 10_000 + parts[1] * 100 + parts[2], 10_018)
    }
}
