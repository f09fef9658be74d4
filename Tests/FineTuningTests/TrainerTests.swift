import Foundation
import Kernels
import LanguageModel
import Privacy
import TestSupport
import XCTest
@testable import FineTuning

/// LoRA training on the tiny-llama fixture (float32, fast): plain and DP-SGD runs learn, the plan's
/// privacy is what the ledger is charged with, and bad plans are refused with the field named.
final class TrainerTests: XCTestCase {
    func tinyModelAndData() throws -> (LlamaModel, [TokenizedExample]) {
        let model = LlamaModel(weights: try ModelLoader.loadHFDirectory(Fixtures.url("tiny-llama")), pool: ThreadPool(threads: 2))
        let reference = try Fixtures.json("tiny-llama/reference.json")
        let inputs = reference["input_ids"] as! [[Int]]
        // Sixteen records: the fixture's sequences, repeated, all tokens counted.
        let examples = (0..<16).map { i -> TokenizedExample in
            let ids = inputs[i % inputs.count]
            return TokenizedExample(ids: ids, labels: ids, line: i + 1)
        }
        return (model, examples)
    }

    func meanLoss(_ model: LlamaModel, _ lora: TrainableLoRA, _ examples: [TokenizedExample]) throws -> Double {
        model.setAdapter(lora.adapter())
        defer { model.setAdapter(nil) }
        return try Evaluator.evaluate(model: model, examples: examples).loss
    }

    func testPlainTrainingLowersTheLoss() throws {
        let (model, examples) = try tinyModelAndData()
        var configuration = TrainingConfiguration()
        configuration.steps = 30
        configuration.batchSize = 4
        configuration.learningRate = 1e-2
        configuration.targets = [.qProj, .vProj, .downProj]
        let trainer = try LoRATrainer(model: model, examples: examples, configuration: configuration)
        XCTAssertNil(trainer.mechanism, "no privacy, nothing to charge")
        let before = try meanLoss(model, trainer.lora, examples)
        let result = try trainer.train()
        let after = try meanLoss(model, result.lora, examples)
        XCTAssertEqual(result.steps, 30)
        XCTAssertLessThan(after, before - 0.05, "loss \(before) → \(after)")
        XCTAssertTrue(result.lora.parameters.allSatisfy(\.isFinite))
    }

    func testDPTrainingLearnsAndReportsItsMechanism() throws {
        let (model, examples) = try tinyModelAndData()
        var configuration = TrainingConfiguration()
        configuration.steps = 30
        configuration.batchSize = 8
        configuration.learningRate = 1e-2
        configuration.privacy = DifferentialPrivacy(noiseMultiplier: 0.5, clipNorm: 1, delta: 1e-5)
        let trainer = try LoRATrainer(model: model, examples: examples, configuration: configuration)
        XCTAssertEqual(trainer.mechanism, .dpsgd(samplingRate: 0.5, noiseMultiplier: 0.5, steps: 30))
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(trainer.dpsgdGrid).effectiveNoiseMultiplier, 0.5)
        let before = try meanLoss(model, trainer.lora, examples)
        let result = try trainer.train()
        let after = try meanLoss(model, result.lora, examples)
        XCTAssertLessThan(after, before - 0.02, "DP loss \(before) → \(after)")
        let expected = try PrivacyAccounting.epsilon(steps: [trainer.mechanism!], delta: 1e-5, accountant: .rdp)
        XCTAssertEqual(result.epsilon!, expected, accuracy: 1e-12)
    }

    func testBadPlansAreRefusedWithTheFieldNamed() throws {
        let (model, examples) = try tinyModelAndData()
        func refusal(_ change: (inout TrainingConfiguration) -> Void, data: [TokenizedExample]? = nil) -> String {
            var configuration = TrainingConfiguration()
            change(&configuration)
            do {
                _ = try LoRATrainer(model: model, examples: data ?? examples, configuration: configuration)
                return "accepted"
            } catch {
                return "\(error)"
            }
        }
        XCTAssertTrue(refusal { $0.batchSize = 17 }.contains("batch size 17 exceeds the 16"))
        XCTAssertTrue(refusal { $0.privacy = DifferentialPrivacy(noiseMultiplier: 0, clipNorm: 1, delta: 1e-5) }.contains("noise multiplier"))
        XCTAssertTrue(refusal { $0.privacy = DifferentialPrivacy(noiseMultiplier: 1, clipNorm: -1, delta: 1e-5) }.contains("clip norm"))
        XCTAssertTrue(refusal { $0.privacy = DifferentialPrivacy(noiseMultiplier: 1, clipNorm: 1, delta: 1) }.contains("delta"))
        XCTAssertTrue(refusal { $0.steps = 0 }.contains("steps"))
        XCTAssertTrue(refusal({ _ in }, data: []).contains("no examples"))
        // Records without a token to learn are the data's check (`Dataset.requireLearnableTokens`), not the
        // trainer's: after a plan's truncation they train as zero gradients.
        let unlabeled = examples.map { TokenizedExample(ids: $0.ids, labels: $0.ids.map { _ in -100 }, line: $0.line) }
        XCTAssertEqual(refusal({ _ in }, data: unlabeled), "accepted")
        XCTAssertThrowsError(try Dataset.requireLearnableTokens(unlabeled, file: "u.jsonl")) { error in
            XCTAssertTrue("\(error)".hasPrefix("u.jsonl: no record has a token to learn"), "\(error)")
        }
        XCTAssertNoThrow(try Dataset.requireLearnableTokens(examples, file: "u.jsonl"))
    }
}
