import CKernels

/// How the activations meet quantized weights in a matrix product.
public enum ActivationPrecision: String, Sendable, CaseIterable {
    /// Weights dequantized to float32 and multiplied with float32 activations: the exact path,
    /// used for training and for comparisons with float64 references.
    case float32
    /// Activations quantized to 8-bit blocks of 32 and multiplied with the weights' integers (as
    /// llama.cpp does): several times faster for Q8_0, Q4_0 and Q4_1 (and Q5_0, Q5_1 and the K-quants, by
    /// their own kernels), with a loss difference on the order of 1e-3 (measured in the reference tests).
    /// Float formats use the float32 path.
    case int8
}

extension WeightFormat {
    /// Whether the integer kernels handle this format.
    public var hasIntegerKernel: Bool { self == .q8_0 || self == .q4_0 || self == .q4_1 || QuantBlocks.handles(self) }
}

/// Activations quantized to 8-bit blocks: `values[t·k + i]`, per block the scale `d` and `s = d·Σq`.
public final class QuantizedActivations {
    public let tokens: Int
    public let columns: Int
    public let values: UnsafeMutablePointer<Int8>
    public let scales: UnsafeMutablePointer<Float>
    public let sums: UnsafeMutablePointer<Float>
    /// The largest magnitude of `values`: 127, or 63 for 7-bit activations.
    public let limit: Int

    /// Quantizes `tokens` rows of `columns` floats (columns a multiple of 32). With `sevenBit`, values lie
    /// in [−63, 63] (scale max|x|/63): for the AVX2 tier's Q8_0 product that skips the sign trick
    /// (`RowGroupedMatrix`), at four times the quantization error; any int8 product accepts them.
    public init(_ input: UnsafePointer<Float>, tokens: Int, columns: Int, backend: KernelBackend = .selected,
                sevenBit: Bool = false) {
        require(columns % 32 == 0, "int8 activations need a multiple of 32 columns, got \(columns)")
        self.tokens = tokens
        self.columns = columns
        limit = sevenBit ? 63 : 127
        let blocks = tokens * columns / 32
        values = .allocate(capacity: max(1, tokens * columns))
        scales = .allocate(capacity: max(1, blocks))
        sums = .allocate(capacity: max(1, blocks))
        if backend.hasAVX2 && sevenBit {
            ck_quantize_q7_avx2(input, Int32(tokens), Int32(columns), values, scales, sums)
            return
        }
        if backend.hasCKernels && !sevenBit {
            ck_quantize_q8(input, Int32(tokens), Int32(columns), values, scales, sums)
            return
        }
        let range = Float(limit)
        for block in 0..<blocks {
            let x = input + 32 * block
            var amax: Float = 0
            for i in 0..<32 { amax = max(amax, abs(x[i])) }
            let scale = amax / range
            let inverse: Float = amax > 0 ? range / amax : 0
            var sum = 0
            for i in 0..<32 {
                let q = Int((x[i] * inverse).rounded(.toNearestOrEven))
                values[32 * block + i] = Int8(q)
                sum += q
            }
            scales[block] = scale
            sums[block] = scale * Float(sum)
        }
    }

    deinit {
        values.deallocate()
        scales.deallocate()
        sums.deallocate()
    }
}

extension Linear {
    /// From this many tokens on, int8 products use the interleaved panel kernel.
    public static let panelTokens = 4

    /// `forward` with int8 activations: the AVX2 or NEON kernel where the CPU has one, else `genericInt8Forward`.
    static func int8Forward(_ weights: WeightMatrix, input: UnsafePointer<Float>, tokens: Int,
                            output: UnsafeMutablePointer<Float>, accumulate: Bool, pool: ThreadPool) {
        guard KernelBackend.selected.hasCKernels, weights.format.ggmlTypeNumber != nil || QuantBlocks.handles(weights.format)
        else {
            genericInt8Forward(weights, input: input, tokens: tokens, output: output, accumulate: accumulate, pool: pool)
            return
        }
        forward(weights, quantized: QuantizedActivations(input, tokens: tokens, columns: weights.columns),
                output: output, accumulate: accumulate, pool: pool)
    }

    /// `forward` on activations already quantized (several projections of the same input share them).
    public static func forward(_ weights: WeightMatrix, quantized x: QuantizedActivations,
                               output: UnsafeMutablePointer<Float>, accumulate: Bool = false, pool: ThreadPool = .serial) {
        forward(stack: [(weights, output)], quantized: x, accumulate: accumulate, pool: pool)
    }

    /// Several matrices that read the same activations (q, k and v; gate and up), each into its own
    /// output, as one parallel loop over their rows stacked: a generated token hands work to the pool once
    /// per stack instead of once per matrix. On the C tiers the activations are interleaved once for all
    /// (prompts); a stack the C kernels cannot take whole runs part by part. Q5_0, Q5_1 and the K-quants
    /// have their own kernels, C ones included (QuantBlockProducts.swift), and run part by part.
    public static func forward(stack parts: [(weights: WeightMatrix, output: UnsafeMutablePointer<Float>)],
                               quantized x: QuantizedActivations, accumulate: Bool = false, pool: ThreadPool = .serial) {
        for part in parts {
            require(x.columns == part.weights.columns,
                    "activations have \(x.columns) columns, weights \(part.weights.columns)")
        }
        if parts.contains(where: { QuantBlocks.handles($0.weights.format) }) {
            for part in parts where QuantBlocks.handles(part.weights.format) {
                QuantBlocks.int8Forward(part.weights, quantized: x, output: part.output, accumulate: accumulate, pool: pool)
            }
            let rest = parts.filter { !QuantBlocks.handles($0.weights.format) }
            if !rest.isEmpty { forward(stack: rest, quantized: x, accumulate: accumulate, pool: pool) }
            return
        }
        guard KernelBackend.selected.hasCKernels, parts.allSatisfy({ $0.weights.format.ggmlTypeNumber != nil }) else {
            for part in parts {
                genericInt8Forward(part.weights, quantized: x, output: part.output, accumulate: accumulate, pool: pool)
            }
            return
        }
        let tokens = x.tokens, columns = x.columns
        var offsets: [Int] = [], total = 0
        for part in parts {
            offsets.append(total)
            total += part.weights.rows
        }
        // Prompt-sized on x86: the activations interleaved once, for the panel kernel.
        let panel = KernelBackend.selected.hasAVX2 && tokens >= panelTokens
        let interleaved = panel ? UnsafeMutableRawPointer.allocate(
            byteCount: ck_interleaved_bytes(Int32(tokens), Int32(columns)), alignment: 64) : nil
        defer { interleaved?.deallocate() }
        if let interleaved { ck_interleave_q8(x.values, x.scales, x.sums, Int32(tokens), Int32(columns), interleaved) }
        nonisolated(unsafe) let packed = interleaved.map { UnsafeRawPointer($0) }
        nonisolated(unsafe) let parts = parts
        // Chunks of whole row tiles (panels of 16, tiles of 4), enough of them to balance the threads.
        pool.parallelFor(total, minimumChunk: panel || !KernelBackend.selected.hasAVX2 ? 16 : 32) { range in
            for (part, offset) in zip(parts, offsets) {
                let lower = max(range.lowerBound, offset), upper = min(range.upperBound, offset + part.weights.rows)
                guard lower < upper else { continue }
                int8Rows(part.weights, (lower - offset)..<(upper - offset), x: x, interleaved: packed,
                         output: part.output, accumulate: accumulate)
            }
        }
        withExtendedLifetime(x) {}
    }

    /// Rows `rows` of `weights` times the quantized activations, on this CPU's C kernel: the panel kernel
    /// when `interleaved` holds the activations in its layout, else the row tiles (x86) or NEON tiles.
    @inline(__always)
    static func int8Rows(_ weights: WeightMatrix, _ rows: Range<Int>, x: QuantizedActivations,
                         interleaved: UnsafeRawPointer?, output: UnsafeMutablePointer<Float>, accumulate: Bool) {
        let type = weights.format.ggmlTypeNumber!
        let ldy = Int32(weights.rows), tokens = Int32(x.tokens), columns = Int32(x.columns)
        let add: Int32 = accumulate ? 1 : 0
        let w = weights.rowPointer(rows.lowerBound), y = output + rows.lowerBound, count = Int32(rows.count)
        switch KernelBackend.selected {
        case .neondot, .neon:
            ck_gemm_q8_neon(KernelBackend.selected == .neondot ? 1 : 0, type, w, weights.rowBytes, count, x.values,
                            x.scales, x.sums, tokens, columns, y, ldy, add)
        default:
            let vnni = KernelBackend.selected == .avx512vnni
            if let interleaved {
                ck_gemm_q8_panel(vnni ? 1 : 0, type, w, weights.rowBytes, count, interleaved, tokens, columns, y, ldy, add)
            } else {
                ck_gemm_q8_avx2(vnni ? -type : type, w, weights.rowBytes, count, x.values, x.scales, x.sums, tokens,
                                columns, y, ldy, add)
            }
        }
    }

    /// The portable int8 path (the generic tier): the same block sums as the AVX2 kernel, in Swift SIMD
    /// (`GenericInt8`), equal bit for bit to the scalar reference `scalarInt8Forward`.
    public static func genericInt8Forward(_ weights: WeightMatrix, input: UnsafePointer<Float>, tokens: Int,
                                          output: UnsafeMutablePointer<Float>, accumulate: Bool = false,
                                          pool: ThreadPool = .serial) {
        genericInt8Forward(weights, quantized: QuantizedActivations(input, tokens: tokens, columns: weights.columns, backend: .generic),
                           output: output, accumulate: accumulate, pool: pool)
    }

    static func genericInt8Forward(_ weights: WeightMatrix, quantized x: QuantizedActivations,
                                   output: UnsafeMutablePointer<Float>, accumulate: Bool, pool: ThreadPool) {
        if QuantBlocks.handles(weights.format) {
            QuantBlocks.genericInt8Forward(weights, quantized: x, output: output, accumulate: accumulate, pool: pool)
            return
        }
        #if _endian(little)
        GenericInt8.forward(weights, quantized: x, output: output, accumulate: accumulate, pool: pool)
        #else
        scalarInt8Forward(weights, quantized: x, output: output, accumulate: accumulate, pool: pool)
        #endif
    }

    /// The scalar int8 product: one row, one token, one block at a time (integers exact, float
    /// accumulation in block order). The reference the SIMD generic path and the AVX2 kernels are
    /// tested against; too slow for inference (the generic tier ran at 4 tokens/s on it).
    public static func scalarInt8Forward(_ weights: WeightMatrix, input: UnsafePointer<Float>, tokens: Int,
                                         output: UnsafeMutablePointer<Float>, accumulate: Bool = false,
                                         pool: ThreadPool = .serial) {
        scalarInt8Forward(weights, quantized: QuantizedActivations(input, tokens: tokens, columns: weights.columns, backend: .generic),
                          output: output, accumulate: accumulate, pool: pool)
    }

    static func scalarInt8Forward(_ weights: WeightMatrix, quantized x: QuantizedActivations,
                                  output: UnsafeMutablePointer<Float>, accumulate: Bool, pool: ThreadPool) {
        require(weights.format.hasIntegerKernel, "no integer kernel for \(weights.format)")
        if QuantBlocks.handles(weights.format) {
            QuantBlocks.scalarInt8Forward(weights, quantized: x, output: output, accumulate: accumulate)
            return
        }
        let tokens = x.tokens
        let rows = weights.rows, columns = weights.columns, blocks = columns / 32
        let format = weights.format, blockBytes = format.bytesPerBlock
        nonisolated(unsafe) let output = output
        pool.parallelFor(rows, minimumChunk: 16) { range in
            var w = [Int32](repeating: 0, count: 32)
            for row in range {
                let rowBase = weights.rowPointer(row)
                for t in 0..<tokens {
                    var total: Float = 0
                    for b in 0..<blocks {
                        let block = rowBase + b * blockBytes
                        let d = Dequantize.half(block.loadUnaligned(as: UInt16.self))
                        var m: Float = 0
                        switch format {
                        case .q8_0:
                            for i in 0..<32 { w[i] = Int32(block.load(fromByteOffset: 2 + i, as: Int8.self)) }
                        case .q4_0:
                            m = -8 * d
                            for i in 0..<16 {
                                let byte = block.load(fromByteOffset: 2 + i, as: UInt8.self)
                                w[i] = Int32(byte & 0x0F)
                                w[i + 16] = Int32(byte >> 4)
                            }
                        default:
                            m = Dequantize.half(block.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
                            for i in 0..<16 {
                                let byte = block.load(fromByteOffset: 4 + i, as: UInt8.self)
                                w[i] = Int32(byte & 0x0F)
                                w[i + 16] = Int32(byte >> 4)
                            }
                        }
                        let q = x.values + t * columns + 32 * b
                        var dot: Int32 = 0
                        for i in 0..<32 { dot += w[i] * Int32(q[i]) }
                        total += Float(dot) * (d * x.scales[t * blocks + b]) + m * x.sums[t * blocks + b]
                    }
                    if accumulate { output[t * rows + row] += total } else { output[t * rows + row] = total }
                }
            }
        }
        withExtendedLifetime(x) {}
    }
}

/// A quantized matrix laid out once for matrices multiplied many times with many tokens, as in
/// training: in the 16-row groups of the row-group kernels (AVX2 and AVX-512 VNNI; the file's own size
/// per weight).
public final class PackedMatrix: @unchecked Sendable {
    /// Whether products quantize their activations to 7 bits (see `init`).
    public let sevenBitActivations: Bool
    let grouped: RowGroupedMatrix
    public var format: WeightFormat { grouped.format }
    public var rows: Int { grouped.rows }
    public var columns: Int { grouped.columns }

    /// nil when this CPU or format has no row-group kernel (callers use `Linear.forward` instead).
    /// - Parameter forGradients: the matrix only ever carries gradients (training's transposed copies),
    ///   which can spare a bit of activation precision: on the AVX2 tier a Q8_0 matrix then meets 7-bit
    ///   activations, a product about 1.25× faster than the sign trick 8-bit ones need there (measured in
    ///   Benchmarks/RESULTS.md), at about four times the activations' quantization error. Elsewhere
    ///   (VNNI, other formats) nothing changes.
    public init?(_ weights: WeightMatrix, forGradients: Bool = false) {
        guard let grouped = RowGroupedMatrix([weights]) else { return nil }
        self.grouped = grouped
        sevenBitActivations = forGradients && weights.format == .q8_0 && KernelBackend.selected == .avx2
    }
}

extension Linear {
    /// `output[t, r] (+)= Σ_c W[r, c] · input[t, c]` with W packed and int8 (or 7-bit) activations.
    public static func forward(_ packed: PackedMatrix, input: UnsafePointer<Float>, tokens: Int,
                               output: UnsafeMutablePointer<Float>, accumulate: Bool = false, pool: ThreadPool = .serial) {
        let x = QuantizedActivations(input, tokens: tokens, columns: packed.columns, sevenBit: packed.sevenBitActivations)
        packed.grouped.forward(quantized: x, output: output, accumulate: accumulate, pool: pool)
    }
}
