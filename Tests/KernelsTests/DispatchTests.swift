import CKernels
import XCTest
@testable import Kernels

/// Skips the rest of a test when this CPU lacks an x86 tier, naming the tier in the skip message. Tests
/// that compare a tier with the generic path call it first, so each one either runs whole or is reported
/// as skipped; the generic path and the dispatch itself are tested on every CPU.
func requireAVX2(_ kernel: String) throws {
    try XCTSkipUnless(ck_has_avx2() != 0, "this CPU lacks AVX2 (+FMA, F16C): \(kernel) is not tested here")
}

/// On x86-64 the NEON kernels are tested by `make test-arm` (cross-compiled, under qemu-aarch64), not here.
func requireNEON(_ kernel: String) throws {
    try XCTSkipUnless(ck_has_neon() != 0, "this CPU is not aarch64: \(kernel) is tested under qemu by make test-arm")
}

func requireAVX512VNNI(_ kernel: String) throws {
    try XCTSkipUnless(ck_has_avx512_vnni() != 0, "this CPU lacks AVX-512 VNNI: \(kernel) is not tested here")
}

/// The AVX2 kernels against the generic Swift path they replace, where this CPU has AVX2.
final class DispatchTests: XCTestCase {
    /// The tier is picked from the CPU (and `CONCLAVE_KERNELS`), on every CPU: no AVX2 means the generic
    /// path, and the row-grouped matrices exist exactly where a row-group kernel runs (AVX2, VNNI).
    func testBackendFollowsTheCPU() {
        let forced = ProcessInfo.processInfo.environment["CONCLAVE_KERNELS"]
        let expected: KernelBackend = forced == "generic" ? .generic
            : ck_has_neon() != 0 ? (forced != "neon" && ck_has_neon_dotprod() != 0 ? .neondot : .neon)
            : ck_has_avx2() == 0 ? .generic
            : forced != "avx2" && ck_has_avx512_vnni() != 0 ? .avx512vnni : .avx2
        XCTAssertEqual(KernelBackend.selected, expected, "AVX2 \(ck_has_avx2()), VNNI \(ck_has_avx512_vnni()), "
                       + "NEON \(ck_has_neon()), dotprod \(ck_has_neon_dotprod()), forced \(forced ?? "-")")
        XCTAssertEqual(KernelBackend.selected.hasAVX2, expected == .avx2 || expected == .avx512vnni)
        XCTAssertEqual(KernelBackend.selected.hasCKernels, expected != .generic)
        #if arch(x86_64)
        XCTAssertEqual(ck_has_neon(), 0, "the NEON kernels exist only on aarch64")
        #elseif arch(arm64)
        XCTAssertEqual(ck_has_neon(), 1, "every aarch64 CPU has NEON")
        #endif
        XCTAssertEqual(RowGroupedMatrix.isAvailable, expected == .avx2 || expected == .avx512vnni)
        let one = Quantize.matrix([Float](repeating: 1, count: 32), rows: 1, columns: 32, format: .q8_0)
        XCTAssertEqual(RowGroupedMatrix([one]) != nil, RowGroupedMatrix.isAvailable,
                       "a row-grouped matrix is built exactly where its kernel runs")
    }

    func testAVX2DequantizationEqualsGeneric() throws {
        try requireAVX2("ck_dequantize_row_avx2")
        var random = TestRandom(state: 21)
        for format in [WeightFormat.f32, .f16, .q8_0, .q4_0, .q4_1] {
            let columns = 96
            let matrix = Quantize.matrix(random.values(5 * columns), rows: 5, columns: columns, format: format)
            for row in 0..<5 {
                var generic = [Float](repeating: 0, count: columns), fast = generic
                Dequantize.row(format: format, source: matrix.rowPointer(row), count: columns, into: &generic)
                ck_dequantize_row_avx2(format.ggmlTypeNumber!, matrix.rowPointer(row), &fast, columns)
                XCTAssertEqual(fast, generic, "\(format) row \(row)")
            }
        }
    }

    /// One vector against many rows (attention scores), for counts and widths off the 4-row and 8-lane steps.
    func testDotRowsMatchesGenericDot() throws {
        var random = TestRandom(state: 23)
        for (count, width, stride) in [(1, 64, 64), (3, 8, 24), (5, 64, 192), (9, 13, 13), (130, 64, 192), (4, 7, 9)] {
            let x = random.values(width), rows = random.values(count * stride)
            var fast = [Float](repeating: .nan, count: count)
            Vector.dotRows(x, rows: rows, stride: stride, count: count, width: width, scale: 0.125, into: &fast)
            for j in 0..<count {
                let expected = rows.withUnsafeBufferPointer { Vector.genericDot(x, $0.baseAddress! + j * stride, width) } * 0.125
                XCTAssertEqual(fast[j], expected, accuracy: 1e-5 * max(1, abs(expected)), "row \(j) of \(count)x\(width)")
            }
        }
    }

    func testAVX2DotAndPanelMatchGeneric() throws {
        try requireAVX2("ck_dot_avx2 and ck_panel_gemm_avx2")
        var random = TestRandom(state: 22)
        for n in [1, 7, 8, 31, 33, 64, 100] {
            let a = random.values(n), b = random.values(n)
            let fast = ck_dot_avx2(a, b, n), generic = Vector.genericDot(a, b, n)
            XCTAssertEqual(fast, generic, accuracy: 1e-5 * Float(n), "n = \(n)")
        }
        // Panels with a row count that is not a multiple of 4 and a width not a multiple of 8.
        let rows = 7, k = 45, tokens = 3
        let w = random.values(rows * k), x = random.values(tokens * k)
        var y = [Float](repeating: 1, count: tokens * rows)
        ck_panel_gemm_avx2(w, Int32(rows), x, Int32(tokens), Int32(k), &y, Int32(rows), 1)
        for t in 0..<tokens {
            for r in 0..<rows {
                let expected = 1 + (0..<k).reduce(0.0) { $0 + Double(w[r * k + $1]) * Double(x[t * k + $1]) }
                XCTAssertEqual(Double(y[t * rows + r]), expected, accuracy: 1e-5, "row \(r) token \(t)")
            }
        }
    }
}

/// The int8-activation kernels: AVX2 against the generic Swift int8 path (same integer sums), and
/// both against the float64 reference by NMSE, over odd row and token counts and with accumulation.
final class Int8KernelTests: XCTestCase {
    func testQuantizedActivationsAVX2EqualsGeneric() throws {
        try requireAVX2("activation quantization")
        var random = TestRandom(state: 31)
        for (tokens, columns) in [(1, 32), (3, 96), (5, 576)] {
            var input = random.values(tokens * columns)
            input[0] = 0; input[1] = 1; input[2] = -1  // exact extremes and zeros
            if columns == 32 { for i in 0..<32 { input[i] = 0 } }  // an all-zero block
            let fast = QuantizedActivations(input, tokens: tokens, columns: columns, backend: .avx2)
            let slow = QuantizedActivations(input, tokens: tokens, columns: columns, backend: .generic)
            for i in 0..<(tokens * columns) { XCTAssertEqual(fast.values[i], slow.values[i], "value \(i)") }
            for b in 0..<(tokens * columns / 32) {
                XCTAssertEqual(fast.scales[b], slow.scales[b], "scale \(b)")
                XCTAssertEqual(fast.sums[b], slow.sums[b], accuracy: 1e-6 * max(1, abs(slow.sums[b])), "sum \(b)")
            }
        }
    }

    func testInt8ForwardMatchesGenericAndReference() throws {
        var random = TestRandom(state: 32)
        let pool = ThreadPool(threads: 3)
        for format in [WeightFormat.q8_0, .q4_0, .q4_1] {
            for (rows, columns, tokens) in [(1, 32, 1), (37, 96, 3), (130, 64, 5), (5, 160, 17), (67, 576, 2)] {
                let weights = Quantize.matrix(random.values(rows * columns), rows: rows, columns: columns, format: format)
                let input = random.values(tokens * columns)
                let expected = Linear.referenceForward(weights, input: input, tokens: tokens)
                var fast = [Float](repeating: 0.5, count: tokens * rows), generic = fast, scalar = fast
                input.withUnsafeBufferPointer { x in
                    fast.withUnsafeMutableBufferPointer { y in
                        Linear.forward(weights, input: x.baseAddress!, tokens: tokens, output: y.baseAddress!,
                                       accumulate: true, precision: .int8, pool: pool)
                    }
                    generic.withUnsafeMutableBufferPointer { y in
                        Linear.genericInt8Forward(weights, input: x.baseAddress!, tokens: tokens, output: y.baseAddress!,
                                                  accumulate: true, pool: pool)
                    }
                    scalar.withUnsafeMutableBufferPointer { y in
                        Linear.scalarInt8Forward(weights, input: x.baseAddress!, tokens: tokens, output: y.baseAddress!,
                                                 accumulate: true, pool: pool)
                    }
                }
                let shifted = expected.map { $0 + 0.5 }
                let label = "\(format) \(rows)x\(columns)x\(tokens)"
                // Same integers, different float summation order; the SIMD generic path and its scalar
                // reference are the same operations (GenericTierTests checks them bit for bit).
                XCTAssertLessThan(nmse(fast, generic), 1e-11, "\(label): \(KernelBackend.selected) vs generic int8")
                XCTAssertLessThan(nmse(fast, scalar), 1e-11, "\(label): selected tier vs scalar int8 reference")
                XCTAssertEqual(generic, scalar, "\(label): generic SIMD vs scalar int8 reference")
                // 8-bit activations: relative error about (1/127)²/3 per element, far less after summing.
                XCTAssertLessThan(nmse(fast, shifted), 1e-4, "\(label): int8 vs float64 reference")
            }
        }
    }

    /// The generation (row-tile) and prompt-sized (interleaved panel) kernels with AVX2's dot instruction
    /// against the generic int8 path, for widths that are not a multiple of eight blocks.
    func testPanelKernelsAVX2MatchGeneric() throws {
        try requireAVX2("the row-tile and panel kernels (vpmaddubsw)")
        checkTileAndPanelKernels(vnni: false)
    }

    /// The same kernels with AVX-512 VNNI's dot instruction (vpdpbusd on ymm).
    func testPanelKernelsVNNIMatchGeneric() throws {
        try requireAVX2("the row-tile and panel kernels")
        try requireAVX512VNNI("the row-tile and panel kernels (vpdpbusd)")
        checkTileAndPanelKernels(vnni: true)
    }

    /// Which tier dequantizes which format in C: NEON also takes Q5_0, Q5_1 and the K-quants; the x86 tiers
    /// leave those to Swift (ck_dequantize_row_avx2 has no case for them and would write nothing); generic none.
    func testCDequantizerByTierAndFormat() {
        for format in [WeightFormat.q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K] {
            XCTAssertNotNil(format.blockTypeNumber)
            XCTAssertEqual(KernelBackend.neon.cDequantizeType(format), format.blockTypeNumber, "\(format)")
            XCTAssertEqual(KernelBackend.neondot.cDequantizeType(format), format.blockTypeNumber, "\(format)")
            XCTAssertNil(KernelBackend.avx2.cDequantizeType(format), "\(format)")
            XCTAssertNil(KernelBackend.avx512vnni.cDequantizeType(format), "\(format)")
            XCTAssertNil(KernelBackend.generic.cDequantizeType(format), "\(format)")
        }
        for format in [WeightFormat.f32, .f16, .q8_0, .q4_0, .q4_1] {
            for tier in [KernelBackend.avx512vnni, .avx2, .neondot, .neon] {
                XCTAssertEqual(tier.cDequantizeType(format), format.ggmlTypeNumber, "\(tier) \(format)")
            }
            XCTAssertNil(KernelBackend.generic.cDequantizeType(format), "\(format)")
        }
        XCTAssertNil(KernelBackend.neon.cDequantizeType(.bf16), "bf16 has no C path")
    }

    /// Both NEON int8 products (plain, and sdot where the CPU has it) against the generic path.
    func testNEONInt8ProductsMatchGeneric() throws {
        try requireNEON("ck_gemm_q8_neon")
        var random = TestRandom(state: 36)
        for dotprod: Int32 in ck_has_neon_dotprod() != 0 ? [0, 1] : [0] {
            for format in [WeightFormat.q8_0, .q4_0, .q4_1] {
                for (rows, columns, tokens) in [(1, 32, 1), (19, 576, 7), (5, 96, 4)] {
                    let weights = Quantize.matrix(random.values(rows * columns), rows: rows, columns: columns, format: format)
                    let input = random.values(tokens * columns)
                    let x = QuantizedActivations(input, tokens: tokens, columns: columns, backend: .generic)
                    var fast = [Float](repeating: .nan, count: tokens * rows)
                    ck_gemm_q8_neon(dotprod, format.ggmlTypeNumber!, weights.data, weights.rowBytes, Int32(rows), x.values,
                                    x.scales, x.sums, Int32(tokens), Int32(columns), &fast, Int32(rows), 0)
                    XCTAssertLessThan(nmse(fast, genericInt8(weights, input, tokens: tokens)), 1e-11,
                                      "dotprod \(dotprod) \(format) \(rows)x\(columns)x\(tokens)")
                }
            }
        }
    }

    func checkTileAndPanelKernels(vnni: Bool) {
        var random = TestRandom(state: 33)
        for format in [WeightFormat.q8_0, .q4_0, .q4_1] {
            for (rows, columns, tokens) in [(3, 32, 4), (19, 576, 7), (33, 288, 9), (21, 1536, 6)] {
                let weights = Quantize.matrix(random.values(rows * columns), rows: rows, columns: columns, format: format)
                let input = random.values(tokens * columns)
                let generic = genericInt8(weights, input, tokens: tokens)
                let x = QuantizedActivations(input, tokens: tokens, columns: columns)
                let packed = UnsafeMutableRawPointer.allocate(byteCount: ck_interleaved_bytes(Int32(tokens), Int32(columns)), alignment: 64)
                defer { packed.deallocate() }
                ck_interleave_q8(x.values, x.scales, x.sums, Int32(tokens), Int32(columns), packed)
                let type = format.ggmlTypeNumber!
                let label = "\(format) \(rows)x\(columns)x\(tokens) vnni \(vnni)"
                // The row-tile kernel (generation): a negative type selects the VNNI dot.
                var tile = [Float](repeating: 0, count: tokens * rows)
                ck_gemm_q8_avx2(vnni ? -type : type, weights.data, weights.rowBytes, Int32(rows), x.values, x.scales,
                                x.sums, Int32(tokens), Int32(columns), &tile, Int32(rows), 0)
                XCTAssertLessThan(nmse(tile, generic), 1e-11, "tile \(label)")
                var panel = [Float](repeating: 0, count: tokens * rows)
                ck_gemm_q8_panel(vnni ? 1 : 0, type, weights.data, weights.rowBytes, Int32(rows), packed,
                                 Int32(tokens), Int32(columns), &panel, Int32(rows), 0)
                XCTAssertLessThan(nmse(panel, generic), 1e-11, label)
            }
        }
    }

    /// The 16-row-group VNNI kernel against the generic int8 path: rows that do not fill a group, widths
    /// past one span of 64 blocks, every token-tile size, stacked parts, an output stride and accumulation.
    func testRowGroupedKernelMatchesGeneric() throws {
        try XCTSkipUnless(RowGroupedMatrix.isAvailable,
                          "the kernel tier is \(KernelBackend.selected), without a row-group kernel: not tested here")
        var random = TestRandom(state: 34)
        let pool = ThreadPool(threads: 2)
        for format in [WeightFormat.q8_0, .q4_0, .q4_1, .q5_0] {
            for (rows, columns, tokens) in [(1, 32, 1), (15, 96, 2), (17, 576, 1), (33, 288, 9), (50, 2112, 3),
                                            (48, 576, 8), (7, 160, 17)] {
                let weights = Quantize.matrix(random.values(rows * columns), rows: rows, columns: columns, format: format)
                let input = random.values(tokens * columns)
                let generic = genericInt8(weights, input, tokens: tokens)
                let label = "\(format) \(rows)x\(columns)x\(tokens)"
                let grouped = try XCTUnwrap(RowGroupedMatrix([weights]), label)
                XCTAssertEqual(grouped.byteCount, (rows + 15) / 16 * 16 * weights.rowBytes, "\(label): bytes")
                // Stride 3 floats wider than the rows, sentinels in the gaps, accumulating onto 0.25.
                let ldy = rows + 3
                var fast = [Float](repeating: 0.25, count: tokens * ldy)
                input.withUnsafeBufferPointer { x in
                    fast.withUnsafeMutableBufferPointer { y in
                        grouped.forward(input: x.baseAddress!, tokens: tokens, output: y.baseAddress!, ldy: ldy,
                                        accumulate: true, pool: pool)
                    }
                }
                var inside: [Float] = []
                for t in 0..<tokens {
                    for r in 0..<rows { inside.append(fast[t * ldy + r] - 0.25) }
                    for r in rows..<ldy { XCTAssertEqual(fast[t * ldy + r], 0.25, "\(label): wrote past row \(rows)") }
                }
                XCTAssertLessThan(nmse(inside, generic), 1e-11, label)
            }
        }
        // Stacked parts (q, k, v style) equal the parts computed one by one.
        let columns = 64, tokens = 3
        let parts = [20, 8, 8].map { Quantize.matrix(random.values($0 * columns), rows: $0, columns: columns, format: .q4_1) }
        let stack = try XCTUnwrap(RowGroupedMatrix(parts))
        XCTAssertEqual(stack.rows, 36)
        XCTAssertEqual(stack.partOffsets, [0, 20, 28])
        let input = random.values(tokens * columns)
        var stacked = [Float](repeating: 0, count: tokens * 36)
        input.withUnsafeBufferPointer { x in
            stacked.withUnsafeMutableBufferPointer { y in
                stack.forward(input: x.baseAddress!, tokens: tokens, output: y.baseAddress!)
            }
        }
        for (part, offset) in zip(parts, stack.partOffsets) {
            let alone = genericInt8(part, input, tokens: tokens)
            let slice = (0..<tokens).flatMap { t in (0..<part.rows).map { stacked[t * 36 + offset + $0] } }
            XCTAssertLessThan(nmse(slice, alone), 1e-11, "part at \(offset)")
        }
        // Parts that disagree in format are refused.
        XCTAssertNil(RowGroupedMatrix([parts[0], Quantize.matrix(random.values(columns), rows: 1, columns: columns, format: .q8_0)]))
    }
}

/// Both row-group kernels (AVX2: vpmaddubsw + vpmaddwd, eight rows per vector; AVX-512 VNNI: vpdpbusd)
/// called directly on packed groups, whatever tier is selected, against the generic int8 path.
final class RowGroupKernelTests: XCTestCase {
    /// The kernel of one tier over every group of `weights` (packed here), with an output stride wider than
    /// the rows (sentinels must survive) and accumulation onto 0.25; returns the rows' own values.
    func rowGroupProduct(_ weights: WeightMatrix, _ x: QuantizedActivations, vnni: Bool,
                         corrupt: Int? = nil, kernelFormat: Int32? = nil) -> (values: [Float], sentinelsKept: Bool) {
        let type = weights.format.rowGroupType!, rows = weights.rows, tokens = x.tokens
        let byteCount = ck_rg_bytes(type, Int32(rows), Int32(weights.columns))
        let packed = UnsafeMutableRawPointer.allocate(byteCount: max(64, byteCount), alignment: 64)
        defer { packed.deallocate() }
        ck_rg_pack(type, weights.data, weights.rowBytes, Int32(rows), Int32(weights.columns), packed)
        if let corrupt { packed.storeBytes(of: packed.load(fromByteOffset: corrupt, as: UInt8.self) ^ 0x21,
                                           toByteOffset: corrupt, as: UInt8.self) }
        let ldy = rows + 3
        var y = [Float](repeating: 0.25, count: tokens * ldy)
        let kernel = vnni ? ck_rg_gemm : ck_rg_gemm_avx2
        kernel(kernelFormat ?? type, packed, Int32(rows), Int32(weights.columns), 0, Int32((rows + 15) / 16), x.values, x.scales,
               x.sums, Int32(tokens), &y, Int32(ldy), 1)
        var values: [Float] = [], kept = true
        for t in 0..<tokens {
            for r in 0..<rows { values.append(y[t * ldy + r] - 0.25) }
            for r in rows..<ldy where y[t * ldy + r] != 0.25 { kept = false }
        }
        return (values, kept)
    }

    func tiers() throws -> [Bool] {
        try requireAVX2("the AVX2 row-group kernel")
        return ck_has_avx512_vnni() != 0 ? [false, true] : [false]
    }

    /// Odd shapes: rows that end inside a half group (8 rows) or a group, widths past a span of 64 blocks,
    /// one to nine tokens (tiles of 1–4 on AVX2, 1–8 on VNNI). The positive control: one packed byte changed
    /// moves the result past the bound.
    func testBothTiersMatchGeneric() throws {
        var random = TestRandom(state: 35)
        for vnni in try tiers() {
            for format in [WeightFormat.q8_0, .q4_0, .q4_1, .q5_0] {
                for (rows, columns, tokens) in [(1, 32, 1), (7, 96, 2), (9, 64, 3), (15, 96, 4), (17, 576, 1),
                                                (33, 288, 5), (50, 2112, 3), (48, 576, 8), (24, 160, 9)] {
                    let weights = Quantize.matrix(random.values(rows * columns), rows: rows, columns: columns, format: format)
                    let input = random.values(tokens * columns)
                    let x = QuantizedActivations(input, tokens: tokens, columns: columns, backend: .generic)
                    let label = "\(vnni ? "vnni" : "avx2") \(format) \(rows)x\(columns)x\(tokens)"
                    let result = rowGroupProduct(weights, x, vnni: vnni)
                    XCTAssertTrue(result.sentinelsKept, "\(label): wrote past row \(rows)")
                    let generic = genericInt8(weights, input, tokens: tokens)
                    XCTAssertLessThan(nmse(result.values, generic), 1e-11, label)
                    if rows == 48 {
                        // A weight byte of row 0 (past the group's scales) changed: the check must see it.
                        let broken = rowGroupProduct(weights, x, vnni: vnni, corrupt: 100)
                        XCTAssertGreaterThan(nmse(broken.values, generic), 1e-7, "\(label): positive control")
                    }
                }
            }
        }
    }

    /// The int16 steps at their limits: every nibble 15 (Q4_0, Q4_1), every Q5_0 value 31 (nibbles and fifth
    /// bits all set) or every byte −128 (Q8_0) against activations of ±127, where a wrong summation order would
    /// saturate vpmaddubsw or an int16 sum (Q5_0's AVX2 sum of eight vectors would: 8 · 2 · 31 · 127 > 32,767).
    func testExtremeValuesDoNotSaturate() throws {
        for vnni in try tiers() {
            for format in [WeightFormat.q8_0, .q4_0, .q4_1, .q5_0] {
                let rows = 16, columns = 256
                let weights = Quantize.matrix([Float](repeating: 1, count: rows * columns), rows: rows, columns: columns,
                                              format: format)
                let bytes = UnsafeMutableRawPointer(mutating: weights.data)
                let valueStart = format == .q4_1 ? 4 : 2
                for block in 0..<(rows * columns / 32) {
                    for i in valueStart..<format.bytesPerBlock {
                        bytes.storeBytes(of: format == .q8_0 ? 0x80 : 0xFF, toByteOffset: block * format.bytesPerBlock + i,
                                         as: UInt8.self)
                    }
                }
                for sign in [Float(1), -1] {
                    let input = [Float](repeating: sign, count: 2 * columns)
                    let x = QuantizedActivations(input, tokens: 2, columns: columns, backend: .generic)
                    XCTAssertEqual(x.values[0], Int8(127 * sign))
                    var scalar = [Float](repeating: 0, count: 2 * rows)
                    Linear.scalarInt8Forward(weights, quantized: x, output: &scalar, accumulate: false, pool: .serial)
                    let result = rowGroupProduct(weights, x, vnni: vnni).values
                    for i in scalar.indices {
                        XCTAssertEqual(result[i], scalar[i], accuracy: 1e-5 * abs(scalar[i]),
                                       "\(vnni ? "vnni" : "avx2") \(format) x = \(sign) at \(i)")
                    }
                }
            }
        }
    }

    /// Format 9 (AVX2): Q8_0 packed groups against 7-bit activations, the stored unsigned bytes straight into
    /// vpmaddubsw. Against the generic int8 product over the same 7-bit activations, on odd shapes; positive
    /// controls: a changed packed byte, and 8-bit activations (which the format does not accept) both fail.
    func testSevenBitActivationsOnQ8_0MatchGeneric() throws {
        try requireAVX2("the AVX2 row-group kernel's 7-bit format")
        var random = TestRandom(state: 36)
        for (rows, columns, tokens) in [(1, 32, 1), (7, 96, 2), (9, 64, 3), (15, 96, 4), (17, 576, 1), (33, 288, 5),
                                        (50, 2112, 3), (48, 576, 8), (24, 160, 9)] {
            let weights = Quantize.matrix(random.values(rows * columns), rows: rows, columns: columns, format: .q8_0)
            let input = random.values(tokens * columns)
            let x = QuantizedActivations(input, tokens: tokens, columns: columns, backend: .generic, sevenBit: true)
            XCTAssertEqual(x.limit, 63)
            XCTAssertEqual((0..<(tokens * columns)).map { abs(Int(x.values[$0])) }.max(), 63, "the range is used whole")
            let label = "\(rows)x\(columns)x\(tokens)"
            var generic = [Float](repeating: 0, count: tokens * rows)
            Linear.scalarInt8Forward(weights, quantized: x, output: &generic, accumulate: false, pool: .serial)
            let result = rowGroupProduct(weights, x, vnni: false, kernelFormat: 9)
            XCTAssertTrue(result.sentinelsKept, "\(label): wrote past row \(rows)")
            XCTAssertLessThan(nmse(result.values, generic), 1e-11, label)
            if rows == 48 {
                let broken = rowGroupProduct(weights, x, vnni: false, corrupt: 100, kernelFormat: 9)
                XCTAssertGreaterThan(nmse(broken.values, generic), 1e-7, "\(label): positive control")
                let x8 = QuantizedActivations(input, tokens: tokens, columns: columns, backend: .generic)
                var generic8 = [Float](repeating: 0, count: tokens * rows)
                Linear.scalarInt8Forward(weights, quantized: x8, output: &generic8, accumulate: false, pool: .serial)
                XCTAssertGreaterThan(nmse(rowGroupProduct(weights, x8, vnni: false, kernelFormat: 9).values, generic8), 1e-7,
                                     "\(label): 8-bit activations saturate format 9, and the check sees it")
            }
        }
    }

    /// Format 9 at its limits: stored bytes 0 and 255 (q = −128, 127) against activations of ±63 cannot
    /// saturate vpmaddubsw (2 · 255 · 63 = 32,130).
    func testSevenBitExtremesDoNotSaturate() throws {
        try requireAVX2("the AVX2 row-group kernel's 7-bit format")
        let rows = 16, columns = 256
        for byte: UInt8 in [0x80, 0x7F] {
            let weights = Quantize.matrix([Float](repeating: 1, count: rows * columns), rows: rows, columns: columns,
                                          format: .q8_0)
            let bytes = UnsafeMutableRawPointer(mutating: weights.data)
            for block in 0..<(rows * columns / 32) {
                for i in 2..<34 { bytes.storeBytes(of: byte, toByteOffset: block * 34 + i, as: UInt8.self) }
            }
            for sign in [Float(1), -1] {
                let x = QuantizedActivations([Float](repeating: sign, count: 2 * columns), tokens: 2, columns: columns,
                                             backend: .generic, sevenBit: true)
                XCTAssertEqual(x.values[0], Int8(63 * sign))
                var scalar = [Float](repeating: 0, count: 2 * rows)
                Linear.scalarInt8Forward(weights, quantized: x, output: &scalar, accumulate: false, pool: .serial)
                let result = rowGroupProduct(weights, x, vnni: false, kernelFormat: 9).values
                for i in scalar.indices {
                    XCTAssertEqual(result[i], scalar[i], accuracy: 1e-5 * abs(scalar[i]), "byte \(byte) x = \(sign) at \(i)")
                }
            }
        }
    }

    /// The AVX2 7-bit quantizer against the portable one: the same values, scales and sums.
    func testSevenBitQuantizerMatchesGeneric() throws {
        try requireAVX2("ck_quantize_q7_avx2")
        var random = TestRandom(state: 37)
        let tokens = 3, columns = 320
        let input = random.values(tokens * columns)
        let fast = QuantizedActivations(input, tokens: tokens, columns: columns, backend: .avx2, sevenBit: true)
        let generic = QuantizedActivations(input, tokens: tokens, columns: columns, backend: .generic, sevenBit: true)
        for i in 0..<(tokens * columns) { XCTAssertEqual(fast.values[i], generic.values[i], "value \(i)") }
        for b in 0..<(tokens * columns / 32) {
            XCTAssertEqual(fast.scales[b], generic.scales[b], accuracy: 1e-7 * abs(generic.scales[b]), "scale \(b)")
            XCTAssertEqual(fast.sums[b], generic.sums[b], accuracy: 1e-5 * max(1, abs(generic.sums[b])), "sum \(b)")
        }
    }

    /// Training's transposed copies (`PackedMatrix(forGradients: true)`) take 7-bit activations exactly on the
    /// AVX2 tier for Q8_0, and their product stays within the 7-bit error of the float one on every tier.
    func testGradientMatricesUseSevenBitsOnlyOnAVX2() throws {
        try XCTSkipUnless(RowGroupedMatrix.isAvailable, "the kernel tier is \(KernelBackend.selected), without packed matrices")
        var random = TestRandom(state: 38)
        let rows = 40, columns = 320, tokens = 6
        for format in [WeightFormat.q8_0, .q4_1] {
            let weights = Quantize.matrix(random.values(rows * columns), rows: rows, columns: columns, format: format)
            let gradients = try XCTUnwrap(PackedMatrix(weights, forGradients: true))
            let forward = try XCTUnwrap(PackedMatrix(weights))
            XCTAssertEqual(gradients.sevenBitActivations, format == .q8_0 && KernelBackend.selected == .avx2, "\(format)")
            XCTAssertFalse(forward.sevenBitActivations)
            let input = random.values(tokens * columns)
            var exact = [Float](repeating: 0, count: tokens * rows), fast = exact, eight = exact
            input.withUnsafeBufferPointer { x in
                Linear.forward(weights, input: x.baseAddress!, tokens: tokens, output: &exact, precision: .float32)
                Linear.forward(gradients, input: x.baseAddress!, tokens: tokens, output: &fast)
                Linear.forward(forward, input: x.baseAddress!, tokens: tokens, output: &eight)
            }
            let error = nmse(fast, exact), error8 = nmse(eight, exact)
            XCTAssertLessThan(error, 1e-3, "\(format)")
            if gradients.sevenBitActivations {
                // 7 bits: about four times the 8-bit error (seen 3.6–4.4× on these shapes).
                XCTAssertGreaterThan(error, 2 * error8, "7-bit activations must actually be used")
            } else {
                XCTAssertEqual(error, error8, "\(format): the 8-bit path")
            }
        }
    }
}

/// The portable int8 product, the reference the fast kernels are compared with.
func genericInt8(_ weights: WeightMatrix, _ input: [Float], tokens: Int) -> [Float] {
    var output = [Float](repeating: 0, count: tokens * weights.rows)
    input.withUnsafeBufferPointer { x in
        output.withUnsafeMutableBufferPointer { y in
            Linear.genericInt8Forward(weights, input: x.baseAddress!, tokens: tokens, output: y.baseAddress!)
        }
    }
    return output
}
