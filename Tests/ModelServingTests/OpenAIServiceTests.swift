import Foundation
import LanguageModel
import ModelServing
import Tokenizer
import XCTest

/// A backend that answers with fixed pieces and records what it was asked.
final class ScriptedBackend: CompletionBackend, @unchecked Sendable {
    let modelName = "scripted"
    let pieces: [String]
    var prompts: [String] = []
    var options: [GenerationOptions] = []
    /// True once `onText` asked to stop.
    var stoppedEarly = false

    init(pieces: [String] = ["Hel", "lo", "!"]) { self.pieces = pieces }

    func chatPrompt(_ messages: [ChatMessage]) throws -> String {
        messages.map { "<\($0.role)>\($0.content)" }.joined() + "<assistant>"
    }

    func complete(prompt: String, options: GenerationOptions, onText: (String) -> Bool) throws -> Completion {
        if prompt.isEmpty { throw HTTPError(400, "the prompt is empty") }
        prompts.append(prompt)
        self.options.append(options)
        for piece in pieces where !onText(piece) {
            stoppedEarly = true
            return Completion(text: "", promptTokens: 7, completionTokens: 0, finishReason: "cancelled")
        }
        return Completion(text: pieces.joined(), promptTokens: 7, completionTokens: pieces.count, finishReason: "stop")
    }
}

/// Captures what a handler sends.
final class RecordingWriter: HTTPResponseWriter {
    var response: HTTPResponse?
    var streamed = false
    var chunks: [String] = []
    var ended = false
    /// Chunks accepted before the client "leaves".
    var chunksAccepted = Int.max

    func respond(_ response: HTTPResponse) { self.response = response }
    func startStream() { streamed = true }
    func sendChunk(_ bytes: [UInt8]) -> Bool {
        guard chunks.count < chunksAccepted else { return false }
        chunks.append(String(decoding: bytes, as: UTF8.self))
        return true
    }
    func endStream() { ended = true }

    func json() throws -> [String: Any] {
        let body = try XCTUnwrap(response?.body)
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])
    }
}

final class OpenAIServiceTests: XCTestCase {
    func send(_ method: String, _ path: String, _ body: String, backend: ScriptedBackend = ScriptedBackend()) -> RecordingWriter {
        let writer = RecordingWriter()
        let request = HTTPRequest(method: method, path: path, headers: [], body: Array(body.utf8))
        OpenAIService(backend: backend, defaultMaxTokens: 33).handle(request, writer: writer)
        return writer
    }

    func errorMessage(_ writer: RecordingWriter) throws -> String {
        let error = try XCTUnwrap(try writer.json()["error"] as? [String: Any])
        return try XCTUnwrap(error["message"] as? String)
    }

    func testBadJSONIs400WithAMessage() throws {
        let writer = send("POST", "/v1/chat/completions", #"{"messages": [ {"role": "user", "content": "hi"} "#)
        XCTAssertEqual(writer.response?.status, 400)
        XCTAssertEqual(try errorMessage(writer), "the body is not valid JSON")
    }

    func testWrongFieldsAre400NamingTheField() throws {
        let cases: [(String, String, String)] = [
            ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": 5}]}"#, "messages[0].content"),
            ("/v1/chat/completions", #"{"model": "x"}"#, "messages is missing"),
            ("/v1/chat/completions", #"{"messages": []}"#, "messages is empty"),
            ("/v1/completions", #"{"prompt": "a", "max_tokens": "many"}"#, "max_tokens"),
            ("/v1/completions", #"{"prompt": "a", "temperature": -1}"#, "temperature is -1.0"),
            ("/v1/completions", #"{"prompt": ["a", "b"]}"#, "send exactly one"),
            ("/v1/completions", #"{"prompt": "a", "n": 2}"#, "n is 2"),
            ("/v1/completions", #"{"prompt": "a", "stop": ["\n"]}"#, "stop sequences are not supported"),
            ("/v1/completions", #"[1, 2]"#, "the body"),
        ]
        for (path, body, expected) in cases {
            let writer = send("POST", path, body)
            XCTAssertEqual(writer.response?.status, 400, body)
            let message = try errorMessage(writer)
            XCTAssertTrue(message.contains(expected), "\(body): \(message)")
        }
    }

    func testUnknownPathIs404AndWrongMethod405() throws {
        let missing = send("POST", "/v1/embeddings", "{}")
        XCTAssertEqual(missing.response?.status, 404)
        XCTAssertTrue(try errorMessage(missing).contains("/v1/chat/completions"))
        XCTAssertEqual(send("GET", "/v1/chat/completions", "").response?.status, 405)
    }

    func testModelsListsTheBackendsName() throws {
        let writer = send("GET", "/v1/models", "")
        XCTAssertEqual(writer.response?.status, 200)
        let data = try XCTUnwrap(try writer.json()["data"] as? [[String: Any]])
        XCTAssertEqual(data.first?["id"] as? String, "scripted")
    }

    func testChatCompletionRendersMessagesAndPassesSampling() throws {
        let backend = ScriptedBackend()
        let writer = send("POST", "/v1/chat/completions", """
            {"model": "any", "messages": [{"role": "system", "content": "Be brief."},
             {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}],
             "temperature": 0, "max_tokens": 5, "seed": 3, "stream": false}
            """, backend: backend)
        XCTAssertEqual(writer.response?.status, 200)
        XCTAssertEqual(backend.prompts, ["<system>Be brief.<user>Hi there<assistant>"])
        XCTAssertEqual(backend.options.first?.maxTokens, 5)
        XCTAssertEqual(backend.options.first?.sampling, SamplingParameters(temperature: 0, topK: 40, topP: 0.95, seed: 3))
        let json = try writer.json()
        XCTAssertEqual(json["object"] as? String, "chat.completion")
        let choice = try XCTUnwrap((json["choices"] as? [[String: Any]])?.first)
        XCTAssertEqual((choice["message"] as? [String: Any])?["content"] as? String, "Hello!")
        XCTAssertEqual(choice["finish_reason"] as? String, "stop")
        XCTAssertEqual((json["usage"] as? [String: Any])?["total_tokens"] as? Int, 10)
    }

    func testCompletionDefaultsToTheServersMaxTokens() throws {
        let backend = ScriptedBackend()
        let writer = send("POST", "/v1/completions", #"{"prompt": ["Once"]}"#, backend: backend)
        XCTAssertEqual(writer.response?.status, 200)
        XCTAssertEqual(backend.prompts, ["Once"])
        XCTAssertEqual(backend.options.first?.maxTokens, 33)
        let choice = try XCTUnwrap((try writer.json()["choices"] as? [[String: Any]])?.first)
        XCTAssertEqual(choice["text"] as? String, "Hello!")
    }

    func testStreamingSendsOneEventPerPieceThenDone() throws {
        let writer = send("POST", "/v1/chat/completions",
                          #"{"messages": [{"role": "user", "content": "Hi"}], "stream": true}"#)
        XCTAssertNil(writer.response)
        XCTAssertTrue(writer.streamed)
        XCTAssertTrue(writer.ended)
        XCTAssertEqual(writer.chunks.last, "data: [DONE]\n\n")
        let events = try writer.chunks.dropLast().map { chunk -> [String: Any] in
            XCTAssertTrue(chunk.hasPrefix("data: ") && chunk.hasSuffix("\n\n"), chunk)
            let object = try JSONSerialization.jsonObject(with: Data(chunk.dropFirst(6).utf8))
            return try XCTUnwrap(object as? [String: Any])
        }
        let deltas = events.compactMap { (($0["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any]) }
        XCTAssertEqual(deltas.first?["role"] as? String, "assistant")
        XCTAssertEqual(deltas.compactMap { $0["content"] as? String }.joined(), "Hello!")
        XCTAssertEqual((events.last?["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String, "stop")
        XCTAssertEqual(events.first?["object"] as? String, "chat.completion.chunk")
    }

    func testAStreamWhoseClientLeftStopsTheGeneration() throws {
        let backend = ScriptedBackend()
        let writer = RecordingWriter()
        writer.chunksAccepted = 2
        let request = HTTPRequest(method: "POST", path: "/v1/completions", headers: [],
                                  body: Array(#"{"prompt": "Hi", "stream": true}"#.utf8))
        OpenAIService(backend: backend).handle(request, writer: writer)
        XCTAssertEqual(writer.chunks.count, 2, "one piece and nothing after the failed write")
        XCTAssertTrue(writer.chunks[1].contains("\"lo\""), writer.chunks[1])
        XCTAssertTrue(backend.stoppedEarly, "the backend was not told that the client left")
    }

    func testRefusedPromptInAStreamIsStillAJSONError() throws {
        let writer = send("POST", "/v1/completions", #"{"prompt": "", "stream": true}"#)
        XCTAssertFalse(writer.streamed)
        XCTAssertEqual(writer.response?.status, 400)
        XCTAssertEqual(try errorMessage(writer), "the prompt is empty")
    }
}
