import FederationProtocol
import Foundation
import LanguageModel
import ModelFormats
import TestSupport
import Wire
import XCTest

/// A federation's adapter layout on Phi-3 (Tests/Fixtures/tiny-phi3): a plan's fused targets give PEFT's tensor names
/// and shapes (one A, one B over each fused output), the directory it writes loads as the model's adapter, and an
/// unfused target is refused by the plan's field before any round.
final class Phi3AdapterLayoutTests: XCTestCase {
    func plan(targets: [String]) -> TrainingPlan {
        TrainingPlan(steps: 4, learningRate: 0.002, samplingRate: 0.05, noiseMultiplier: 1.0, clipNorm: 1.0, delta: 1e-5,
                     maxLength: 32, rank: 4, alpha: 8, targets: targets)
    }

    func testFusedTargetsLayOutAsPEFTAndLoadBack() throws {
        let configuration = try LlamaConfiguration(configJSON: Fixtures.url("tiny-phi3/config.json"))
        let layout = try AdapterLayout(configuration: configuration, plan: plan(targets: ["qkv_proj", "gate_up_proj"]))
        let stem = "base_model.model.model.layers"
        XCTAssertEqual(layout.shapes["\(stem).0.self_attn.qkv_proj.lora_A.weight"], [4, 64])
        XCTAssertEqual(layout.shapes["\(stem).0.self_attn.qkv_proj.lora_B.weight"], [128, 4])
        XCTAssertEqual(layout.shapes["\(stem).1.mlp.gate_up_proj.lora_B.weight"], [192, 4])
        XCTAssertEqual(layout.shapes.count, 2 * 2 * 2)
        let tensors = layout.shapes.mapValues { shape in (0..<shape.reduce(1, *)).map { Float($0 % 7) * 0.01 } }
        let directory = try Fixtures.temporaryDirectory("phi3-layout")
        defer { try? FileManager.default.removeItem(at: directory) }
        let out = directory.appendingPathComponent("adapter")
        try layout.write(tensors, to: out, baseModel: nil)
        let model = LlamaModel(weights: try ModelLoader.loadHFDirectory(Fixtures.url("tiny-phi3")))
        let adapter = try ModelLoader.loadAdapter(path: out.path, for: model)
        XCTAssertEqual(adapter.layers[1][.gateUpProj]?.b, tensors["\(stem).1.mlp.gate_up_proj.lora_B.weight"])
        XCTAssertEqual(adapter.layers[0][.qkvProj]?.a, tensors["\(stem).0.self_attn.qkv_proj.lora_A.weight"])
    }

    func testUnfusedTargetIsRefusedByField() throws {
        let configuration = try LlamaConfiguration(configJSON: Fixtures.url("tiny-phi3/config.json"))
        XCTAssertThrowsError(try AdapterLayout(configuration: configuration, plan: plan(targets: ["q_proj", "v_proj"]))) {
            let message = "\($0)"
            XCTAssertTrue(message.contains("targets") && message.contains("'q_proj'") && message.contains("'qkv_proj'"), message)
        }
        // The same plan on a Llama is fine (the positive control).
        let llama = try LlamaConfiguration(configJSON: Fixtures.url("tiny-llama/config.json"))
        XCTAssertNoThrow(try AdapterLayout(configuration: llama, plan: plan(targets: ["q_proj", "v_proj"])))
    }
}
