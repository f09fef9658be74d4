#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

// Reading a whole file, as `FileManager.contents(atPath:)` and `Data(contentsOf:)` do, without their leak
// on Linux: swift-foundation (Swift 6.3.1) reads a file whose size is 0 into a 4,096-byte buffer that it
// never frees (its zero-size path, kept for /proc files that report 0 bytes, hands the buffer to an empty
// `Data`, which drops it). Every empty file read leaked 4 KiB. Fuzzing found it (issue 14): each input
// with an empty file made libFuzzer run a whole-heap leak check, 1 in 30 of the `peft` target's inputs,
// which slowed that target about 20 times. A file of size 0 is read through `FileHandle` instead (to
// its end, so a /proc file still reads whole); every other file goes to Foundation's call as before.

/// The file's bytes, or nil when it cannot be read: `FileManager.default.contents(atPath:)`.
public func fileContents(atPath path: String) -> Data? {
    guard reportsSizeZero(path) else { return FileManager.default.contents(atPath: path) }
    guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
    defer { try? handle.close() }
    do { return try handle.readToEnd() ?? Data() } catch { return nil }
}

/// The file's bytes: `Data(contentsOf: url)`, throwing what it throws.
public func fileData(contentsOf url: URL) throws -> Data {
    guard url.isFileURL, reportsSizeZero(url.path) else { return try Data(contentsOf: url) }
    let handle = try FileHandle(forReadingFrom: url)
    defer { try? handle.close() }
    return try handle.readToEnd() ?? Data()
}

/// A regular file whose size is 0 (empty, or a kernel file that reports no size).
private func reportsSizeZero(_ path: String) -> Bool {
    var status = stat()
    return stat(path, &status) == 0 && status.st_mode & S_IFMT == S_IFREG && status.st_size == 0
}
