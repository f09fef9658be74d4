import CommandLineParsing
import FineTuning
import Foundation
import Kernels
import LanguageModel
import ModelServing
import SystemIO
import Tokenizer

/// Help shared by the commands that run the model locally: `generate`, `eval` and `train`.
enum ModelCommands {
    static let threadsHelp = "  --threads N         worker threads (default: all cores)"
    static let precisionHelp = """
      --precision P       int8 (default): activations quantized to 8 bits against the quantized weights,
                          as llama.cpp does, several times faster; float32: exact products
    """

    /// What `--data` and `--eval-data` must name.
    static let datasetFile = "a JSONL file, one JSON record per line ({\"text\"}, {\"prompt\",\"completion\"}, "
        + "{\"messages\"} or {\"input_ids\"})"

    /// `--model` and, when given, `--adapter`: checked before anything is loaded.
    static func checkModel(_ model: String, adapter: String?) throws {
        try PathCheck.model("--model", model)
        if let adapter { try PathCheck.adapter("--adapter", adapter) }
    }
}

/// `tokenize`: the token ids and pieces of a text.
struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "tokenize", abstract: "Show the token ids and pieces of a text.",
        help: """
        usage: conclave-client tokenize --model M --text T [--no-special] [--json]

        Tokenizes T with the model's tokenizer (no BOS is added unless the model asks for one).
          --model M       a .gguf file or an HF directory with tokenizer.json
          --text T        the text to tokenize
          --no-special    treat special-token text such as <|im_start|> as plain text
          --json          print {"ids": [...], "tokens": [...], "count": N}

        examples:
          conclave-client tokenize --model models/SmolLM2-135M-Instruct.Q4_1.gguf --text "Hello  world"
          conclave-client tokenize --model models/SmolLM2-135M-Instruct.Q4_1.gguf --text "<|im_start|>" --no-special --json
        """)

    static var options: [Option<Self>] {
        [.required("--model", \.modelPath), .required("--text", \.text), .flag("--no-special", \.plain), .flag("--json", \.json)]
    }

    var modelPath = ""
    var text = ""
    /// `--no-special`: special-token text is plain text.
    var plain = false
    var json = false

    func validate() throws { try PathCheck.model("--model", modelPath) }

    func run() throws -> Int32 {
        let loaded = try ModelLoader.load(path: modelPath, threads: 1)
        let tokenizer = try ModelLoader.requireTokenizer(loaded, path: modelPath)
        let ids = tokenizer.encode(text, parseSpecialTokens: !plain)
        let pieces = ids.map { tokenizer.tokenText($0) }
        if json {
            try JSONOutput.print(["ids": ids, "tokens": pieces, "count": ids.count])
        } else {
            print("\(ids.count) tokens")
            for id in ids { print(String(format: "%7d  ", id) + tokenizer.decode([id]).debugDescription) }
        }
        return 0
    }
}

/// `generate`: text from a prompt, streamed as it is generated.
struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "generate", abstract: "Generate text from a prompt with the local model.",
        help: """
        usage: conclave-client generate --model M [--adapter A] --prompt P [--chat] [--max-tokens N]
                                        [--temperature X] [--top-k K] [--top-p P] [--seed S] [--precision int8|float32]
                                        [--threads N] [--json]

          --model M          a .gguf file or an HF directory
          --adapter A        a PEFT LoRA adapter directory applied on top of the model
          --prompt P         the prompt text
          --chat             wrap the prompt as a user turn in the model's chat template
          --max-tokens N     most tokens to generate (default 128)
          --temperature X    0 is greedy (default 0.7)
          --top-k K          sample among the K most likely tokens (default 40; 0 = all)
          --top-p P          nucleus sampling mass (default 0.95)
          --seed S           seed for reproducible sampling
        \(ModelCommands.precisionHelp)
        \(ModelCommands.threadsHelp)
          --json             print {"text", "ids", "prompt_tokens", "generated_tokens",
                             "time_to_first_token_ms", "tokens_per_second", "peak_rss_bytes", "stop_reason"}
        Without --json the text streams to standard output as it is generated.

        examples:
          conclave-client generate --model models/SmolLM2-135M-Instruct.Q4_1.gguf --chat --prompt "What is the capital of France?"
          conclave-client generate --model models/SmolLM2-135M-Instruct.Q4_1.gguf --adapter adapter --prompt "Assessment:" \\
              --temperature 0 --max-tokens 64 --json
        """)

    static var options: [Option<Self>] {
        [
            .required("--model", \.modelPath), .option("--adapter", \.adapterPath), .required("--prompt", \.prompt),
            .flag("--chat", \.chat), .option("--max-tokens", .int(in: 1...1_000_000), \.maxTokens),
            .option("--temperature", .double(in: 0...100), \.temperature), .option("--top-k", .int(in: 0...1_000_000), \.topK),
            .option("--top-p", .double(in: 0...1), \.topP), .option("--seed", .unsigned, \.seed),
            .option("--threads", .int(in: 1...256), \.threads), .option("--precision", .choice, \.precision),
            .flag("--json", \.json),
        ]
    }

    var modelPath = ""
    var adapterPath: String?
    var prompt = ""
    var chat = false
    var maxTokens = 128
    var temperature = 0.7
    var topK = 40
    var topP = 0.95
    var seed: UInt64?
    var threads: Int?
    var precision = ActivationPrecision.int8
    var json = false

    func validate() throws { try ModelCommands.checkModel(modelPath, adapter: adapterPath) }

    func run() throws -> Int32 {
        let loaded = try ModelLoader.load(path: modelPath, threads: threads)
        loaded.model.precision = precision
        let tokenizer = try ModelLoader.requireTokenizer(loaded, path: modelPath)
        if let adapterPath { loaded.model.setAdapter(try ModelLoader.loadAdapter(path: adapterPath, for: loaded.model)) }
        let text = chat
            ? try tokenizer.applyChatTemplate([ChatMessage(role: "user", content: prompt)], addGenerationPrompt: true)
            : prompt
        var promptIds = tokenizer.encode(text)
        if tokenizer.addBOS, let bos = tokenizer.bosTokenId, promptIds.first != bos { promptIds.insert(bos, at: 0) }
        guard !promptIds.isEmpty else { throw UsageError("--prompt is empty") }

        var stops = tokenizer.endOfTurnTokenIds
        if let eos = tokenizer.eosTokenId { stops.insert(eos) }
        let sampling = SamplingParameters(temperature: temperature, topK: topK, topP: topP, seed: seed)
        var streamed: [UInt8] = []
        var printedBytes = 0
        // Standard output is the product: once it refuses bytes, nothing more is printed (see below).
        var outputError: Error?
        let result = try loaded.model.generate(prompt: promptIds, maxTokens: maxTokens, sampling: sampling,
                                               stopTokens: stops) { token in
            guard !json, outputError == nil else { return }
            // Stream whole UTF-8 characters only: a token may end inside a multi-byte character.
            streamed += tokenizer.decodeBytes([token])
            let complete = UTF8Stream.completeLength(streamed)
            if complete > printedBytes {
                do { try StandardOutput.write(Data(streamed[printedBytes..<complete])) } catch {
                    outputError = error
                }
                printedBytes = complete
            }
        }
        let generatedText = tokenizer.decode(result.tokens)
        let rate = result.decodeTokensPerSecond
        if json {
            try JSONOutput.print([
                "text": generatedText, "ids": result.tokens, "prompt_tokens": result.promptTokens,
                "generated_tokens": result.tokens.count,
                "time_to_first_token_ms": result.timeToFirstToken * 1000,
                "tokens_per_second": rate, "peak_rss_bytes": ProcessStatistics.peakResidentBytes(),
                "stop_reason": result.stopReason, "precision": precision.rawValue,
            ])
        } else {
            if outputError == nil {
                do { try StandardOutput.write(Data(streamed[printedBytes...]) + Data("\n".utf8)) } catch {
                    outputError = error
                }
            }
            // A reader that closed its end (`| head -1`) took what it wanted: a clean exit 0. Any
            // other failure (a full disk) lost output the user asked for: exit 1 saying so.
            if let outputError, (outputError as? StandardOutputError)?.readerClosed != true { throw outputError }
            StandardError.write(String(format: "%d prompt tokens, %d generated (%@), first token %.0f ms, %.1f tokens/s\n",
                                       result.promptTokens, result.tokens.count, result.stopReason,
                                       result.timeToFirstToken * 1000, rate))
        }
        return 0
    }
}

/// `eval`: loss, perplexity and token accuracy of a JSONL dataset.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "eval", abstract: "Score a JSONL dataset: loss, perplexity and token accuracy.",
        help: """
        usage: conclave-client eval --model M [--adapter A] --data D.jsonl [--max-length L] [--precision int8|float32]
                                    [--threads N] [--json]

          --model M        a .gguf file or an HF directory
          --adapter A      a PEFT LoRA adapter directory applied on top of the model
          --data D         JSONL records: {"text"}, {"prompt","completion"}, {"messages"}, or {"input_ids","labels"?}
          --max-length L   cut records longer than L tokens to their first L (default: the model's context)
        \(ModelCommands.precisionHelp)
        \(ModelCommands.threadsHelp)
          --json           print {"examples", "tokens", "loss", "perplexity", "token_accuracy",
                           "per_example": [{"tokens", "loss"}], "tokens_per_second", "peak_rss_bytes"}
        loss is the mean next-token cross-entropy (nats) over all counted tokens; per_example[i].loss is
        the mean over example i's counted tokens (position t predicts token t+1; label -100 is not counted).

        examples:
          conclave-client eval --model models/SmolLM2-135M-Instruct.Q4_1.gguf --data Config/demo-eval.jsonl
          conclave-client eval --model models/SmolLM2-135M-Instruct.Q4_1.gguf --adapter adapter --data cardio.heldout.jsonl --json
        """)

    static var options: [Option<Self>] {
        [
            .required("--model", \.modelPath), .option("--adapter", \.adapterPath), .required("--data", \.dataPath),
            .option("--max-length", .int(in: 2...1_000_000), \.maxLength), .option("--threads", .int(in: 1...256), \.threads),
            .option("--precision", .choice, \.precision), .flag("--json", \.json),
        ]
    }

    var modelPath = ""
    var adapterPath: String?
    var dataPath = ""
    var maxLength: Int?
    var threads: Int?
    var precision = ActivationPrecision.int8
    var json = false

    func validate() throws {
        try ModelCommands.checkModel(modelPath, adapter: adapterPath)
        try PathCheck.inputFile("--data", dataPath, expected: ModelCommands.datasetFile)
    }

    func run() throws -> Int32 {
        let loaded = try ModelLoader.load(path: modelPath, threads: threads)
        loaded.model.precision = precision
        if let adapterPath { loaded.model.setAdapter(try ModelLoader.loadAdapter(path: adapterPath, for: loaded.model)) }
        let configuration = loaded.model.configuration
        let examples = try Dataset.load(URL(fileURLWithPath: dataPath), tokenizer: loaded.tokenizer,
                                        maxLength: maxLength ?? configuration.contextLength,
                                        vocabularySize: configuration.vocabSize)
        let evaluation = try Evaluator.evaluate(model: loaded.model, examples: examples,
                                                progress: ProgressReporter(label: "eval", total: examples.count))
        if json {
            var report = evaluation.json(peakResidentBytes: ProcessStatistics.peakResidentBytes())
            report["precision"] = precision.rawValue
            try JSONOutput.print(report)
        } else {
            print(String(format: "%d examples, %d tokens: loss %.4f, perplexity %.3f, token accuracy %.2f%%  (%.0f tokens/s)",
                         evaluation.examples, evaluation.tokens, evaluation.loss, evaluation.perplexity,
                         evaluation.tokenAccuracy * 100, evaluation.tokensPerSecond))
        }
        return 0
    }
}
