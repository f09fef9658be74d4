import Foundation
import Kernels
import LanguageModel
import Privacy
import TestSupport
import XCTest
@testable import FineTuning

/// Issue 17: a client's part of a distributed DP-SGD step on the tiny-llama fixture is the sum over its sampled
/// units of each unit's gradient clipped to C, with no noise (the share is added on the grid afterwards).
final class DistributedStepTests: XCTestCase {
    /// At q = 1 every unit is sampled, so the sum is deterministic: Σ_users clip(Σ_records g) at the starting
    /// adapter, checked against each record's gradient computed on its own (worst difference below 1e-5 of C).
    /// Control: without the clip (C huge) the sum differs from the clipped one by more than the tolerance.
    func testTheClippedSumIsTheSumOfEachUnitsClippedGradient() throws {
        let model = LlamaModel(weights: try ModelLoader.loadHFDirectory(Fixtures.url("tiny-llama")), pool: ThreadPool(threads: 2))
        let inputs = try Fixtures.json("tiny-llama/reference.json")["input_ids"] as! [[Int]]
        let users = ["bob", "carol", "alice", "bob", "carol", "carol"]
        let examples = users.enumerated().map { i, user -> TokenizedExample in
            let ids = Array(inputs[i % inputs.count].prefix(16 - i % 8))
            return TokenizedExample(ids: ids, labels: ids, line: i + 1, user: user)
        }
        var configuration = TrainingConfiguration()
        configuration.steps = 1
        configuration.samplingRate = 1
        configuration.privacyUnit = .user
        let trainer = try LoRATrainer(model: model, examples: examples, configuration: configuration)
        // The B half of LoRA starts at zero; give it values so that every gradient is non-zero.
        var lora = trainer.lora
        for i in lora.parameters.indices { lora.parameters[i] = Float(sin(Double(i) * 0.37)) * 0.05 }
        let probe = try LoRATrainer(model: model, examples: examples, configuration: configuration, initial: lora)
        func gradient(_ example: TokenizedExample) throws -> [Double] {
            var g = [Float](repeating: 0, count: lora.count)
            _ = try g.withUnsafeMutableBufferPointer {
                try model.lossAndGradient(tokens: example.ids, labels: example.labels, lora: lora, gradient: $0.baseAddress!,
                                          precision: model.precision)
            }
            return g.map(Double.init)
        }
        let perRecord = try examples.map(gradient)
        let userSums = probe.units.map { unit in unit.reduce([Double](repeating: 0, count: lora.count)) { sum, index in
            zip(sum, perRecord[index]).map(+) } }
        func norm(_ v: [Double]) -> Double { v.reduce(0) { $0 + $1 * $1 }.squareRoot() }
        let clip = 0.5 * userSums.map(norm).min()!
        let expected = userSums.reduce([Double](repeating: 0, count: lora.count)) { sum, user in
            zip(sum, user.map { $0 * clip / norm(user) }).map(+)
        }
        let step = try probe.clippedStepSum(clipNorm: clip)
        XCTAssertEqual(step.units, 3)
        XCTAssertEqual(step.examples, examples.count)
        let worst = zip(step.sum, expected).map { abs($0 - $1) }.max()!
        XCTAssertLessThan(worst, 1e-5 * clip, "worst difference \(worst)")
        let unclipped = try probe.clippedStepSum(clipNorm: 1e9).sum
        XCTAssertGreaterThan(zip(unclipped, expected).map { abs($0 - $1) }.max()!, 1e-3 * clip, "control: the clip binds")
        XCTAssertLessThanOrEqual(norm(step.sum), 3 * clip * (1 + 1e-9), "three units of norm C at most")
    }
}
