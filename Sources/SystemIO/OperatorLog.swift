#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Synchronization

/// The operator's log of a long-running process (the coordinator's `serve`, a client's `join`): each
/// line time-stamped, to standard error and, when given, appended to a file (created 0600). Writing
/// never stops the process: a closed pipe or a full disk loses lines, not the round.
public final class OperatorLog: Sendable {
    /// The log file's descriptor (O_APPEND), or -1 without one.
    private let file: Mutex<Int32>

    public init(url: URL?) {
        var descriptor: Int32 = -1
        if let url {
            descriptor = open(url.path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        }
        file = Mutex(descriptor)
    }

    deinit {
        file.withLock { if $0 >= 0 { close($0) } }
    }

    /// Appends `message` as one time-stamped line; its control characters are escaped
    /// (`PeerText.escapingControls`), so no text inside it can forge another line.
    public func write(_ message: String) {
        // strftime rather than a Foundation formatter: building one per line cost a sixth of the
        // coordinator's CPU with 1,000 clients (Benchmarks/FederationScale).
        var now = time(nil)
        var parts = tm()
        gmtime_r(&now, &parts)
        var buffer = [CChar](repeating: 0, count: 32)
        let length = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%SZ", &parts)
        let stamp = String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        // One message, one line: control characters in it (a peer's text among them) are escaped.
        let line = "\(stamp) \(PeerText.escapingControls(message))\n"
        let bytes = Data(line.utf8)
        file.withLock { descriptor in
            writeIgnoringFailure(bytes, to: STDERR_FILENO)
            if descriptor >= 0 { writeIgnoringFailure(bytes, to: descriptor) }
        }
    }
}
