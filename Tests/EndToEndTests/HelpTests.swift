import XCTest

/// Every command answers `--help` with exit code 0 and unknown commands fail with a usage error.
final class HelpTests: XCTestCase {
    func testTopLevelHelpAndUnknownCommand() throws {
        for executable in [Executables.client, Executables.coordinator] {
            let help = try Executables.run(executable, ["--help"])
            XCTAssertEqual(help.status, 0, help.stderr)
            XCTAssertTrue(help.stdout.contains("usage:"), help.stdout)
            let unknown = try Executables.run(executable, ["no-such-command"])
            XCTAssertEqual(unknown.status, 64)
            XCTAssertTrue(unknown.stderr.contains("no-such-command"), unknown.stderr)
        }
    }
}
