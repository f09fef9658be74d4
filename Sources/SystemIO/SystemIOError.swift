import Foundation

/// A file or system call failed: the path it concerned and why, in one sentence.
public struct SystemIOError: Error, Equatable, Sendable, CustomStringConvertible {
    public let path: String
    public let reason: String
    /// The system call that failed and its `errno`, when one did (nil for a file whose contents are wrong);
    /// modules with their own error types map it at their boundary.
    public let systemCall: SystemCallFailure?

    public init(path: String, _ reason: String) {
        self.path = path
        self.reason = reason
        systemCall = nil
    }

    /// The failure of `call` on `path`, with the given `errno` (by default the current one).
    public static func lastError(_ call: String, path: String, errno code: Int32 = errno) -> SystemIOError {
        SystemIOError(path: path, SystemCallFailure(operation: call, errno: code))
    }

    private init(path: String, _ failure: SystemCallFailure) {
        self.path = path
        reason = "\(failure.operation) failed: \(failure.message)"
        systemCall = failure
    }

    public var description: String { "\(path): \(reason)" }
}

/// A system call's failure: what was being done (`fsync directory`) and the `errno` it set.
public struct SystemCallFailure: Equatable, Sendable {
    public let operation: String
    public let errno: Int32

    /// The C library's words for `errno` ("No space left on device").
    public var message: String { String(cString: strerror(errno)) }
}
