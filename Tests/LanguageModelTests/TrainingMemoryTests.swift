import Foundation
import Kernels
import TestSupport
import XCTest
@testable import LanguageModel

/// Training keeps O(n·d) per layer for the backward pass, never the (heads, n, n) attention
/// probabilities (issue 18): what `trainingForward` allocates for 2n tokens is exactly twice what it
/// allocates for n, and it is the kept buffers the layer pass documents. (Positive control, run by hand:
/// adding back one (heads, n, n) buffer per layer in `trainingForward` fails this, 80,768 ≠ 56,192.)
final class TrainingMemoryTests: XCTestCase {
    func keptFloats(_ model: LlamaModel, tokens n: Int) -> Int {
        let c = model.configuration
        let lora = TrainableLoRA(configuration: c, rank: 4, alpha: 8, targets: c.adaptableModules,
                                 ropeLayout: model.weights.ropeLayout)
        let arena = Arena()
        let tokens = (0..<n).map { $0 % c.vocabSize }, positions = Array(0..<n)
        var gradient = [Float](repeating: 0, count: lora.count)
        lora.parameters.withUnsafeBufferPointer { parameters in
            gradient.withUnsafeMutableBufferPointer { gradient in
                positions.withUnsafeBufferPointer { positions in
                    let projections = TrainingProjections(model: model, lora: lora, parameters: parameters.baseAddress!,
                                                          gradient: gradient.baseAddress!, weight: 1, tokens: n,
                                                          precision: .float32, arena: arena)
                    _ = model.trainingForward(tokens: tokens, positions: positions.baseAddress!,
                                              frequencies: model.inverseFrequencies, projections: projections, arena: arena)
                }
            }
        }
        return arena.allocatedFloats
    }

    func testKeptStateIsLinearInTheRecordLength() throws {
        let model = LlamaModel(weights: try ModelLoader.loadHFDirectory(Fixtures.url("tiny-llama")), pool: ThreadPool(threads: 2))
        let c = model.configuration
        let short = keptFloats(model, tokens: 32), long = keptFloats(model, tokens: 64)
        // Per token: the shared scratch (two norm outputs, a projection, the activation), the embedding,
        // the LoRA backward's (n, rank) scratch, and per layer q, k, v, attention, middle, gate, up,
        // output and A x (n, rank) per module; the LoRA forward scratch does not grow with n.
        let d = c.hiddenSize, ff = c.intermediateSize, q = c.numAttentionHeads * c.headDim
        let kv = c.numKeyValueHeads * c.headDim, modules = c.adaptableModules.count
        let perToken = 3 * d + ff + d + 4 + c.numHiddenLayers * (2 * q + 2 * kv + 2 * d + 2 * ff + modules * 4)
        XCTAssertEqual(long - short, 32 * perToken, "kept floats for 32 → 64 tokens: \(short) → \(long)")
    }

    /// Passes reuse their scratch (`ScratchSlabs`): reused chunks still hold the last pass's numbers, so every
    /// buffer a pass reads must be zeroed or written first. Here the chunks are filled with NaN between passes and
    /// the gradient must come out bit for bit the same as from fresh memory, on both precisions. (Positive
    /// control, run by hand: `dFinalIn` in `lossHead` taken with `zeroed: false` makes the poisoned pass NaN.)
    func testReusedScratchGivesTheSameGradient() throws {
        let model = LlamaModel(weights: try ModelLoader.loadHFDirectory(Fixtures.url("tiny-llama")), pool: ThreadPool(threads: 2))
        let c = model.configuration
        var lora = TrainableLoRA(configuration: c, rank: 4, alpha: 8, targets: c.adaptableModules,
                                 ropeLayout: model.weights.ropeLayout)
        for i in lora.parameters.indices { lora.parameters[i] += Float((i * 7919) % 13 - 6) * 0.01 }
        let tokens = (0..<40).map { ($0 * 7) % c.vocabSize }
        let labels = Array(tokens.dropFirst()) + [-100]
        func pass(_ precision: ActivationPrecision) throws -> ([Float], Double) {
            var g = [Float](repeating: 0, count: lora.count)
            let loss = try g.withUnsafeMutableBufferPointer {
                try model.lossAndGradient(tokens: tokens, labels: labels, lora: lora, gradient: $0.baseAddress!,
                                          precision: precision).loss
            }
            return (g, loss)
        }
        for precision in ActivationPrecision.allCases {
            let fresh = try pass(precision)
            let chunks = model.scratchSlabs.take()
            XCTAssertFalse(chunks.isEmpty, "the first pass leaves its chunks")
            for chunk in chunks { chunk.pointer.initialize(repeating: .nan, count: chunk.floats) }
            model.scratchSlabs.give(chunks)
            let reused = try pass(precision)
            XCTAssertEqual(reused.1, fresh.1, "\(precision): loss")
            let differing = zip(reused.0, fresh.0).filter { $0 != $1 }.count  // NaN differs from everything
            XCTAssertEqual(differing, 0, "\(precision): gradient entries that differ, of \(fresh.0.count)")
            XCTAssertFalse(fresh.0.allSatisfy { $0 == 0 }, "\(precision): a gradient to compare")
        }
    }
}
