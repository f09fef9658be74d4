import Foundation
import Tokenizer

/// The OpenAI-compatible API over one backend: `POST /v1/chat/completions`, `POST /v1/completions`
/// (whole JSON, or server-sent events ending with `data: [DONE]` when `"stream": true`) and `GET /v1/models`.
public struct OpenAIService: Sendable {
    public let backend: any CompletionBackend
    /// Tokens generated when a request gives no `max_tokens`.
    public let defaultMaxTokens: Int

    public init(backend: any CompletionBackend, defaultMaxTokens: Int = 256) {
        self.backend = backend
        self.defaultMaxTokens = defaultMaxTokens
    }

    static let routes: [String: String] = [
        "/v1/chat/completions": "POST", "/v1/completions": "POST", "/v1/models": "GET",
    ]

    /// Answers one request; errors become JSON `{"error": {"message": ...}}` with their status.
    public func handle(_ request: HTTPRequest, writer: some HTTPResponseWriter) {
        do {
            guard let method = Self.routes[request.path] else {
                throw HTTPError(404, "no such endpoint \(request.path); this server has "
                                + Self.routes.keys.sorted().joined(separator: ", "))
            }
            guard request.method == method else {
                throw HTTPError(405, "\(request.path) takes \(method), not \(request.method)")
            }
            switch request.path {
            case "/v1/models": writer.respond(Self.json(200, modelList()))
            case "/v1/chat/completions": try chatCompletion(request.body, writer: writer)
            default: try completion(request.body, writer: writer)
            }
        } catch let error as HTTPError {
            writer.respond(Self.errorResponse(error))
        } catch {
            writer.respond(Self.errorResponse(HTTPError(500, "\(error)")))
        }
    }

    func modelList() -> [String: Any] {
        ["object": "list", "data": [["id": backend.modelName, "object": "model", "created": 0, "owned_by": "conclave"]]]
    }

    func chatCompletion(_ body: [UInt8], writer: some HTTPResponseWriter) throws {
        let request = try decodeBody(ChatCompletionRequest.self, from: body)
        let fields = try decodeBody(SamplingFields.self, from: body)
        let options = try fields.options(defaultMaxTokens: defaultMaxTokens)
        guard !request.messages.isEmpty else { throw HTTPError(400, "messages is empty; send at least one message") }
        let messages = request.messages.map { ChatMessage(role: $0.role, content: $0.content.text) }
        let prompt: String
        do { prompt = try backend.chatPrompt(messages) } catch { throw HTTPError(400, "messages: \(error)") }
        let reply = ReplyFormat(chat: true, id: "chatcmpl-\(UUID().uuidString.lowercased())", model: backend.modelName)
        try generate(prompt: prompt, options: options, stream: fields.stream ?? false, format: reply, writer: writer)
    }

    func completion(_ body: [UInt8], writer: some HTTPResponseWriter) throws {
        let request = try decodeBody(CompletionRequest.self, from: body)
        let fields = try decodeBody(SamplingFields.self, from: body)
        let options = try fields.options(defaultMaxTokens: defaultMaxTokens)
        let reply = ReplyFormat(chat: false, id: "cmpl-\(UUID().uuidString.lowercased())", model: backend.modelName)
        try generate(prompt: request.prompt.text, options: options, stream: fields.stream ?? false, format: reply,
                     writer: writer)
    }

    /// Runs the generation; a stream starts only with the first text, so a refused prompt still gets a JSON 400.
    func generate(prompt: String, options: GenerationOptions, stream: Bool, format: ReplyFormat,
                  writer: some HTTPResponseWriter) throws {
        guard stream else {
            let done = try backend.complete(prompt: prompt, options: options) { _ in true }
            writer.respond(Self.json(200, format.whole(done)))
            return
        }
        var started = false
        func start() {
            guard !started else { return }
            started = true
            writer.startStream()
            if let first = format.opening() { writer.sendChunk(Self.event(first)) }
        }
        let done = try backend.complete(prompt: prompt, options: options) { text in
            start()
            return writer.sendChunk(Self.event(format.piece(text)))
        }
        start()
        writer.sendChunk(Self.event(format.closing(done)))
        writer.sendChunk(Array("data: [DONE]\n\n".utf8))
        writer.endStream()
    }

    /// One server-sent event holding a JSON object.
    static func event(_ object: [String: Any]) -> [UInt8] {
        Array("data: ".utf8) + encode(object) + Array("\n\n".utf8)
    }

    static func json(_ status: Int, _ object: [String: Any]) -> HTTPResponse {
        HTTPResponse(status: status, body: encode(object) + [10])
    }

    static func errorResponse(_ error: HTTPError) -> HTTPResponse {
        let type = error.status >= 500 ? "server_error" : error.status == 404 ? "not_found_error" : "invalid_request_error"
        return json(error.status, ["error": ["message": error.message, "type": type, "param": NSNull(), "code": NSNull()]])
    }

    static func encode(_ object: [String: Any]) -> [UInt8] {
        // Only strings, numbers, null and containers of them are built here, so serialization cannot fail.
        let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        return Array(data ?? Data("{}".utf8))
    }
}

/// The shapes of replies: `chat.completion` (with `message`/`delta`) or `text_completion` (with `text`).
struct ReplyFormat {
    let chat: Bool
    let id: String
    let model: String
    let created = Int(Date().timeIntervalSince1970)

    private func envelope(_ choice: [String: Any], chunk: Bool) -> [String: Any] {
        let object = chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion"
        return ["id": id, "object": object, "created": created, "model": model, "choices": [choice]]
    }

    func whole(_ done: Completion) -> [String: Any] {
        var choice: [String: Any] = ["index": 0, "finish_reason": done.finishReason]
        if chat {
            choice["message"] = ["role": "assistant", "content": done.text]
        } else {
            choice["text"] = done.text
            choice["logprobs"] = NSNull()
        }
        var reply = envelope(choice, chunk: false)
        reply["usage"] = ["prompt_tokens": done.promptTokens, "completion_tokens": done.completionTokens,
                          "total_tokens": done.promptTokens + done.completionTokens]
        return reply
    }

    /// A chat stream opens with the assistant's role, as OpenAI's does.
    func opening() -> [String: Any]? {
        chat ? envelope(["index": 0, "delta": ["role": "assistant", "content": ""], "finish_reason": NSNull()], chunk: true) : nil
    }

    func piece(_ text: String) -> [String: Any] {
        chat ? envelope(["index": 0, "delta": ["content": text], "finish_reason": NSNull()], chunk: true)
            : envelope(["index": 0, "text": text, "logprobs": NSNull(), "finish_reason": NSNull()], chunk: true)
    }

    func closing(_ done: Completion) -> [String: Any] {
        chat ? envelope(["index": 0, "delta": [String: Any](), "finish_reason": done.finishReason], chunk: true)
            : envelope(["index": 0, "text": "", "logprobs": NSNull(), "finish_reason": done.finishReason], chunk: true)
    }
}
