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
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let input = Pipe()
        process.standardInput = input
        try process.run()
        if let stdin { input.fileHandleForWriting.write(stdin) }
        try input.fileHandleForWriting.close()
        // Read both pipes concurrently so a chatty process cannot block on a full pipe.
        nonisolated(unsafe) var errData = Data()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async {
            errData = err.fileHandleForReading.readDataToEndOfFile()
            group.leave()
        }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        return Result(status: process.terminationStatus,
                      stdout: String(decoding: outData, as: UTF8.self),
                      stderr: String(decoding: errData, as: UTF8.self))
    }
}
