#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Identifies one version of a file cheaply (inode, size, modification time to the nanosecond): an
/// atomic replacement changes the inode, an edit in place changes the time or the size.
public struct FileStamp: Equatable, Sendable {
    public let inode: UInt64
    public let size: Int64
    public let modifiedSeconds: Int64
    public let modifiedNanoseconds: Int64

    public init(_ status: stat) {
        inode = UInt64(status.st_ino)
        size = Int64(status.st_size)
        #if canImport(Darwin)
        modifiedSeconds = Int64(status.st_mtimespec.tv_sec)
        modifiedNanoseconds = Int64(status.st_mtimespec.tv_nsec)
        #else
        modifiedSeconds = Int64(status.st_mtim.tv_sec)
        modifiedNanoseconds = Int64(status.st_mtim.tv_nsec)
        #endif
    }

    /// The stamp of the file at `url`, or nil when there is none.
    public static func of(_ url: URL) throws -> FileStamp? {
        var status = stat()
        guard stat(url.path, &status) == 0 else {
            if errno == ENOENT { return nil }
            throw SystemIOError(path: url.path, "stat failed: \(String(cString: strerror(errno)))")
        }
        return FileStamp(status)
    }
}

/// The small JSON files of a state directory: size-limited reads, decoding errors that name the file
/// and the field, atomic writes.
public enum StateFile {
    /// The file's bytes and stamp, or nil when it does not exist. Refuses anything but a regular file
    /// of 1...`maximumBytes` bytes; the size is checked on the open descriptor, before allocating.
    public static func read(_ url: URL, maximumBytes: Int) throws -> (data: Data, stamp: FileStamp)? {
        let path = url.path
        let descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard descriptor >= 0 else {
            if errno == ENOENT { return nil }
            throw SystemIOError(path: path, "cannot open: \(String(cString: strerror(errno)))")
        }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else {
            throw SystemIOError(path: path, "fstat failed: \(String(cString: strerror(errno)))")
        }
        guard UInt32(status.st_mode) & UInt32(S_IFMT) == UInt32(S_IFREG) else {
            throw SystemIOError(path: path, "not a regular file")
        }
        let size = Int(status.st_size)
        guard size > 0 else { throw SystemIOError(path: path, "file is empty") }
        guard size <= maximumBytes else {
            throw SystemIOError(path: path, "file is \(size) bytes, over the \(maximumBytes)-byte limit")
        }
        var bytes = [UInt8](repeating: 0, count: size)
        var done = 0
        while done < size {
            let n = bytes.withUnsafeMutableBytes { SystemCall.read(descriptor, $0.baseAddress! + done, size - done) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw SystemIOError(path: path, "read failed: \(String(cString: strerror(errno)))") }
            guard n > 0 else { throw SystemIOError(path: path, "file shrank to \(done) bytes while being read") }
            done += n
        }
        return (Data(bytes), FileStamp(status))
    }

    /// Decodes JSON written by `write`; a failure names the file and the field (`clients[2].status`).
    public static func decode<T: Decodable>(_ type: T.Type, from data: Data, path: String) throws -> T {
        do {
            return try JSONFile.decode(type, from: data, keys: .snakeCase)
        } catch let error as JSONFieldError {
            throw SystemIOError(path: path, error.description)
        } catch {
            throw SystemIOError(path: path, "\(error)")
        }
    }

    /// Encodes `value` as pretty JSON with snake_case keys and ISO 8601 dates, and writes it atomically.
    public static func write<T: Encodable>(_ value: T, to url: URL, permissions: mode_t = 0o644) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        encoder.keyEncodingStrategy = .convertToSnakeCase
        let data: Data
        do { data = try encoder.encode(value) } catch {
            throw SystemIOError(path: url.path, "cannot encode: \(error)")
        }
        do {
            try writeFileAtomically(data + Data("\n".utf8), to: url, permissions: permissions)
        } catch {
            throw SystemIOError(path: url.path, "cannot write: \(error)")
        }
    }

    /// A date as the files store it: ISO 8601 keeps whole seconds, so values are truncated before use
    /// and what is returned equals what is read back.
    public static func wholeSeconds(_ date: Date) -> Date {
        Date(timeIntervalSince1970: date.timeIntervalSince1970.rounded(.down))
    }
}

/// An exclusive lock on a state directory (flock on the directory itself), held while one command
/// reads, changes and writes its files, so two operators cannot hand out the same serial.
public final class StateDirectoryLock {
    private let descriptor: Int32

    public init(_ directory: URL) throws {
        descriptor = open(directory.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw SystemIOError(path: directory.path, "cannot open state directory: \(String(cString: strerror(errno)))")
        }
        while flock(descriptor, LOCK_EX) != 0 {
            if errno == EINTR { continue }
            let reason = String(cString: strerror(errno))
            close(descriptor)
            throw SystemIOError(path: directory.path, "cannot lock state directory: \(reason)")
        }
    }

    deinit {
        flock(descriptor, LOCK_UN)
        close(descriptor)
    }
}
