#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CommandLineParsing
import Foundation
import Kernels
import LanguageModel
import ModelServing
import SystemIO

/// The local model ready for `chat` and `serve-model`: loaded, adapter applied, precision set.
enum LocalModelLoading {
    static func load(modelPath: String, adapterPath: String?, threads: Int?, precision: ActivationPrecision,
                     name: String? = nil) throws -> LocalModel {
        let loaded = try ModelLoader.load(path: modelPath, threads: threads)
        loaded.model.precision = precision
        let tokenizer = try ModelLoader.requireTokenizer(loaded, path: modelPath)
        if let adapterPath { loaded.model.setAdapter(try ModelLoader.loadAdapter(path: adapterPath, for: loaded.model)) }
        let modelName = name ?? URL(fileURLWithPath: adapterPath ?? modelPath).standardizedFileURL.lastPathComponent
        return LocalModel(model: loaded.model, tokenizer: tokenizer, name: modelName)
    }

    /// Writes generated text to standard output; a closed output ends the process quietly (the reader left).
    static func writeOutput(_ text: String) {
        let bytes = Array(text.utf8)
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { Foundation.write(STDOUT_FILENO, $0.baseAddress! + written, bytes.count - written) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { exit(0) }
            written += n
        }
    }
}

/// `chat`: a conversation with the local model in its chat template, one line per user turn.
struct ChatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "chat", abstract: "Talk with the local model, turn by turn, in its chat template.",
        help: """
        usage: conclave-client chat --model M [--adapter A] [--system S] [--max-tokens N] [--temperature X]
                                    [--top-k K] [--top-p P] [--seed S] [--precision int8|float32] [--threads N]

          --model M          a .gguf file or an HF directory with a ChatML chat template
          --adapter A        a PEFT LoRA adapter directory applied on top of the model
          --system S         the system message (default: the template's own, if it has one)
          --max-tokens N     most tokens per answer (default 256)
          --temperature X    0 is greedy (default 0.7)
          --top-k K          sample among the K most likely tokens (default 40; 0 = all)
          --top-p P          nucleus sampling mass (default 0.95)
          --seed S           seed for reproducible sampling
        \(ModelCommands.precisionHelp)
        \(ModelCommands.threadsHelp)
        Each line of standard input is a user turn; the answer streams to standard output, followed by a
        blank line. Every answer sees the whole conversation so far. On a terminal a "> " prompt is shown;
        end with Ctrl-D.

        examples:
          conclave-client chat --model models/SmolLM2-135M-Instruct.Q4_1.gguf --adapter adapter --system "Be brief."
          printf 'Hello!\\nWhat is the capital of France?\\n' | \\
              conclave-client chat --model models/SmolLM2-135M-Instruct.Q4_1.gguf --temperature 0
        """)

    static var options: [Option<Self>] {
        [
            .required("--model", \.modelPath), .option("--adapter", \.adapterPath), .option("--system", \.system),
            .option("--max-tokens", .int(in: 1...1_000_000), \.maxTokens),
            .option("--temperature", .double(in: 0...100), \.temperature), .option("--top-k", .int(in: 0...1_000_000), \.topK),
            .option("--top-p", .double(in: 0...1), \.topP), .option("--seed", .unsigned, \.seed),
            .option("--threads", .int(in: 1...256), \.threads), .option("--precision", .choice, \.precision),
        ]
    }

    var modelPath = ""
    var adapterPath: String?
    var system: String?
    var maxTokens = 256
    var temperature = 0.7
    var topK = 40
    var topP = 0.95
    var seed: UInt64?
    var threads: Int?
    var precision = ActivationPrecision.int8

    func run() throws -> Int32 {
        let model = try LocalModelLoading.load(modelPath: modelPath, adapterPath: adapterPath, threads: threads,
                                               precision: precision)
        let session = ChatSession(backend: model, system: system)
        let options = GenerationOptions(maxTokens: maxTokens,
                                        sampling: SamplingParameters(temperature: temperature, topK: topK, topP: topP, seed: seed))
        let interactive = isatty(STDIN_FILENO) == 1
        while true {
            if interactive { StandardError.write("> ") }
            guard let line = readLine(strippingNewline: true) else { break }
            if line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
            let reply: Completion
            do {
                reply = try session.reply(to: line, options: options) { LocalModelLoading.writeOutput($0) }
            } catch let error as HTTPError {
                throw ChatError(description: "turn \(session.messages.count / 2 + 1): \(error.message) "
                                + "(the prompt holds the whole conversation; start a new chat, or lower --max-tokens)")
            }
            LocalModelLoading.writeOutput("\n\n")
            if reply.finishReason == "length" {
                StandardError.write("(the answer reached --max-tokens \(maxTokens) and was cut short)\n")
            }
        }
        return 0
    }
}

/// A turn the model cannot take, said as a sentence.
struct ChatError: Error, CustomStringConvertible {
    let description: String
}

/// `serve-model`: the OpenAI-compatible HTTP API over the local model, on loopback by default.
struct ServeModelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "serve-model", abstract: "Serve the local model over an OpenAI-compatible HTTP API on this machine.",
        help: """
        usage: conclave-client serve-model --model M [--adapter A] --port P [--host H] [--name N] [--max-tokens N]
                                           [--precision int8|float32] [--threads N]

          --model M          a .gguf file or an HF directory
          --adapter A        a PEFT LoRA adapter directory applied on top of the model
          --port P           TCP port (0: any free port, printed at start)
          --host H           address to listen on (default 127.0.0.1: only this machine can connect;
                             prompts and answers never leave it unless you choose another address)
          --name N           the model id /v1/models lists (default: the adapter's or model's file name)
          --max-tokens N     tokens per answer when a request gives no max_tokens (default 256)
        \(ModelCommands.precisionHelp)
        \(ModelCommands.threadsHelp)
        Endpoints: POST /v1/chat/completions, POST /v1/completions (add "stream": true for server-sent
        events ending with data: [DONE]), GET /v1/models. Requests are answered one generation at a time;
        others wait their turn. Bodies over 4 MiB get 413, bad JSON 400, unknown paths 404.
        Prints "listening on http://HOST:PORT" to standard error when ready.

        examples:
          conclave-client serve-model --model models/SmolLM2-135M-Instruct.Q4_1.gguf --adapter adapter --port 8080 &
          curl -s http://127.0.0.1:8080/v1/chat/completions -d '{"messages":[{"role":"user","content":"Hi"}]}'
          python3 -c 'import openai; print(openai.OpenAI(base_url="http://127.0.0.1:8080/v1", api_key="-").models.list())'
        """)

    static var options: [Option<Self>] {
        [
            .required("--model", \.modelPath), .option("--adapter", \.adapterPath),
            .required("--port", .int(in: 0...65535), \.port), .option("--host", \.host), .option("--name", \.name),
            .option("--max-tokens", .int(in: 1...1_000_000), \.maxTokens),
            .option("--threads", .int(in: 1...256), \.threads), .option("--precision", .choice, \.precision),
        ]
    }

    var modelPath = ""
    var adapterPath: String?
    var port = 0
    var host: String?
    var name: String?
    var maxTokens = 256
    var threads: Int?
    var precision = ActivationPrecision.int8

    func run() throws -> Int32 {
        let model = try LocalModelLoading.load(modelPath: modelPath, adapterPath: adapterPath, threads: threads,
                                               precision: precision, name: name)
        let service = OpenAIService(backend: model, defaultMaxTokens: maxTokens)
        let address = host ?? "127.0.0.1"
        let server = try HTTPServer(host: address, port: UInt16(port)) { request, writer in
            service.handle(request, writer: writer)
        }
        let shown = address.contains(":") ? "[\(address)]" : address
        if !["127.0.0.1", "::1", "localhost"].contains(address) {
            StandardError.write("warning: --host \(address) lets other machines send prompts to this model, "
                                + "without authentication; leave out --host to serve only this machine\n")
        }
        StandardError.write("listening on http://\(shown):\(server.port) (model \(model.modelName))\n")
        server.run()
    }
}
