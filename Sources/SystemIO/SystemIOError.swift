import Foundation

/// A file or system call failed: the path it concerned and why, in one sentence.
public struct SystemIOError: Error, Equatable, Sendable, CustomStringConvertible {
    public let path: String
    public let reason: String

    public init(path: String, _ reason: String) {
        self.path = path
        self.reason = reason
    }

    /// The failure of `call` on `path`, with the reason from the current `errno`.
    public static func lastError(_ call: String, path: String) -> SystemIOError {
        SystemIOError(path: path, "\(call) failed: \(String(cString: strerror(errno)))")
    }

    public var description: String { "\(path): \(reason)" }
}
