import Foundation
import TestSupport
import XCTest

/// The client's model commands run as real processes: JSON contracts, reference numbers, bad input.
final class ModelCommandTests: XCTestCase {
    let model = Fixtures.defaultModel.path

    func run(_ arguments: [String]) throws -> Executables.Result {
        try Executables.run(Executables.client, arguments)
    }

    func testTokenizeJSON() throws {
        let result = try run(["tokenize", "--model", model, "--text", "<|im_start|>user\nhi<|im_end|>", "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let json = try result.json()
        XCTAssertEqual(json["ids"] as? [Int], [1, 4093, 198, 6004, 2])
        XCTAssertEqual((json["tokens"] as? [String])?.first, "<|im_start|>")
    }

    /// Both greedy continuations of the reference, through the command line (the second with --chat).
    func testGreedyGenerationMatchesReferenceAndStaysSmall() throws {
        let reference = try Fixtures.json("smollm2/reference.json")
        let greedy = reference["greedy"] as! [[String: Any]]
        let plain = try run(["generate", "--model", model, "--prompt", "The capital of France is", "--temperature", "0",
                             "--max-tokens", String((greedy[0]["greedy_ids"] as! [Int]).count), "--json", "--threads", "2",
                             "--precision", "float32"])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        let plainJSON = try plain.json()
        XCTAssertEqual(plainJSON["ids"] as? [Int], greedy[0]["greedy_ids"] as? [Int])
        XCTAssertEqual(plainJSON["text"] as? String, greedy[0]["greedy_text"] as? String)
        for key in ["prompt_tokens", "generated_tokens", "time_to_first_token_ms", "tokens_per_second", "peak_rss_bytes"] {
            XCTAssertNotNil(plainJSON[key], key)
        }
        let peak = plainJSON["peak_rss_bytes"] as! Int
        XCTAssertGreaterThan(peak, 0)
        XCTAssertLessThan(peak, 300_000_000, "generate peaked at \(peak) bytes of resident memory")

        let chat = try run(["generate", "--model", model, "--chat", "--prompt", "What is the capital of France?",
                            "--temperature", "0", "--max-tokens", "32", "--json", "--precision", "float32"])
        XCTAssertEqual(chat.status, 0, chat.stderr)
        let chatJSON = try chat.json()
        let expected = greedy[1]["greedy_ids"] as! [Int]
        // The reference ends with <|im_end|>, where generation stops (the stop token is not returned).
        XCTAssertEqual(chatJSON["ids"] as? [Int], Array(expected.dropLast()))
        XCTAssertEqual(expected.last, 2)
        XCTAssertEqual(chatJSON["prompt_tokens"] as? Int, (greedy[1]["ids"] as! [Int]).count)
        XCTAssertEqual(chatJSON["stop_reason"] as? String, "eos")
    }

    /// Pre-tokenized lines through `eval --json` on the tiny model give the reference losses.
    func testEvalOnTinyLlamaMatchesReferenceLosses() throws {
        let reference = try Fixtures.json("tiny-llama/reference.json")
        let inputs = reference["input_ids"] as! [[Int]], labels = reference["labels"] as! [[Int]]
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let data = directory.appendingPathComponent("tokens.jsonl")
        let lines = try zip(inputs, labels).map { ids, labels in
            String(decoding: try JSONSerialization.data(withJSONObject: ["input_ids": ids, "labels": labels]), as: UTF8.self)
        }
        try lines.joined(separator: "\n").write(to: data, atomically: true, encoding: .utf8)
        for (adapter, losses) in [(nil, reference["loss_per_example"] as! [Double]),
                                  ("tiny-llama/peft-adapter", (reference["lora"] as! [String: Any])["loss_per_example"] as! [Double])] {
            var arguments = ["eval", "--model", Fixtures.url("tiny-llama").path, "--data", data.path, "--json"]
            if let adapter { arguments += ["--adapter", Fixtures.url(adapter).path] }
            let result = try run(arguments)
            XCTAssertEqual(result.status, 0, result.stderr)
            let json = try result.json()
            let perExample = json["per_example"] as! [[String: Any]]
            XCTAssertEqual(perExample.count, 3)
            for (i, item) in perExample.enumerated() {
                XCTAssertEqual(item["loss"] as! Double, losses[i], accuracy: 1e-5, "example \(i), adapter \(adapter ?? "none")")
                XCTAssertEqual(item["tokens"] as? Int, labels[i].dropFirst().filter { $0 != -100 }.count)
            }
            let tokens = perExample.map { $0["tokens"] as! Int }
            let mean = zip(tokens, losses).reduce(0.0) { $0 + Double($1.0) * $1.1 } / Double(tokens.reduce(0, +))
            XCTAssertEqual(json["loss"] as! Double, mean, accuracy: 1e-5)
            XCTAssertEqual(json["perplexity"] as! Double, exp(mean), accuracy: 1e-3)
            for key in ["examples", "tokens", "token_accuracy", "tokens_per_second", "peak_rss_bytes"] { XCTAssertNotNil(json[key], key) }
        }
    }

    func testEvalOnTheDefaultModelWithEveryRecordKind() throws {
        let result = try run(["eval", "--model", model, "--data", Fixtures.repositoryRoot.appendingPathComponent("Config/demo-eval.jsonl").path, "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let json = try result.json()
        XCTAssertEqual(json["examples"] as? Int, 4)
        let loss = json["loss"] as! Double
        XCTAssertTrue(loss > 0.5 && loss < 8, "implausible loss \(loss)")
    }

    func testBadInputGivesClearErrorsAndNonZeroExit() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        // A truncated copy of the model.
        let truncated = directory.appendingPathComponent("cut.gguf")
        let handle = try FileHandle(forReadingFrom: Fixtures.defaultModel)
        try handle.read(upToCount: 5_000_000)!.write(to: truncated)
        var result = try run(["generate", "--model", truncated.path, "--prompt", "hi"])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains(truncated.path), result.stderr)
        // A file that is not a GGUF at all.
        let garbage = directory.appendingPathComponent("garbage.gguf")
        try Data("hello, not a model".utf8).write(to: garbage)
        result = try run(["tokenize", "--model", garbage.path, "--text", "hi"])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("not a GGUF file"), result.stderr)
        // Malformed JSONL: the error names the line.
        let data = directory.appendingPathComponent("bad.jsonl")
        try "{\"text\": \"fine\"}\n\n{\"text\": 3}\n".write(to: data, atomically: true, encoding: .utf8)
        result = try run(["eval", "--model", model, "--data", data.path])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("bad.jsonl:3"), result.stderr)
        try "{\"text\": \"fine\"}\n{not json\n".write(to: data, atomically: true, encoding: .utf8)
        result = try run(["eval", "--model", model, "--data", data.path])
        XCTAssertTrue(result.stderr.contains("bad.jsonl:2: not valid JSON"), result.stderr)
        // Usage errors name the flag and exit 64.
        result = try run(["generate", "--prompt", "hi"])
        XCTAssertEqual(result.status, 64)
        XCTAssertTrue(result.stderr.contains("--model"), result.stderr)
        result = try run(["generate", "--model", model, "--prompt", "hi", "--top-p", "2"])
        XCTAssertEqual(result.status, 64)
        result = try run(["eval", "--model", model, "--data", "x.jsonl", "--precision", "fp8"])
        XCTAssertEqual(result.status, 64)
        XCTAssertTrue(result.stderr.contains("--precision must be one of float32, int8"), result.stderr)
        // --help on every command.
        for command in ["tokenize", "generate", "eval"] {
            let help = try run([command, "--help"])
            XCTAssertEqual(help.status, 0)
            XCTAssertTrue(help.stdout.contains("usage: conclave-client \(command)"), help.stdout)
        }
    }
}
