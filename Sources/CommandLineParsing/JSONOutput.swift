import Foundation

/// Prints one JSON object on standard output and nothing else, as `--json` promises.
public enum JSONOutput {
    /// Serialises `object` (dictionaries, arrays, strings, numbers, booleans, NSNull) with sorted keys.
    public static func print(_ object: [String: Any]) throws {
        let data = try JSONSerialization.data(withJSONObject: sanitized(object),
                                              options: [.sortedKeys, .withoutEscapingSlashes])
        FileHandle.standardOutput.write(data)
        FileHandle.standardOutput.write(Data("\n".utf8))
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
