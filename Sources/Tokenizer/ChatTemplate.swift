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
/// instead of running Jinja: we support this family only and refuse other templates by name.
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
    /// Renders `messages` as the model's ChatML template does (HF `apply_chat_template(tokenize=False)`).
    /// - Parameter addGenerationPrompt: end with `<|im_start|>assistant\n` so the model answers next.
    /// - Throws: `TokenizerError` for a missing or non-ChatML template, or a role that would break the layout.
    public func applyChatTemplate(_ messages: [ChatMessage], addGenerationPrompt: Bool) throws -> String {
        let template = try ChatMLTemplate(template: chatTemplate)
        var out = ""
        for message in try template.effectiveMessages(messages) {
            out += "<|im_start|>\(message.role)\n\(message.content)<|im_end|>\n"
        }
        if addGenerationPrompt { out += "<|im_start|>assistant\n" }
        return out
    }

    /// Token ids of a chat for training, with a mask that is true on the tokens the model must learn to
    /// produce: each assistant message's content and its closing `<|im_end|>`.
    ///
    /// Ids equal `encode(applyChatTemplate(messages, addGenerationPrompt: false))` except that special-token
    /// text inside message content stays plain text, so training data cannot forge turn boundaries.
    /// A token straddling an assistant header and its content (e.g. "\n\n") counts as content.
    public func encodeChat(_ messages: [ChatMessage]) throws -> (ids: [Int], assistantMask: [Bool]) {
        let template = try ChatMLTemplate(template: chatTemplate)
        guard let start = controlTokenId("<|im_start|>"), let end = controlTokenId("<|im_end|>") else {
            throw TokenizerError("the vocabulary lacks the ChatML control tokens <|im_start|> and <|im_end|>")
        }
        var ids: [Int] = []
        var mask: [Bool] = []
        if addBOS, let bosTokenId {
            ids.append(bosTokenId)
            mask.append(false)
        }
        for message in try template.effectiveMessages(messages) {
            let isAssistant = message.role == "assistant"
            ids.append(start)
            mask.append(false)
            let header = "\(message.role)\n"
            let headerBytes = header.utf8.count
            let first = ids.count
            appendEncoded(header + message.content, parseSpecialTokens: false, into: &ids)
            var offset = 0
            for id in ids[first...] {
                offset += tokenBytes[id].count
                mask.append(isAssistant && offset > headerBytes)
            }
            ids.append(end)
            mask.append(isAssistant)
            let newline = ids.count
            appendEncoded("\n", parseSpecialTokens: false, into: &ids)
            mask.append(contentsOf: repeatElement(false, count: ids.count - newline))
        }
        return (ids, mask)
    }

    /// Id of a control token with exactly this text.
    func controlTokenId(_ text: String) -> Int? {
        for (id, token) in tokens.enumerated() where tokenTypes[id] == .control && token == text { return id }
        return nil
    }
}
