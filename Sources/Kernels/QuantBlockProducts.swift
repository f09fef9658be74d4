import CKernels

/// Integer products of Q5_0, Q5_1 and K-quant weights with int8 activations (blocks of 32).
///
/// With value = scale_g·q + offset_g per 16 weights (`QuantBlocks`) and activations x = dx·qx per 32,
/// a row's product with one token is Σ over its 32-value chunks c (groups g = 2c, 2c + 1) of
/// dx_c·(scale_2c·Σ q·qx + scale_2c+1·Σ q·qx) + offset_2c·dx_c·Σ qx + offset_2c+1·dx_c·Σ qx, the sums over each
/// group's 16 values, the integer sums exact. The scalar reference below computes exactly that; the generic
/// tier does the same operations with its integer dots in Swift SIMD (equal bit for bit), and the AVX2 and
/// AVX-512 VNNI kernels (kernels_kquants.c) and the NEON ones (kernels_neon.c, plain and sdot) decode each row
/// once and sum in a different order (checked by normalised mean squared error).
extension QuantBlocks {
    /// Per token and per 16 activations, dx·Σ qx: the factor of the groups' offsets.
    static func groupSums(_ x: QuantizedActivations) -> [Float] {
        let groups = x.columns / 16
        var sums = [Float](repeating: 0, count: x.tokens * groups)
        for t in 0..<x.tokens {
            for g in 0..<groups {
                var total = 0
                for i in 0..<16 { total += Int(x.values[t * x.columns + 16 * g + i]) }
                sums[t * groups + g] = x.scales[t * (x.columns / 32) + g / 2] * Float(total)
            }
        }
        return sums
    }

    /// `output[t·rows + r] (+)= W[r]·x[t]`: the AVX2 (or AVX-512 VNNI) or NEON (plain or sdot) kernel where the
    /// CPU has one, else the generic tier's Swift.
    static func int8Forward(_ weights: WeightMatrix, quantized x: QuantizedActivations, output: UnsafeMutablePointer<Float>,
                            accumulate: Bool, pool: ThreadPool) {
        require(handles(weights.format), "QuantBlocks has no product for \(weights.format)")
        require(x.columns == weights.columns, "activations have \(x.columns) columns, weights \(weights.columns)")
        let backend = KernelBackend.selected
        guard backend.hasCKernels, let type = weights.format.blockTypeNumber else {
            genericInt8Forward(weights, quantized: x, output: output, accumulate: accumulate, pool: pool)
            return
        }
        let sums = groupSums(x), rows = weights.rows
        let vnni: Int32 = backend == .avx512vnni ? 1 : 0, neon = backend == .neon || backend == .neondot
        let dotprod: Int32 = backend == .neondot ? 1 : 0
        nonisolated(unsafe) let output = output
        sums.withUnsafeBufferPointer { sums in
            nonisolated(unsafe) let sums = sums.baseAddress!
            pool.parallelFor(rows, minimumChunk: 16) { range in
                let w = weights.rowPointer(range.lowerBound), count = Int32(range.count), add: Int32 = accumulate ? 1 : 0
                if neon {
                    ck_gemm_kq_neon(dotprod, type, w, weights.rowBytes, count, x.values, x.scales, sums, Int32(x.tokens),
                                    Int32(x.columns), output + range.lowerBound, Int32(rows), add)
                } else {
                    ck_gemm_kq_avx2(vnni, type, w, weights.rowBytes, count, x.values, x.scales, sums, Int32(x.tokens),
                                    Int32(x.columns), output + range.lowerBound, Int32(rows), add)
                }
            }
        }
        withExtendedLifetime(x) {}
    }

    /// The generic tier: each row decoded once (`decode`), then per token the groups' integer dots in Swift
    /// SIMD and the float sums in the scalar reference's order.
    static func genericInt8Forward(_ weights: WeightMatrix, quantized x: QuantizedActivations,
                                   output: UnsafeMutablePointer<Float>, accumulate: Bool, pool: ThreadPool) {
        let sums = groupSums(x)
        let rows = weights.rows, columns = weights.columns, groups = columns / 16, format = weights.format
        nonisolated(unsafe) let output = output
        pool.parallelFor(rows, minimumChunk: 16) { range in
            let q = UnsafeMutablePointer<Int8>.allocate(capacity: columns)
            let factors = UnsafeMutablePointer<Float>.allocate(capacity: 2 * groups)
            defer { q.deallocate(); factors.deallocate() }
            let scales = factors, offsets = factors + groups
            let size = format.blockSize, perBlock = size / 16
            for row in range {
                for b in 0..<(columns / size) {
                    decode(format, weights.rowPointer(row) + b * format.bytesPerBlock, q: q + b * size,
                           scales: scales + b * perBlock, offsets: offsets + b * perBlock)
                }
                for t in 0..<x.tokens {
                    let qx = UnsafeRawPointer(x.values + t * columns), w = UnsafeRawPointer(q)
                    var total: Float = 0
                    for c in 0..<(columns / 32) {
                        let d0 = groupDot(w + 32 * c, qx + 32 * c), d1 = groupDot(w + 32 * c + 16, qx + 32 * c + 16)
                        let dx = x.scales[t * (columns / 32) + c], g = 2 * c
                        total += dx * (scales[g] * Float(d0) + scales[g + 1] * Float(d1))
                            + (offsets[g] * sums[t * groups + g] + offsets[g + 1] * sums[t * groups + g + 1])
                    }
                    if accumulate { output[t * rows + row] += total } else { output[t * rows + row] = total }
                }
            }
        }
        withExtendedLifetime(x) {}
    }

    /// Σ a[i]·b[i] over 16 int8 values, in Swift SIMD (products widened to 16 bits, pairs summed in 32).
    @inline(__always)
    static func groupDot(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer) -> Int32 {
        let x = a.loadUnaligned(as: SIMD16<Int8>.self), y = b.loadUnaligned(as: SIMD16<Int8>.self)
        let low = GenericInt8.madd(widened(x.lowHalf), widened(y.lowHalf))
        let high = GenericInt8.madd(widened(x.highHalf), widened(y.highHalf))
        return (low &+ high).wrappedSum()
    }

    /// Int8 lanes widened to Int16, lane by lane (see `GenericInt8.widened` for why).
    @inline(__always)
    static func widened(_ v: SIMD8<Int8>) -> SIMD8<Int16> {
        SIMD8<Int16>(Int16(v[0]), Int16(v[1]), Int16(v[2]), Int16(v[3]), Int16(v[4]), Int16(v[5]), Int16(v[6]), Int16(v[7]))
    }

    /// The scalar reference of the product: one row, one token, one group of 16 at a time.
    public static func scalarInt8Forward(_ weights: WeightMatrix, quantized x: QuantizedActivations,
                                         output: UnsafeMutablePointer<Float>, accumulate: Bool = false) {
        require(handles(weights.format), "QuantBlocks has no product for \(weights.format)")
        let sums = groupSums(x)
        let columns = weights.columns, groups = columns / 16, format = weights.format, size = format.blockSize
        var q = [Int8](repeating: 0, count: size), scales = [Float](repeating: 0, count: size / 16)
        var offsets = scales
        for row in 0..<weights.rows {
            for t in 0..<x.tokens {
                var total: Float = 0
                for b in 0..<(columns / size) {
                    decode(format, weights.rowPointer(row) + b * format.bytesPerBlock, q: &q, scales: &scales, offsets: &offsets)
                    for k in 0..<(size / 32) {
                        let c = b * (size / 32) + k
                        var dots: [Int32] = [0, 0]
                        for i in 0..<32 { dots[i / 16] += Int32(q[32 * k + i]) * Int32(x.values[t * columns + 32 * c + i]) }
                        let dx = x.scales[t * (columns / 32) + c], g = 2 * c
                        total += dx * (scales[2 * k] * Float(dots[0]) + scales[2 * k + 1] * Float(dots[1]))
                            + (offsets[2 * k] * sums[t * groups + g] + offsets[2 * k + 1] * sums[t * groups + g + 1])
                    }
                }
                if accumulate { output[t * weights.rows + row] += total } else { output[t * weights.rows + row] = total }
            }
        }
    }
}

extension WeightFormat {
    /// ggml's type number for the formats of `QuantBlocks`, as kernels_kquants.c expects it.
    var blockTypeNumber: Int32? {
        switch self {
        case .q5_0: return 6
        case .q5_1: return 7
        case .q2_K: return 10
        case .q3_K: return 11
        case .q4_K: return 12
        case .q5_K: return 13
        case .q6_K: return 14
        default: return nil
        }
    }
}
