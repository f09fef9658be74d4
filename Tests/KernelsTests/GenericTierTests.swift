import XCTest
@testable import Kernels

/// The generic tier's SIMD kernels (what every CPU without an x86 tier runs, ARM included) against their
/// scalar references, on every CPU: bit for bit where the arithmetic is the same sequence of operations,
/// with positive controls showing that a kernel reading one weight wrong is caught.
final class GenericTierTests: XCTestCase {
    /// The integer-and-float half conversion against the standard library's `Float16`, over all 65,536
    /// patterns: zeros of both signs, subnormals, normals, infinities and NaN payloads.
    func testHalfConversionIsExactForEveryPattern() {
        var mismatches = 0
        for bits in 0...UInt16.max {
            let expected = Float(Float16(bitPattern: bits)), got = Dequantize.half(bits)
            if expected.isNaN {
                // NaN: same sign and payload (the quiet bit may be set by a conversion; ours keeps it as stored).
                if !got.isNaN || got.bitPattern & ~0x0040_0000 != expected.bitPattern & ~0x0040_0000 { mismatches += 1 }
            } else if got.bitPattern != expected.bitPattern {
                mismatches += 1
            }
        }
        XCTAssertEqual(mismatches, 0, "half patterns converted differently from Float16")
        // Positive control: the conversion without the 2¹¹² rescaling is wrong, and the comparison says so.
        XCTAssertNotEqual(Float(bitPattern: UInt32(0x3C00) << 13), Float(Float16(bitPattern: 0x3C00)))
        XCTAssertEqual(Dequantize.half(0x0001), 0x1p-24, "smallest subnormal")
        XCTAssertEqual(Dequantize.half(0xFBFF), -65504, "most negative finite")
    }

    /// Odd shapes: row counts off the 4-row groups and the 16-row chunks, one block to 48 blocks, one to
    /// 17 tokens, overwrite and accumulate, one and three threads.
    static let shapes = [(1, 32, 1), (3, 64, 2), (5, 96, 3), (17, 160, 1), (33, 576, 5), (67, 1536, 2), (130, 64, 17),
                         (7, 288, 9), (2, 32, 4)]

    /// The SIMD int8 product equals the scalar reference bit for bit, on random data and on raw random
    /// blocks (every byte value, Q8_0's −128 included, with extreme activations of ±127).
    func testSIMDInt8ProductEqualsScalarReference() {
        var random = TestRandom(state: 41)
        for threads in [1, 3] {
            let pool = ThreadPool(threads: threads)
            for format in [WeightFormat.q8_0, .q4_0, .q4_1] {
                for (rows, columns, tokens) in Self.shapes {
                    for raw in [false, true] {
                        let weights = raw ? rawBlocks(format, rows: rows, columns: columns, random: &random)
                            : Quantize.matrix(random.values(rows * columns), rows: rows, columns: columns, format: format)
                        var input = random.values(tokens * columns)
                        if raw { input[0] = 1; input[1] = -1 }  // activations of ±127 in the first block
                        for accumulate in [false, true] {
                            let label = "\(format) \(rows)x\(columns)x\(tokens) raw \(raw) accumulate \(accumulate) threads \(threads)"
                            let simd = product(weights, input, tokens: tokens, accumulate: accumulate, pool: pool, scalar: false)
                            let scalar = product(weights, input, tokens: tokens, accumulate: accumulate, pool: pool, scalar: true)
                            XCTAssertEqual(simd.map(\.bitPattern), scalar.map(\.bitPattern), label)
                            XCTAssertFalse(scalar.contains { !$0.isFinite }, label)
                        }
                    }
                }
            }
        }
    }

    /// Positive control: the SIMD kernel run on a copy with one weight changed (the last block of the last
    /// row, the last element: high nibble, odd lane) is caught by the same comparison, and by the NMSE
    /// bound the x86 tiers are held to; a kernel that dropped or misplaced any weight would be too.
    func testComparisonCatchesOneWrongWeight() {
        var random = TestRandom(state: 42)
        for format in [WeightFormat.q8_0, .q4_0, .q4_1] {
            let rows = 5, columns = 96, tokens = 3
            let weights = Quantize.matrix(random.values(rows * columns), rows: rows, columns: columns, format: format)
            let input = random.values(tokens * columns)
            let perturbed = lastByteFlipped(weights, by: format == .q8_0 ? 0x01 : 0x10)
            let wrong = product(perturbed, input, tokens: tokens, accumulate: false, pool: .serial, scalar: false)
            let right = product(weights, input, tokens: tokens, accumulate: false, pool: .serial, scalar: true)
            XCTAssertNotEqual(wrong.map(\.bitPattern), right.map(\.bitPattern), "\(format): one wrong weight not caught")
            XCTAssertGreaterThan(nmse(wrong, right), 1e-11, "\(format): one wrong weight within the NMSE bound")
            // Only the last row differs: the perturbation is where it was put, not a layout accident.
            for t in 0..<tokens {
                for r in 0..<(rows - 1) { XCTAssertEqual(wrong[t * rows + r], right[t * rows + r], "\(format) row \(r)") }
            }
        }
    }

    /// The SIMD dequantization equals the element-by-element reference bit for bit (random and raw blocks),
    /// and a row with one byte changed is caught by the comparison (positive control).
    func testSIMDDequantizationEqualsScalarReference() {
        var random = TestRandom(state: 43)
        for format in [WeightFormat.q8_0, .q4_0, .q4_1] {
            for columns in [32, 96, 576] {
                for raw in [false, true] {
                    let matrix = raw ? rawBlocks(format, rows: 3, columns: columns, random: &random)
                        : Quantize.matrix(random.values(3 * columns), rows: 3, columns: columns, format: format)
                    for row in 0..<3 {
                        let simd = dequantize(matrix, row, scalar: false), scalar = dequantize(matrix, row, scalar: true)
                        XCTAssertEqual(simd.map(\.bitPattern), scalar.map(\.bitPattern), "\(format) \(columns) raw \(raw) row \(row)")
                    }
                }
            }
            // Positive control: the last quantized byte of the row changed.
            let matrix = Quantize.matrix(random.values(64), rows: 1, columns: 64, format: format)
            XCTAssertNotEqual(dequantize(lastByteFlipped(matrix, by: 0x11), 0, scalar: false), dequantize(matrix, 0, scalar: true),
                              "\(format)")
        }
    }

    /// The SIMD float32 product (four rows per pass) against the float64 reference, every format, odd
    /// shapes (widths off the 8-lane step for the unblocked formats), overwrite and accumulate.
    func testGenericFloatProductMatchesReference() {
        var random = TestRandom(state: 44)
        let pool = ThreadPool(threads: 3)
        for format in [WeightFormat.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1] {
            for (rows, columns, tokens) in Self.shapes + (format.blockSize == 1 ? [(7, 45, 3), (5, 13, 2), (6, 7, 1)] : []) {
                let weights = Quantize.matrix(random.values(rows * columns), rows: rows, columns: columns, format: format)
                let input = random.values(tokens * columns)
                let expected = Linear.referenceForward(weights, input: input, tokens: tokens)
                for accumulate in [false, true] {
                    var output = [Float](repeating: 0.25, count: tokens * rows)
                    input.withUnsafeBufferPointer { x in
                        output.withUnsafeMutableBufferPointer { y in
                            Linear.genericForward(weights, input: x.baseAddress!, tokens: tokens, output: y.baseAddress!,
                                                  accumulate: accumulate, pool: pool)
                        }
                    }
                    let got = accumulate ? output.map { $0 - 0.25 } : output
                    XCTAssertLessThan(nmse(got, expected), accumulate ? 1e-9 : 1e-10, "\(format) \(rows)x\(columns)x\(tokens) accumulate \(accumulate)")
                }
            }
            // Positive control: one weight's byte changed exceeds the bound.
            guard format.blockSize == 32 else { continue }
            let weights = Quantize.matrix(random.values(5 * 96), rows: 5, columns: 96, format: format)
            let input = random.values(3 * 96)
            var output = [Float](repeating: 0, count: 3 * 5)
            input.withUnsafeBufferPointer { x in
                output.withUnsafeMutableBufferPointer { y in
                    Linear.genericForward(lastByteFlipped(weights, by: 0x11), input: x.baseAddress!, tokens: 3, output: y.baseAddress!)
                }
            }
            XCTAssertGreaterThan(nmse(output, Linear.referenceForward(weights, input: input, tokens: 3)), 1e-10, "\(format) control")
        }
    }

    /// A copy of `matrix` with its last byte XORed with `mask` (a quantized weight of the last row).
    func lastByteFlipped(_ matrix: WeightMatrix, by mask: UInt8) -> WeightMatrix {
        let count = matrix.rowBytes * matrix.rows
        let buffer = FloatBuffer(count: (count + 3) / 4)
        let bytes = UnsafeMutableRawPointer(buffer.pointer)
        bytes.copyMemory(from: matrix.data, byteCount: count)
        bytes.storeBytes(of: bytes.load(fromByteOffset: count - 1, as: UInt8.self) ^ mask, toByteOffset: count - 1, as: UInt8.self)
        return WeightMatrix(format: matrix.format, rows: matrix.rows, columns: matrix.columns, data: bytes, owner: buffer)
    }

    func dequantize(_ matrix: WeightMatrix, _ row: Int, scalar: Bool) -> [Float] {
        var out = [Float](repeating: .nan, count: matrix.columns)
        out.withUnsafeMutableBufferPointer { buffer in
            if scalar {
                Dequantize.scalarRow(format: matrix.format, source: matrix.rowPointer(row), count: matrix.columns, into: buffer.baseAddress!)
            } else {
                Dequantize.row(format: matrix.format, source: matrix.rowPointer(row), count: matrix.columns, into: buffer.baseAddress!)
            }
        }
        return out
    }

    /// Blocks of raw random bytes with finite scales (any byte a file may hold, not only what `Quantize` writes).
    func rawBlocks(_ format: WeightFormat, rows: Int, columns: Int, random: inout TestRandom) -> WeightMatrix {
        let rowBytes = format.rowBytes(columns: columns)
        let buffer = FloatBuffer(count: (rows * rowBytes + 3) / 4)
        let bytes = UnsafeMutableRawPointer(buffer.pointer)
        for i in 0..<(rows * rowBytes) {
            bytes.storeBytes(of: UInt8(truncatingIfNeeded: Int(random.next() * 1e6)), toByteOffset: i, as: UInt8.self)
        }
        for block in 0..<(rows * rowBytes / format.bytesPerBlock) {
            let base = bytes + block * format.bytesPerBlock
            base.storeBytes(of: Float16(random.next() / 64).bitPattern, as: UInt16.self)
            if format == .q4_1 { base.storeBytes(of: Float16(random.next()).bitPattern, toByteOffset: 2, as: UInt16.self) }
        }
        return WeightMatrix(format: format, rows: rows, columns: columns, data: bytes, owner: buffer)
    }

    func product(_ weights: WeightMatrix, _ input: [Float], tokens: Int, accumulate: Bool, pool: ThreadPool,
                 scalar: Bool) -> [Float] {
        var output = (0..<(tokens * weights.rows)).map { Float($0 % 7) - 3 }
        input.withUnsafeBufferPointer { x in
            output.withUnsafeMutableBufferPointer { y in
                if scalar {
                    Linear.scalarInt8Forward(weights, input: x.baseAddress!, tokens: tokens, output: y.baseAddress!,
                                             accumulate: accumulate, pool: pool)
                } else {
                    Linear.genericInt8Forward(weights, input: x.baseAddress!, tokens: tokens, output: y.baseAddress!,
                                              accumulate: accumulate, pool: pool)
                }
            }
        }
        return output
    }
}
