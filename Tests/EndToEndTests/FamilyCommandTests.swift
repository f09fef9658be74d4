import Foundation
import TestSupport
import XCTest

/// The client's commands on each family's tiny model (Tests/Fixtures/tiny-<name>, the rows of LanguageModelTests'
/// TinyFamily): `eval` from the HF directory and the GGUF gives transformers + PEFT's float64 losses; `train` with
/// DP-SGD and no `--targets` adapts the family's attention projections (Phi-3's fused qkv_proj) and its adapter
/// evaluates; `quantize` merges the adapter into a GGUF of the family that evaluates to PEFT's losses; what a family
/// refuses on the command line is refused by name.
final class FamilyCommandTests: XCTestCase {
    /// Each family, the attention projections `train` adapts by default (PEFT's names, sorted as the adapter's
    /// config lists them), and the fixture file `train` starts from (the HF directory for some, the GGUF for others).
    static let families: [(name: String, defaultTargets: [String], trainFrom: String)] = [
        ("qwen2", ["k_proj", "o_proj", "q_proj", "v_proj"], ""), ("qwen3", ["k_proj", "o_proj", "q_proj", "v_proj"], "model.gguf.bin"),
        ("gemma2", ["k_proj", "o_proj", "q_proj", "v_proj"], "model.gguf.bin"), ("gemma3", ["k_proj", "o_proj", "q_proj", "v_proj"], ""),
        ("phi3", ["o_proj", "qkv_proj"], ""),
    ]

    func run(_ arguments: [String]) throws -> Executables.Result { try Executables.run(Executables.client, arguments) }

    /// The reference's examples of `tiny-<family>` as a JSONL file of token ids and labels, and the reference.
    func referenceData(_ family: String, in directory: URL) throws -> (url: URL, reference: [String: Any]) {
        let reference = try Fixtures.json("tiny-\(family)/reference.json")
        let inputs = reference["input_ids"] as! [[Int]], labels = reference["labels"] as! [[Int]]
        let data = directory.appendingPathComponent("\(family)-tokens.jsonl")
        let lines = try zip(inputs, labels).map { ids, labels in
            String(decoding: try JSONSerialization.data(withJSONObject: ["input_ids": ids, "labels": labels]), as: UTF8.self)
        }
        try lines.joined(separator: "\n").write(to: data, atomically: true, encoding: .utf8)
        return (data, reference)
    }

    func testEvalMatchesTransformersFromHFAndGGUF() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        for (family, _, _) in Self.families {
            let (data, reference) = try referenceData(family, in: directory)
            let base = reference["loss_per_example"] as! [Double]
            let lora = (reference["lora"] as! [String: Any])["loss_per_example"] as! [Double]
            for model in ["tiny-\(family)", "tiny-\(family)/model.gguf.bin"] {
                for (adapter, losses) in [(nil, base), ("tiny-\(family)/peft-adapter", lora)] {
                    var arguments = ["eval", "--model", Fixtures.url(model).path, "--data", data.path, "--precision", "float32",
                                     "--json"]
                    if let adapter { arguments += ["--adapter", Fixtures.url(adapter).path] }
                    let result = try run(arguments)
                    XCTAssertEqual(result.status, 0, result.stderr)
                    let perExample = try result.json()["per_example"] as! [[String: Any]]
                    XCTAssertEqual(perExample.count, 3)
                    for (i, item) in perExample.enumerated() {
                        XCTAssertEqual(item["loss"] as! Double, losses[i], accuracy: 1e-5,
                                       "\(model) example \(i), adapter \(adapter ?? "none")")
                    }
                }
            }
        }
    }

    func testTrainWithDPAdaptsTheAttentionByDefaultThenEvals() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        for (family, targets, source) in Self.families {
            let (data, _) = try referenceData(family, in: directory)
            let out = directory.appendingPathComponent("\(family)-adapter")
            let model = Fixtures.url("tiny-\(family)/\(source)").path
            let result = try run(["train", "--model", model, "--data", data.path, "--out", out.path,
                                  "--dp", "--noise-multiplier", "1.0", "--batch-size", "2", "--steps", "2", "--json"])
            XCTAssertEqual(result.status, 0, result.stderr)
            XCTAssertNotNil(try result.json()["epsilon"] as? Double, family)
            let config = try XCTUnwrap(try JSONSerialization.jsonObject(
                with: Data(contentsOf: out.appendingPathComponent("adapter_config.json"))) as? [String: Any])
            XCTAssertEqual(config["target_modules"] as? [String], targets, family)
            let eval = try run(["eval", "--model", model, "--adapter", out.path, "--data", data.path, "--json"])
            XCTAssertEqual(eval.status, 0, eval.stderr)
            let losses = (try eval.json()["per_example"] as? [[String: Any]])?.compactMap { $0["loss"] as? Double } ?? []
            XCTAssertEqual(losses.count, 3, family)
            XCTAssertTrue(losses.allSatisfy(\.isFinite), "\(family): \(losses)")
        }
    }

    /// An unfused target on Phi-3 is refused naming the fused one.
    func testPhi3UnfusedTargetIsRefused() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (data, _) = try referenceData("phi3", in: directory)
        let refused = try run(["train", "--model", Fixtures.url("tiny-phi3").path, "--data", data.path,
                               "--out", directory.appendingPathComponent("other").path, "--targets", "q_proj,v_proj", "--steps", "1"])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("'q_proj'") && refused.stderr.contains("'qkv_proj'"), refused.stderr)
    }

    /// A record longer than the context (32 tokens: Phi-3's window) is cut to it by default, not refused; Gemma 2's
    /// window of 32 is masked, so its context is 128 and the record runs whole.
    func testEvalCutsRecordsToTheWindow() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let data = directory.appendingPathComponent("long.jsonl")
        try #"{"input_ids": [\#((0..<40).map { String($0 % 256) }.joined(separator: ", "))]}"#
            .write(to: data, atomically: true, encoding: .utf8)
        for (family, scored) in [("phi3", 31), ("gemma2", 39)] {
            let result = try run(["eval", "--model", Fixtures.url("tiny-\(family)").path, "--data", data.path, "--json"])
            XCTAssertEqual(result.status, 0, result.stderr)
            XCTAssertEqual((try result.json()["per_example"] as? [[String: Any]])?.first?["tokens"] as? Int, scored, family)
        }
    }

    /// `quantize` refuses by name a Gemma 3 that llama.cpp's gemma3 graph would compute otherwise (here an attention
    /// soft-cap, which transformers computes and llama.cpp does not), and writes no file; the fixture itself is
    /// exported (testQuantizeMergesTheAdapterAndEvalGivesPEFTsLosses).
    func testQuantizeRefusesACappedGemma3ByName() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let model = directory.appendingPathComponent("capped-gemma3")
        try FileManager.default.createDirectory(at: model, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Fixtures.url("tiny-gemma3/model.safetensors"),
                                         to: model.appendingPathComponent("model.safetensors"))
        var config = try Fixtures.json("tiny-gemma3/config.json")
        config["attn_logit_softcapping"] = 50
        try JSONSerialization.data(withJSONObject: config).write(to: model.appendingPathComponent("config.json"))
        let out = directory.appendingPathComponent("out.gguf")
        let result = try run(["quantize", "--model", model.path, "--type", "q8_0", "--out", out.path])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.stderr.contains("attn_logit_softcapping = 50.0 is not computed by llama.cpp's gemma3 graph"),
                      result.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
    }

    /// `quantize` writes each family with its PEFT adapter merged (from the HF directory), and `eval` on
    /// that file gives PEFT's float64 losses.
    func testQuantizeMergesTheAdapterAndEvalGivesPEFTsLosses() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        for (family, _, _) in Self.families {
            let (data, reference) = try referenceData(family, in: directory)
            let losses = (reference["lora"] as! [String: Any])["loss_per_example"] as! [Double]
            let out = directory.appendingPathComponent("\(family)-merged.gguf")
            let result = try run(["quantize", "--model", Fixtures.url("tiny-\(family)").path,
                                  "--adapter", Fixtures.url("tiny-\(family)/peft-adapter").path, "--type", "f32", "--out", out.path])
            XCTAssertEqual(result.status, 0, "\(family): \(result.stderr)")
            let eval = try run(["eval", "--model", out.path, "--data", data.path, "--precision", "float32", "--json"])
            XCTAssertEqual(eval.status, 0, eval.stderr)
            let perExample = (try eval.json()["per_example"] as? [[String: Any]]) ?? []
            XCTAssertEqual(perExample.count, 3, family)
            for (i, item) in perExample.enumerated() {
                XCTAssertEqual(item["loss"] as! Double, losses[i], accuracy: 1e-5, "\(family) merged export, example \(i)")
            }
        }
    }
}
