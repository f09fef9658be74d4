#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import SystemIO
import XCTest

/// A log collector that goes away must not take the process with it (issue 15): with standard error
/// a pipe whose reader has closed, writes fail with EPIPE and are dropped; the log file still gets
/// every line.
final class ClosedPipeTests: XCTestCase {
    func testWritesToAClosedStandardErrorAreDroppedAndTheFileKeepsTheLines() throws {
        // The executables ignore SIGPIPE (Transport does it for TLS); without that EPIPE would be a signal.
        let previous = signal(SIGPIPE, SIG_IGN)
        defer { signal(SIGPIPE, previous) }
        var ends: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&ends), 0)
        let savedError = dup(STDERR_FILENO)
        XCTAssertGreaterThanOrEqual(savedError, 0)
        close(ends[0])
        dup2(ends[1], STDERR_FILENO)
        close(ends[1])
        // Positive control: the descriptor really is broken.
        let probe = write(STDERR_FILENO, "x", 1)
        let probeErrno = errno
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("closed-pipe-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let logFile = directory.appendingPathComponent("serve.log")
        let log = OperatorLog(url: logFile)
        for index in 0..<3 { log.write("line \(index)") }
        StandardError.write("progress after the reader left\n")
        dup2(savedError, STDERR_FILENO)
        close(savedError)
        XCTAssertEqual(probe, -1)
        XCTAssertEqual(probeErrno, EPIPE)
        let text = try String(contentsOf: logFile, encoding: .utf8)
        XCTAssertEqual(text.split(separator: "\n").count, 3, text)
        XCTAssertTrue(text.contains("line 2"), text)
        let mode = try FileManager.default.attributesOfItem(atPath: logFile.path)[.posixPermissions] as? Int
        XCTAssertEqual(mode, 0o600)
    }
}
