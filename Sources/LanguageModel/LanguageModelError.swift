/// Errors from loading or running a model; each names the file or value at fault.
public enum LanguageModelError: Error, CustomStringConvertible, Sendable {
    case missingTensor(file: String, tensor: String)
    case badTensor(file: String, tensor: String, problem: String)
    case unsupportedModel(file: String, problem: String)
    case adapter(String, String)
    case tokenOutOfRange(token: Int, vocabularySize: Int)
    case contextTooLong(tokens: Int, maximum: Int)
    /// A LongRoPE session opened for `session` positions, within the original context, asked to go past it.
    case shortFactorSessionTooLong(tokens: Int, originalContext: Int, session: Int)
    case labelsMismatch(tokens: Int, labels: Int)
    /// A record to be continued after its prompt whose first counted label is its first token, or which counts none.
    case noPrompt(tokens: Int)

    public var description: String {
        switch self {
        case .missingTensor(let file, let tensor): return "\(file): missing tensor '\(tensor)'"
        case .badTensor(let file, let tensor, let problem): return "\(file): tensor '\(tensor)': \(problem)"
        case .unsupportedModel(let file, let problem): return "\(file): \(problem)"
        case .adapter(let source, let problem): return "adapter \(source): \(problem)"
        case .tokenOutOfRange(let token, let size): return "token id \(token) is outside the vocabulary (0..<\(size))"
        case .labelsMismatch(let tokens, let labels):
            return "\(labels) labels for \(tokens) tokens; a record needs one label per token"
        case .noPrompt(let tokens):
            return "a record of \(tokens) tokens has no prompt before its first counted label to continue after"
        case .contextTooLong(let tokens, let maximum):
            return "sequence of \(tokens) tokens exceeds the model's context of \(maximum)"
        case .shortFactorSessionTooLong(let tokens, let original, let session):
            return "sequence of \(tokens) tokens exceeds LongRoPE's original context of \(original) in a session opened for "
                + "\(session), which rotates by the short factors; a session opened for more than \(original) tokens "
                + "rotates every position by the long factors"
        }
    }
}
