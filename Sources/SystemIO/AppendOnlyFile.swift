#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// A file that only grows, each append durable before it returns (the audit log): the one durable
/// append. Opened `O_APPEND`, so every write lands at the end whatever another writer did; the caller
/// holds `lock` while it reads the tail and appends. A regular file only (symbolic links are refused).
public final class AppendOnlyFile {
    public let path: String
    /// Whether this open created the file.
    public let created: Bool
    private let descriptor: Int32

    /// Opens `path` for appending, creating it with mode exactly `permissions` when absent; a new file's
    /// directory is synced at once, so its name survives a crash as its contents will.
    public init(appendingTo path: String, permissions: mode_t) throws {
        self.path = path
        (descriptor, created) = try Self.openOrCreate(path, permissions: permissions)
        try checkRegularFile()
        if created {
            // The umask may have cleared bits the caller asked for.
            guard fchmod(descriptor, permissions) == 0 else {
                throw SystemIOError.lastError("chmod 0\(String(permissions, radix: 8))", path: path)
            }
            try syncDirectory(atPath: splitPath(path).directory)
        }
    }

    /// Opens `path` to read it, or returns nil when there is no such file.
    public init?(readingAt path: String) throws {
        self.path = path
        created = false
        var fd: Int32
        repeat { fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC) } while fd < 0 && errno == EINTR
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw SystemIOError.lastError("open", path: path)
        }
        descriptor = fd
        try checkRegularFile()
    }

    deinit { close(descriptor) }

    private static func openOrCreate(_ path: String, permissions: mode_t) throws -> (Int32, Bool) {
        let flags = O_RDWR | O_APPEND | O_NOFOLLOW | O_CLOEXEC
        while true {
            let fd = open(path, flags)
            if fd >= 0 { return (fd, false) }
            if errno == EINTR { continue }
            guard errno == ENOENT else { throw SystemIOError.lastError("open", path: path) }
            let created = open(path, flags | O_CREAT | O_EXCL, permissions)
            if created >= 0 { return (created, true) }
            // EEXIST: another process created it between the two calls; open it as it is.
            guard errno == EEXIST || errno == EINTR else { throw SystemIOError.lastError("create", path: path) }
        }
    }

    /// Takes an exclusive (writers) or shared (readers) `flock`, released when the file is closed.
    public func lock(exclusive: Bool) throws {
        try retrying("flock") { flock(descriptor, exclusive ? LOCK_EX : LOCK_SH) }
    }

    /// The file's size now.
    public func size() throws -> Int {
        var status = stat()
        try retrying("fstat") { fstat(descriptor, &status) }
        return Int(status.st_size)
    }

    /// `count` bytes from `offset`; throws if the file is shorter.
    public func read(offset: Int, count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var filled = 0
        while filled < count {
            let n = bytes.withUnsafeMutableBytes { buffer in
                pread(descriptor, buffer.baseAddress! + filled, count - filled, off_t(offset + filled))
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemIOError.lastError("read", path: path)
            }
            guard n > 0 else { throw SystemIOError(path: path, "file shrank while reading at byte \(offset + filled)") }
            filled += n
        }
        return bytes
    }

    /// Cuts the file to `size` bytes (a tail torn by a crash) and syncs the cut.
    /// - Parameter operation: what the cut is, as an error names it.
    public func truncateDurably(to size: Int, operation: String = "truncate") throws {
        try retrying(operation) { ftruncate(descriptor, off_t(size)) }
        try retrying("fsync") { fsync(descriptor) }
    }

    /// Appends every byte of `bytes` at the end and fsyncs before returning. When the disk refuses the
    /// write part-way, the file is cut back to `sizeBefore`, so no partial record is left behind.
    public func appendDurably(_ bytes: [UInt8], sizeBefore: Int) throws {
        do {
            try bytes.withUnsafeBytes { try writeAll($0, to: descriptor, path: path) }
        } catch {
            _ = ftruncate(descriptor, off_t(sizeBefore))
            throw error
        }
        try retrying("fsync") { fsync(descriptor) }
    }

    private func checkRegularFile() throws {
        var status = stat()
        try retrying("fstat") { fstat(descriptor, &status) }
        guard UInt32(status.st_mode) & UInt32(S_IFMT) == UInt32(S_IFREG) else {
            throw SystemIOError(path: path, "is not a regular file")
        }
    }

    /// Runs a system call, retrying on EINTR; a negative result throws naming `operation` and the file.
    private func retrying(_ operation: String, _ call: () -> Int32) throws {
        while call() < 0 {
            if errno == EINTR { continue }
            throw SystemIOError.lastError(operation, path: path)
        }
    }
}
