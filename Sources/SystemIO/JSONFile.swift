import Foundation

/// The one JSON decoder for files that people and programs write (state files, configuration files,
/// the privacy ledger, audit records): a failure is a `JSONFieldError` that names the field as the file
/// spells it, `clients[2].not_after`.
public enum JSONFile {
    /// How the file's keys relate to the Swift properties.
    public enum Keys: Sendable {
        /// snake_case in the file, camelCase in Swift.
        case snakeCase
        /// As the types' own `CodingKeys` declare them.
        case declared
    }

    /// Decodes `data` as `type`. Errors that the types' own `init(from:)` throw, other than
    /// `DecodingError`, pass through unchanged.
    /// - Throws: `JSONFieldError` for text that is not JSON or does not fit the type.
    public static func decode<T: Decodable>(_ type: T.Type, from data: Data, keys: Keys,
                                            dates: JSONDecoder.DateDecodingStrategy = .iso8601,
                                            floats: JSONDecoder.NonConformingFloatDecodingStrategy = .throw) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = dates
        decoder.nonConformingFloatDecodingStrategy = floats
        if case .snakeCase = keys { decoder.keyDecodingStrategy = .convertFromSnakeCase }
        do {
            return try decoder.decode(type, from: data)
        } catch let error as DecodingError {
            throw JSONFieldError(error, keys: keys)
        }
    }
}

/// JSON that does not decode: which field (as the file spells it) and what is wrong with it.
public struct JSONFieldError: Error, Equatable, Sendable, CustomStringConvertible {
    public enum Problem: Equatable, Sendable {
        /// The field is absent.
        case missing
        /// The field holds another type (`expected` names the Swift type).
        case wrongType(expected: String)
        /// The field is null.
        case null(expected: String)
        /// The value is corrupt; for the whole file (`field` empty), the text is not JSON.
        case badValue
    }

    /// The field, e.g. `clients[2].not_after`; empty for the file as a whole.
    public let field: String
    public let problem: Problem
    /// The decoder's words.
    public let detail: String
    /// The JSON parser's words, when the text itself is malformed (they say where).
    public let parserDetail: String?

    public init(field: String, problem: Problem, detail: String, parserDetail: String? = nil) {
        self.field = field
        self.problem = problem
        self.detail = detail
        self.parserDetail = parserDetail
    }

    init(_ error: DecodingError, keys: JSONFile.Keys) {
        func path(_ codingPath: [CodingKey]) -> String { Self.fieldPath(codingPath, keys: keys) }
        func parser(_ context: DecodingError.Context) -> String? { context.underlyingError.map { "\($0)" } }
        switch error {
        case let .keyNotFound(key, context):
            self.init(field: path(context.codingPath + [key]), problem: .missing, detail: context.debugDescription)
        case let .typeMismatch(expected, context):
            self.init(field: path(context.codingPath), problem: .wrongType(expected: "\(expected)"),
                      detail: context.debugDescription, parserDetail: parser(context))
        case let .valueNotFound(expected, context):
            self.init(field: path(context.codingPath), problem: .null(expected: "\(expected)"),
                      detail: context.debugDescription, parserDetail: parser(context))
        case let .dataCorrupted(context):
            self.init(field: path(context.codingPath), problem: .badValue, detail: context.debugDescription,
                      parserDetail: parser(context))
        @unknown default:
            self.init(field: "", problem: .badValue, detail: "\(error)")
        }
    }

    /// `field 'clients[0].not_after': missing`; at the top level, `not valid JSON` and where the parser stopped.
    public var description: String {
        switch problem {
        case .missing: return "field '\(field)': missing"
        case _ where field.isEmpty: return "not valid JSON" + (parserDetail.map { ": \($0)" } ?? "")
        case .badValue: return "field '\(field)': bad value (\(detail))"
        case let .wrongType(expected): return "field '\(field)': expected \(expected) (\(detail))"
        case .null: return "field '\(field)': null value (\(detail))"
        }
    }

    /// `clients[2].not_after` from a coding path: indices in brackets, keys as the file spells them.
    static func fieldPath(_ path: [CodingKey], keys: JSONFile.Keys) -> String {
        var text = ""
        for key in path {
            if let index = key.intValue {
                text += "[\(index)]"
            } else {
                let name: String
                switch keys {
                case .snakeCase: name = snakeCase(key.stringValue)
                case .declared: name = key.stringValue
                }
                text += (text.isEmpty ? "" : ".") + name
            }
        }
        return text
    }

    private static func snakeCase(_ name: String) -> String {
        var out = ""
        for character in name {
            if character.isUppercase {
                out += "_" + character.lowercased()
            } else {
                out.append(character)
            }
        }
        return out
    }
}
