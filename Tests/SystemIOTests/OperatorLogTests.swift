import Foundation
import SystemIO
import TestSupport
import XCTest

/// Issue 14, item 6: a peer's text in the operator's log (a decline or abort reason) cannot forge lines.
/// Failed before: the message below wrote two lines into the file, the second a convincing fake.
final class OperatorLogTests: XCTestCase {
    func testControlCharactersInAMessageAreEscapedOntoOneLine() throws {
        let directory = try Fixtures.temporaryDirectory("operator-log")
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("serve.log")
        let log = OperatorLog(url: file)
        let reason = "budget\n2026-12-05T00:00:00Z round 9 committed: 5 participants\r\u{1B}[2K\u{202E}txet\u{85}"
        log.write("round 3: client 'clinic-1' declined: \(reason)")
        log.write("round 3: clinic Zürich — naïve, ok")
        let lines = try String(contentsOf: file, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        XCTAssertEqual(lines.count, 3, "one line per message, then the final newline: \(lines)")
        XCTAssertTrue(lines[0].hasSuffix(#"declined: budget\n2026-12-05T00:00:00Z round 9 committed: 5 participants\r\u{1B}[2K\u{202E}txet\u{0085}"#),
                      String(lines[0]))
        // Printable text, non-ASCII included, is kept as it is.
        XCTAssertTrue(lines[1].hasSuffix("round 3: clinic Zürich — naïve, ok"), String(lines[1]))
        XCTAssertEqual(PeerText.escapingControls("tab\there"), #"tab\there"#)
        XCTAssertEqual(PeerText.escapingControls("plain"), "plain")
    }
}
