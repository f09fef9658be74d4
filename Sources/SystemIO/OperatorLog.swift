import Foundation
import Synchronization

/// A line of the coordinator's log: to standard error and to `serve.log` in the state directory.
public final class OperatorLog: Sendable {
    private let file: Mutex<FileHandle?>

    public init(url: URL?) {
        var handle: FileHandle?
        if let url {
            if !FileManager.default.fileExists(atPath: url.path) {
                FileManager.default.createFile(atPath: url.path, contents: nil, attributes: [.posixPermissions: 0o600])
            }
            handle = try? FileHandle(forWritingTo: url)
            _ = try? handle?.seekToEnd()
        }
        file = Mutex(handle)
    }

    public func write(_ message: String) {
        // strftime rather than a Foundation formatter: building one per line cost a sixth of the
        // coordinator's CPU with 1,000 clients (Benchmarks/FederationScale).
        var now = time(nil)
        var parts = tm()
        gmtime_r(&now, &parts)
        var buffer = [CChar](repeating: 0, count: 32)
        let length = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%SZ", &parts)
        let stamp = String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let line = "\(stamp) \(message)\n"
        FileHandle.standardError.write(Data(line.utf8))
        file.withLock { $0?.write(Data(line.utf8)) }
    }
}
