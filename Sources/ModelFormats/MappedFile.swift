import Foundation

/// An error in a model file, naming the file and what in it is wrong.
public struct ModelFormatError: Error, CustomStringConvertible, Sendable {
    public let file: String
    public let problem: String

    public init(file: String, _ problem: String) {
        self.file = file
        self.problem = problem
    }

    public var description: String { "\(file): \(problem)" }
}

/// A read-only memory mapping of a whole file; unmapped when released.
public final class MappedFile: @unchecked Sendable {
    public let url: URL
    private let base: UnsafeMutableRawPointer?
    private let length: Int

    public init(url: URL) throws {
        self.url = url
        let fd = open(url.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw ModelFormatError(file: url.path, "cannot open: \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0 else {
            throw ModelFormatError(file: url.path, "cannot stat: \(String(cString: strerror(errno)))")
        }
        guard status.st_mode & S_IFMT == S_IFREG else { throw ModelFormatError(file: url.path, "not a regular file") }
        length = Int(status.st_size)
        if length == 0 {
            base = nil
            return
        }
        let mapped = mmap(nil, length, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let mapped, mapped != MAP_FAILED else {
            throw ModelFormatError(file: url.path, "cannot map: \(String(cString: strerror(errno)))")
        }
        base = mapped
    }

    deinit {
        if let base { munmap(base, length) }
    }

    /// The file's bytes.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base.map { UnsafeRawPointer($0) }, count: length) }
}

/// Storage backed by a file mapping, whose resident pages can be dropped when a copy has taken over
/// (the bytes stay valid: touching them again reads them back from the file).
public protocol ResidentPageReleasing: AnyObject {
    /// Drops the whole pages inside `count` bytes at `start` from this process's resident memory;
    /// ranges outside the mapping are ignored.
    func releaseResidentPages(start: UnsafeRawPointer, count: Int)
}

extension MappedFile: ResidentPageReleasing {
    public func releaseResidentPages(start: UnsafeRawPointer, count: Int) {
        guard let base, count > 0 else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let lower = max(Int(bitPattern: start), Int(bitPattern: base))
        let upper = min(Int(bitPattern: start) + count, Int(bitPattern: base) + length)
        // Only pages wholly inside the range: neighbours may still be in use.
        let first = (lower + page - 1) / page * page, last = upper / page * page
        guard last > first, let pointer = UnsafeMutableRawPointer(bitPattern: first) else { return }
        // A private read-only mapping: dropped pages are read back from the file if touched again.
        _ = madvise(pointer, last - first, MADV_DONTNEED)
    }
}

/// A cursor over untrusted little-endian bytes: every read is bounds-checked and names what it read.
struct ByteReader {
    let bytes: UnsafeRawBufferPointer
    let file: String
    var offset = 0

    var remaining: Int { bytes.count - offset }

    func fail(_ problem: String) -> ModelFormatError { ModelFormatError(file: file, problem) }

    mutating func need(_ count: Int, _ what: @autoclosure () -> String) throws {
        guard count >= 0, count <= remaining else {
            throw fail("truncated at byte \(offset): \(what()) needs \(count) bytes, \(remaining) remain")
        }
    }

    mutating func read<T: FixedWidthInteger>(_ type: T.Type, _ what: @autoclosure () -> String) throws -> T {
        try need(MemoryLayout<T>.size, what())
        let value = bytes.loadUnaligned(fromByteOffset: offset, as: T.self)
        offset += MemoryLayout<T>.size
        return T(littleEndian: value)
    }

    mutating func readBytes(_ count: Int, _ what: @autoclosure () -> String) throws -> UnsafeRawBufferPointer {
        try need(count, what())
        defer { offset += count }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + count)])
    }
}

