import CommandLineParsing
import Foundation
import TestSupport
import XCTest

/// What `PathCheck` makes of symbolic links: an input given as a link to a regular file (a model in the
/// Hugging Face cache is always one) is that file; a dangling link or one to a directory is not a file.
final class PathCheckTests: XCTestCase {
    func testALinkToARegularFileIsThatFile() throws {
        let directory = try Fixtures.temporaryDirectory("path-check")
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("model.gguf").path
        let link = directory.appendingPathComponent("linked.gguf").path
        let dangling = directory.appendingPathComponent("dangling.gguf").path
        let toDirectory = directory.appendingPathComponent("linked-dir").path
        XCTAssertTrue(FileManager.default.createFile(atPath: file, contents: Data("GGUF".utf8)))
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: file)
        try FileManager.default.createSymbolicLink(atPath: dangling, withDestinationPath: file + ".missing")
        try FileManager.default.createSymbolicLink(atPath: toDirectory, withDestinationPath: directory.path)

        XCTAssertEqual(PathCheck.found(link), .file)
        XCTAssertNoThrow(try PathCheck.inputFile("--model", link, expected: "a .gguf file"))
        // Controls: what is not a readable regular file behind the link is still refused, by name.
        XCTAssertEqual(PathCheck.found(dangling), .nothing)
        XCTAssertThrowsError(try PathCheck.inputFile("--model", dangling, expected: "a .gguf file")) {
            XCTAssertTrue("\($0)".contains("does not exist"), "\($0)")
        }
        XCTAssertEqual(PathCheck.found(toDirectory), .directory)
        XCTAssertThrowsError(try PathCheck.inputFile("--model", toDirectory, expected: "a .gguf file")) {
            XCTAssertTrue("\($0)".contains("is a directory"), "\($0)")
        }
    }
}
