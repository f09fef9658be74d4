#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// Writes to standard error, unbuffered (progress and errors never mix into `--json` output).
///
/// A failed write is dropped, never fatal: a log collector that closed its pipe (EPIPE, with
/// SIGPIPE ignored for TLS) or a full disk must not stop a coordinator or a client mid-round.
/// (`FileHandle.write` traps on such errors, so nothing here goes through it.)
public enum StandardError {
    public static func write(_ text: String) {
        writeIgnoringFailure(Data(text.utf8), to: STDERR_FILENO)
    }
}

/// Writes as much of `data` as `descriptor` takes; stops at the first error other than EINTR.
func writeIgnoringFailure(_ data: Data, to descriptor: Int32) {
    data.withUnsafeBytes { buffer in
        guard let base = buffer.baseAddress else { return }
        var written = 0
        while written < buffer.count {
            let n = Foundation.write(descriptor, base + written, buffer.count - written)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return }
            written += n
        }
    }
}
