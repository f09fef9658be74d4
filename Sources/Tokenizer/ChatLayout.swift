import Foundation

/// One stretch of a rendered chat: template text (special tokens in it are parsed), a message's content
/// (special-token text in it stays plain text), or the template text closing an assistant turn (learned).
struct ChatSegment: Equatable {
    enum Kind: Equatable { case markup, content(assistant: Bool), assistantEnd }
    var text: String
    var kind: Kind
}

/// The chat layouts we render, each recognised from its family's real Jinja template text (no Jinja engine)
/// and checked against transformers' rendering of that text (Tests/Fixtures/chat-templates.json):
/// ChatML; Llama 3 (Meta-Llama-3-Instruct's, and 3.1/3.2's with the dated system block); Gemma (gemma-2-it's);
/// Phi-3 (Phi-3.5-mini-instruct's); Llama 2 chat; Mistral Instruct v0.2. Any other template is refused by
/// name, and so is a conversation the template itself would reject (its `raise_exception`).
enum ChatLayout {
    case chatML(ChatMLTemplate)
    /// `dated`: Llama 3.1/3.2's system block, written always, with `knowledgeDate` and `defaultDate` (3.1's
    /// literal default) or, when that is nil, the day of rendering (3.2's `strftime_now("%d %b %Y")`).
    case llama3(dated: Bool, knowledgeDate: String, defaultDate: String?)
    case gemma(bos: Bool)
    case phi3
    case llama2
    case mistral

    /// Recognises the layout of `template`.
    /// - Throws: `TokenizerError` for a missing template or one not recognised, naming what was looked for.
    init(template: String?) throws {
        guard let template else { throw TokenizerError("the model has no chat template (tokenizer.chat_template)") }
        // Compare with newlines whether the Jinja source writes them as "\n" escapes or as real newlines.
        let source = template.replacingOccurrences(of: "\\n", with: "\n")
        func has(_ fragments: String...) -> Bool { fragments.allSatisfy(source.contains) }
        if source.contains("<|im_start|>") {
            self = .chatML(try ChatMLTemplate(template: template))
        } else if source.contains("<|start_header_id|>") {
            if has("Cutting Knowledge Date: ", "Today Date: ", "<|start_header_id|>system<|end_header_id|>\n\n",
                   "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>'") {
                let knowledge = Self.literal(after: "Cutting Knowledge Date: ", in: source)
                let fallback = source.contains("strftime_now") ? nil : Self.literal(after: "set date_string = \"", in: source)
                guard let knowledge, source.contains("strftime_now") || fallback != nil else {
                    throw TokenizerError("the Llama 3 chat template's dates could not be read")
                }
                self = .llama3(dated: true, knowledgeDate: knowledge, defaultDate: fallback)
            } else if has("{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}",
                          "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}",
                          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}") {
                self = .llama3(dated: false, knowledgeDate: "", defaultDate: nil)
            } else {
                throw TokenizerError("the Llama 3 chat template (<|start_header_id|>) is not one we render: only "
                                     + "Meta-Llama-3-Instruct's and Llama 3.1/3.2's (dated system block) are supported")
            }
        } else if source.contains("<start_of_turn>") {
            guard has("'<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n'",
                      "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}",
                      "{{ raise_exception('System role not supported') }}", "{{'<start_of_turn>model\n'}}") else {
                throw TokenizerError("the Gemma chat template (<start_of_turn>) is not one we render: only gemma-2-it's "
                                     + "(no system role, content trimmed) is supported")
            }
            self = .gemma(bos: source.hasPrefix("{{ bos_token }}"))
        } else if source.contains("<|user|>") && source.contains("<|end|>") {
            guard has("{% if message['role'] == 'system' and message['content'] %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}",
                      "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}",
                      "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}",
                      "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"),
                  !source.contains("bos_token") else {
                throw TokenizerError("the Phi-3 chat template (<|user|> ... <|end|>) is not one we render: only "
                                     + "Phi-3.5-mini-instruct's is supported")
            }
            self = .phi3
        } else if source.contains("[INST]") {
            if has("{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}",
                   "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}", "{{ ' '  + content.strip() + ' ' + eos_token }}",
                   "{% set system_message = false %}") {
                self = .llama2
            } else if has("{{ bos_token }}{% for message in messages %}", "{{ '[INST] ' + message['content'] + ' [/INST]' }}",
                          "{{ message['content'] + eos_token}}", "Only user and assistant roles are supported!"),
                      !source.contains("system_message") {
                self = .mistral
            } else {
                throw TokenizerError("the [INST] chat template is not one we render: only Llama 2 chat's and Mistral "
                                     + "Instruct v0.2's are supported")
            }
        } else {
            throw TokenizerError("the chat template is not one we render (supported: ChatML <|im_start|>, Llama 3 "
                                 + "<|start_header_id|>, Gemma <start_of_turn>, Phi-3 <|user|>, Llama 2 and Mistral [INST])")
        }
    }

    /// The text after `prefix` up to the next newline or double quote.
    static func literal(after prefix: String, in source: String) -> String? {
        guard let start = source.range(of: prefix)?.upperBound else { return nil }
        let end = source[start...].firstIndex { $0 == "\n" || $0 == "\"" } ?? source.endIndex
        let text = String(source[start..<end])
        return text.isEmpty ? nil : text
    }

    /// Python's `str.strip()` (Jinja's `trim`): Unicode white space and the separators U+001C…U+001F.
    static func strip(_ text: String) -> String {
        func isSpace(_ s: Unicode.Scalar) -> Bool { s.properties.isWhitespace || (0x1C...0x1F).contains(s.value) }
        let scalars = text.unicodeScalars
        guard let first = scalars.firstIndex(where: { !isSpace($0) }) else { return "" }
        let last = scalars.lastIndex(where: { !isSpace($0) })!
        return String(scalars[first...last])
    }

    /// Checks roles and the alternation the template enforces: `user` at even positions, `assistant` at odd.
    static func checkAlternation(_ messages: ArraySlice<ChatMessage>) throws {
        for (position, message) in messages.enumerated() where (message.role == "user") != (position % 2 == 0) {
            throw TokenizerError("chat message \(messages.startIndex + position) (\(message.role)): the template needs "
                                 + "roles alternating user/assistant/user/assistant/...")
        }
    }

    /// The rendered conversation as segments; their texts joined are HF `apply_chat_template(tokenize=False)`.
    /// - Parameters: `bos`/`eos`: the tokenizer's BOS and EOS texts; `today`: the date Llama 3.2 writes.
    /// - Throws: `TokenizerError` for a conversation the template refuses or a role it cannot render.
    func segments(_ messages: [ChatMessage], addGenerationPrompt: Bool, bos: String?, eos: String?,
                  today: String) throws -> [ChatSegment] {
        for (i, message) in messages.enumerated() where message.role.isEmpty || message.role.contains("\n") || message.role.contains("<") {
            throw TokenizerError("chat message \(i) has an invalid role \"\(message.role)\"")
        }
        func need(_ text: String?, _ name: String) throws -> String {
            guard let text else { throw TokenizerError("the chat template writes \(name), but the tokenizer has none") }
            return text
        }
        switch self {
        case .chatML(let template):
            return Self.chatML(try template.effectiveMessages(messages), addGenerationPrompt: addGenerationPrompt)
        case .llama3(let dated, let knowledge, let defaultDate):
            return try Self.llama3(messages, addGenerationPrompt: addGenerationPrompt, bos: try need(bos, "bos_token"),
                                   system: dated ? (knowledge, defaultDate ?? today) : nil)
        case .gemma(let writesBOS):
            if messages.first?.role == "system" { throw TokenizerError("chat message 0: the Gemma template has no system role") }
            try Self.checkAlternation(messages[...])
            var out = writesBOS ? [ChatSegment(text: try need(bos, "bos_token"), kind: .markup)] : []
            for message in messages {
                let assistant = message.role == "assistant"
                out += [ChatSegment(text: "<start_of_turn>\(assistant ? "model" : message.role)\n", kind: .markup),
                        ChatSegment(text: Self.strip(message.content), kind: .content(assistant: assistant)),
                        ChatSegment(text: "<end_of_turn>", kind: assistant ? .assistantEnd : .markup),
                        ChatSegment(text: "\n", kind: .markup)]
            }
            if addGenerationPrompt { out.append(ChatSegment(text: "<start_of_turn>model\n", kind: .markup)) }
            return out
        case .phi3:
            return try Self.phi3(messages, addGenerationPrompt: addGenerationPrompt, eos: try need(eos, "eos_token"))
        case .llama2:
            return try Self.llama2(messages, bos: try need(bos, "bos_token"), eos: try need(eos, "eos_token"))
        case .mistral:
            try Self.checkAlternation(messages[...])
            var out = [ChatSegment(text: try need(bos, "bos_token"), kind: .markup)]
            let eos = try need(eos, "eos_token")
            for (i, message) in messages.enumerated() {
                guard message.role == "user" || message.role == "assistant" else {
                    throw TokenizerError("chat message \(i): the Mistral template renders only user and assistant roles")
                }
                if message.role == "user" {
                    out += [ChatSegment(text: "[INST] ", kind: .markup), ChatSegment(text: message.content, kind: .content(assistant: false)),
                            ChatSegment(text: " [/INST]", kind: .markup)]
                } else {
                    out += [ChatSegment(text: message.content, kind: .content(assistant: true)),
                            ChatSegment(text: eos, kind: .assistantEnd)]
                }
            }
            return out
        }
    }

    static func chatML(_ messages: [ChatMessage], addGenerationPrompt: Bool) -> [ChatSegment] {
        var out: [ChatSegment] = []
        for message in messages {
            let assistant = message.role == "assistant"
            out += [ChatSegment(text: "<|im_start|>\(message.role)\n", kind: .markup),
                    ChatSegment(text: message.content, kind: .content(assistant: assistant)),
                    ChatSegment(text: "<|im_end|>", kind: assistant ? .assistantEnd : .markup),
                    ChatSegment(text: "\n", kind: .markup)]
        }
        if addGenerationPrompt { out.append(ChatSegment(text: "<|im_start|>assistant\n", kind: .markup)) }
        return out
    }

    /// Llama 3; with `system` (knowledge date, today's date) the 3.1/3.2 layout, whose system block is always
    /// written, holding the first message's content when that is a system message.
    static func llama3(_ messages: [ChatMessage], addGenerationPrompt: Bool, bos: String,
                       system: (knowledge: String, date: String)?) throws -> [ChatSegment] {
        var out = [ChatSegment(text: bos, kind: .markup)]
        var rest = messages[...]
        func turn(_ role: String, _ content: String) {
            let assistant = role == "assistant"
            out += [ChatSegment(text: "<|start_header_id|>\(role)<|end_header_id|>\n\n", kind: .markup),
                    ChatSegment(text: strip(content), kind: .content(assistant: assistant)),
                    ChatSegment(text: "<|eot_id|>", kind: assistant ? .assistantEnd : .markup)]
        }
        if let system {
            for (i, message) in messages.enumerated() where !["system", "user", "assistant"].contains(message.role) {
                throw TokenizerError("chat message \(i): role \"\(message.role)\" is not rendered here (only system, user, assistant)")
            }
            var content = ""
            if rest.first?.role == "system" { content = strip(rest.removeFirst().content) }
            out += [ChatSegment(text: "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: \(system.knowledge)\n"
                                    + "Today Date: \(system.date)\n\n", kind: .markup),
                    ChatSegment(text: content, kind: .content(assistant: false)),
                    ChatSegment(text: "<|eot_id|>", kind: .markup)]
        }
        for message in rest { turn(message.role, message.content) }
        if addGenerationPrompt { out.append(ChatSegment(text: "<|start_header_id|>assistant<|end_header_id|>\n\n", kind: .markup)) }
        return out
    }

    /// Phi-3.5-mini: an empty system message is left out; without the generation prompt the text ends with EOS.
    static func phi3(_ messages: [ChatMessage], addGenerationPrompt: Bool, eos: String) throws -> [ChatSegment] {
        var out: [ChatSegment] = []
        for (i, message) in messages.enumerated() {
            guard ["system", "user", "assistant"].contains(message.role) else {
                throw TokenizerError("chat message \(i): role \"\(message.role)\" is not rendered by the Phi-3 template")
            }
            if message.role == "system" && message.content.isEmpty { continue }
            let assistant = message.role == "assistant"
            out += [ChatSegment(text: "<|\(message.role)|>\n", kind: .markup),
                    ChatSegment(text: message.content, kind: .content(assistant: assistant)),
                    ChatSegment(text: "<|end|>", kind: assistant ? .assistantEnd : .markup),
                    ChatSegment(text: "\n", kind: .markup)]
        }
        out.append(ChatSegment(text: addGenerationPrompt ? "<|assistant|>\n" : eos, kind: .markup))
        return out
    }

    /// Llama 2 chat: the system message goes inside the first user turn; BOS before every user turn.
    static func llama2(_ messages: [ChatMessage], bos: String, eos: String) throws -> [ChatSegment] {
        var rest = messages[...]
        var system: String? = nil
        if rest.first?.role == "system" { system = rest.removeFirst().content }
        try checkAlternation(rest)
        var out: [ChatSegment] = []
        for (position, message) in rest.enumerated() {
            guard message.role == "user" || message.role == "assistant" else {
                throw TokenizerError("chat message \(rest.startIndex + position): the Llama 2 template renders only a first "
                                     + "system message, then user and assistant roles")
            }
            var content = message.content
            var prefix = ""
            if position == 0, let system {
                prefix = "<<SYS>>\n" + system + "\n<</SYS>>\n\n"
                content = prefix + content
            }
            // `content.strip()` of the whole: the system block starts it, so only the end can lose white space
            // unless the block is absent. Cut in scalars, which a concatenation never merges.
            let stripped = strip(content).unicodeScalars
            let cut = min(prefix.unicodeScalars.count, stripped.count)
            let body = String(String.UnicodeScalarView(stripped.dropFirst(cut)))
            let systemText = String(String.UnicodeScalarView(stripped.prefix(cut)))
            if message.role == "user" {
                out += [ChatSegment(text: bos + "[INST] ", kind: .markup)]
                if !systemText.isEmpty { out.append(ChatSegment(text: systemText, kind: .content(assistant: false))) }
                out += [ChatSegment(text: body, kind: .content(assistant: false)), ChatSegment(text: " [/INST]", kind: .markup)]
            } else {
                out += [ChatSegment(text: " ", kind: .markup), ChatSegment(text: body, kind: .content(assistant: true)),
                        ChatSegment(text: " ", kind: .markup), ChatSegment(text: eos, kind: .assistantEnd)]
            }
        }
        return out
    }
}
