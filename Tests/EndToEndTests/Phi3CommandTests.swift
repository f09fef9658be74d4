import Foundation
import TestSupport
import XCTest

/// The client's commands on the tiny Phi-3 (Tests/Fixtures/tiny-phi3): `eval` from the HF directory and the GGUF gives
/// transformers + PEFT's float64 losses; `train` with DP-SGD and no `--targets` adapts Phi-3's attention projections
/// (qkv_proj, o_proj), and an unfused target is refused naming the fused one.
final class Phi3CommandTests: XCTestCase {
    func run(_ arguments: [String]) throws -> Executables.Result { try Executables.run(Executables.client, arguments) }

    func referenceData(in directory: URL) throws -> (url: URL, reference: [String: Any]) {
        let reference = try Fixtures.json("tiny-phi3/reference.json")
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
        for model in ["tiny-phi3", "tiny-phi3/model.gguf.bin"] {
            for (adapter, losses) in [(nil, base), ("tiny-phi3/peft-adapter", lora)] {
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

    /// A record longer than the context (32 tokens: the window) is cut to it by default, not refused.
    func testEvalCutsRecordsToTheContext() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let data = directory.appendingPathComponent("long.jsonl")
        try #"{"input_ids": [\#((0..<40).map { String($0 % 256) }.joined(separator: ", "))]}"#
            .write(to: data, atomically: true, encoding: .utf8)
        let result = try run(["eval", "--model", Fixtures.url("tiny-phi3").path, "--data", data.path, "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertEqual((try result.json()["per_example"] as? [[String: Any]])?.first?["tokens"] as? Int, 31)
    }

    func testTrainWithDPAdaptsTheFusedAttentionByDefault() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (data, _) = try referenceData(in: directory)
        let out = directory.appendingPathComponent("adapter")
        let result = try run(["train", "--model", Fixtures.url("tiny-phi3").path, "--data", data.path, "--out", out.path,
                              "--dp", "--noise-multiplier", "1.0", "--batch-size", "2", "--steps", "2", "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertNotNil(try result.json()["epsilon"] as? Double)
        let config = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("adapter_config.json")))
            as? [String: Any])
        XCTAssertEqual(config["target_modules"] as? [String], ["o_proj", "qkv_proj"])
        let refused = try run(["train", "--model", Fixtures.url("tiny-phi3").path, "--data", data.path,
                               "--out", directory.appendingPathComponent("other").path, "--targets", "q_proj,v_proj", "--steps", "1"])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("'q_proj'") && refused.stderr.contains("'qkv_proj'"), refused.stderr)
    }
}
