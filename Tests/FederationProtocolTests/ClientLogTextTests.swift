import FederationProtocol
import XCTest

final class ClientLogTextTests: XCTestCase {
    /// A decline's words may quote a dataset: control characters cannot start a forged log line, and
    /// ordinary text (ε, paths) is kept as it is.
    func testControlCharactersAreEscapedAndTextKept() {
        XCTAssertEqual(ClientLogText.escaped("data: a.jsonl:3: bad\n2026-12-05T00:00:00Z round 9 committed"),
                       "data: a.jsonl:3: bad\\n2026-12-05T00:00:00Z round 9 committed")
        XCTAssertEqual(ClientLogText.escaped("ε 8.000 of \u{1B}[31mred\r"), "ε 8.000 of \\u{1B}[31mred\\r")
        XCTAssertEqual(ClientLogText.escaped("privacy budget: ε 9.1 > 8 (/srv/me/privacy-ledger.json)"),
                       "privacy budget: ε 9.1 > 8 (/srv/me/privacy-ledger.json)")
    }
}
