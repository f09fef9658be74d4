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
        let lora = TrainableLoRA(configuration: c, rank: 4, alpha: 8, targets: ProjectionModule.allCases,
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
                    _ = model.trainingForward(tokens: tokens, positions: positions.baseAddress!, projections: projections,
                                              arena: arena)
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
        let kv = c.numKeyValueHeads * c.headDim, modules = ProjectionModule.allCases.count
        let perToken = 3 * d + ff + d + 4 + c.numHiddenLayers * (2 * q + 2 * kv + 2 * d + 2 * ff + modules * 4)
        XCTAssertEqual(long - short, 32 * perToken, "kept floats for 32 → 64 tokens: \(short) → \(long)")
    }
}
