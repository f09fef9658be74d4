#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// The bytes glibc's malloc has handed out and not had back, summed over every arena (from
/// `malloc_info`: the arenas' memory less their free chunks, plus chunks mapped on their own). A leak
/// grows it by what it keeps, whatever freed memory it lands in (resident memory does not grow when a
/// leak fills holes that earlier tests left). Nil where there is no glibc.
public enum HeapUsage {
    public static func bytesInUse() -> Int? {
        #if canImport(Glibc)
        typealias MallocInfo = @convention(c) (Int32, UnsafeMutablePointer<FILE>?) -> Int32
        guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "malloc_info") else { return nil }
        var buffer: UnsafeMutablePointer<CChar>?
        var length = 0
        guard let stream = open_memstream(&buffer, &length) else { return nil }
        let status = unsafeBitCast(symbol, to: MallocInfo.self)(0, stream)
        fclose(stream)
        defer { free(buffer) }
        guard status == 0, let buffer else { return nil }
        // The totals over all arenas follow the last </heap>, one element a line.
        let xml = String(cString: buffer)
        let lines = (xml.components(separatedBy: "</heap>").last ?? xml).split(separator: "\n")
        func size(_ prefix: String) -> Int? {
            guard let line = lines.first(where: { $0.hasPrefix(prefix) }),
                  let range = line.range(of: "size=\"") else { return nil }
            return Int(line[range.upperBound...].prefix { $0.isNumber })
        }
        guard let current = size("<system type=\"current\""), let fast = size("<total type=\"fast\""),
              let rest = size("<total type=\"rest\""), let mapped = size("<total type=\"mmap\"") else { return nil }
        return current - fast - rest + mapped
        #else
        return nil
        #endif
    }
}
