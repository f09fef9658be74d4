#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import SystemIO
import XCTest

/// `--events`: one JSON object a line, appended, parseable whatever the text in it; a closed standard
/// output loses lines, never the process; an unwritable path is refused naming the flag.
final class EventLogTests: XCTestCase {
    func testLinesAreJSONObjectsAppendedAcrossOpenings() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("events-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("events.jsonl")
        try EventLog(destination: file.path).emit("declined", round: 7, ["reason": .string("quote \" slash \\ newline \n tab \t bell \u{7} é"),
                                                                      "cohort": .strings(["a", "b"]), "epsilon": .double(1.5),
                                                                      "secure": .bool(true), "examples": .int(16)])
        try EventLog(destination: file.path).emit("aborted")
        let lines = try String(contentsOf: file, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        XCTAssertEqual(lines.count, 3, "two lines, each ending in a newline")
        let first = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
        XCTAssertEqual(first["event"] as? String, "declined")
        XCTAssertEqual(first["round"] as? Int, 7)
        XCTAssertEqual(first["reason"] as? String, "quote \" slash \\ newline \n tab \t bell \u{7} é")
        XCTAssertEqual(first["cohort"] as? [String], ["a", "b"])
        XCTAssertEqual(first["epsilon"] as? Double, 1.5)
        XCTAssertEqual(first["secure"] as? Bool, true)
        XCTAssertEqual(first["examples"] as? Int, 16)
        XCTAssertNotNil((first["time"] as? String).flatMap { ISO8601DateFormatter.withFractionalSeconds.date(from: $0) })
        let second = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(lines[1].utf8)) as? [String: Any])
        XCTAssertEqual(second["event"] as? String, "aborted")
        XCTAssertNil(second["round"])
        let mode = try FileManager.default.attributesOfItem(atPath: file.path)[.posixPermissions] as? Int
        XCTAssertEqual(mode, 0o600)

        XCTAssertThrowsError(try EventLog(destination: directory.appendingPathComponent("missing/e.jsonl").path)) { error in
            XCTAssertTrue("\(error)".contains("--events") && "\(error)".contains("'-' for standard output"), "\(error)")
        }
    }

    func testEventsToAClosedStandardOutputAreDropped() throws {
        let previous = signal(SIGPIPE, SIG_IGN)
        defer { signal(SIGPIPE, previous) }
        var ends: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&ends), 0)
        let savedOutput = dup(STDOUT_FILENO)
        close(ends[0])
        dup2(ends[1], STDOUT_FILENO)
        close(ends[1])
        let probe = write(STDOUT_FILENO, "x", 1)
        let probeErrno = errno
        let events = try EventLog(destination: "-")
        for round in 1...3 { events.emit("committed", round: UInt64(round)) }
        dup2(savedOutput, STDOUT_FILENO)
        close(savedOutput)
        XCTAssertEqual(probe, -1, "the descriptor really is a closed pipe")
        XCTAssertEqual(probeErrno, EPIPE)
    }
}

private extension ISO8601DateFormatter {
    static var withFractionalSeconds: ISO8601DateFormatter {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter
    }
}
