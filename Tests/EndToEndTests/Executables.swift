import FederationDemo
import Foundation
import XCTest

/// Locates the built executables (beside the test bundle) and the shared fixtures, and runs commands.
enum Executables {
    /// The build products folder holding the test bundle and the executables.
    static var binDirectory: URL {
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        while url.pathComponents.count > 1 && !url.lastPathComponent.hasSuffix(".xctest") {
            url.deleteLastPathComponent()
        }
        return url.deletingLastPathComponent()
    }

    static var client: URL { binDirectory.appendingPathComponent("conclave-client") }
    static var coordinator: URL { binDirectory.appendingPathComponent("conclave-coordinator") }

    /// The outcome of one process run.
    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
        /// Standard output parsed as the one JSON object `--json` promises.
        func json() throws -> [String: Any] {
            let object = try JSONSerialization.jsonObject(with: Data(stdout.utf8))
            guard let dictionary = object as? [String: Any] else {
                throw NSError(domain: "Executables", code: 1, userInfo: [NSLocalizedDescriptionKey: "not a JSON object: \(stdout)"])
            }
            return dictionary
        }
    }

    /// Runs `executable` with `arguments` to completion, capturing both streams.
    static func run(_ executable: URL, _ arguments: [String], stdin: Data? = nil) throws -> Result {
        let run = try CommandRun.run(executable, arguments, standardInput: stdin)
        return Result(status: run.status, stdout: run.stdout, stderr: run.stderr)
    }
}
