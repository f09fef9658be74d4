import Foundation
import Kernels
import ModelFormats
import TestSupport
import XCTest
@testable import LanguageModel

/// LoRA gradients through the frozen base against PEFT's autograd (float64), and finite differences.
final class LoRAGradientTests: XCTestCase {
    /// The issue's tolerances: per tensor, max abs error / max abs value ≤ 5e-4; norms 1e-4 relative.
    static let gradientTolerance = 5e-4
    static let normTolerance = 1e-4

    func referenceSetup(gguf: Bool) throws -> (LlamaModel, TrainableLoRA, [[Int]], [[Int]]) {
        let json = try Fixtures.json("tiny-llama/reference.json")
        let weights: ModelWeights
        if gguf {
            let directory = try Fixtures.temporaryDirectory()
            let url = directory.appendingPathComponent("tiny.gguf")
            try TinyGGUF.write(hfDirectory: Fixtures.url("tiny-llama"), to: url)
            weights = try ModelLoader.loadGGUF(try GGUFFile(url: url))
        } else {
            weights = try ModelLoader.loadHFDirectory(Fixtures.url("tiny-llama"))
        }
        let model = LlamaModel(weights: weights, pool: ThreadPool(threads: 2))
        let adapter = try ModelLoader.loadAdapter(path: Fixtures.url("tiny-llama/peft-adapter").path, for: model)
        return (model, TrainableLoRA.from(adapter, for: model), json["input_ids"] as! [[Int]], json["labels"] as! [[Int]])
    }

    func checkAgainstReference(gguf: Bool) throws {
        let (model, lora, inputs, labels) = try referenceSetup(gguf: gguf)
        let json = try Fixtures.json("tiny-llama/reference.json")
        let expectedNorms = (json["lora"] as! [String: Any])["per_example_grad_norm"] as! [Double]
        let expectedLosses = (json["lora"] as! [String: Any])["loss_per_example"] as! [Double]
        var total = [Float](repeating: 0, count: lora.count)
        for i in inputs.indices {
            var single = [Float](repeating: 0, count: lora.count)
            let (loss, _) = try single.withUnsafeMutableBufferPointer {
                try model.lossAndGradient(tokens: inputs[i], labels: labels[i], lora: lora, gradient: $0.baseAddress!)
            }
            XCTAssertEqual(loss, expectedLosses[i], accuracy: 1e-5, "example \(i) loss")
            let norm = single.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
            XCTAssertLessThanOrEqual(abs(norm - expectedNorms[i]) / expectedNorms[i], Self.normTolerance,
                                     "example \(i): per-example gradient norm \(norm) vs \(expectedNorms[i])")
            for j in total.indices { total[j] += single[j] / Float(inputs.count) }
        }
        let gradients = lora.adapter(from: total)
        let reference = try SafetensorsFile(url: Fixtures.url("tiny-llama/reference.safetensors"))
        var worst = 0.0, checked = 0
        for layer in 0..<model.configuration.numHiddenLayers {
            for module in ProjectionModule.allCases {
                guard let pair = gradients.layers[layer][module] else { continue }
                let prefix = "grad.base_model.model.model.layers.\(layer).\(module.hfPath)"
                for (suffix, ours) in [("lora_A.weight", pair.a), ("lora_B.weight", pair.b)] {
                    let expected = try reference.floats("\(prefix).\(suffix)")
                    let scale = expected.reduce(0) { max($0, abs($1)) }
                    let error = zip(ours, expected).reduce(0) { max($0, abs($1.0 - $1.1)) }
                    let relative = Double(error / max(scale, 1e-12))
                    worst = max(worst, relative)
                    XCTAssertLessThanOrEqual(relative, Self.gradientTolerance, "\(prefix).\(suffix): relative error \(relative)")
                    checked += 1
                }
            }
        }
        XCTAssertEqual(checked, 28, "every adapter tensor compared")
        print("LoRA gradients (\(gguf ? "GGUF" : "HF") layout): worst relative error \(worst) (tolerance \(Self.gradientTolerance))")
    }

    func testGradientsMatchPEFTWithHFLayout() throws { try checkAgainstReference(gguf: false) }

    func testGradientsMatchPEFTWithGGUFLayout() throws { try checkAgainstReference(gguf: true) }

    /// Central finite differences of the loss on a handful of coordinates of every tensor kind,
    /// on a quantized (Q8_0) copy of the base so the backward through quantized weights is checked too.
    func testFiniteDifferences() throws {
        let (float, initial, inputs, labels) = try referenceSetup(gguf: false)
        let model = Self.quantizedCopy(of: float)
        // Make B non-zero so A's gradient is non-trivial everywhere.
        var lora = initial
        for i in lora.parameters.indices { lora.parameters[i] += Float((i * 7919) % 13 - 6) * 0.01 }
        var analytic = [Float](repeating: 0, count: lora.count)
        _ = try analytic.withUnsafeMutableBufferPointer {
            try model.lossAndGradient(tokens: inputs[1], labels: labels[1], lora: lora, gradient: $0.baseAddress!)
        }
        func loss(_ parameters: [Float]) throws -> Double {
            var copy = lora
            copy.parameters = parameters
            var scratch = [Float](repeating: 0, count: lora.count)
            return try scratch.withUnsafeMutableBufferPointer {
                try model.lossAndGradient(tokens: inputs[1], labels: labels[1], lora: copy, gradient: $0.baseAddress!).loss
            }
        }
        var worst = 0.0
        for slot in lora.slots where slot.layer == 1 || slot.module == .qProj {
            for offset in [slot.aOffset + 3, slot.bOffset + 5] {
                let h: Float = 1e-2
                var plus = lora.parameters, minus = lora.parameters
                plus[offset] += h
                minus[offset] -= h
                let numeric = (try loss(plus) - loss(minus)) / Double(2 * h)
                let error = abs(numeric - Double(analytic[offset])) / max(1e-3, abs(numeric))
                worst = max(worst, error)
                XCTAssertLessThan(error, 2e-2, "\(slot.module) layer \(slot.layer) offset \(offset): numeric \(numeric) analytic \(analytic[offset])")
            }
        }
        print("finite differences: worst relative error \(worst)")
    }

    /// The int8 training path (int8 activations forward, transposed Q8_0 copies backward) on a Q8_0 base
    /// stays close to the exact float32 gradient: relative L2 error and cosine over all LoRA tensors.
    func testInt8TrainingGradientIsCloseToFloat() throws {
        let (float, initial, inputs, labels) = try referenceSetup(gguf: false)
        let model = Self.quantizedCopy(of: float)
        var lora = initial
        for i in lora.parameters.indices { lora.parameters[i] += Float((i * 7919) % 13 - 6) * 0.01 }
        func gradient(_ precision: ActivationPrecision) throws -> ([Float], Double) {
            var g = [Float](repeating: 0, count: lora.count)
            let loss = try g.withUnsafeMutableBufferPointer {
                try model.lossAndGradient(tokens: inputs[1], labels: labels[1], lora: lora, gradient: $0.baseAddress!,
                                          precision: precision).loss
            }
            return (g, loss)
        }
        let (exact, exactLoss) = try gradient(.float32)
        let (fast, fastLoss) = try gradient(.int8)
        let (relative, cosine, _) = TinyReference.agreement(fast, with: exact)
        print("int8 training gradient: relative L2 error \(relative), cosine \(cosine), loss \(exactLoss) vs \(fastLoss)")
        XCTAssertNotEqual(relative, 0, "the int8 path must actually run on a Q8_0 base")
        XCTAssertLessThan(relative, 0.05)
        XCTAssertGreaterThan(cosine, 0.998)
        XCTAssertEqual(fastLoss, exactLoss, accuracy: 0.01)
    }

    /// The tiny model with every projection re-quantized to Q8_0 (embedding and output stay float).
    static func quantizedCopy(of float: LlamaModel) -> LlamaModel {
        let base = float.weights
        let quantizedLayers = base.layers.map { layer in
            LayerWeights(attentionNorm: layer.attentionNorm, feedForwardNorm: layer.feedForwardNorm,
                         projections: layer.projections.mapValues {
                             Quantize.matrix($0.dequantized(), rows: $0.rows, columns: $0.columns, format: .q8_0)
                         })
        }
        return LlamaModel(weights: ModelWeights(configuration: base.configuration, embedding: base.embedding,
                                                output: base.output, finalNorm: base.finalNorm, layers: quantizedLayers,
                                                ropeLayout: base.ropeLayout, source: "tiny-llama (Q8_0)"),
                          pool: ThreadPool(threads: 2))
    }
}
