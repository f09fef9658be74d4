#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

// The project's one durable write. Every file that matters goes through these functions; modules
// with their own error types map `SystemIOError` at their boundary, never write files themselves.

/// Writes `data` to `url` durably and atomically; see `writeFileAtomically(_:toPath:permissions:replacingExisting:)`.
public func writeFileAtomically(_ data: Data, to url: URL, permissions: mode_t = 0o644,
                                replacingExisting: Bool = true) throws {
    try data.withUnsafeBytes {
        try writeFileAtomically($0, toPath: url.path, permissions: permissions, replacingExisting: replacingExisting)
    }
}

/// Writes `bytes` to `path` durably and atomically: a new temporary file beside it (`O_EXCL`, mode
/// exactly `permissions` whatever the umask), every byte written, fsync, then into place, then fsync
/// of the directory. A crash leaves the old file or the new one, never a torn one; any failed step
/// throws and removes the temporary file.
///
/// Takes raw bytes so that a secret (a key in a buffer that zeroes itself) is never copied into a `Data`.
/// - Parameter replacingExisting: true renames over whatever is at `path`; false links into place, which
///   refuses an existing file (`create (must not exist)`, `EEXIST`), so a key is never overwritten.
/// - Throws: `SystemIOError` naming the path and the system call, with its `errno`.
public func writeFileAtomically(_ bytes: UnsafeRawBufferPointer, toPath path: String, permissions: mode_t,
                                replacingExisting: Bool) throws {
    let (directory, name) = splitPath(path)
    let temporary = temporaryName(in: directory, for: name)
    let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, permissions)
    guard fd >= 0 else { throw SystemIOError.lastError("create temporary file", path: temporary) }
    var placed = false
    defer { if !placed { unlink(temporary) } }
    var isOpen = true
    defer { if isOpen { close(fd) } }
    // The umask can only clear bits: fchmod makes the mode exact.
    guard fchmod(fd, permissions) == 0 else { throw SystemIOError.lastError("fchmod", path: temporary) }
    try writeAll(bytes, to: fd, path: temporary)
    guard fsync(fd) == 0 else { throw SystemIOError.lastError("fsync", path: temporary) }
    isOpen = false
    guard close(fd) == 0 else { throw SystemIOError.lastError("close", path: temporary) }
    if replacingExisting {
        guard rename(temporary, path) == 0 else { throw SystemIOError.lastError("rename into place", path: path) }
    } else {
        // link() refuses an existing destination, so nothing already at `path` is ever replaced.
        guard link(temporary, path) == 0 else { throw SystemIOError.lastError("create (must not exist)", path: path) }
        unlink(temporary)
    }
    placed = true
    try syncDirectory(atPath: directory)
}

/// fsyncs a directory, so that a rename or a new entry in it survives a crash.
public func syncDirectory(_ directory: URL) throws {
    try syncDirectory(atPath: directory.path)
}

/// fsyncs the directory at `path`; a failure throws (an unsynced rename can vanish in a crash).
public func syncDirectory(atPath path: String) throws {
    let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { throw SystemIOError.lastError("open directory", path: path) }
    defer { close(fd) }
    guard fsync(fd) == 0 else { throw SystemIOError.lastError("fsync directory", path: path) }
}

/// Replaces the directory at `url` with one that `fill` writes, so that a crash or a failure leaves the
/// old directory whole or the new one whole, never neither and never a mixture (a PEFT adapter is two
/// files that must match).
///
/// `fill` writes into a new temporary directory beside the target. Every file in it, and the directory
/// itself, is then synced, and it takes the target's place: exchanged with the old one in a single
/// `renameat2(RENAME_EXCHANGE)` where the kernel has it, otherwise by renaming the old one aside and the
/// new one in (restoring the old if that fails). The parent is synced, and only then is the old
/// directory removed. When `fill` or any step before the exchange fails, the temporary directory is
/// removed and the old directory is untouched.
/// - Throws: what `fill` throws, or `SystemIOError` naming the path and the system call.
public func replaceDirectoryAtomically(_ url: URL, _ fill: (URL) throws -> Void) throws {
    try replaceDirectoryAtomically(url, swap: .preferExchange, fill)
}

/// How `replaceDirectoryAtomically` puts the new directory in place of an old one.
enum DirectorySwap {
    /// One `renameat2(RENAME_EXCHANGE)` where available, else `renameAside`.
    case preferExchange
    /// Old renamed aside, new renamed in (the portable way; tests take it directly).
    case renameAside
}

func replaceDirectoryAtomically(_ url: URL, swap: DirectorySwap, _ fill: (URL) throws -> Void) throws {
    let path = url.path
    let (parent, name) = splitPath(path)
    let temporary = temporaryName(in: parent, for: name)
    guard mkdir(temporary, 0o777) == 0 else { throw SystemIOError.lastError("create temporary directory", path: temporary) }
    do {
        try fill(URL(fileURLWithPath: temporary, isDirectory: true))
        try syncTree(temporary)
    } catch {
        removeTree(temporary)
        throw error
    }
    // Only once the new directory is in place, durably, may the old one go.
    if let old = try moveIntoPlace(temporary, path, parent: parent, name: name, swap: swap) { removeTree(old) }
}

/// Puts the synced directory `temporary` at `path` and syncs `parent`; returns where the old directory
/// now is, if there was one. On a failure before the new directory is in place, the old one is back at
/// `path` and `temporary` is removed; when only the parent's sync fails, both are kept (neither is known
/// to be the durable one) and the error says so.
private func moveIntoPlace(_ temporary: String, _ path: String, parent: String, name: String,
                           swap: DirectorySwap) throws -> String? {
    func abandon(_ failure: SystemIOError) -> SystemIOError {
        removeTree(temporary)
        return failure
    }
    var status = stat()
    guard lstat(path, &status) == 0 else {
        guard errno == ENOENT else { throw abandon(.lastError("stat", path: path)) }
        guard rename(temporary, path) == 0 else { throw abandon(.lastError("rename into place", path: path)) }
        try syncDirectory(atPath: parent)
        return nil
    }
    if swap == .preferExchange {
        switch exchange(temporary, path) {
        case 0:
            // The old directory now has the temporary name.
            try syncDirectory(atPath: parent)
            return temporary
        case EINVAL, ENOSYS, EOPNOTSUPP:
            break  // no exchange on this kernel or file system: rename aside below
        case let code:
            throw abandon(.lastError("exchange into place", path: path, errno: code))
        }
    }
    let aside = temporaryName(in: parent, for: name + ".old")
    guard rename(path, aside) == 0 else { throw abandon(.lastError("rename the old aside", path: path)) }
    guard rename(temporary, path) == 0 else {
        let failure = SystemIOError.lastError("rename into place", path: path)
        rename(aside, path)
        throw abandon(failure)
    }
    try syncDirectory(atPath: parent)
    return aside
}

/// Atomically exchanges two paths; 0 or the errno of the failure (ENOSYS where there is no such call).
private func exchange(_ a: String, _ b: String) -> Int32 {
    #if canImport(Glibc)
    // Glibc's Swift module does not export renameat2 (it needs _GNU_SOURCE), so it is looked up by name.
    typealias RenameAt2 = @convention(c) (Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32) -> Int32
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "renameat2") else { return ENOSYS }
    let renameat2 = unsafeBitCast(symbol, to: RenameAt2.self)
    let renameExchange: UInt32 = 1 << 1  // RENAME_EXCHANGE, <linux/fs.h>
    return renameat2(AT_FDCWD, a, AT_FDCWD, b, renameExchange) == 0 ? 0 : errno
    #elseif canImport(Darwin)
    return renamex_np(a, b, UInt32(RENAME_SWAP)) == 0 ? 0 : errno
    #else
    return ENOSYS
    #endif
}

/// fsyncs every file and directory under `root`, and `root` itself.
private func syncTree(_ root: String) throws {
    let entries = (try? FileManager.default.subpathsOfDirectory(atPath: root)) ?? []
    for entry in entries {
        let path = root + "/" + entry
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ELOOP { continue }  // a symbolic link: nothing of its own to sync
            throw SystemIOError.lastError("open", path: path)
        }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw SystemIOError.lastError("fsync", path: path) }
    }
    try syncDirectory(atPath: root)
}

/// Removes a tree that is garbage by now (a failed temporary, a replaced old directory); a failure
/// leaves a hidden leftover and hurts nothing that was promised, so it is not an error.
private func removeTree(_ path: String) {
    try? FileManager.default.removeItem(atPath: path)
}

/// The directory holding `path` and the last component (`.` for a bare name).
func splitPath(_ path: String) -> (directory: String, name: String) {
    guard let slash = path.lastIndex(of: "/") else { return (".", path) }
    let directory = slash == path.startIndex ? "/" : String(path[..<slash])
    return (directory, String(path[path.index(after: slash)...]))
}

/// A hidden name beside `name` that no other writer picks: the pid and 64 random bits.
private func temporaryName(in directory: String, for name: String) -> String {
    let random = String(UInt64.random(in: .min ... .max), radix: 16)
    return "\(directory)/.\(name).tmp-\(getpid())-\(random)"
}

/// Writes every byte of `bytes`, retrying short writes and EINTR.
func writeAll(_ bytes: UnsafeRawBufferPointer, to fd: Int32, path: String) throws {
    guard let base = bytes.baseAddress else { return }
    var written = 0
    while written < bytes.count {
        let n = write(fd, base + written, bytes.count - written)
        if n < 0 {
            if errno == EINTR { continue }
            throw SystemIOError.lastError("write", path: path)
        }
        written += n
    }
}
