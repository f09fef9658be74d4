import Foundation
import LanguageModel
import Tokenizer

/// Sampling fields shared by `/v1/chat/completions` and `/v1/completions`; unknown fields are ignored.
struct SamplingFields: Decodable {
    var maxTokens: Int?
    var maxCompletionTokens: Int?
    var temperature: Double?
    var topP: Double?
    /// Not in the OpenAI API; llama.cpp's server accepts it too.
    var topK: Int?
    var seed: UInt64?
    var stream: Bool?
    var n: Int?
    var stop: StopField?

    /// `stop` may be a string or a list; either way it is refused, so its shape only matters for the message.
    struct StopField: Decodable {
        init(from decoder: Decoder) throws {}
    }

    func options(defaultMaxTokens: Int) throws(HTTPError) -> GenerationOptions {
        let maxTokens = maxCompletionTokens ?? maxTokens ?? defaultMaxTokens
        guard maxTokens >= 1 else { throw HTTPError(400, "max_tokens is \(maxTokens); it must be at least 1") }
        let temperature = temperature ?? 0.7
        guard temperature.isFinite, (0...100).contains(temperature) else {
            throw HTTPError(400, "temperature is \(temperature); it must be between 0 and 100 (0 is greedy)")
        }
        let topP = topP ?? 0.95
        guard topP.isFinite, (0...1).contains(topP) else { throw HTTPError(400, "top_p is \(topP); it must be between 0 and 1") }
        let topK = topK ?? 40
        guard topK >= 0 else { throw HTTPError(400, "top_k is \(topK); it must be 0 (all) or more") }
        guard (n ?? 1) == 1 else { throw HTTPError(400, "n is \(n ?? 1); only one choice (n = 1) is generated") }
        guard stop == nil else { throw HTTPError(400, "stop sequences are not supported; leave out \"stop\"") }
        return GenerationOptions(maxTokens: maxTokens,
                                 sampling: SamplingParameters(temperature: temperature, topK: topK, topP: topP, seed: seed))
    }
}

/// A chat message's content: a string, or a list of `{"type": "text", "text": ...}` parts joined.
struct MessageContent: Decodable {
    var text: String

    struct Part: Decodable {
        var type: String
        var text: String?
    }

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let text = try? container.decode(String.self) {
            self.text = text
            return
        }
        let parts = try container.decode([Part].self)
        for part in parts where part.type != "text" || part.text == nil {
            throw DecodingError.dataCorruptedError(in: container,
                                                   debugDescription: "only text parts are supported, not \"\(part.type)\"")
        }
        self.text = parts.compactMap(\.text).joined()
    }
}

struct ChatCompletionRequest: Decodable {
    struct Message: Decodable {
        var role: String
        var content: MessageContent
    }

    var messages: [Message]
}

struct CompletionRequest: Decodable {
    /// A string, or a list holding exactly one string.
    struct Prompt: Decodable {
        var text: String

        init(from decoder: Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let text = try? container.decode(String.self) {
                self.text = text
                return
            }
            let list = try container.decode([String].self)
            guard list.count == 1 else {
                throw DecodingError.dataCorruptedError(in: container,
                                                       debugDescription: "a list of \(list.count) prompts; send exactly one")
            }
            self.text = list[0]
        }
    }

    var prompt: Prompt
}

/// Decodes a request body, turning every failure into a 400 that names the field.
func decodeBody<T: Decodable>(_ type: T.Type, from body: [UInt8]) throws(HTTPError) -> T {
    let decoder = JSONDecoder()
    decoder.keyDecodingStrategy = .convertFromSnakeCase
    do {
        return try decoder.decode(T.self, from: Data(body))
    } catch let error as DecodingError {
        throw HTTPError(400, describe(error))
    } catch {
        throw HTTPError(400, "the body is not JSON: \(error)")
    }
}

/// A decoding error as a sentence naming the field, e.g. `messages[0].content: expected a string`.
func describe(_ error: DecodingError) -> String {
    func path(_ keys: [CodingKey]) -> String {
        var text = ""
        for key in keys {
            if let index = key.intValue { text += "[\(index)]" } else { text += (text.isEmpty ? "" : ".") + snake(key.stringValue) }
        }
        return text.isEmpty ? "the body" : text
    }
    func snake(_ name: String) -> String {
        name.reduce(into: "") { out, c in out += c.isUppercase ? "_" + c.lowercased() : String(c) }
    }
    switch error {
    case .keyNotFound(let key, let context):
        return "\(path(context.codingPath + [key])) is missing"
    case .typeMismatch(let type, let context):
        return "\(path(context.codingPath)): expected \(type == String.self ? "a string" : "a value of type \(type)")"
    case .valueNotFound(_, let context):
        return "\(path(context.codingPath)) is null"
    case .dataCorrupted(let context):
        if context.codingPath.isEmpty { return "the body is not valid JSON" }
        return "\(path(context.codingPath)): \(context.debugDescription)"
    @unknown default:
        return "the body does not match the request format"
    }
}
