import Foundation
import TestSupport
import XCTest

/// Every path a command takes is checked in `validate()`, before any work: a wrong kind of path is a usage
/// error (exit 64) that names the flag, what was found, what was expected and the fix, never a raw
/// Foundation error (`NSCocoaErrorDomain Code=256`) from deep inside the run.
final class PathErrorTests: XCTestCase {
    var directory: URL!
    /// An existing regular file, given where a directory is wanted.
    var file: String { directory.appendingPathComponent("file.txt").path }
    /// An existing directory with nothing in it, given where a file is wanted.
    var folder: String { directory.appendingPathComponent("folder").path }
    /// Nothing is here.
    var absent: String { directory.appendingPathComponent("absent").path }
    let model = Fixtures.defaultModel.path

    override func setUpWithError() throws {
        directory = try Fixtures.temporaryDirectory()
        try Data("{\"text\": \"hello\"}\n".utf8).write(to: URL(fileURLWithPath: file))
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    func expectUsageError(_ executable: URL, _ arguments: [String], _ fragments: [String],
                          file: StaticString = #filePath, line: UInt = #line) throws {
        let result = try Executables.run(executable, arguments)
        XCTAssertEqual(result.status, 64, "\(arguments): \(result.stderr)", file: file, line: line)
        for fragment in fragments {
            XCTAssertTrue(result.stderr.contains(fragment), "'\(fragment)' missing from: \(result.stderr)", file: file, line: line)
        }
        XCTAssertFalse(result.stderr.contains("NSCocoaErrorDomain"), result.stderr, file: file, line: line)
        XCTAssertEqual(result.stdout, "", file: file, line: line)
    }

    /// The three raw errors of issue 15, now sentences.
    func testTheIssuesRawErrorsNameTheFlagAndTheFix() throws {
        try expectUsageError(Executables.client, ["eval", "--model", model, "--data", folder], [
            "--data '\(folder)' is a directory; expected a JSONL file, one JSON record per line",
            "Give a file inside it, such as --data \(folder)/FILE.",
        ])
        try expectUsageError(Executables.client, ["tokenize", "--model", folder, "--text", "hi"], [
            "--model '\(folder)' is a directory without config.json and *.safetensors; expected a .gguf file or a "
                + "Hugging Face model directory with config.json and model.safetensors",
        ])
        // An existing file as train's --out, with DP and a ledger: refused before the ledger is made or charged.
        let state = directory.appendingPathComponent("state")
        try expectUsageError(Executables.client, ["train", "--model", model, "--data", file, "--out", file, "--steps", "1",
                                                  "--dp", "--noise-multiplier", "1", "--state", state.path,
                                                  "--budget-epsilon", "10"], [
            "--out '\(file)' is an existing file; expected a directory for the adapter",
            "Give the path of a directory (it is created when missing), not of a file.",
        ])
        XCTAssertFalse(FileManager.default.fileExists(atPath: state.path), "nothing is written for a refused run")
    }

    /// Each command's path flags, each given the wrong kind of path.
    func testEveryPathFlagOfEveryCommandIsChecked() throws {
        let client = Executables.client, coordinator = Executables.coordinator
        let adapter = Fixtures.url("tiny-llama/peft-adapter").path
        let cases: [(URL, [String], [String])] = [
            (client, ["tokenize", "--model", absent, "--text", "x"], ["--model '\(absent)' does not exist"]),
            (client, ["tokenize", "--model", file, "--text", "x"], ["--model '\(file)' is not a GGUF file"]),
            (client, ["tokenize", "--model", adapter, "--text", "x"], ["It looks like a LoRA adapter: give it as --adapter"]),
            (client, ["generate", "--model", model, "--adapter", folder, "--prompt", "x"],
             ["--adapter '\(folder)' has no adapter_config.json or adapter_model.safetensors"]),
            (client, ["generate", "--model", model, "--adapter", file, "--prompt", "x"], ["--adapter '\(file)' is a file, not a directory"]),
            (client, ["eval", "--model", model, "--data", absent], ["--data '\(absent)' does not exist", "Check the path."]),
            (client, ["quantize", "--model", model, "--type", "q8_0", "--out", folder], ["--out '\(folder)' is a directory"]),
            (client, ["quantize", "--model", model, "--type", "q8_0", "--out", absent + "/x/m.gguf"],
             ["is in a directory that does not exist ('\(absent)/x')"]),
            (client, ["train", "--model", model, "--data", file, "--eval-data", folder, "--out", absent],
             ["--eval-data '\(folder)' is a directory"]),
            (client, ["train", "--model", model, "--data", file, "--out", absent, "--state", file], ["--state '\(file)' is an existing file"]),
            (client, ["budget", "--state", file], ["--state '\(file)' is an existing file"]),
            (client, ["budget", "--state", folder, "--html", folder], ["--html '\(folder)' is a directory"]),
            (client, ["synth", "--kind", "clinic-notes", "--specialty", "cardiology", "--records", "10", "--seed", "1",
                      "--out", folder], ["--out '\(folder)' is a directory"]),
            (client, ["init", "--state", file, "--name", "a"], ["--state '\(file)' is an existing file"]),
            (client, ["join", "--state", absent, "--coordinator", "h:1", "--ca", file, "--cert", file, "--config", file],
             ["--state '\(absent)' does not exist", "conclave-client init"]),
            (client, ["join", "--state", folder, "--coordinator", "h:1", "--ca", folder, "--cert", file, "--config", file],
             ["--ca '\(folder)' is a directory; expected the federation's CA certificate"]),
            (client, ["join", "--state", folder, "--coordinator", "h:1", "--ca", file, "--cert", absent, "--config", file],
             ["--cert '\(absent)' does not exist"]),
            (client, ["join", "--state", folder, "--coordinator", "h:1", "--ca", file, "--cert", file, "--config", folder],
             ["--config '\(folder)' is a directory"]),
            (coordinator, ["init", "--state", file, "--name", "n", "--host", "h"], ["--state '\(file)' is an existing file"]),
            (coordinator, ["enroll", "--state", absent, "--csr", file, "--out", absent], ["--state '\(absent)' does not exist",
                                                                                          "conclave-coordinator init"]),
            (coordinator, ["enroll", "--state", folder, "--csr", folder, "--out", absent], ["--csr '\(folder)' is a directory"]),
            (coordinator, ["enroll", "--state", folder, "--csr", file, "--out", folder], ["--out '\(folder)' is a directory"]),
            (coordinator, ["revoke", "--state", file, "--client", "a"], ["--state '\(file)' is a file, not a directory"]),
            (coordinator, ["clients", "--state", absent], ["--state '\(absent)' does not exist"]),
            (coordinator, ["status", "--state", absent], ["--state '\(absent)' does not exist"]),
            (coordinator, ["rounds", "start", "--state", absent], ["--state '\(absent)' does not exist"]),
            (coordinator, ["audit", "--state", file], ["--state '\(file)' is a file, not a directory"]),
            (coordinator, ["report", "--state", folder, "--out", folder], ["--out '\(folder)' is a directory"]),
            (coordinator, ["serve", "--state", folder, "--config", absent], ["--config '\(absent)' does not exist"]),
            (coordinator, ["demo", "--model", folder], ["--model '\(folder)' is a directory without config.json"]),
        ]
        for (executable, arguments, fragments) in cases {
            try expectUsageError(executable, arguments, fragments)
        }
    }

    /// The paths a join configuration names are checked at start, not when the first round needs them.
    func testJoinChecksThePathsItsConfigurationNames() throws {
        let config = directory.appendingPathComponent("client.json").path
        let policy: [String: Any] = ["max_epsilon": 8, "delta": 1e-5, "max_steps_per_round": 10]
        for (model, data, fragment) in [(model, folder, "\(config): \"data\" '\(folder)' is a directory; expected a JSONL file"),
                                        (folder, file, "\(config): \"model\" '\(folder)' is a directory without config.json")] {
            let object: [String: Any] = ["model": model, "data": data, "eval_data": file, "policy": policy]
            try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: config))
            try expectUsageError(Executables.client, ["join", "--state", folder, "--coordinator", "h:1", "--ca", file,
                                                      "--cert", file, "--config", config], [fragment])
        }
    }

    /// `quantize` of an HF directory without a tokenizer writes a GGUF without one; Conclave loads it for
    /// pre-tokenized work (before, `eval` refused it: "no tokenizer.ggml.model") and gives the reference losses,
    /// and text work says the model has no tokenizer.
    func testTokenizerlessQuantizedModelServesPreTokenizedEval() throws {
        let gguf = directory.appendingPathComponent("tiny.gguf")
        let quantize = try Executables.run(Executables.client, ["quantize", "--model", Fixtures.url("tiny-llama").path,
                                                                "--type", "f32", "--out", gguf.path])
        XCTAssertEqual(quantize.status, 0, quantize.stderr)
        XCTAssertTrue(quantize.stderr.contains("has no tokenizer"), quantize.stderr)

        let reference = try Fixtures.json("tiny-llama/reference.json")
        let inputs = reference["input_ids"] as! [[Int]], labels = reference["labels"] as! [[Int]]
        let data = directory.appendingPathComponent("tokens.jsonl")
        let lines = try zip(inputs, labels).map { ids, labels in
            String(decoding: try JSONSerialization.data(withJSONObject: ["input_ids": ids, "labels": labels]), as: UTF8.self)
        }
        try lines.joined(separator: "\n").write(to: data, atomically: true, encoding: .utf8)
        let eval = try Executables.run(Executables.client, ["eval", "--model", gguf.path, "--data", data.path, "--json",
                                                            "--precision", "float32"])
        XCTAssertEqual(eval.status, 0, eval.stderr)
        let perExample = try XCTUnwrap(try eval.json()["per_example"] as? [[String: Any]])
        for (i, loss) in (reference["loss_per_example"] as! [Double]).enumerated() {
            XCTAssertEqual(perExample[i]["loss"] as! Double, loss, accuracy: 1e-4, "example \(i)")
        }

        let text = try Executables.run(Executables.client, ["tokenize", "--model", gguf.path, "--text", "hi"])
        XCTAssertEqual(text.status, 1)
        XCTAssertTrue(text.stderr.contains("no tokenizer (no tokenizer.ggml.model in the GGUF): only pre-tokenized input"),
                      text.stderr)
    }
}
