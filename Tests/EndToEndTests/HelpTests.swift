import CommandLineParsing
import Foundation
import XCTest
@testable import conclave_client
@testable import conclave_coordinator

/// Every command's `--help` is what its golden file says, the help names exactly the options each command
/// accepts, and usage errors exit 64 naming the flag at fault.
///
/// The golden files are `Golden/help/<executable>[-<group>][-<command>].txt` beside this file, one per
/// command and one per command list. After changing help text on purpose, regenerate them and review the diff:
///
///     CONCLAVE_UPDATE_GOLDEN=1 swift test -c release -Xswiftc -enable-testing --disable-swift-testing --filter HelpTests
final class HelpTests: XCTestCase {
    static let goldenDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Golden/help")
    static var updating: Bool { ProcessInfo.processInfo.environment["CONCLAVE_UPDATE_GOLDEN"] == "1" }

    func testTopLevelHelpAndUnknownCommand() throws {
        for executable in [Executables.client, Executables.coordinator] {
            let help = try Executables.run(executable, ["--help"])
            XCTAssertEqual(help.status, 0, help.stderr)
            XCTAssertTrue(help.stdout.contains("usage:"), help.stdout)
            let unknown = try Executables.run(executable, ["no-such-command"])
            XCTAssertEqual(unknown.status, 64)
            XCTAssertTrue(unknown.stderr.contains("no-such-command"), unknown.stderr)
        }
        let misspelt = try Executables.run(Executables.client, ["privacy", "epsilno"])
        XCTAssertEqual(misspelt.status, 64)
        XCTAssertTrue(misspelt.stderr.contains("unknown command 'epsilno'; did you mean 'epsilon'?"), misspelt.stderr)
    }

    /// Walks both executables' command trees from their top-level help, so a new command without a golden
    /// file fails, and so does a golden file left behind by a removed command.
    func testEveryHelpMatchesItsGoldenFile() throws {
        var checked = Set<String>()
        for executable in [Executables.client, Executables.coordinator] {
            try checkHelp(executable, path: [], checked: &checked)
        }
        XCTAssertGreaterThanOrEqual(checked.count, 24, "the walk found too few commands: \(checked.sorted())")
        let files = Set(try FileManager.default.contentsOfDirectory(atPath: Self.goldenDirectory.path)
            .filter { $0.hasSuffix(".txt") })
        for stale in files.subtracting(checked).sorted() {
            if Self.updating {
                try FileManager.default.removeItem(at: Self.goldenDirectory.appendingPathComponent(stale))
            } else {
                XCTFail("\(stale) is the help of no command; remove it (or run with CONCLAVE_UPDATE_GOLDEN=1)")
            }
        }
    }

    /// Compares `executable path... --help` with its golden file, then does the same for each subcommand it lists.
    private func checkHelp(_ executable: URL, path: [String], checked: inout Set<String>) throws {
        let result = try Executables.run(executable, path + ["--help"])
        XCTAssertEqual(result.status, 0, "\(path): \(result.stderr)")
        let file = ([executable.lastPathComponent] + path).joined(separator: "-") + ".txt"
        checked.insert(file)
        let url = Self.goldenDirectory.appendingPathComponent(file)
        if Self.updating {
            try FileManager.default.createDirectory(at: Self.goldenDirectory, withIntermediateDirectories: true)
            try Data(result.stdout.utf8).write(to: url)
        } else if let golden = try? String(contentsOf: url, encoding: .utf8) {
            XCTAssertEqual(result.stdout, golden, "\(file) differs from the help printed; if the change is meant, "
                           + "regenerate with CONCLAVE_UPDATE_GOLDEN=1 and review the diff")
        } else {
            XCTFail("no golden file \(file); create it with CONCLAVE_UPDATE_GOLDEN=1")
        }
        for subcommand in Self.listedCommands(result.stdout) {
            try checkHelp(executable, path: path + [subcommand], checked: &checked)
        }
    }

    /// The names under `commands:` in a command list's help; none in a command's own help.
    static func listedCommands(_ help: String) -> [String] {
        let lines = help.split(separator: "\n", omittingEmptySubsequences: false)
        guard let start = lines.firstIndex(of: "commands:") else { return [] }
        return lines[(start + 1)...].prefix(while: { $0.hasPrefix("  ") })
            .compactMap { $0.split(separator: " ").first.map(String.init) }
    }

    /// `--version` of both executables prints the name and the release, exit 0, as the golden files
    /// `Golden/version/<executable>.txt` say (regenerated with CONCLAVE_UPDATE_GOLDEN=1 on a release).
    func testVersionMatchesItsGoldenFile() throws {
        let directory = Self.goldenDirectory.deletingLastPathComponent().appendingPathComponent("version")
        for executable in [Executables.client, Executables.coordinator] {
            let result = try Executables.run(executable, ["--version"])
            XCTAssertEqual(result.status, 0, result.stderr)
            XCTAssertEqual(result.stderr, "")
            XCTAssertTrue(result.stdout.hasPrefix(executable.lastPathComponent + " "), result.stdout)
            let url = directory.appendingPathComponent(executable.lastPathComponent + ".txt")
            if Self.updating {
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
                try Data(result.stdout.utf8).write(to: url)
            } else {
                XCTAssertEqual(result.stdout, try String(contentsOf: url, encoding: .utf8))
            }
            let extra = try Executables.run(executable, ["--version", "--json"])
            XCTAssertEqual(extra.status, 64, extra.stderr)
        }
    }

    /// The help is prose kept by hand: it must name every option the command accepts, and its usage lines and
    /// option rows must name no other.
    func testHelpDocumentsExactlyTheAcceptedOptions() {
        let trees = [("conclave-client", ClientCommands.all, ClientCommands.groups),
                     ("conclave-coordinator", CoordinatorCommands.all, CoordinatorCommands.groups)]
        var commands = 0
        for (executable, topLevel, groups) in trees {
            for command in topLevel + groups.flatMap(\.commands) {
                commands += 1
                XCTAssertFalse(command.optionNames.isEmpty, "\(executable) \(command.name) declares no options")
                XCTAssertEqual(command.helpProblems, [], "\(executable) \(command.name)")
            }
        }
        XCTAssertEqual(commands, 27)
    }

    /// A misspelt flag is named as unknown, with the nearest real one, even when it stands for a required flag.
    func testMisspeltFlagIsUnknownWithSuggestion() throws {
        let client = try Executables.run(Executables.client, ["tokenize", "--modle", "m.gguf", "--text", "hi"])
        XCTAssertEqual(client.status, 64)
        XCTAssertTrue(client.stderr.contains("conclave-client tokenize: unknown option '--modle'; did you mean '--model'?"),
                      client.stderr)
        XCTAssertFalse(client.stderr.contains("missing"), client.stderr)
        let coordinator = try Executables.run(Executables.coordinator, ["audit", "--stat", "/nonexistent"])
        XCTAssertEqual(coordinator.status, 64)
        XCTAssertTrue(coordinator.stderr.contains("unknown option '--stat'; did you mean '--state'?"), coordinator.stderr)
        let nothingNear = try Executables.run(Executables.client, ["privacy", "noise", "--zzz"])
        XCTAssertEqual(nothingNear.status, 64)
        XCTAssertTrue(nothingNear.stderr.contains("unknown option '--zzz'\n"), nothingNear.stderr)
    }

    /// `validate()` refuses a combination before any work, with exit 64.
    func testValidationFailureIsAUsageError() throws {
        let both = try Executables.run(Executables.client, ["train", "--model", "/nonexistent", "--data", "d", "--out", "o",
                                                            "--steps", "1", "--epochs", "1"])
        XCTAssertEqual(both.status, 64)
        XCTAssertTrue(both.stderr.contains("give either --steps or --epochs, not both"), both.stderr)
        let noDelta = try Executables.run(Executables.client, ["budget", "--state", "/nonexistent", "--set-epsilon", "1"])
        XCTAssertEqual(noDelta.status, 64)
        XCTAssertTrue(noDelta.stderr.contains("--set-epsilon needs --delta"), noDelta.stderr)
    }
}
