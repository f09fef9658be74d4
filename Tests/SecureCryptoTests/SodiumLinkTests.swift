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

final class SecureRandomTests: XCTestCase {
    /// Unit doubles lie strictly inside (0, 1), and their mean and variance match the uniform law
    /// (1/2 and 1/12) within five standard errors over 200,000 draws.
    func testUnitDoublesAreUniformOnTheOpenInterval() {
        let n = 200_000
        let values = SecureRandom.unitDoubles(count: n)
        XCTAssertTrue(values.allSatisfy { $0 > 0 && $0 < 1 })
        let mean = values.reduce(0, +) / Double(n)
        let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(n - 1)
        XCTAssertEqual(mean, 0.5, accuracy: 5 * (1.0 / 12).squareRoot() / Double(n).squareRoot())
        XCTAssertEqual(variance, 1.0 / 12, accuracy: 0.002)
    }

    /// Two draws of 32 bytes differ (a stuck or zero generator would fail), and every byte value turns
    /// up in 64 KiB of output.
    func testBytesAreFreshAndCoverEveryValue() {
        XCTAssertNotEqual(SecureRandom.bytes(32), SecureRandom.bytes(32))
        XCTAssertEqual(Set(SecureRandom.bytes(65_536)).count, 256)
        let draws = (0..<10_000).map { _ in SecureRandom.uniform(7) }
        XCTAssertEqual(Set(draws), Set(0..<7))
    }
}
