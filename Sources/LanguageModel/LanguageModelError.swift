/// Errors from loading or running a model; each names the file or value at fault.
public enum LanguageModelError: Error, CustomStringConvertible, Sendable {
    case missingTensor(file: String, tensor: String)
    case badTensor(file: String, tensor: String, problem: String)
    case unsupportedModel(file: String, problem: String)
    case adapter(String, String)
    case tokenOutOfRange(token: Int, vocabularySize: Int)
    case contextTooLong(tokens: Int, maximum: Int)
    case labelsMismatch(tokens: Int, labels: Int)

    public var description: String {
        switch self {
        case .missingTensor(let file, let tensor): return "\(file): missing tensor '\(tensor)'"
        case .badTensor(let file, let tensor, let problem): return "\(file): tensor '\(tensor)': \(problem)"
        case .unsupportedModel(let file, let problem): return "\(file): \(problem)"
        case .adapter(let source, let problem): return "adapter \(source): \(problem)"
        case .tokenOutOfRange(let token, let size): return "token id \(token) is outside the vocabulary (0..<\(size))"
        case .labelsMismatch(let tokens, let labels):
            return "\(labels) labels for \(tokens) tokens; a record needs one label per token"
        case .contextTooLong(let tokens, let maximum):
            return "sequence of \(tokens) tokens exceeds the model's context of \(maximum)"
        }
    }
}
