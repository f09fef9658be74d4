import CKernels

extension Vector {
    /// out[r·outStride + c] = scale · Σ_k a[r·aRowStride + k·aDepthStride] · b[k·bStride + c] (+ out[r·outStride + c]
    /// when `accumulate`) for r < rows, c < columns, k < depth: a small matrix product over strided operands.
    ///
    /// Attention's blocks of rows: several query rows against the key rows they share (scores, dP, dQ, the output),
    /// or several key rows against the query rows that see them (dK, dV), so each row of `b` is loaded once per
    /// block rather than once per row. Four rows × 64 columns per pass on AVX-512 (`ck_tile_product_avx512`, the
    /// avx512vnni tier), × 16 on AVX2; elsewhere (generic, NEON) one `genericWeightedRowSum` per row.
    /// - Precondition: `scale` is 1 when accumulating (no caller scales a sum it adds to).
    @inline(__always)
    public static func tileProduct(rows: Int, columns: Int, depth: Int, scale: Float = 1, a: UnsafePointer<Float>,
                                   aRowStride: Int, aDepthStride: Int, b: UnsafePointer<Float>, bStride: Int,
                                   into out: UnsafeMutablePointer<Float>, outStride: Int, accumulate: Bool) {
        precondition(scale == 1 || !accumulate, "a scaled product is written, not added")
        guard rows > 0, columns > 0 else { return }
        switch KernelBackend.selected {
        case .avx512vnni:
            ck_tile_product_avx512(Int32(rows), Int32(columns), Int32(depth), scale, a, aRowStride, aDepthStride, b,
                                   bStride, out, outStride, accumulate ? 1 : 0)
        case .avx2:
            ck_tile_product_avx2(Int32(rows), Int32(columns), Int32(depth), scale, a, aRowStride, aDepthStride, b, bStride,
                                 out, outStride, accumulate ? 1 : 0)
        case .neondot, .neon, .generic:
            genericTileProduct(rows: rows, columns: columns, depth: depth, scale: scale, a: a, aRowStride: aRowStride,
                               aDepthStride: aDepthStride, b: b, bStride: bStride, into: out, outStride: outStride,
                               accumulate: accumulate)
        }
    }

    /// `tileProduct` in portable Swift SIMD, a row at a time: the path where no AVX2 kernel runs.
    public static func genericTileProduct(rows: Int, columns: Int, depth: Int, scale: Float = 1, a: UnsafePointer<Float>,
                                          aRowStride: Int, aDepthStride: Int, b: UnsafePointer<Float>, bStride: Int,
                                          into out: UnsafeMutablePointer<Float>, outStride: Int, accumulate: Bool) {
        for r in 0..<rows {
            let row = out + r * outStride
            genericWeightedRowSum(into: row, rows: b, rowStride: bStride, coefficients: a + r * aRowStride,
                                  coefficientStride: aDepthStride, count: depth, width: columns, accumulate: accumulate)
            if scale != 1 { Vector.scale(row, scale, columns) }
        }
    }

    /// `tileProduct` by its definition, summed in Double: the reference its fast paths are tested against.
    public static func naiveTileProduct(rows: Int, columns: Int, depth: Int, scale: Float = 1, a: UnsafePointer<Float>,
                                        aRowStride: Int, aDepthStride: Int, b: UnsafePointer<Float>, bStride: Int,
                                        into out: UnsafeMutablePointer<Float>, outStride: Int, accumulate: Bool) {
        for r in 0..<rows {
            for c in 0..<columns {
                var sum = 0.0
                for k in 0..<depth { sum += Double(a[r * aRowStride + k * aDepthStride]) * Double(b[k * bStride + c]) }
                let product = Float(Double(scale) * sum)
                out[r * outStride + c] = accumulate ? out[r * outStride + c] + product : product
            }
        }
    }

    /// out[i·outStride + j] = rows[j·stride + i] for j < count, i < width: `count` strided rows as `width` rows of
    /// `count` (attention's keys and values as the columns `tileProduct` reads for scores and dP).
    public static func transpose(_ rows: UnsafePointer<Float>, stride: Int, count: Int, width: Int,
                                 into out: UnsafeMutablePointer<Float>, outStride: Int) {
        for j in 0..<count {
            let row = rows + j * stride
            for i in 0..<width { out[i * outStride + j] = row[i] }
        }
    }
}
