import CKernels
import XCTest
@testable import Kernels

/// The integer products of Q5_0, Q5_1 and the K-quants: the generic tier equals the scalar reference bit for
/// bit; the AVX2 and AVX-512 VNNI kernels (kernels_kquants.c) decode exactly as the reference and match its
/// product by NMSE over odd shapes; the reference itself agrees with the float64 product of the dequantized
/// weights (whose decoding LanguageModelTests' QuantTypeTests checks against gguf-py) to activation
/// quantization's error.
final class QuantBlockKernelTests: XCTestCase {
    static let formats: [WeightFormat] = [.q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K]
    /// (rows, columns, tokens): rows off every tile size, widths of one and several blocks.
    static func shapes(_ format: WeightFormat) -> [(Int, Int, Int)] {
        format.blockSize == 32
            ? [(1, 32, 1), (5, 96, 3), (17, 160, 2), (33, 576, 5), (7, 288, 9)]
            : [(1, 256, 1), (5, 512, 3), (17, 768, 2), (3, 1536, 7), (9, 256, 17)]
    }
    /// The bound the C kernels are held to against the scalar reference (different summation order only).
    static let kernelBound = 1e-11

    /// Random blocks (every bit pattern of the packed values and scales) with finite f16 scales of
    /// realistic size at the format's scale offsets.
    static func rawBlocks(_ format: WeightFormat, rows: Int, columns: Int, random: inout TestRandom) -> WeightMatrix {
        let rowBytes = format.rowBytes(columns: columns)
        let buffer = FloatBuffer(count: (rows * rowBytes + 3) / 4)
        let bytes = UnsafeMutableRawPointer(buffer.pointer)
        for i in 0..<(rows * rowBytes) {
            bytes.storeBytes(of: UInt8(truncatingIfNeeded: Int(random.next() * 1e6)), toByteOffset: i, as: UInt8.self)
        }
        let halves: [WeightFormat: [Int]] = [.q5_0: [0], .q5_1: [0, 2], .q2_K: [80, 82], .q3_K: [108], .q4_K: [0, 2],
                                             .q5_K: [0, 2], .q6_K: [208]]
        for block in 0..<(rows * rowBytes / format.bytesPerBlock) {
            for offset in halves[format]! {
                let value = random.next() / 32
                bytes.storeBytes(of: Float16(offset == 0 || format == .q6_K || format == .q3_K ? value : abs(value)).bitPattern,
                                 toByteOffset: block * format.bytesPerBlock + offset, as: UInt16.self)
            }
        }
        return WeightMatrix(format: format, rows: rows, columns: columns, data: bytes, owner: buffer)
    }

    enum Path { case scalar, generic, avx2, vnni, neon, neondot, selected }

    static func product(_ weights: WeightMatrix, _ input: [Float], tokens: Int, path: Path, accumulate: Bool = false,
                        pool: ThreadPool = .serial) -> [Float] {
        var output = (0..<(tokens * weights.rows)).map { Float($0 % 7) - 3 }
        let x = input.withUnsafeBufferPointer {
            QuantizedActivations($0.baseAddress!, tokens: tokens, columns: weights.columns, backend: .generic)
        }
        output.withUnsafeMutableBufferPointer { y in
            let out = y.baseAddress!
            switch path {
            case .scalar: QuantBlocks.scalarInt8Forward(weights, quantized: x, output: out, accumulate: accumulate)
            case .generic: QuantBlocks.genericInt8Forward(weights, quantized: x, output: out, accumulate: accumulate, pool: pool)
            case .selected: Linear.forward(weights, quantized: x, output: out, accumulate: accumulate, pool: pool)
            case .avx2, .vnni:
                let sums = QuantBlocks.groupSums(x)
                ck_gemm_kq_avx2(path == .vnni ? 1 : 0, weights.format.blockTypeNumber!, weights.data, weights.rowBytes,
                                Int32(weights.rows), x.values, x.scales, sums, Int32(tokens), Int32(weights.columns),
                                out, Int32(weights.rows), accumulate ? 1 : 0)
            case .neon, .neondot:
                let sums = QuantBlocks.groupSums(x)
                ck_gemm_kq_neon(path == .neondot ? 1 : 0, weights.format.blockTypeNumber!, weights.data, weights.rowBytes,
                                Int32(weights.rows), x.values, x.scales, sums, Int32(tokens), Int32(weights.columns),
                                out, Int32(weights.rows), accumulate ? 1 : 0)
            }
        }
        return accumulate ? output.enumerated().map { $1 - (Float($0 % 7) - 3) } : output
    }

    /// The C tiers this CPU runs (on x86-64 the NEON ones run under qemu in `make test-arm`).
    static var cPaths: [Path] {
        (ck_has_avx2() != 0 ? [.avx2] : []) + (ck_has_avx512_vnni() != 0 ? [.vnni] : [])
            + (ck_has_neon() != 0 ? [.neon] : []) + (ck_has_neon_dotprod() != 0 ? [.neondot] : [])
    }

    func testGenericProductEqualsScalarReference() {
        var random = TestRandom(state: 51)
        let pool = ThreadPool(threads: 3)
        for format in Self.formats {
            for (rows, columns, tokens) in Self.shapes(format) {
                let weights = Self.rawBlocks(format, rows: rows, columns: columns, random: &random)
                var input = random.values(tokens * columns)
                input[0] = 1; input[1] = -1  // activations of ±127
                for accumulate in [false, true] {
                    let label = "\(format) \(rows)x\(columns)x\(tokens) accumulate \(accumulate)"
                    let scalar = Self.product(weights, input, tokens: tokens, path: .scalar, accumulate: accumulate)
                    let generic = Self.product(weights, input, tokens: tokens, path: .generic, accumulate: accumulate, pool: pool)
                    XCTAssertEqual(generic.map(\.bitPattern), scalar.map(\.bitPattern), label)
                    XCTAssertFalse(scalar.contains { !$0.isFinite }, label)
                }
            }
        }
    }

    /// The reference product against float64 over the dequantized weights and the int8 activations as
    /// the kernels see them (dx·qx): only float32 rounding separates them, so a wrong scale, offset, group sum
    /// or element order shows at once. Before the activations were dequantized the same way, the bound was the
    /// activations' 8-bit error (a Q5_1 row of 32, offsets dominating, reached NMSE 1.2e-3).
    func testReferenceProductMatchesFloat64OverDequantizedWeights() {
        var random = TestRandom(state: 52)
        for format in Self.formats {
            for (rows, columns, tokens) in Self.shapes(format) {
                let weights = Self.rawBlocks(format, rows: rows, columns: columns, random: &random)
                let input = random.values(tokens * columns)
                let x = input.withUnsafeBufferPointer {
                    QuantizedActivations($0.baseAddress!, tokens: tokens, columns: columns, backend: .generic)
                }
                let seen = (0..<(tokens * columns)).map { x.scales[$0 / 32] * Float(x.values[$0]) }
                let expected = Linear.referenceForward(weights, input: seen, tokens: tokens)
                let error = nmse(Self.product(weights, input, tokens: tokens, path: .scalar), expected)
                XCTAssertLessThan(error, 1e-10, "\(format) \(rows)x\(columns)x\(tokens): NMSE \(error)")
            }
        }
    }

    func testCKernelsDecodeAsTheReferenceAndMatchItsProduct() throws {
        try XCTSkipIf(Self.cPaths.isEmpty, "no AVX2 or NEON on this CPU: the generic tier is the only one")
        var random = TestRandom(state: 53)
        for format in Self.formats {
            for (rows, columns, tokens) in Self.shapes(format) {
                let weights = Self.rawBlocks(format, rows: rows, columns: columns, random: &random)
                // Decoding: the C decoder's integers, scales and offsets equal the Swift reference's.
                for row in 0..<rows {
                    let (q, factors) = decoded(weights, row, c: true), (q0, factors0) = decoded(weights, row, c: false)
                    XCTAssertEqual(q, q0, "\(format) row \(row) integers")
                    XCTAssertEqual(factors.map(\.bitPattern), factors0.map(\.bitPattern), "\(format) row \(row) scales")
                }
                let input = random.values(tokens * columns)
                let reference = Self.product(weights, input, tokens: tokens, path: .scalar)
                for path in Self.cPaths + [.selected] {
                    for accumulate in [false, true] {
                        let got = Self.product(weights, input, tokens: tokens, path: path, accumulate: accumulate)
                        let error = nmse(got, reference)
                        XCTAssertLessThan(error, Self.kernelBound, "\(format) \(path) \(rows)x\(columns)x\(tokens): NMSE \(error)")
                    }
                }
            }
        }
    }

    /// The positive control: one weight changed in the last row is caught by the bound on every path, and
    /// only the last row's outputs move.
    func testOneWrongWeightIsCaught() {
        var random = TestRandom(state: 54)
        for format in Self.formats {
            let (rows, columns, tokens) = (5, format.blockSize == 32 ? 96 : 512, 3)
            let weights = Self.rawBlocks(format, rows: rows, columns: columns, random: &random)
            let input = random.values(tokens * columns)
            let right = Self.product(weights, input, tokens: tokens, path: .scalar)
            // Byte 10 of the last block lies among the packed values of every one of these formats.
            let count = rows * weights.rowBytes, buffer = FloatBuffer(count: (count + 3) / 4)
            let bytes = UnsafeMutableRawPointer(buffer.pointer)
            bytes.copyMemory(from: weights.data, byteCount: count)
            let at = count - format.bytesPerBlock + 10
            bytes.storeBytes(of: bytes.load(fromByteOffset: at, as: UInt8.self) ^ 0x05, toByteOffset: at, as: UInt8.self)
            let perturbed = WeightMatrix(format: format, rows: rows, columns: columns, data: bytes, owner: buffer)
            for path in [Path.scalar, .generic] + Self.cPaths {
                let wrong = Self.product(perturbed, input, tokens: tokens, path: path)
                XCTAssertGreaterThan(nmse(wrong, right), Self.kernelBound, "\(format) \(path): one wrong weight not caught")
                for t in 0..<tokens {
                    for r in 0..<(rows - 1) {
                        XCTAssertLessThan(abs(wrong[t * rows + r] - right[t * rows + r]), 1e-4 * max(1, abs(right[t * rows + r])),
                                          "\(format) \(path) row \(r)")
                    }
                }
            }
        }
    }

    /// The float32 paths training and exact scoring use on these formats: the product (rows dequantized a
    /// panel at a time) and the input gradient Wᵀg (one dequantized row at a time, never the whole matrix in
    /// float32), both against float64 over the dequantized weights.
    func testFloatProductAndBackwardMatchFloat64() {
        var random = TestRandom(state: 55)
        let pool = ThreadPool(threads: 3)
        for format in Self.formats {
            for (rows, columns, tokens) in Self.shapes(format) {
                let weights = Self.rawBlocks(format, rows: rows, columns: columns, random: &random)
                let input = random.values(tokens * columns), grad = random.values(tokens * rows)
                let w = weights.dequantized()
                var expected = [Float](repeating: 0, count: tokens * columns)
                for t in 0..<tokens {
                    for c in 0..<columns {
                        var sum = 0.0
                        for r in 0..<rows { sum += Double(w[r * columns + c]) * Double(grad[t * rows + r]) }
                        expected[t * columns + c] = Float(sum)
                    }
                }
                var forward = [Float](repeating: 0, count: tokens * rows), backward = [Float](repeating: 0, count: tokens * columns)
                input.withUnsafeBufferPointer { x in
                    forward.withUnsafeMutableBufferPointer { y in
                        Linear.forward(weights, input: x.baseAddress!, tokens: tokens, output: y.baseAddress!, pool: pool)
                    }
                }
                grad.withUnsafeBufferPointer { g in
                    backward.withUnsafeMutableBufferPointer { o in
                        Linear.backwardInput(weights, gradOutput: g.baseAddress!, tokens: tokens, gradInput: o.baseAddress!,
                                             pool: pool)
                    }
                }
                let label = "\(format) \(rows)x\(columns)x\(tokens)"
                XCTAssertLessThan(nmse(forward, Linear.referenceForward(weights, input: input, tokens: tokens)), 1e-10, label)
                XCTAssertLessThan(nmse(backward, expected), 1e-10, label)
            }
        }
    }

    /// One row decoded by the C decoder or the Swift reference: the integers, then the scales and offsets.
    func decoded(_ weights: WeightMatrix, _ row: Int, c: Bool) -> ([Int8], [Float]) {
        let columns = weights.columns, format = weights.format
        var q = [Int8](repeating: 0, count: columns), factors = [Float](repeating: .nan, count: columns / 8)
        q.withUnsafeMutableBufferPointer { q in
            factors.withUnsafeMutableBufferPointer { f in
                let scales = f.baseAddress!, offsets = scales + columns / 16
                if c {
                    (ck_has_neon() != 0 ? ck_kq_decode_row_neon : ck_kq_decode_row_avx2)(
                        format.blockTypeNumber!, weights.rowPointer(row), Int32(columns), q.baseAddress!, scales, offsets)
                } else {
                    let size = format.blockSize
                    for b in 0..<(columns / size) {
                        QuantBlocks.decode(format, weights.rowPointer(row) + b * format.bytesPerBlock, q: q.baseAddress! + b * size,
                                           scales: scales + b * size / 16, offsets: offsets + b * size / 16)
                    }
                }
            }
        }
        return (q, factors)
    }
}
