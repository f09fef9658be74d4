import XCTest
@testable import Transport

final class OpenSSLLinkTests: XCTestCase {
    /// Proves OpenSSL 3 is installed and linked (TLS 1.3 needs 1.1.1 or newer; we require 3).
    func testOpenSSLIsVersion3() {
        XCTAssertGreaterThanOrEqual(OpenSSLLibrary.versionNumber >> 28, 3, OpenSSLLibrary.versionString)
        XCTAssertTrue(OpenSSLLibrary.versionString.hasPrefix("OpenSSL 3"), OpenSSLLibrary.versionString)
    }
}
