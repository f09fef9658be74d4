#if canImport(Glibc)
import Glibc
#endif
import Foundation
import TestSupport
import XCTest

/// `serve-model` as a real process on the default model, driven by curl and the `openai` Python client;
/// `chat` as a real process fed by a pipe.
final class ServeModelTests: XCTestCase {
    let model = Fixtures.defaultModel.path
    var server: Process?
    var base = ""

    /// Starts `serve-model --port 0` and reads the address it prints once listening.
    func startServer(_ extra: [String] = []) throws {
        let process = Process()
        process.executableURL = Executables.client
        process.arguments = ["serve-model", "--model", model, "--port", "0", "--threads", "2"] + extra
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        server = process
        var line = Data()
        while !line.contains(10) {
            let byte = err.fileHandleForReading.readData(ofLength: 1)
            guard !byte.isEmpty else { break }
            line += byte
        }
        let text = String(decoding: line, as: UTF8.self)
        let address = try XCTUnwrap(text.range(of: #"http://[^ ]+"#, options: .regularExpression), "no address in: \(text)")
        base = String(text[address])
        // Keep draining standard error so the server never blocks on a full pipe.
        DispatchQueue.global().async { _ = err.fileHandleForReading.readDataToEndOfFile() }
    }

    override func tearDown() {
        server?.terminate()
        server?.waitUntilExit()
    }

    static let curlPath = ["/usr/bin/curl", "/bin/curl", "/usr/local/bin/curl"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    }

    func curl(_ arguments: [String]) throws -> Executables.Result {
        let path = try XCTUnwrap(Self.curlPath, "curl is required for this test (apt-get install curl)")
        return try Executables.run(URL(fileURLWithPath: path), ["-sS", "--max-time", "120"] + arguments)
    }

    func post(_ path: String, _ body: String, _ extra: [String] = []) throws -> Executables.Result {
        try curl(extra + ["-H", "Content-Type: application/json", "-d", body, base + path])
    }

    static func object(_ text: String) throws -> [String: Any] {
        try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], text)
    }

    func testBindsLoopbackAndAnswersCurlWholeAndStreamedLikeGenerate() throws {
        try startServer()
        XCTAssertTrue(base.hasPrefix("http://127.0.0.1:"), base)
        // The kernel's own table: the listening socket's local address is 127.0.0.1 (0100007F), not 0.0.0.0.
        let port = try XCTUnwrap(UInt16(base.split(separator: ":").last ?? ""))
        let table = ["/proc/net/tcp", "/proc/net/tcp6"].compactMap { try? String(contentsOfFile: $0, encoding: .utf8) }.joined()
        let portSuffix = String(format: ":%04X", port)
        var listening: [String] = []
        for line in table.split(separator: "\n") {
            let fields = line.split(separator: " ").map(String.init)
            // fields: slot, local address, remote address, state (0A = LISTEN), ...
            if fields.count > 3 && fields[3] == "0A" && fields[1].hasSuffix(portSuffix) { listening.append(fields[1]) }
        }
        XCTAssertEqual(listening, [String(format: "0100007F:%04X", port)])
        let generate = try Executables.run(Executables.client, [
            "generate", "--model", model, "--prompt", "The capital of France is", "--temperature", "0",
            "--max-tokens", "12", "--json", "--threads", "2"])
        XCTAssertEqual(generate.status, 0, generate.stderr)
        let expected = try XCTUnwrap(try generate.json()["text"] as? String)

        let body = #"{"model": "m", "prompt": "The capital of France is", "temperature": 0, "max_tokens": 12}"#
        let whole = try post("/v1/completions", body)
        XCTAssertEqual(whole.status, 0, whole.stderr)
        let choice = try XCTUnwrap((try Self.object(whole.stdout)["choices"] as? [[String: Any]])?.first)
        XCTAssertEqual(choice["text"] as? String, expected, "greedy /v1/completions differs from generate --temperature 0")

        let streamed = try post("/v1/completions", body.replacingOccurrences(of: "}", with: #", "stream": true}"#), ["-N"])
        XCTAssertEqual(streamed.status, 0, streamed.stderr)
        let events = streamed.stdout.components(separatedBy: "\n\n").filter { !$0.isEmpty }
        XCTAssertEqual(events.last, "data: [DONE]")
        var text = ""
        for event in events.dropLast() {
            XCTAssertTrue(event.hasPrefix("data: "), event)
            let piece = (try Self.object(String(event.dropFirst(6)))["choices"] as? [[String: Any]])?.first?["text"]
            text += piece as? String ?? ""
        }
        XCTAssertGreaterThan(events.count, 3, "one event per token")
        XCTAssertEqual(text, expected)

        let chatGenerate = try Executables.run(Executables.client, [
            "generate", "--model", model, "--chat", "--prompt", "Say hello.", "--temperature", "0",
            "--max-tokens", "12", "--json", "--threads", "2"])
        let chat = try post("/v1/chat/completions",
                            #"{"messages": [{"role": "user", "content": "Say hello."}], "temperature": 0, "max_tokens": 12}"#)
        let message = (try Self.object(chat.stdout)["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any]
        XCTAssertEqual(message?["content"] as? String, try chatGenerate.json()["text"] as? String)
    }

    func testBadJSONUnknownPathAndModels() throws {
        try startServer(["--name", "private-model"])
        let bad = try post("/v1/chat/completions", #"{"messages": "#, ["-w", "\n%{http_code}"])
        XCTAssertTrue(bad.stdout.hasSuffix("\n400"), bad.stdout)
        XCTAssertTrue(bad.stdout.contains("the body is not valid JSON"), bad.stdout)
        let missing = try curl(["-w", "\n%{http_code}", base + "/v2/anything"])
        XCTAssertTrue(missing.stdout.hasSuffix("\n404"), missing.stdout)
        let models = try curl([base + "/v1/models"])
        let data = try XCTUnwrap(try Self.object(models.stdout)["data"] as? [[String: Any]])
        XCTAssertEqual(data.first?["id"] as? String, "private-model")
    }

    func testConcurrentRequestsAreBothAnswered() throws {
        try startServer()
        let bodies = [#"{"prompt": "One, two,", "temperature": 0, "max_tokens": 24}"#,
                      #"{"prompt": "Red, green,", "temperature": 0, "max_tokens": 24}"#]
        let curl = URL(fileURLWithPath: try XCTUnwrap(Self.curlPath, "curl is required for this test"))
        let url = base + "/v1/completions"
        nonisolated(unsafe) var results = [Executables.Result?](repeating: nil, count: 2)
        DispatchQueue.concurrentPerform(iterations: 2) { i in
            results[i] = try? Executables.run(curl, ["-sS", "--max-time", "120", "-w", "\n%{http_code}",
                                                     "-H", "Content-Type: application/json", "-d", bodies[i], url])
        }
        for (i, result) in results.enumerated() {
            let result = try XCTUnwrap(result)
            XCTAssertTrue(result.stdout.hasSuffix("\n200"), "request \(i): \(result.stdout) \(result.stderr)")
            let json = String(result.stdout.dropLast(4))
            let text = (try Self.object(json)["choices"] as? [[String: Any]])?.first?["text"] as? String
            XCTAssertFalse(text?.isEmpty ?? true, json)
        }
    }

    /// The `openai` package (installed by `make test`'s `pydeps` step) talks to the server as to OpenAI.
    func testOpenAIPythonClient() throws {
        let check = try Executables.run(URL(fileURLWithPath: "/usr/bin/env"), ["python3", "-c", "import openai"])
        XCTAssertEqual(check.status, 0, "the openai Python package is missing: run `make pydeps` (pip install openai)\n\(check.stderr)")
        try startServer(["--name", "private-model"])
        let script = """
            import sys, openai
            client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused")
            assert [m.id for m in client.models.list()] == ["private-model"]
            reply = client.chat.completions.create(model="private-model", temperature=0, max_tokens=8,
                messages=[{"role": "user", "content": "Say hello."}])
            whole = reply.choices[0].message.content
            pieces = client.chat.completions.create(model="private-model", temperature=0, max_tokens=8, stream=True,
                messages=[{"role": "user", "content": "Say hello."}])
            streamed = "".join(chunk.choices[0].delta.content or "" for chunk in pieces)
            assert whole and whole == streamed, (whole, streamed)
            text = client.completions.create(model="private-model", prompt="The capital of France is",
                temperature=0, max_tokens=4).choices[0].text
            try:
                client.chat.completions.create(model="private-model", messages=[])
                raise SystemExit("an empty messages list was accepted")
            except openai.BadRequestError as error:
                assert "messages is empty" in str(error), error
            print(repr(whole), repr(text))
            """
        let run = try Executables.run(URL(fileURLWithPath: "/usr/bin/env"), ["python3", "-c", script, base])
        XCTAssertEqual(run.status, 0, run.stdout + run.stderr)
    }

    /// A conversation past the model's context ends with a sentence naming the turn, not a raw HTTP error.
    func testChatTurnPastTheContextSaysWhatToDo() throws {
        let long = String(repeating: "word ", count: 9_000)
        let result = try Executables.run(Executables.client, ["chat", "--model", model, "--max-tokens", "4"],
                                         stdin: Data((long + "\n").utf8))
        XCTAssertEqual(result.status, 1)
        XCTAssertTrue(result.stderr.contains("turn 1: the prompt has"), result.stderr)
        XCTAssertTrue(result.stderr.contains("start a new chat"), result.stderr)
    }

    /// Two user turns piped to `chat`: two answers, the second from a conversation holding the first.
    func testChatReadsTurnsFromAPipe() throws {
        let result = try Executables.run(Executables.client, [
            "chat", "--model", model, "--temperature", "0", "--max-tokens", "12", "--threads", "2", "--precision", "float32",
            "--system", "Answer briefly."], stdin: Data("Name a fruit.\nName another.\n".utf8))
        XCTAssertEqual(result.status, 0, result.stderr)
        let answers = result.stdout.components(separatedBy: "\n\n").filter { !$0.isEmpty }
        XCTAssertEqual(answers.count, 2, result.stdout)
        // float32 greedy answers are the same on every CPU; the second one refers back to the first.
        XCTAssertEqual(answers.first, "The most iconic fruit is actually the Banana.", result.stdout)
        XCTAssertTrue(answers.last?.hasPrefix("The Banana is") == true, result.stdout)
        XCTAssertFalse(result.stderr.contains("> "), "no prompt is shown when standard input is a pipe")
    }
}
