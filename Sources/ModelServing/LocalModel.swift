import Foundation
import LanguageModel
import Tokenizer

/// How much to generate and how to choose tokens.
public struct GenerationOptions: Sendable, Equatable {
    public var maxTokens: Int
    public var sampling: SamplingParameters

    public init(maxTokens: Int, sampling: SamplingParameters) {
        self.maxTokens = maxTokens
        self.sampling = sampling
    }
}

/// One finished generation.
public struct Completion: Sendable, Equatable {
    public var text: String
    public var promptTokens: Int
    public var completionTokens: Int
    /// "stop" (an end-of-turn or end-of-sequence token) or "length", as the OpenAI API names them, or
    /// "cancelled" when `onText` asked to stop.
    public var finishReason: String

    public init(text: String, promptTokens: Int, completionTokens: Int, finishReason: String) {
        self.text = text
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.finishReason = finishReason
    }
}

/// What the chat command and the HTTP API ask of a model: prompts rendered, one generation at a time.
public protocol CompletionBackend: Sendable {
    /// The id `/v1/models` lists.
    var modelName: String { get }
    /// The messages in the model's chat template, ending where the assistant answers.
    func chatPrompt(_ messages: [ChatMessage]) throws -> String
    /// Generates after `prompt`, calling `onText` with each complete UTF-8 piece as it is produced; `onText`
    /// returns false to stop early (the reader has gone), so a waiting request is not held up for nothing.
    /// Concurrent calls wait their turn. Throws `HTTPError` (400) for a prompt the model cannot take.
    func complete(prompt: String, options: GenerationOptions, onText: (String) -> Bool) throws -> Completion
}

/// The local model behind `chat` and `serve-model`: generation exactly as `generate` does it, one at a time.
public final class LocalModel: CompletionBackend, @unchecked Sendable {
    public let modelName: String
    let model: LlamaModel
    let tokenizer: BPETokenizer
    /// Held for a whole generation: the model has one thread pool and one set of weights.
    private let turn = NSLock()

    public init(model: LlamaModel, tokenizer: BPETokenizer, name: String) {
        self.model = model
        self.tokenizer = tokenizer
        self.modelName = name
    }

    public func chatPrompt(_ messages: [ChatMessage]) throws -> String {
        try tokenizer.applyChatTemplate(messages, addGenerationPrompt: true)
    }

    /// The prompt's ids as `generate` makes them: special tokens parsed, BOS added when the model asks.
    public func promptIds(_ text: String) -> [Int] {
        var ids = tokenizer.encode(text)
        if tokenizer.addBOS, let bos = tokenizer.bosTokenId, ids.first != bos { ids.insert(bos, at: 0) }
        return ids
    }

    /// Ids that end a generation: end-of-turn tokens and end-of-sequence.
    public var stopTokens: Set<Int> {
        var stops = tokenizer.endOfTurnTokenIds
        if let eos = tokenizer.eosTokenId { stops.insert(eos) }
        return stops
    }

    public func complete(prompt: String, options: GenerationOptions, onText: (String) -> Bool) throws -> Completion {
        let ids = promptIds(prompt)
        guard !ids.isEmpty else { throw HTTPError(400, "the prompt is empty") }
        let context = model.configuration.contextLength
        guard ids.count < context else {
            throw HTTPError(400, "the prompt has \(ids.count) tokens; the model's context holds \(context): shorten it")
        }
        let maxTokens = min(options.maxTokens, context - ids.count)
        turn.lock()
        defer { turn.unlock() }
        var stream = UTF8Stream()
        var reading = true
        let result = try model.generate(prompt: ids, maxTokens: maxTokens, sampling: options.sampling,
                                        stopTokens: stopTokens, onToken: { token in
            let piece = stream.append(tokenizer.decodeBytes([token]))
            if !piece.isEmpty { reading = onText(piece) }
        }, shouldStop: { !reading })
        let rest = stream.finish()
        if reading && !rest.isEmpty { _ = onText(rest) }
        let reasons = ["eos": "stop", "length": "length"]
        return Completion(text: tokenizer.decode(result.tokens), promptTokens: result.promptTokens,
                          completionTokens: result.tokens.count, finishReason: reasons[result.stopReason] ?? "cancelled")
    }
}

/// Bytes of generated text released as whole UTF-8 characters: a token may end inside one.
public struct UTF8Stream: Sendable {
    private var pending: [UInt8] = []

    public init() {}

    /// The text completed by `bytes`; a trailing partial character waits for the next call.
    public mutating func append(_ bytes: [UInt8]) -> String {
        pending += bytes
        let complete = Self.completeLength(pending)
        guard complete > 0 else { return "" }
        let text = String(decoding: pending[..<complete], as: UTF8.self)
        pending.removeFirst(complete)
        return text
    }

    /// Whatever is left (an incomplete character becomes U+FFFD).
    public mutating func finish() -> String {
        defer { pending = [] }
        return String(decoding: pending, as: UTF8.self)
    }

    /// Where a byte buffer's last complete UTF-8 character ends.
    public static func completeLength(_ bytes: [UInt8]) -> Int {
        var end = bytes.count
        // Walk back over at most 3 continuation bytes to the lead byte of the last character.
        var i = bytes.count - 1, continuation = 0
        while i >= 0 && continuation < 4 && bytes[i] & 0xC0 == 0x80 {
            continuation += 1
            i -= 1
        }
        guard i >= 0 else { return 0 }
        let lead = bytes[i]
        let needed = lead < 0x80 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1
        if continuation + 1 < needed { end = i }
        return end
    }
}

/// A conversation with the model: each reply is generated from the whole exchange so far.
public final class ChatSession {
    public let backend: any CompletionBackend
    /// The system message (if any) and every finished user/assistant exchange.
    public private(set) var messages: [ChatMessage]

    public init(backend: any CompletionBackend, system: String?) {
        self.backend = backend
        self.messages = system.map { [ChatMessage(role: "system", content: $0)] } ?? []
    }

    /// The prompt the model sees for the next user turn: every earlier exchange, then `user`.
    public func prompt(forUser user: String) throws -> String {
        try backend.chatPrompt(messages + [ChatMessage(role: "user", content: user)])
    }

    /// Answers `user`, streaming the answer through `onText`, and keeps the exchange for the next turn.
    public func reply(to user: String, options: GenerationOptions, onText: (String) -> Void) throws -> Completion {
        let completion = try backend.complete(prompt: try prompt(forUser: user), options: options) { text in
            onText(text)
            return true
        }
        messages += [ChatMessage(role: "user", content: user), ChatMessage(role: "assistant", content: completion.text)]
        return completion
    }
}
