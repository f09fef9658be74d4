import Foundation
import SystemIO
import TestSupport
import XCTest

/// `fileContents(atPath:)` and `fileData(contentsOf:)`: Foundation's reads without their leak on an
/// empty file (swift-foundation 6.3.1 on Linux keeps 4,096 bytes per empty file read; found by fuzzing).
final class FileContentsTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws { directory = try Fixtures.temporaryDirectory() }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    /// The heap bytes that `reads` calls of `read` leave in use.
    static func growth(reads: Int, _ read: () throws -> Void) throws -> Int {
        try read()  // first-use caches are not a leak
        let before = try XCTUnwrap(HeapUsage.bytesInUse())
        for _ in 0..<reads { try read() }
        return try XCTUnwrap(HeapUsage.bytesInUse()) - before
    }

    func testEmptyFileReadsLeaveNoMemoryBehind() throws {
        let empty = directory.appendingPathComponent("empty.json")
        try Data().write(to: empty)
        // 10,000 reads: a 4 KiB leak each would keep 40 MiB.
        let viaPath = try Self.growth(reads: 10_000) { XCTAssertEqual(fileContents(atPath: empty.path), Data()) }
        let viaURL = try Self.growth(reads: 10_000) { XCTAssertEqual(try fileData(contentsOf: empty), Data()) }
        XCTAssertLessThan(viaPath, 1 << 20, "fileContents(atPath:) kept \(viaPath) bytes over 10,000 reads of an empty file")
        XCTAssertLessThan(viaURL, 1 << 20, "fileData(contentsOf:) kept \(viaURL) bytes over 10,000 reads of an empty file")
    }

    #if os(Linux)
    /// The positive control: Foundation's own read of the same file leaks, and the measurement sees it.
    /// If this fails, swift-foundation has fixed the leak and `FileContents.swift` can go.
    func testFoundationLeaksOnEmptyFilesAndTheMeasurementSeesIt() throws {
        let empty = directory.appendingPathComponent("empty.json")
        try Data().write(to: empty)
        let viaPath = try Self.growth(reads: 10_000) { _ = FileManager.default.contents(atPath: empty.path) }
        let viaURL = try Self.growth(reads: 10_000) { _ = try Data(contentsOf: empty) }
        XCTAssertGreaterThanOrEqual(viaPath, 10_000 * 4_096, "10,000 reads by FileManager.contents(atPath:) kept \(viaPath) bytes")
        XCTAssertGreaterThanOrEqual(viaURL, 10_000 * 4_096, "10,000 reads by Data(contentsOf:) kept \(viaURL) bytes")
    }

    /// A file that reports size 0 but has bytes (/proc) still reads whole, as Foundation reads it.
    func testFilesThatReportNoSizeReadWhole() throws {
        let status = try XCTUnwrap(fileContents(atPath: "/proc/self/status"))
        XCTAssertTrue(String(decoding: status, as: UTF8.self).contains("VmRSS:"))
        XCTAssertTrue(String(decoding: try fileData(contentsOf: URL(fileURLWithPath: "/proc/self/status")), as: UTF8.self)
            .contains("VmRSS:"))
    }
    #endif

    func testOtherFilesAndFailuresAreFoundations() throws {
        let file = directory.appendingPathComponent("a.json")
        try Data("{\"a\": 1}".utf8).write(to: file)
        XCTAssertEqual(fileContents(atPath: file.path), Data("{\"a\": 1}".utf8))
        XCTAssertEqual(try fileData(contentsOf: file), Data("{\"a\": 1}".utf8))
        let missing = directory.appendingPathComponent("missing.json")
        XCTAssertNil(fileContents(atPath: missing.path))
        XCTAssertNil(fileContents(atPath: directory.path))
        let ours = Self.thrown { _ = try fileData(contentsOf: missing) } as NSError?
        let foundations = Self.thrown { _ = try Data(contentsOf: missing) } as NSError?
        XCTAssertNotNil(ours)
        XCTAssertEqual(ours?.domain, foundations?.domain)
        XCTAssertEqual(ours?.code, foundations?.code)
        XCTAssertEqual(ours?.localizedDescription, foundations?.localizedDescription)
    }

    static func thrown(_ body: () throws -> Void) -> Error? {
        do { try body() } catch { return error }
        return nil
    }
}
