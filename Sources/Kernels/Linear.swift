import CKernels

/// Matrix products with stored (possibly quantized) weights: `y[t, :] = W · x[t, :]`.
public enum Linear {
    /// Rows dequantized together before being multiplied with every token (a panel fits in L1/L2).
    static let panelRows = 8

    /// `output[t, r] (+)= Σ_c W[r, c] · input[t, c]` for `tokens` rows of input.
    ///
    /// input: (tokens, W.columns) row-major; output: (tokens, W.rows) row-major.
    /// Each weight row is dequantized once into a scratch buffer and reused for every token.
    public static func forward(_ weights: WeightMatrix, input: UnsafePointer<Float>, tokens: Int,
                               output: UnsafeMutablePointer<Float>, accumulate: Bool = false,
                               precision: ActivationPrecision = .float32, pool: ThreadPool = .serial) {
        if precision == .int8 && weights.format.hasIntegerKernel {
            int8Forward(weights, input: input, tokens: tokens, output: output, accumulate: accumulate, pool: pool)
            return
        }
        let columns = weights.columns, rows = weights.rows
        nonisolated(unsafe) let input = input, output = output
        if let type = KernelBackend.selected.cDequantizeType(weights.format) {
            pool.parallelFor(rows, minimumChunk: 16) { range in
                let panel = UnsafeMutablePointer<Float>.allocate(capacity: panelRows * columns)
                defer { panel.deallocate() }
                var row = range.lowerBound
                while row < range.upperBound {
                    let count = min(panelRows, range.upperBound - row)
                    let values: UnsafePointer<Float>
                    if weights.format == .f32 {
                        values = weights.rowPointer(row).assumingMemoryBound(to: Float.self)
                    } else {
                        for i in 0..<count {
                            ck_dequantize_row(type, weights.rowPointer(row + i), panel + i * columns, columns)
                        }
                        values = UnsafePointer(panel)
                    }
                    ck_panel_gemm(values, Int32(count), input, Int32(tokens), Int32(columns),
                                       output + row, Int32(rows), accumulate ? 1 : 0)
                    row += count
                }
            }
            return
        }
        genericForward(weights, input: input, tokens: tokens, output: output, accumulate: accumulate, pool: pool)
    }

    /// The portable path of `forward`: Swift SIMD on the baseline CPU (the fallback and the benchmark's anchor).
    /// Rows are dequantized four at a time and multiplied together, so each load of a token's input
    /// serves four rows.
    public static func genericForward(_ weights: WeightMatrix, input: UnsafePointer<Float>, tokens: Int,
                                      output: UnsafeMutablePointer<Float>, accumulate: Bool = false,
                                      pool: ThreadPool = .serial) {
        let columns = weights.columns, rows = weights.rows
        nonisolated(unsafe) let input = input, output = output
        pool.parallelFor(rows, minimumChunk: 16) { range in
            let panel = UnsafeMutablePointer<Float>.allocate(capacity: 4 * columns)
            defer { panel.deallocate() }
            var row = range.lowerBound
            while row < range.upperBound {
                let count = min(4, range.upperBound - row)
                if weights.format != .f32 {
                    for lane in 0..<count {
                        Dequantize.row(format: weights.format, source: weights.rowPointer(row + lane), count: columns,
                                       into: panel + lane * columns)
                    }
                }
                // A group short of four rows repeats its last row in the spare lanes (not stored).
                func lane(_ index: Int) -> UnsafePointer<Float> {
                    let lane = min(index, count - 1)
                    return weights.format == .f32 ? weights.rowPointer(row + lane).assumingMemoryBound(to: Float.self)
                        : UnsafePointer(panel + lane * columns)
                }
                let r0 = lane(0), r1 = lane(1), r2 = lane(2), r3 = lane(3)
                for t in 0..<tokens {
                    let values = Vector.genericDot4(r0, r1, r2, r3, input + t * columns, columns)
                    let out = output + t * rows + row
                    for lane in 0..<count {
                        if accumulate { out[lane] += values[lane] } else { out[lane] = values[lane] }
                    }
                }
                row += count
            }
        }
    }

    /// The input gradient of a linear layer: `gradInput[t, c] (+)= Σ_r W[r, c] · gradOutput[t, r]`.
    ///
    /// gradOutput: (tokens, W.rows); gradInput: (tokens, W.columns).
    public static func backwardInput(_ weights: WeightMatrix, gradOutput: UnsafePointer<Float>, tokens: Int,
                                     gradInput: UnsafeMutablePointer<Float>, accumulate: Bool = false,
                                     pool: ThreadPool = .serial) {
        let columns = weights.columns, rows = weights.rows
        nonisolated(unsafe) let gradOutput = gradOutput, gradInput = gradInput
        // Parallel over tokens so each thread writes its own rows of gradInput.
        pool.parallelFor(tokens) { range in
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: columns)
            defer { scratch.deallocate() }
            if !accumulate {
                for t in range { (gradInput + t * columns).initialize(repeating: 0, count: columns) }
            }
            for row in 0..<rows {
                let rowValues: UnsafePointer<Float>
                if weights.format == .f32 {
                    rowValues = weights.rowPointer(row).assumingMemoryBound(to: Float.self)
                } else {
                    weights.dequantizedRow(row, into: scratch)
                    rowValues = UnsafePointer(scratch)
                }
                for t in range {
                    let g = gradOutput[t * rows + row]
                    if g != 0 { Vector.addScaled(gradInput + t * columns, rowValues, g, columns) }
                }
            }
        }
    }

    /// Naive reference for `forward`: dequantizes everything and accumulates in Double.
    public static func referenceForward(_ weights: WeightMatrix, input: [Float], tokens: Int) -> [Float] {
        let w = weights.dequantized()
        var out = [Float](repeating: 0, count: tokens * weights.rows)
        for t in 0..<tokens {
            for r in 0..<weights.rows {
                var sum = 0.0
                for c in 0..<weights.columns { sum += Double(w[r * weights.columns + c]) * Double(input[t * weights.columns + c]) }
                out[t * weights.rows + r] = Float(sum)
            }
        }
        return out
    }
}

/// Small vector primitives over flat float buffers.
public enum Vector {
    /// Σ a[i]·b[i]: the AVX2 or NEON kernel where the CPU has one, else `genericDot`.
    @inline(__always)
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        KernelBackend.selected.hasCKernels ? ck_dot(a, b, n) : genericDot(a, b, n)
    }

    /// out[j] = scale · Σ_i x[i]·rows[j·stride + i] for j < count: one vector against many rows (attention
    /// scores), four rows per pass on AVX2 and NEON.
    @inline(__always)
    public static func dotRows(_ x: UnsafePointer<Float>, rows: UnsafePointer<Float>, stride: Int, count: Int, width: Int,
                               scale: Float, into out: UnsafeMutablePointer<Float>) {
        guard count > 0 else { return }
        if KernelBackend.selected.hasCKernels {
            ck_dot_rows(x, rows, stride, Int32(count), Int32(width), scale, out)
        } else {
            for j in 0..<count { out[j] = genericDot(x, rows + j * stride, width) * scale }
        }
    }

    /// Σ a[i]·b[i] in portable Swift SIMD, with four independent accumulators for throughput.
    @inline(__always)
    public static func genericDot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>(), acc2 = SIMD8<Float>(), acc3 = SIMD8<Float>()
        var i = 0
        let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
        while i + 32 <= n {
            acc0 += ra.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
                * rb.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
            acc1 += ra.loadUnaligned(fromByteOffset: 4 * (i + 8), as: SIMD8<Float>.self)
                * rb.loadUnaligned(fromByteOffset: 4 * (i + 8), as: SIMD8<Float>.self)
            acc2 += ra.loadUnaligned(fromByteOffset: 4 * (i + 16), as: SIMD8<Float>.self)
                * rb.loadUnaligned(fromByteOffset: 4 * (i + 16), as: SIMD8<Float>.self)
            acc3 += ra.loadUnaligned(fromByteOffset: 4 * (i + 24), as: SIMD8<Float>.self)
                * rb.loadUnaligned(fromByteOffset: 4 * (i + 24), as: SIMD8<Float>.self)
            i += 32
        }
        while i + 8 <= n {
            acc0 += ra.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
                * rb.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
            i += 8
        }
        var sum = ((acc0 + acc1) + (acc2 + acc3)).sum()
        while i < n {
            sum += a[i] * b[i]
            i += 1
        }
        return sum
    }

    /// Four rows against one vector: lane r is Σ_i rr[i]·x[i], eight columns per step with one
    /// accumulator per row (each load of x serves the four rows).
    @inline(__always)
    public static func genericDot4(_ r0: UnsafePointer<Float>, _ r1: UnsafePointer<Float>, _ r2: UnsafePointer<Float>,
                                   _ r3: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int) -> SIMD4<Float> {
        typealias F = SIMD8<Float>
        var a0 = F(), a1 = F(), a2 = F(), a3 = F()
        let w0 = UnsafeRawPointer(r0), w1 = UnsafeRawPointer(r1), w2 = UnsafeRawPointer(r2), w3 = UnsafeRawPointer(r3)
        let rx = UnsafeRawPointer(x)
        var i = 0
        while i + 8 <= n {
            let v = rx.loadUnaligned(fromByteOffset: 4 * i, as: F.self)
            a0 += w0.loadUnaligned(fromByteOffset: 4 * i, as: F.self) * v
            a1 += w1.loadUnaligned(fromByteOffset: 4 * i, as: F.self) * v
            a2 += w2.loadUnaligned(fromByteOffset: 4 * i, as: F.self) * v
            a3 += w3.loadUnaligned(fromByteOffset: 4 * i, as: F.self) * v
            i += 8
        }
        var sums = SIMD4<Float>(a0.sum(), a1.sum(), a2.sum(), a3.sum())
        while i < n {
            sums += SIMD4<Float>(r0[i], r1[i], r2[i], r3[i]) * x[i]
            i += 1
        }
        return sums
    }

    /// y[i] += alpha · x[i].
    @inline(__always)
    public static func addScaled(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ alpha: Float, _ n: Int) {
        var i = 0
        let ry = UnsafeMutableRawPointer(y), rx = UnsafeRawPointer(x)
        let a = SIMD8<Float>(repeating: alpha)
        while i + 8 <= n {
            let v = ry.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
                + a * rx.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
            ry.storeBytes(of: v, toByteOffset: 4 * i, as: SIMD8<Float>.self)
            i += 8
        }
        while i < n {
            y[i] += alpha * x[i]
            i += 1
        }
    }
}

extension Vector {
    /// x[i] *= alpha.
    public static func scale(_ x: UnsafeMutablePointer<Float>, _ alpha: Float, _ n: Int) {
        let raw = UnsafeMutableRawPointer(x), a = SIMD16<Float>(repeating: alpha)
        var i = 0
        while i + 16 <= n {
            raw.storeBytes(of: raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self) * a,
                           toByteOffset: 4 * i, as: SIMD16<Float>.self)
            i += 16
        }
        while i < n {
            x[i] *= alpha
            i += 1
        }
    }
}

extension Vector {
    /// `weightedRowSum` with unit coefficient stride on the AVX2 kernel (FMA, eight accumulators) where the
    /// CPU has it: a single query row's attention values, softmax(scores)·V (decoding; blocks of rows use
    /// `tileProduct`).
    public static func attentionValues(into out: UnsafeMutablePointer<Float>, rows: UnsafePointer<Float>, rowStride: Int,
                                       coefficients: UnsafePointer<Float>, count: Int, width: Int) {
        if KernelBackend.selected.hasAVX2 {
            ck_weighted_rows_avx2(out, rows, rowStride, coefficients, Int32(count), Int32(width), 0)
        } else {
            weightedRowSum(into: out, rows: rows, rowStride: rowStride, coefficients: coefficients, coefficientStride: 1,
                           count: count, width: width, accumulate: false)
        }
    }

    /// out[0..<width] (+)= Σ_i coefficients[i·coefficientStride] · rows[i·rowStride ..< i·rowStride + width]
    /// for i in 0..<count: a weighted sum of strided rows kept in registers 64 columns at a time, so each
    /// output element is written once (LoRA's products, and a row of `tileProduct` on the generic path).
    public static func weightedRowSum(into out: UnsafeMutablePointer<Float>, rows: UnsafePointer<Float>, rowStride: Int,
                                      coefficients: UnsafePointer<Float>, coefficientStride: Int, count: Int,
                                      width: Int, accumulate: Bool) {
        if KernelBackend.selected.hasAVX2 {
            ck_weighted_rows_strided_avx2(out, rows, rowStride, coefficients, coefficientStride, Int32(count), Int32(width),
                                          accumulate ? 1 : 0)
            return
        }
        genericWeightedRowSum(into: out, rows: rows, rowStride: rowStride, coefficients: coefficients,
                              coefficientStride: coefficientStride, count: count, width: width, accumulate: accumulate)
    }

    /// `weightedRowSum` in portable Swift SIMD: the reference, and the path where no AVX2 kernel runs.
    public static func genericWeightedRowSum(into out: UnsafeMutablePointer<Float>, rows: UnsafePointer<Float>,
                                             rowStride: Int, coefficients: UnsafePointer<Float>, coefficientStride: Int,
                                             count: Int, width: Int, accumulate: Bool) {
        typealias F = SIMD16<Float>
        let raw = UnsafeRawPointer(rows), o = UnsafeMutableRawPointer(out)
        var column = 0
        while column + 64 <= width {
            var a0 = F(), a1 = F(), a2 = F(), a3 = F()
            for i in 0..<count {
                let c = F(repeating: coefficients[i * coefficientStride])
                let offset = 4 * (i * rowStride + column)
                a0 += c * raw.loadUnaligned(fromByteOffset: offset, as: F.self)
                a1 += c * raw.loadUnaligned(fromByteOffset: offset + 64, as: F.self)
                a2 += c * raw.loadUnaligned(fromByteOffset: offset + 128, as: F.self)
                a3 += c * raw.loadUnaligned(fromByteOffset: offset + 192, as: F.self)
            }
            if accumulate {
                a0 += o.loadUnaligned(fromByteOffset: 4 * column, as: F.self)
                a1 += o.loadUnaligned(fromByteOffset: 4 * column + 64, as: F.self)
                a2 += o.loadUnaligned(fromByteOffset: 4 * column + 128, as: F.self)
                a3 += o.loadUnaligned(fromByteOffset: 4 * column + 192, as: F.self)
            }
            o.storeBytes(of: a0, toByteOffset: 4 * column, as: F.self)
            o.storeBytes(of: a1, toByteOffset: 4 * column + 64, as: F.self)
            o.storeBytes(of: a2, toByteOffset: 4 * column + 128, as: F.self)
            o.storeBytes(of: a3, toByteOffset: 4 * column + 192, as: F.self)
            column += 64
        }
        while column + 16 <= width {
            var a = F()
            for i in 0..<count {
                a += F(repeating: coefficients[i * coefficientStride])
                    * raw.loadUnaligned(fromByteOffset: 4 * (i * rowStride + column), as: F.self)
            }
            if accumulate { a += o.loadUnaligned(fromByteOffset: 4 * column, as: F.self) }
            o.storeBytes(of: a, toByteOffset: 4 * column, as: F.self)
            column += 16
        }
        while column < width {
            var sum: Float = accumulate ? out[column] : 0
            for i in 0..<count { sum += coefficients[i * coefficientStride] * rows[i * rowStride + column] }
            out[column] = sum
            column += 1
        }
    }
}
