import Foundation

/// One chat turn, as in HF `apply_chat_template` messages.
public struct ChatMessage: Sendable, Codable, Equatable {
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// The ChatML layout (`<|im_start|>role\ncontent<|im_end|>\n`), recognised from a model's Jinja template
/// instead of running Jinja (one of `ChatLayout`'s), with the default system prompt the template writes.
struct ChatMLTemplate: Sendable {
    /// System prompt the template inserts when the first message is not a system message.
    let defaultSystemPrompt: String?

    /// Recognises ChatML in `template` and extracts its built-in system prompt, if any.
    init(template: String?) throws {
        guard let template else {
            throw TokenizerError("the model has no chat template (tokenizer.chat_template)")
        }
        guard template.contains("<|im_start|>") else {
            throw TokenizerError("the chat template is not ChatML (no <|im_start|>); only ChatML templates are supported")
        }
        // In the Jinja source the newline after "system" is either a real newline or the escape "\n";
        // the first such block holding only literal text is the default (a block that renders
        // `messages[0]['content']` is not).
        var prompt: String? = nil
        search: for opening in ["<|im_start|>system\n", "<|im_start|>system\\n"] {
            var from = template.startIndex
            while let start = template.range(of: opening, range: from..<template.endIndex),
                  let end = template.range(of: "<|im_end|>", range: start.upperBound..<template.endIndex) {
                let text = String(template[start.upperBound..<end.lowerBound])
                if !["{{", "{%", "' +", "+ '", "message["].contains(where: text.contains) {
                    prompt = text.replacingOccurrences(of: "\\n", with: "\n")
                    break search
                }
                from = end.upperBound
            }
        }
        defaultSystemPrompt = prompt
    }

    /// The messages actually rendered: the default system message first when the template adds one.
    func effectiveMessages(_ messages: [ChatMessage]) throws -> [ChatMessage] {
        for (i, message) in messages.enumerated() {
            if message.role.isEmpty || message.role.contains("\n") || message.role.contains("<|") {
                throw TokenizerError("chat message \(i) has an invalid role \"\(message.role)\"")
            }
        }
        if let first = messages.first, first.role != "system", let defaultSystemPrompt {
            return [ChatMessage(role: "system", content: defaultSystemPrompt)] + messages
        }
        return messages
    }
}

extension BPETokenizer {
    /// Renders `messages` as the model's chat template does (HF `apply_chat_template(tokenize=False)`), for
    /// the layouts `ChatLayout` recognises (ChatML, Llama 3, Gemma, Phi-3, Llama 2, Mistral).
    /// - Parameters:
    ///   - addGenerationPrompt: end with the header of an assistant turn, so the model answers next.
    ///   - today: the date Llama 3.2's system block states (its template asks for today's).
    /// - Throws: `TokenizerError` for a missing or unrecognised template, or a conversation it refuses.
    public func applyChatTemplate(_ messages: [ChatMessage], addGenerationPrompt: Bool, today: Date = Date()) throws
        -> String
    {
        try chatSegments(messages, addGenerationPrompt: addGenerationPrompt, today: today).map(\.text).joined()
    }

    func chatSegments(_ messages: [ChatMessage], addGenerationPrompt: Bool, today: Date) throws -> [ChatSegment] {
        let layout = try ChatLayout(template: chatTemplate)
        return try layout.segments(messages, addGenerationPrompt: addGenerationPrompt, bos: bosTokenId.map(tokenText),
                                   eos: eosTokenId.map(tokenText), today: Self.dayString(today))
    }

    /// `strftime("%d %b %Y")` in the C locale, as transformers' `strftime_now` gives it.
    static func dayString(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone.current
        formatter.dateFormat = "dd MMM yyyy"
        return formatter.string(from: date)
    }

    /// Token ids of a chat for training, with a mask that is true on the tokens the model must learn to
    /// produce: each assistant message's content and the template text that closes its turn (`<|im_end|>`,
    /// `<|eot_id|>`, `<end_of_turn>`, `<|end|>`, `</s>`).
    ///
    /// Ids equal `encode(applyChatTemplate(messages, addGenerationPrompt: false))` except that special-token
    /// text inside message content stays plain text, so training data cannot forge turn boundaries.
    /// A token straddling template text and content counts as content when it ends in the content.
    public func encodeChat(_ messages: [ChatMessage], today: Date = Date()) throws -> (ids: [Int], assistantMask: [Bool]) {
        var bytes: [UInt8] = []
        var parse: [Bool] = []
        var learn: [Bool] = []
        for segment in try chatSegments(messages, addGenerationPrompt: false, today: today) {
            let text = Array((normalizesToNFC ? segment.text.precomposedStringWithCanonicalMapping : segment.text).utf8)
            bytes += text
            switch segment.kind {
            case .markup:
                parse += repeatElement(true, count: text.count)
                learn += repeatElement(false, count: text.count)
            case .content(let assistant):
                parse += repeatElement(false, count: text.count)
                learn += repeatElement(assistant, count: text.count)
            case .assistantEnd:
                parse += repeatElement(true, count: text.count)
                learn += repeatElement(true, count: text.count)
            }
        }
        var ids: [Int] = []
        var ends: [Int] = []
        bytes.withUnsafeBufferPointer { buffer in
            appendEncoded(buffer, parseControlAt: parse, into: &ids, tokenEnds: &ends)
        }
        var mask = ends.map { learn[max($0 - 1, 0)] }
        if addBOS, let bosTokenId, ids.first != bosTokenId {
            ids.insert(bosTokenId, at: 0)
            mask.insert(false, at: 0)
        }
        return (ids, mask)
    }

    /// Id of a control token with exactly this text.
    func controlTokenId(_ text: String) -> Int? {
        for (id, token) in tokens.enumerated() where tokenTypes[id] == .control && token == text { return id }
        return nil
    }
}
