import Foundation

/// Standard output could not take the JSON (a closed pipe, a full disk).
public struct JSONOutputError: Error, CustomStringConvertible {
    public let reason: String
    public var description: String { "cannot write the JSON to standard output: \(reason)" }
}

/// Standard output refused bytes: `code` is the errno (EPIPE when its reader has gone).
public struct StandardOutputError: Error, CustomStringConvertible {
    public let code: Int32
    /// The reader closed its end (`| head -1`): nothing more will be read.
    public var readerClosed: Bool { code == EPIPE }
    public var description: String { "cannot write to standard output: \(String(cString: strerror(code)))" }
}

/// Writes to standard output through write(2): a closed pipe or a full disk is an error to handle,
/// never a trap (as in `FileHandle.write`) nor a SIGPIPE (the executables ignore it).
public enum StandardOutput {
    public static func write(_ bytes: Data) throws {
        try bytes.withUnsafeBytes { buffer in
            guard let base = buffer.baseAddress else { return }
            var written = 0
            while written < buffer.count {
                let n = Foundation.write(STDOUT_FILENO, base + written, buffer.count - written)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw StandardOutputError(code: n < 0 ? errno : EIO) }
                written += n
            }
        }
    }
}

/// Prints one JSON object on standard output and nothing else, as `--json` promises.
public enum JSONOutput {
    /// Serialises `object` (dictionaries, arrays, strings, numbers, booleans, NSNull) with sorted keys.
    public static func print(_ object: [String: Any]) throws {
        let data = try JSONSerialization.data(withJSONObject: sanitized(object),
                                              options: [.sortedKeys, .withoutEscapingSlashes])
        // The JSON is the product: a reader that went away ends the command with an error (exit 1),
        // never a trap in FileHandle.write.
        var bytes = data
        bytes.append(0x0A)
        do { try StandardOutput.write(bytes) } catch let error as StandardOutputError {
            throw JSONOutputError(reason: String(cString: strerror(error.code)))
        }
    }

    /// JSON has no NaN or infinity: those become null rather than a crash in the serialiser. Booleans
    /// that came back from `JSONSerialization` (NSNumbers that cast to Double too) stay booleans.
    static func sanitized(_ value: Any) -> Any {
        switch value {
        case let number as NSNumber where type(of: number) == booleanNumberType: return number.boolValue
        case let number as Double: return number.isFinite ? number : NSNull()
        case let number as Float: return number.isFinite ? Double(number) : NSNull()
        case let dictionary as [String: Any]: return dictionary.mapValues(sanitized)
        case let array as [Any]: return array.map(sanitized)
        default: return value
        }
    }

    /// The class of the NSNumbers that JSON's true and false decode to (`__NSCFBoolean`).
    private static let booleanNumberType = type(of: NSNumber(value: true))
}

extension JSONOutput {
    /// Prints an Encodable value that encodes as a JSON object, as `print(_:)` prints a dictionary.
    public static func print(encoding value: some Encodable) throws {
        guard let object = try self.value(encoding: value) as? [String: Any] else {
            throw EncodingError.invalidValue(value, .init(codingPath: [], debugDescription: "not a JSON object"))
        }
        try print(object)
    }

    /// An Encodable value as the dictionaries, arrays, strings, numbers, booleans and NSNull that
    /// `print(_:)` takes, for typed values inside a printed dictionary.
    public static func value(encoding value: some Encodable) throws -> Any {
        try JSONSerialization.jsonObject(with: JSONEncoder().encode(value), options: [.fragmentsAllowed])
    }
}
