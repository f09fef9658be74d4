import Foundation
import Kernels
import ModelFormats
import TestSupport
import XCTest
@testable import LanguageModel

/// Q5_0, Q5_1 and the K-quants read from GGUF and dequantize exactly as llama.cpp's gguf-py does: the
/// reference values in Reference/quant-types/blocks.bin are gguf-py's `dequantize` of random blocks
/// (Reference/make_quant_types.py), so they do not come from our own code.
final class QuantTypeTests: XCTestCase {
    static let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Reference/quant-types/blocks.bin")
    static let types: [TensorType] = [.q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K]

    /// The tensor `name` of `file` as a weight matrix (GGUF dimensions are [columns, rows]).
    static func matrix(_ file: GGUFFile, _ name: String) throws -> WeightMatrix {
        let info = try XCTUnwrap(file.tensor(named: name), name)
        let columns = info.dimensions[0], rows = info.dimensions.count > 1 ? info.dimensions[1] : 1
        return WeightMatrix(format: ModelLoader.weightFormat(info.type), rows: rows, columns: columns,
                            data: file.data(for: info).baseAddress!, owner: file)
    }

    /// Values that differ from the reference (bit patterns aside from the sign of zero), and the worst difference.
    static func mismatches(_ values: [Float], _ reference: [Float]) -> (count: Int, worst: Float) {
        var count = 0, worst: Float = 0
        for (a, b) in zip(values, reference) where a != b {
            count += 1
            worst = max(worst, abs(a - b))
        }
        return (count + abs(values.count - reference.count), worst)
    }

    func testEveryTypeDequantizesAsGGUFPyDoes() throws {
        let file = try GGUFFile(url: Self.url)
        for type in Self.types {
            let quantized = try Self.matrix(file, "\(type).q")
            XCTAssertEqual(file.tensor(named: "\(type).q")?.type, type)
            let reference = try Self.matrix(file, "\(type).dequantized")
            XCTAssertEqual([quantized.rows, quantized.columns], [reference.rows, reference.columns], "\(type)")
            let (count, worst) = Self.mismatches(quantized.dequantized(), reference.dequantized())
            XCTAssertEqual(count, 0, "\(type): \(count) values differ from gguf-py's, worst by \(worst)")
        }
    }

    /// The positive control: one byte changed in each type's first block makes the comparison fail.
    func testAChangedByteIsSeen() throws {
        let file = try GGUFFile(url: Self.url)
        for type in Self.types {
            let quantized = try Self.matrix(file, "\(type).q")
            let reference = try Self.matrix(file, "\(type).dequantized").dequantized()
            var bytes = [UInt8](UnsafeRawBufferPointer(start: quantized.data, count: quantized.rows * quantized.rowBytes))
            // Byte 10 lies in the packed values (or the Q5 high bits) of every format here.
            bytes[10] ^= 0x24
            let changed = bytes.withUnsafeBytes {
                WeightMatrix(format: quantized.format, rows: quantized.rows, columns: quantized.columns,
                             data: $0.baseAddress!, owner: nil).dequantized()
            }
            XCTAssertGreaterThan(Self.mismatches(changed, reference).count, 0, "\(type): a changed byte went unseen")
        }
    }

    /// Q5_0 and Q5_1 quantize bit for bit as ggml's reference quantizer (gguf-py's `quantize`).
    func testQ5QuantizationMatchesGGUFPy() throws {
        let file = try GGUFFile(url: Self.url)
        for type in [TensorType.q5_0, .q5_1] {
            let source = try Self.matrix(file, "\(type).source")
            let expected = try Self.matrix(file, "\(type).quantized")
            let ours = Quantize.matrix(source.dequantized(), rows: source.rows, columns: source.columns,
                                       format: ModelLoader.weightFormat(type))
            let count = expected.rows * expected.rowBytes
            let a = [UInt8](UnsafeRawBufferPointer(start: ours.data, count: count))
            let b = [UInt8](UnsafeRawBufferPointer(start: expected.data, count: count))
            let differing = zip(a, b).filter { $0 != $1 }.count
            XCTAssertEqual(differing, 0, "\(type): \(differing) of \(count) bytes differ from gguf-py's quantization")
            XCTAssertEqual(a.count, b.count)
        }
    }

    /// Our Q4_K, Q5_K and Q6_K quantization loses no more than ggml's own (ggml_quantize_chunk, written into the
    /// fixture): round-trip NMSE within 5% of ggml's on weight-like rows with outliers and a zero block.
    /// Positive control: the bound tells formats apart (our Q4_K is far above ggml's Q6_K error).
    func testKQuantizationLosesNoMoreThanGGMLs() throws {
        let file = try GGUFFile(url: Self.url)
        var errors: [TensorType: (ours: Double, ggml: Double)] = [:]
        for type in [TensorType.q4_K, .q5_K, .q6_K] {
            let source = try Self.matrix(file, "\(type).source"), values = source.dequantized()
            let ggml = try Self.matrix(file, "\(type).quantized")
            let ours = Quantize.matrix(values, rows: source.rows, columns: source.columns, format: ModelLoader.weightFormat(type))
            errors[type] = (Self.nmse(ours.dequantized(), values), Self.nmse(ggml.dequantized(), values))
            print("\(type) round-trip NMSE: ours \(errors[type]!.ours), ggml's \(errors[type]!.ggml)")
            XCTAssertLessThanOrEqual(errors[type]!.ours, 1.05 * errors[type]!.ggml, "\(type)")
            XCTAssertGreaterThan(errors[type]!.ours, 0, "\(type): a lossless round trip means the test compared nothing")
        }
        XCTAssertGreaterThan(errors[.q4_K]!.ours, 1.05 * errors[.q6_K]!.ggml, "the bound must tell Q4_K from Q6_K")
    }

    static func nmse(_ a: [Float], _ b: [Float]) -> Double {
        var error = 0.0, norm = 0.0
        for (x, y) in zip(a, b) {
            error += Double(x - y) * Double(x - y)
            norm += Double(y) * Double(y)
        }
        return error / norm
    }
}
