/// A tokenizer could not be built or used: names the source (GGUF key, JSON field, message) at fault.
public struct TokenizerError: Error, CustomStringConvertible, Sendable, Equatable {
    /// Human-readable explanation naming the key, field or value at fault.
    public let message: String

    public init(_ message: String) { self.message = message }

    public var description: String { "tokenizer: \(message)" }
}
