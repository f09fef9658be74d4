import Foundation
import Kernels
import ModelFormats
import TestSupport
import XCTest
@testable import LanguageModel

/// A Q4_K_M file made by llama.cpp's own quantizer that a clone of the repository holds (Tests/Fixtures/tiny-kquant,
/// `make fixtures`): Q4_K, Q6_K, and the Q5_0/Q8_0 fallbacks of rows whose width is not a multiple of 256, as in
/// the Q4_K_M files people download. Against transformers' float64 forward over the same weights as gguf-py
/// dequantizes them, on whatever kernel tier runs the tests (KQuantModelTests does the same for the default model
/// requantized, where that file exists).
final class TinyKQuantTests: XCTestCase {
    static let fileURL = Fixtures.url("tiny-kquant/model-q4_k_m.gguf.bin")

    struct Expected {
        let inputIds: [[Int]]
        let labels: [[Int]]
        let losses: [Double]
        let logits: [Float]
        let types: [String: String]
    }

    func expected() throws -> Expected {
        let json = try Fixtures.json("tiny-kquant/reference.json")
        let tensors = try SafetensorsFile(url: Fixtures.url("tiny-kquant/reference.safetensors"))
        return Expected(inputIds: json["input_ids"] as! [[Int]], labels: json["labels"] as! [[Int]],
                        losses: json["loss_per_example"] as! [Double], logits: try tensors.floats("logits"),
                        types: try XCTUnwrap(json["tensor_types"] as? [String: String]))
    }

    /// The worst logit (float32 path only) and loss differences of the model in `url` from the reference.
    func worst(_ url: URL, precision: ActivationPrecision) throws -> (logit: Float, loss: Double) {
        let reference = try expected()
        let model = LlamaModel(weights: try ModelLoader.loadGGUF(try GGUFFile(url: url)), pool: ThreadPool(threads: 2))
        model.precision = precision
        let vocabulary = model.configuration.vocabSize
        var worstLogit: Float = 0, worstLoss = 0.0
        for (i, ids) in reference.inputIds.enumerated() {
            if precision == .float32 {
                let logits = try model.allLogits(tokens: ids)
                let start = i * ids.count * vocabulary
                for j in logits.indices { worstLogit = max(worstLogit, abs(logits[j] - reference.logits[start + j])) }
            }
            worstLoss = max(worstLoss, abs(try model.score(tokens: ids, labels: reference.labels[i]).meanLoss - reference.losses[i]))
        }
        return (worstLogit, worstLoss)
    }

    /// Every tensor loads with the type llama-quantize chose, and the file has the mix this test is for.
    func testTheFileMixesKQuantsAndFallbacks() throws {
        let file = try GGUFFile(url: Self.fileURL)
        let types = try expected().types
        XCTAssertEqual(Set(file.tensors.map(\.name)), Set(types.keys))
        for tensor in file.tensors { XCTAssertEqual("\(tensor.type)".uppercased(), types[tensor.name]?.uppercased(), tensor.name) }
        XCTAssertTrue(Set(types.values).isSuperset(of: ["Q4_K", "Q6_K", "Q5_0"]), "\(Set(types.values))")
    }

    /// Float32 activations: the reference's tolerances for a float file (exact dequantization); int8 activations
    /// (the default inference path: Q5_0 in the row groups where the CPU has them, K-quants row by row): the
    /// int8 tolerance the other quantized files take.
    func testLogitsAndLossesMatchFloat64OverDequantizedWeights() throws {
        let float = try worst(Self.fileURL, precision: .float32)
        print("tiny-kquant float32: worst logit difference \(float.logit), loss \(float.loss) (tier \(KernelBackend.selected))")
        XCTAssertLessThanOrEqual(float.logit, TinyReference.logitTolerance)
        XCTAssertLessThanOrEqual(float.loss, TinyReference.lossTolerance)
        let int8 = try worst(Self.fileURL, precision: .int8)
        print("tiny-kquant int8 activations: worst loss difference \(int8.loss)")
        XCTAssertLessThan(int8.loss, Self.int8LossTolerance)
    }

    /// int8 activations' rounding on this model: 0.0198 nats measured on every tier (avx512vnni, avx2, generic:
    /// the same activation quantizer, so the same figure), where the 64-wide Qwen files show 0.005. Its 256-wide
    /// rows with weights of s.d. 0.08 make larger activations and logits (losses 5.3-6.3), and the error grows
    /// with them. A doubled block scale moves the loss past this (`testACorruptedScaleIsSeen`).
    static let int8LossTolerance = 0.03

    /// Positive controls: in a copy of the file, one block scale of a Q6_K matrix (then of a Q5_0 matrix) doubled
    /// moves the float32 logits far past their tolerance; every block scale of that matrix doubled (what a wrong
    /// decode of the format would do) moves the int8 path's losses past its own.
    func testACorruptedScaleIsSeen() throws {
        let file = try GGUFFile(url: Self.fileURL)
        for type in [TensorType.q6_K, .q5_0] {
            let tensor = try XCTUnwrap(file.tensors.first { $0.type == type && $0.name.hasPrefix("blk.") }, "\(type)")
            // The block's f16 scale d: Q6_K's last two bytes of its 210, Q5_0's first two of its 22. Doubling a
            // half is adding 1 to its exponent (bits 10-14).
            let blockBytes = type == .q6_K ? 210 : 22, scaleOffset = type == .q6_K ? 208 : 0
            func corrupted(blocks: Int) throws -> URL {
                var bytes = try Data(contentsOf: Self.fileURL)
                for block in 0..<blocks {
                    let scale = file.dataOffset + tensor.offset + block * blockBytes + scaleOffset
                    let doubled = (UInt16(bytes[scale]) | UInt16(bytes[scale + 1]) << 8) &+ 0x0400
                    bytes[scale] = UInt8(doubled & 0xFF)
                    bytes[scale + 1] = UInt8(doubled >> 8)
                }
                let copy = FileManager.default.temporaryDirectory.appendingPathComponent("tiny-kquant-\(type)-\(UUID()).gguf")
                try bytes.write(to: copy)
                return copy
            }
            let one = try corrupted(blocks: 1), every = try corrupted(blocks: tensor.byteCount / blockBytes)
            defer { for url in [one, every] { try? FileManager.default.removeItem(at: url) } }
            let broken = try worst(one, precision: .float32)
            let brokenInt8 = try worst(every, precision: .int8)
            print("tiny-kquant \(type): one scale doubled, worst logit difference \(broken.logit); every scale of "
                  + "\(tensor.name) doubled, int8 loss difference \(brokenInt8.loss)")
            XCTAssertGreaterThan(broken.logit, 100 * TinyReference.logitTolerance, "\(type): one block's corruption must show")
            XCTAssertGreaterThan(brokenInt8.loss, Self.int8LossTolerance, "\(type): the int8 check must see a whole matrix")
        }
    }
}
