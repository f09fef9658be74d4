#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import Synchronization

/// One value of a monitoring event's field.
public enum EventValue: Sendable, Equatable {
    case string(String)
    case int(Int)
    case double(Double)
    case bool(Bool)
    case strings([String])

    /// The value as JSON text.
    var json: String {
        switch self {
        case let .string(text): return EventLog.quoted(text)
        case let .int(value): return String(value)
        case let .double(value): return value.isFinite ? "\(value)" : "null"
        case let .bool(value): return value ? "true" : "false"
        case let .strings(texts): return "[" + texts.map(EventLog.quoted).joined(separator: ",") + "]"
        }
    }
}

/// The events of a long-running process (`serve`, `join`) for monitoring tools: one JSON object per
/// line, `{"time": ISO 8601, "event": NAME, "round": N, ...fields}`, to standard output (`-`) or
/// appended to a file (created 0600). Each line goes out in one write(2) as it happens, so a tool
/// following the file sees whole lines; no fsync (an event log is not state). A failed write (a
/// closed pipe, a full disk) loses the line, never stops the process.
public final class EventLog: Sendable {
    /// The descriptor written to; `ownsDescriptor` when it is a file this log opened.
    private let descriptor: Mutex<Int32>
    private let ownsDescriptor: Bool

    /// `destination` is `-` for standard output or a file's path; `flag` names the option in errors.
    public init(destination: String, flag: String = "--events") throws {
        if destination == "-" {
            descriptor = Mutex(STDOUT_FILENO)
            ownsDescriptor = false
            return
        }
        let opened = open(destination, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard opened >= 0 else {
            let reason = String(cString: strerror(errno))
            throw SystemIOError(path: destination, "\(flag): cannot open it for appending events (\(reason)); "
                                + "give a writable file's path, or '-' for standard output")
        }
        descriptor = Mutex(opened)
        ownsDescriptor = true
    }

    deinit {
        if ownsDescriptor { descriptor.withLock { _ = close($0) } }
    }

    /// Writes one event line: its name, its round (when it has one), then `fields` in key order.
    public func emit(_ event: String, round: UInt64? = nil, _ fields: [String: EventValue] = [:]) {
        var parts = ["\"time\":\(Self.quoted(Self.timestamp()))", "\"event\":\(Self.quoted(event))"]
        if let round { parts.append("\"round\":\(round)") }
        for key in fields.keys.sorted() { parts.append("\(Self.quoted(key)):\(fields[key]!.json)") }
        let line = Data(("{" + parts.joined(separator: ",") + "}\n").utf8)
        descriptor.withLock { writeIgnoringFailure(line, to: $0) }
    }

    /// The current time, UTC, to the millisecond.
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        var buffer = [CChar](repeating: 0, count: 32)
        let length = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S", &parts)
        let stamp = String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return stamp + String(format: ".%03dZ", Int(now.tv_nsec / 1_000_000))
    }

    /// `text` as a JSON string literal.
    static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case let c where c.value < 0x20: out += String(format: "\\u%04x", c.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}
