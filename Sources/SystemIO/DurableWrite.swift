#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Writes `data` to `url` durably and atomically: a temporary file beside it (created with
/// `permissions`), every byte written, fsync, rename over the target, fsync of the directory. A crash
/// leaves either the old file or the new one, never a torn one; any failed step throws and removes
/// the temporary file. This is the project's one durable write: every file that matters goes through it.
public func writeFileAtomically(_ data: Data, to url: URL, permissions: mode_t = 0o644) throws {
    let directory = url.deletingLastPathComponent()
    let temporary = directory.appendingPathComponent(".\(url.lastPathComponent).\(getpid()).tmp")
    let fd = open(temporary.path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, permissions)
    guard fd >= 0 else { throw SystemIOError.lastError("create", path: temporary.path) }
    do {
        defer { close(fd) }
        // O_CREAT leaves an existing temporary's mode alone and the umask narrows a new one.
        guard fchmod(fd, permissions) == 0 else { throw SystemIOError.lastError("fchmod", path: temporary.path) }
        try writeAll(data, to: fd, path: temporary.path)
        guard fsync(fd) == 0 else { throw SystemIOError.lastError("fsync", path: temporary.path) }
    } catch {
        unlink(temporary.path)
        throw error
    }
    guard rename(temporary.path, url.path) == 0 else {
        let failure = SystemIOError.lastError("rename into place", path: url.path)
        unlink(temporary.path)
        throw failure
    }
    try syncDirectory(directory)
}

/// Appends `data` to the file open on `descriptor` and fsyncs it before returning.
public func appendDurably(_ data: Data, to descriptor: Int32, path: String) throws {
    try writeAll(data, to: descriptor, path: path)
    guard fsync(descriptor) == 0 else { throw SystemIOError.lastError("fsync", path: path) }
}

/// fsyncs a directory, so that a rename or a new entry in it survives a crash.
public func syncDirectory(_ directory: URL) throws {
    let fd = open(directory.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { throw SystemIOError.lastError("open directory", path: directory.path) }
    defer { close(fd) }
    guard fsync(fd) == 0 else { throw SystemIOError.lastError("fsync directory", path: directory.path) }
}

/// Writes every byte of `data`, retrying short writes and EINTR.
private func writeAll(_ data: Data, to fd: Int32, path: String) throws {
    try data.withUnsafeBytes { buffer in
        var written = 0
        while written < buffer.count {
            let n = write(fd, buffer.baseAddress! + written, buffer.count - written)
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemIOError.lastError("write", path: path)
            }
            written += n
        }
    }
}
