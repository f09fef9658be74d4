import Foundation

/// A syntax check of one JSON text against RFC 8259, made before `JSONSerialization` reads it: on Linux
/// that parser accepts what JSON does not (a trailing comma such as `{"text": "a",}`), and a dataset
/// line that is not JSON must be refused, not silently read as something else. A key repeated in one
/// object is refused too (RFC 8259 §4 leaves it to the reader; `JSONSerialization` keeps one of them
/// silently, and a record with two `"user"` fields must not be counted as either user).
enum StrictJSON {
    /// Deepest nesting of arrays and objects accepted (a bound on recursion, not a JSON rule).
    static let maximumDepth = 256

    /// Why a text is not JSON, and the 1-based column (byte) where it stops being JSON.
    struct SyntaxError: Error, CustomStringConvertible {
        let column: Int
        let problem: String
        var description: String { "\(problem) at column \(column)" }
    }

    /// Throws `SyntaxError` unless `bytes` is exactly one JSON value with optional surrounding whitespace.
    static func validate(_ bytes: [UInt8]) throws {
        var scanner = Scanner(bytes: bytes)
        scanner.skipWhitespace()
        try scanner.value(depth: 0)
        scanner.skipWhitespace()
        guard scanner.atEnd else { throw scanner.error("unexpected \(scanner.describeCurrent()) after the value") }
    }

    private struct Scanner {
        let bytes: [UInt8]
        var index = 0

        var atEnd: Bool { index >= bytes.count }
        var current: UInt8? { atEnd ? nil : bytes[index] }

        func error(_ problem: String) -> SyntaxError { SyntaxError(column: index + 1, problem: problem) }

        func describeCurrent() -> String {
            guard let byte = current else { return "end of line" }
            return byte >= 0x20 && byte < 0x7F ? "'\(Character(Unicode.Scalar(byte)))'" : String(format: "byte 0x%02X", byte)
        }

        mutating func skipWhitespace() {
            while let byte = current, byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D { index += 1 }
        }

        mutating func expect(_ literal: String) throws {
            for byte in literal.utf8 {
                guard current == byte else { throw error("expected '\(literal)'") }
                index += 1
            }
        }

        mutating func value(depth: Int) throws {
            guard depth < StrictJSON.maximumDepth else { throw error("nesting deeper than \(StrictJSON.maximumDepth)") }
            guard let byte = current else { throw error("expected a value, found end of line") }
            switch byte {
            case UInt8(ascii: "{"): try container(close: UInt8(ascii: "}"), depth: depth, keyed: true)
            case UInt8(ascii: "["): try container(close: UInt8(ascii: "]"), depth: depth, keyed: false)
            case UInt8(ascii: "\""): try string()
            case UInt8(ascii: "t"): try expect("true")
            case UInt8(ascii: "f"): try expect("false")
            case UInt8(ascii: "n"): try expect("null")
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): try number()
            default: throw error("expected a value, found \(describeCurrent())")
            }
        }

        /// An object (`keyed`) or an array: members separated by commas, none after the last.
        mutating func container(close: UInt8, depth: Int, keyed: Bool) throws {
            index += 1
            skipWhitespace()
            if current == close { index += 1; return }
            var keys = Set<String>()
            while true {
                if keyed {
                    guard current == UInt8(ascii: "\"") else {
                        throw error(current == close ? "trailing comma before '}'" : "expected a quoted key, found \(describeCurrent())")
                    }
                    let keyStart = index
                    try string()
                    try unique(key: keyStart..<index, in: &keys)
                    skipWhitespace()
                    guard current == UInt8(ascii: ":") else { throw error("expected ':' after the key") }
                    index += 1
                    skipWhitespace()
                } else if current == close {
                    throw error("trailing comma before ']'")
                }
                try value(depth: depth + 1)
                skipWhitespace()
                if current == close { index += 1; return }
                guard current == UInt8(ascii: ",") else {
                    throw error("expected ',' or '\(Character(Unicode.Scalar(close)))', found \(describeCurrent())")
                }
                index += 1
                skipWhitespace()
            }
        }

        /// Throws when the key just read (a valid JSON string at `range`, quotes included) is already in
        /// `keys`, comparing the decoded text, so `"user"` and `"\u0075ser"` are the same key.
        func unique(key range: Range<Int>, in keys: inout Set<String>) throws {
            let raw = bytes[range]
            let key: String
            if raw.contains(UInt8(ascii: "\\")) {
                guard let decoded = try? JSONSerialization.jsonObject(with: Data(raw), options: [.fragmentsAllowed]) as? String else {
                    throw SyntaxError(column: range.lowerBound + 1, problem: "key is not a valid string")
                }
                key = decoded
            } else {
                key = String(decoding: raw.dropFirst().dropLast(), as: UTF8.self)
            }
            guard keys.insert(key).inserted else {
                throw SyntaxError(column: range.lowerBound + 1, problem: "duplicate key \(String(decoding: raw, as: UTF8.self))")
            }
        }

        mutating func string() throws {
            index += 1
            while let byte = current {
                index += 1
                switch byte {
                case UInt8(ascii: "\""): return
                case UInt8(ascii: "\\"):
                    guard let escaped = current else { break }
                    index += 1
                    if escaped == UInt8(ascii: "u") {
                        for _ in 0..<4 {
                            guard let hex = current, (hex >= 0x30 && hex <= 0x39) || (hex | 0x20 >= 0x61 && hex | 0x20 <= 0x66) else {
                                throw error("\\u needs four hexadecimal digits")
                            }
                            index += 1
                        }
                    } else if !Array("\"\\/bfnrt".utf8).contains(escaped) {
                        index -= 1
                        throw error("invalid escape '\\\(Character(Unicode.Scalar(escaped)))'")
                    }
                case 0..<0x20:
                    index -= 1
                    throw error("unescaped control character in a string")
                default: continue
                }
            }
            throw error("unterminated string")
        }

        mutating func number() throws {
            if current == UInt8(ascii: "-") { index += 1 }
            guard let first = current, first >= 0x30 && first <= 0x39 else { throw error("expected a digit") }
            index += 1
            if first != UInt8(ascii: "0") { digits() }
            if current == UInt8(ascii: ".") {
                index += 1
                try requireDigit()
            }
            if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
                index += 1
                if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { index += 1 }
                try requireDigit()
            }
        }

        mutating func digits() {
            while let byte = current, byte >= 0x30 && byte <= 0x39 { index += 1 }
        }

        /// At least one digit, then any more.
        mutating func requireDigit() throws {
            guard let byte = current, byte >= 0x30 && byte <= 0x39 else { throw error("expected a digit") }
            digits()
        }
    }
}
