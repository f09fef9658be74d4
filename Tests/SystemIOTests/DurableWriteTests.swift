import Foundation
@testable import SystemIO
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

    /// Without `replacingExisting`, an existing file is refused with EEXIST and kept byte for byte; a new
    /// one is created with exactly the mode asked for, whatever the umask.
    func testRefusesToReplaceAnExistingFileUnlessAsked() throws {
        let key = directory.appendingPathComponent("signing.key")
        try withUmask(0o077) { try writeFileAtomically(Data("first".utf8), to: key, permissions: 0o600, replacingExisting: false) }
        XCTAssertEqual(try mode(key), 0o600)
        XCTAssertThrowsError(try writeFileAtomically(Data("second".utf8), to: key, permissions: 0o600, replacingExisting: false)) {
            let error = $0 as? SystemIOError
            XCTAssertEqual(error?.path, key.path)
            XCTAssertEqual(error?.systemCall, SystemCallFailure(operation: "create (must not exist)", errno: EEXIST))
        }
        XCTAssertEqual(try Data(contentsOf: key), Data("first".utf8))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["signing.key"])
        // The same call, allowed to replace, does replace: the refusal above was the flag's doing.
        try writeFileAtomically(Data("second".utf8), to: key, permissions: 0o600, replacingExisting: true)
        XCTAssertEqual(try Data(contentsOf: key), Data("second".utf8))
        XCTAssertEqual(try mode(key), 0o600)
    }

    /// The mode is exact in both directions: the umask cannot narrow it, and a replaced file's old mode does not survive.
    func testModeIsExactWhateverTheUmaskAndTheOldFile() throws {
        let file = directory.appendingPathComponent("public.pem")
        try withUmask(0o077) { try writeFileAtomically(Data("a".utf8), to: file, permissions: 0o644) }
        XCTAssertEqual(try mode(file), 0o644)
        try writeFileAtomically(Data("b".utf8), to: file, permissions: 0o600)
        XCTAssertEqual(try mode(file), 0o600)
    }

    /// A failed system call carries its operation and errno, for modules that map it into their own errors.
    func testAFailedCallCarriesItsErrno() throws {
        let missing = directory.appendingPathComponent("no-such-dir/file.json")
        XCTAssertThrowsError(try writeFileAtomically(Data("x".utf8), to: missing)) {
            XCTAssertEqual(($0 as? SystemIOError)?.systemCall, SystemCallFailure(operation: "create temporary file", errno: ENOENT))
        }
    }

    // MARK: Directory replacement

    /// The new directory replaces the old one whole (files of the old one do not linger), by exchange and
    /// by the rename-aside fallback, and no temporary or old directory is left beside it.
    func testDirectoryReplacementPutsTheNewOneInPlace() throws {
        for swap in [DirectorySwap.preferExchange, .renameAside] {
            let target = directory.appendingPathComponent("adapter")
            try replaceDirectoryAtomically(target, swap: swap) { try write(["adapter_config.json": "old", "stale.bin": "x"], in: $0) }
            try replaceDirectoryAtomically(target, swap: swap) { try write(["adapter_config.json": "new"], in: $0) }
            XCTAssertEqual(try contents(target), ["adapter_config.json": "new"], "\(swap)")
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["adapter"], "\(swap)")
            try FileManager.default.removeItem(at: target)
        }
    }

    /// When the new directory cannot be written (a file in it cannot be put in place, or the writer
    /// throws), the old directory stays as it was and the temporary directory is removed.
    func testDirectoryReplacementKeepsTheOldOneWhenTheNewCannotBeWritten() throws {
        struct WriterFailed: Error, Equatable {}
        let target = directory.appendingPathComponent("adapter")
        let old = ["adapter_config.json": "old", "adapter_model.safetensors": "old weights"]
        for swap in [DirectorySwap.preferExchange, .renameAside] {
            try replaceDirectoryAtomically(target, swap: swap) { try write(old, in: $0) }
            // A directory where the writer puts a file: the write's rename fails, as on a full or broken disk.
            XCTAssertThrowsError(try replaceDirectoryAtomically(target, swap: swap) { temporary in
                try write(["adapter_model.safetensors": "new weights"], in: temporary)
                let blocked = temporary.appendingPathComponent("adapter_config.json")
                try FileManager.default.createDirectory(at: blocked.appendingPathComponent("inner"), withIntermediateDirectories: true)
                try writeFileAtomically(Data("new".utf8), to: blocked)
            }) {
                XCTAssertEqual(($0 as? SystemIOError)?.systemCall?.operation, "rename into place", "\(swap): \($0)")
            }
            XCTAssertEqual(try contents(target), old, "\(swap)")
            XCTAssertThrowsError(try replaceDirectoryAtomically(target, swap: swap) { temporary in
                try write(["adapter_config.json": "half"], in: temporary)
                throw WriterFailed()
            }) { XCTAssertEqual($0 as? WriterFailed, WriterFailed(), "\(swap)") }
            XCTAssertEqual(try contents(target), old, "\(swap)")
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["adapter"], "\(swap)")
            // Positive control: the same sequence without the injected failure does replace the old one.
            try replaceDirectoryAtomically(target, swap: swap) { try write(["adapter_config.json": "new"], in: $0) }
            XCTAssertEqual(try contents(target), ["adapter_config.json": "new"], "\(swap)")
        }
    }

    /// A target whose parent does not exist: nothing is created and the error names the temporary.
    func testDirectoryReplacementWithoutAParentFails() throws {
        let target = directory.appendingPathComponent("missing/adapter")
        var filled = false
        XCTAssertThrowsError(try replaceDirectoryAtomically(target) { _ in filled = true }) {
            XCTAssertEqual(($0 as? SystemIOError)?.systemCall, SystemCallFailure(operation: "create temporary directory", errno: ENOENT))
        }
        XCTAssertFalse(filled)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), [])
    }

    // MARK: Durable append

    /// A new append-only file has exactly the mode asked for; appends land at the end, a reopened file is
    /// not `created`, a torn tail can be cut, and reading past the end is an error naming the file.
    func testAppendOnlyFile() throws {
        let path = directory.appendingPathComponent("audit.jsonl").path
        // Each open in its own scope: closing the file releases its flock.
        do {
            let file = try withUmask(0o077) { try AppendOnlyFile(appendingTo: path, permissions: 0o644) }
            XCTAssertTrue(file.created)
            XCTAssertEqual(try mode(URL(fileURLWithPath: path)), 0o644)
            try file.lock(exclusive: true)
            try file.appendDurably(Array("one\n".utf8), sizeBefore: 0)
            try file.appendDurably(Array("two\n".utf8), sizeBefore: 4)
            XCTAssertEqual(try file.size(), 8)
            XCTAssertEqual(try file.read(offset: 4, count: 4), Array("two\n".utf8))
            XCTAssertThrowsError(try file.read(offset: 4, count: 5)) {
                XCTAssertEqual($0 as? SystemIOError, SystemIOError(path: path, "file shrank while reading at byte 8"))
            }
        }
        do {
            let again = try AppendOnlyFile(appendingTo: path, permissions: 0o600)
            XCTAssertFalse(again.created)
            XCTAssertEqual(try mode(URL(fileURLWithPath: path)), 0o644, "an existing file's mode is left alone")
            try again.appendDurably(Array("torn".utf8), sizeBefore: 8)
            try again.truncateDurably(to: 8)
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)), Data("one\ntwo\n".utf8))
        }
        let reader = try XCTUnwrap(try AppendOnlyFile(readingAt: path))
        try reader.lock(exclusive: false)
        XCTAssertEqual(try reader.read(offset: 0, count: 4), Array("one\n".utf8))
        XCTAssertNil(try AppendOnlyFile(readingAt: directory.appendingPathComponent("none").path))
    }

    /// Only a regular file is appended to: a symbolic link and a directory are refused.
    func testAppendOnlyFileRefusesWhatIsNotARegularFile() throws {
        let real = directory.appendingPathComponent("real").path
        let link = directory.appendingPathComponent("link").path
        XCTAssertTrue(FileManager.default.createFile(atPath: real, contents: nil))
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: real)
        XCTAssertThrowsError(try AppendOnlyFile(appendingTo: link, permissions: 0o644)) {
            XCTAssertEqual(($0 as? SystemIOError)?.systemCall, SystemCallFailure(operation: "open", errno: ELOOP))
        }
        XCTAssertThrowsError(try AppendOnlyFile(readingAt: directory.path)) {
            XCTAssertEqual($0 as? SystemIOError, SystemIOError(path: self.directory.path, "is not a regular file"))
        }
    }

    // MARK: Helpers

    private func mode(_ url: URL) throws -> Int {
        try XCTUnwrap(FileManager.default.attributesOfItem(atPath: url.path)[.posixPermissions] as? Int)
    }

    private func withUmask<T>(_ mask: mode_t, _ body: () throws -> T) rethrows -> T {
        let previous = umask(mask)
        defer { umask(previous) }
        return try body()
    }

    private func write(_ files: [String: String], in directory: URL) throws {
        for (name, text) in files { try writeFileAtomically(Data(text.utf8), to: directory.appendingPathComponent(name)) }
    }

    private func contents(_ directory: URL) throws -> [String: String] {
        var files: [String: String] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: directory.path) {
            files[name] = String(decoding: try Data(contentsOf: directory.appendingPathComponent(name)), as: UTF8.self)
        }
        return files
    }
}
