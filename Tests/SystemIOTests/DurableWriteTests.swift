import Foundation
import SystemIO
import XCTest

/// The one durable write: content, mode, replacement, no temporary left behind, and errors that name the path.
final class DurableWriteTests: XCTestCase {
    private var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("durable-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    func testWritesReplacesAndKeepsTheMode() throws {
        let file = directory.appendingPathComponent("state.json")
        try writeFileAtomically(Data("first".utf8), to: file, permissions: 0o600)
        XCTAssertEqual(try Data(contentsOf: file), Data("first".utf8))
        try writeFileAtomically(Data("second, longer".utf8), to: file, permissions: 0o600)
        XCTAssertEqual(try Data(contentsOf: file), Data("second, longer".utf8))
        let mode = try FileManager.default.attributesOfItem(atPath: file.path)[.posixPermissions] as? Int
        XCTAssertEqual(mode, 0o600)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["state.json"],
                       "no temporary file may be left beside the target")
    }

    func testAFailureNamesThePathAndLeavesTheOldFile() throws {
        let missing = directory.appendingPathComponent("no-such-dir/file.json")
        XCTAssertThrowsError(try writeFileAtomically(Data("x".utf8), to: missing)) { error in
            guard let error = error as? SystemIOError else { return XCTFail("\(error)") }
            XCTAssertTrue(error.path.contains("no-such-dir"), error.description)
        }
        // A directory in the target's place cannot be replaced by a file: the rename fails and the
        // directory survives, with no temporary left over.
        let occupied = directory.appendingPathComponent("occupied")
        try FileManager.default.createDirectory(at: occupied.appendingPathComponent("inner"), withIntermediateDirectories: true)
        XCTAssertThrowsError(try writeFileAtomically(Data("x".utf8), to: occupied)) { error in
            XCTAssertEqual((error as? SystemIOError)?.path, occupied.path)
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted(), ["occupied"])
    }
}
