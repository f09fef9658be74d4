import Foundation
import TestSupport
import XCTest

/// The client's commands on the tiny Gemma 2 (Tests/Fixtures/tiny-gemma2): `eval` from the HF directory and the GGUF
/// gives transformers + PEFT's float64 losses; `train` with DP-SGD runs through the Gemma 2 pass and its adapter
/// evaluates; `quantize` refuses to write Gemma 2 (not exported yet) by name.
final class Gemma2CommandTests: XCTestCase {
    func run(_ arguments: [String]) throws -> Executables.Result { try Executables.run(Executables.client, arguments) }

    func referenceData(in directory: URL) throws -> (url: URL, reference: [String: Any]) {
        let reference = try Fixtures.json("tiny-gemma2/reference.json")
        let inputs = reference["input_ids"] as! [[Int]], labels = reference["labels"] as! [[Int]]
        let data = directory.appendingPathComponent("tokens.jsonl")
        let lines = try zip(inputs, labels).map { ids, labels in
            String(decoding: try JSONSerialization.data(withJSONObject: ["input_ids": ids, "labels": labels]), as: UTF8.self)
        }
        try lines.joined(separator: "\n").write(to: data, atomically: true, encoding: .utf8)
        return (data, reference)
    }

    func testEvalMatchesTransformersFromHFAndGGUF() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (data, reference) = try referenceData(in: directory)
        let base = reference["loss_per_example"] as! [Double]
        let lora = (reference["lora"] as! [String: Any])["loss_per_example"] as! [Double]
        for model in ["tiny-gemma2", "tiny-gemma2/model.gguf.bin"] {
            for (adapter, losses) in [(nil, base), ("tiny-gemma2/peft-adapter", lora)] {
                var arguments = ["eval", "--model", Fixtures.url(model).path, "--data", data.path, "--precision", "float32",
                                 "--json"]
                if let adapter { arguments += ["--adapter", Fixtures.url(adapter).path] }
                let result = try run(arguments)
                XCTAssertEqual(result.status, 0, result.stderr)
                let perExample = try result.json()["per_example"] as! [[String: Any]]
                XCTAssertEqual(perExample.count, 3)
                for (i, item) in perExample.enumerated() {
                    XCTAssertEqual(item["loss"] as! Double, losses[i], accuracy: 1e-5, "\(model) example \(i), adapter \(adapter ?? "none")")
                }
            }
        }
    }

    func testTrainWithDPThenEvalTheAdapter() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (data, _) = try referenceData(in: directory)
        let out = directory.appendingPathComponent("adapter")
        let model = Fixtures.url("tiny-gemma2/model.gguf.bin").path
        let result = try run(["train", "--model", model, "--data", data.path, "--out", out.path,
                              "--dp", "--noise-multiplier", "1.0", "--batch-size", "2", "--steps", "2", "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertNotNil(try result.json()["epsilon"] as? Double)
        let config = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("adapter_config.json")))
            as? [String: Any])
        XCTAssertEqual(config["target_modules"] as? [String], ["k_proj", "o_proj", "q_proj", "v_proj"])
        let eval = try run(["eval", "--model", model, "--adapter", out.path, "--data", data.path, "--json"])
        XCTAssertEqual(eval.status, 0, eval.stderr)
        let losses = (try eval.json()["per_example"] as? [[String: Any]])?.compactMap { $0["loss"] as? Double } ?? []
        XCTAssertEqual(losses.count, 3)
        XCTAssertTrue(losses.allSatisfy(\.isFinite), "\(losses)")
    }

    func testQuantizeRefusesGemma2ByName() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let result = try run(["quantize", "--model", Fixtures.url("tiny-gemma2").path, "--type", "q8_0",
                              "--out", directory.appendingPathComponent("out.gguf").path])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("Gemma 2"), result.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory.appendingPathComponent("out.gguf").path))
    }
}
