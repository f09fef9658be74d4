import Foundation
import Kernels
import ModelFormats
import TestSupport
import XCTest
@testable import LanguageModel

/// The tiny random models of Tests/Fixtures made by generate.py (`tiny-<name>`: config.json, model.safetensors,
/// model.gguf.bin from llama.cpp's convert_hf_to_gguf.py, peft-adapter, and reference.json/.safetensors from
/// transformers + PEFT in float64), and the comparisons with them that FamilyReferenceTests and RopeScalingTests
/// make: logits, per-example losses, LoRA logits, per-example gradient norms and the mean loss's LoRA gradients.
enum TinyReference {
    /// The tolerances of the tiny Llama's tests (TinyLlamaReferenceTests, LoRAGradientTests).
    static let logitTolerance: Float = 1e-4
    static let lossTolerance = 1e-5
    static let gradientTolerance = 5e-4
    static let normTolerance = 1e-4

    struct Reference {
        let inputIds: [[Int]]
        let labels: [[Int]]
        let losses: [Double]
        let loraLosses: [Double]
        let gradientNorms: [Double]
        let tensors: SafetensorsFile
    }

    /// - Parameter file: the references' name in the folder (`reference`, or tiny-gemma2's `window`: one example past
    ///   its sliding window), as `<file>.json` and `<file>.safetensors`.
    static func reference(_ name: String, file: String = "reference") throws -> Reference {
        let json = try Fixtures.json("tiny-\(name)/\(file).json")
        let lora = try XCTUnwrap(json["lora"] as? [String: Any])
        return Reference(inputIds: json["input_ids"] as! [[Int]], labels: json["labels"] as! [[Int]],
                         losses: json["loss_per_example"] as! [Double], loraLosses: lora["loss_per_example"] as! [Double],
                         gradientNorms: lora["per_example_grad_norm"] as! [Double],
                         tensors: try SafetensorsFile(url: Fixtures.url("tiny-\(name)/\(file).safetensors")))
    }

    static func weights(_ name: String, gguf: Bool) throws -> ModelWeights {
        gguf ? try ModelLoader.loadGGUF(try GGUFFile(url: Fixtures.url("tiny-\(name)/model.gguf.bin")))
            : try ModelLoader.loadHFDirectory(Fixtures.url("tiny-\(name)"))
    }

    static func model(_ name: String, gguf: Bool) throws -> LlamaModel {
        LlamaModel(weights: try weights(name, gguf: gguf), pool: ThreadPool(threads: 2))
    }

    /// `weights` run with `configuration` instead of their own (a control: the same weights with a scaling changed).
    static func model(_ weights: ModelWeights, configuration: LlamaConfiguration) -> LlamaModel {
        LlamaModel(weights: ModelWeights(configuration: configuration, embedding: weights.embedding, output: weights.output,
                                         finalNorm: weights.finalNorm, layers: weights.layers, ropeLayout: weights.ropeLayout,
                                         source: weights.source), pool: ThreadPool(threads: 2))
    }

    /// Training's loss (`lossAndGradient`) of `tiny-<name>`'s first example with its adapter, for controls that must
    /// show through training too.
    static func firstTrainingLoss(_ model: LlamaModel, _ name: String) throws -> Double {
        let reference = try reference(name)
        let lora = TrainableLoRA.from(try adapter(name, for: model), for: model)
        var gradient = [Float](repeating: 0, count: lora.count)
        return try gradient.withUnsafeMutableBufferPointer {
            try model.lossAndGradient(tokens: reference.inputIds[0], labels: reference.labels[0], lora: lora,
                                      gradient: $0.baseAddress!)
        }.loss
    }

    /// `model` exported by `quantize`'s exporter as F32 to `url`, and the file loaded back.
    static func exported(_ model: LlamaModel, to url: URL) throws -> (file: GGUFFile, model: LlamaModel) {
        try ModelExporter.export(LoadedModel(model: model, tokenizer: nil, gguf: nil), adapter: nil,
                                 scheme: .uniform(.f32), to: url)
        let file = try GGUFFile(url: url)
        return (file, LlamaModel(weights: try ModelLoader.loadGGUF(file), pool: ThreadPool(threads: 2)))
    }

    static func adapter(_ name: String, for model: LlamaModel) throws -> LoRAAdapter {
        try ModelLoader.loadAdapter(path: Fixtures.url("tiny-\(name)/peft-adapter").path, for: model)
    }

    /// The worst logit and per-example loss differences of `model` (with `tiny-<name>`'s adapter installed
    /// when `adapter`) from transformers' float64 numbers.
    static func worstDifferences(_ model: LlamaModel, _ name: String, adapter: Bool, file: String = "reference") throws
        -> (logit: Float, loss: Double) {
        let reference = try reference(name, file: file)
        model.setAdapter(adapter ? try Self.adapter(name, for: model) : nil)
        let expected = try reference.tensors.floats(adapter ? "lora_logits" : "logits")
        let losses = adapter ? reference.loraLosses : reference.losses
        let vocabulary = model.configuration.vocabSize
        var worstLogit: Float = 0, worstLoss = 0.0
        for (i, ids) in reference.inputIds.enumerated() {
            let logits = try model.allLogits(tokens: ids)
            let start = i * ids.count * vocabulary
            // A NaN logit counts as infinitely far (max() would pass over it).
            for j in logits.indices { worstLogit = max(worstLogit, abs(logits[j] - expected[start + j]).isNaN ? .infinity
                                                                   : abs(logits[j] - expected[start + j])) }
            worstLoss = max(worstLoss, abs(try model.score(tokens: ids, labels: reference.labels[i]).meanLoss - losses[i]))
        }
        return (worstLogit, worstLoss)
    }

    /// Logits and losses of `tiny-<name>` from its HF directory or GGUF, with or without the adapter, within
    /// the tolerances.
    static func checkLogitsAndLosses(_ name: String, gguf: Bool, adapter: Bool, architecture: ModelArchitecture,
                                     file: StaticString = #filePath, line: UInt = #line) throws {
        let model = try model(name, gguf: gguf)
        XCTAssertEqual(model.configuration.architecture, architecture, file: file, line: line)
        let (worstLogit, worstLoss) = try worstDifferences(model, name, adapter: adapter)
        let label = "\(name) \(gguf ? "GGUF" : "HF")\(adapter ? " + PEFT" : "")"
        print("\(label): worst logit difference \(worstLogit), worst loss difference \(worstLoss)")
        XCTAssertLessThanOrEqual(worstLogit, logitTolerance, "\(label): worst logit difference \(worstLogit)",
                                 file: file, line: line)
        XCTAssertLessThanOrEqual(worstLoss, lossTolerance, "\(label): worst loss difference \(worstLoss)", file: file, line: line)
    }

    /// The worst logit difference between incremental decoding (five tokens, then one at a time on the KV
    /// cache) and one full pass over the reference's first input.
    static func worstCachedDifference(_ name: String) throws -> Float {
        try worstCachedDifference(model(name, gguf: true), ids: reference(name).inputIds[0])
    }

    /// The same for any model and input (at least six tokens).
    static func worstCachedDifference(_ model: LlamaModel, ids: [Int]) throws -> Float {
        let full = try model.allLogits(tokens: ids)
        let cache = model.makeCache(capacity: 2)
        let vocabulary = model.configuration.vocabSize
        var worst: Float = 0
        try model.forward(tokens: Array(ids[0..<5]), cache: cache, logits: .none)
        for t in 5..<ids.count {
            try model.forward(tokens: [ids[t]], cache: cache, logits: .last) { _, logits in
                for v in 0..<vocabulary { worst = max(worst, abs(logits[v] - full[t * vocabulary + v])) }
            }
        }
        return worst
    }

    /// The worst logit difference of `file` (float32 activations) from the reference's `tensor` (`logits`,
    /// `lora_logits`, `q8_0_logits`); a NaN counts as infinitely far.
    static func worstLogitDifference(_ file: GGUFFile, _ name: String, tensor: String) throws -> Float {
        let model = LlamaModel(weights: try ModelLoader.loadGGUF(file), pool: ThreadPool(threads: 2))
        model.precision = .float32
        let reference = try reference(name)
        let expected = try reference.tensors.floats(tensor)
        var worst: Float = 0
        for (i, ids) in reference.inputIds.enumerated() {
            let logits = try model.allLogits(tokens: ids)
            let start = i * logits.count
            for j in logits.indices {
                let gap = abs(logits[j] - expected[start + j])
                worst = max(worst, gap.isNaN ? .infinity : gap)
            }
        }
        return worst
    }

    /// How close an approximate gradient (`fast`: int8 activations) is to the exact one: the relative L2 error, the
    /// cosine, and the exact gradient's squared norm.
    static func agreement(_ fast: [Float], with exact: [Float]) -> (relative: Double, cosine: Double, norm: Double) {
        var difference = 0.0, norm = 0.0, dot = 0.0, fastNorm = 0.0
        for i in exact.indices {
            difference += Double(fast[i] - exact[i]) * Double(fast[i] - exact[i])
            norm += Double(exact[i]) * Double(exact[i])
            fastNorm += Double(fast[i]) * Double(fast[i])
            dot += Double(fast[i]) * Double(exact[i])
        }
        return ((difference / norm).squareRoot(), dot / (norm * fastNorm).squareRoot(), norm)
    }

    typealias GGUFTensor = (name: String, dimensions: [Int], type: TensorType, data: [UInt8])

    /// The GGUF at `source` written to `url` with `edit` applied to its metadata (in the file's order) and tensors.
    static func rewrite(_ source: URL, to url: URL, edit: (inout [(String, GGUFValue)], inout [GGUFTensor]) -> Void) throws {
        let file = try GGUFFile(url: source)
        var metadata = file.metadataKeys.map { ($0, file.metadata[$0]!) }
        var tensors = file.tensors.map { (name: $0.name, dimensions: $0.dimensions, type: $0.type, data: Array(file.data(for: $0))) }
        edit(&metadata, &tensors)
        var writer = GGUFWriter()
        for (key, value) in metadata { writer.set(key, value) }
        for tensor in tensors {
            try writer.addTensor(name: tensor.name, dimensions: tensor.dimensions, type: tensor.type, data: tensor.data)
        }
        try writer.write(to: url)
    }

    /// Per-example losses and gradient norms, and the gradient of the mean loss per adapter tensor, against
    /// PEFT's autograd (training's pass: `lossAndGradient`).
    /// - Parameter tensors: how many adapter tensors the reference has (7 modules × 2 layers × A, B; Phi-3's 4 × 2 × 2).
    static func checkGradients(_ name: String, gguf: Bool, tensors: Int = 28, references: String = "reference",
                               file: StaticString = #filePath, line: UInt = #line) throws {
        let reference = try reference(name, file: references)
        let model = try model(name, gguf: gguf)
        let lora = TrainableLoRA.from(try adapter(name, for: model), for: model)
        var total = [Float](repeating: 0, count: lora.count)
        for (i, ids) in reference.inputIds.enumerated() {
            var single = [Float](repeating: 0, count: lora.count)
            let (loss, _) = try single.withUnsafeMutableBufferPointer {
                try model.lossAndGradient(tokens: ids, labels: reference.labels[i], lora: lora, gradient: $0.baseAddress!)
            }
            XCTAssertEqual(loss, reference.loraLosses[i], accuracy: lossTolerance, "\(name) example \(i) loss", file: file, line: line)
            let norm = single.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
            XCTAssertLessThanOrEqual(abs(norm - reference.gradientNorms[i]) / reference.gradientNorms[i], normTolerance,
                                     "\(name) example \(i): gradient norm \(norm) vs \(reference.gradientNorms[i])",
                                     file: file, line: line)
            for j in total.indices { total[j] += single[j] / Float(reference.inputIds.count) }
        }
        let gradients = lora.adapter(from: total)
        var worst = 0.0, checked = 0
        for layer in 0..<model.configuration.numHiddenLayers {
            for module in ProjectionModule.allCases {
                guard let pair = gradients.layers[layer][module] else { continue }
                let prefix = "grad.base_model.model.model.layers.\(layer).\(module.hfPath)"
                for (suffix, ours) in [("lora_A.weight", pair.a), ("lora_B.weight", pair.b)] {
                    let expected = try reference.tensors.floats("\(prefix).\(suffix)")
                    let scale = expected.reduce(0) { max($0, abs($1)) }
                    let relative = Double(zip(ours, expected).reduce(0) { max($0, abs($1.0 - $1.1)) } / max(scale, 1e-12))
                    worst = max(worst, relative)
                    XCTAssertLessThanOrEqual(relative, gradientTolerance, "\(name) \(prefix).\(suffix): \(relative)",
                                             file: file, line: line)
                    checked += 1
                }
            }
        }
        XCTAssertEqual(checked, tensors, "every adapter tensor compared", file: file, line: line)
        print("\(name) LoRA gradients (\(gguf ? "GGUF" : "HF")): worst relative error \(worst)")
    }
}
