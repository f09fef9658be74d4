/// The generic tier's int8 product in portable Swift SIMD: 128-bit integer vectors that become SSE2 on any
/// x86-64 (no SSSE3/AVX assumed) and, by the same LLVM vector IR, NEON on ARM (not compiled for ARM here).
/// The scalar `Linear.scalarInt8Forward` is its reference.
///
/// The result equals the scalar reference bit for bit: the integer block sums are exact, and each row's
/// float accumulation is the same sequence of operations (`total += Float(dot)·(d·dx) + m·s`, block by
/// block), only carried out for four rows at once in the lanes of a `SIMD4<Float>`.
///
/// Layout: a block's 32 weights unpack to four vectors of eight Int16 in the order the shifts and masks
/// give without shuffles — for each half of 16 elements, the even ones then the odd ones (a 16-byte load
/// read as eight little-endian UInt16 holds elements 2i in its low bytes and 2i+1 in its high bytes;
/// a Q4 byte holds element i in its low nibble and i+16 in its high one). The activations are widened
/// once per call into the same order, so the products pair up and `madd` (SSE2's `pmaddwd`) sums them.
/// Weights are unpacked into a scratch panel of four rows before the dot products: unpacked in registers,
/// LLVM sees their 4-bit range and rewrites the 16-bit multiply into a slow sequence of packs and shuffles.
enum GenericInt8 {
    /// Rows unpacked and multiplied together (they share each load of the activations).
    static let groupRows = 4

    /// Int16 lanes widened to Int32, spelled lane by lane. The standard library's generic
    /// `SIMD8<Int32>(truncatingIfNeeded:)` is an element loop that the inliner sometimes leaves as an
    /// out-of-line call (one build made 20 such calls per block loop and ran 5× slower, the `pmaddwd`
    /// pattern lost); this function is always inlined and LLVM folds its lanes into one vector widening.
    @inline(__always)
    static func widened(_ v: SIMD8<Int16>) -> SIMD8<Int32> {
        SIMD8<Int32>(Int32(v[0]), Int32(v[1]), Int32(v[2]), Int32(v[3]), Int32(v[4]), Int32(v[5]), Int32(v[6]), Int32(v[7]))
    }

    /// a·b widened to Int32, adjacent products summed: SSE2's `pmaddwd` (checked with objdump).
    @inline(__always)
    static func madd(_ a: SIMD8<Int16>, _ b: SIMD8<Int16>) -> SIMD4<Int32> {
        let products = widened(a) &* widened(b)
        return products.evenHalf &+ products.oddHalf
    }

    /// One block's integer dot product, as four partial sums (their total is the block's dot product).
    @inline(__always)
    static func blockDot(_ w: UnsafeRawPointer, _ x: UnsafeRawPointer) -> SIMD4<Int32> {
        typealias V = SIMD8<Int16>
        let low = madd(w.load(as: V.self), x.load(as: V.self))
            &+ madd(w.load(fromByteOffset: 16, as: V.self), x.load(fromByteOffset: 16, as: V.self))
        let high = madd(w.load(fromByteOffset: 32, as: V.self), x.load(fromByteOffset: 32, as: V.self))
            &+ madd(w.load(fromByteOffset: 48, as: V.self), x.load(fromByteOffset: 48, as: V.self))
        return low &+ high
    }

    /// The totals of four vectors' lanes, as one vector: lane r is Σ pr.
    @inline(__always)
    static func laneTotals(_ p0: SIMD4<Int32>, _ p1: SIMD4<Int32>, _ p2: SIMD4<Int32>, _ p3: SIMD4<Int32>) -> SIMD4<Int32> {
        let a = SIMD4(lowHalf: p0.lowHalf, highHalf: p1.lowHalf) &+ SIMD4(lowHalf: p0.highHalf, highHalf: p1.highHalf)
        let b = SIMD4(lowHalf: p2.lowHalf, highHalf: p3.lowHalf) &+ SIMD4(lowHalf: p2.highHalf, highHalf: p3.highHalf)
        return SIMD4(lowHalf: a.evenHalf, highHalf: b.evenHalf) &+ SIMD4(lowHalf: a.oddHalf, highHalf: b.oddHalf)
    }

    /// The activations' int8 values widened to Int16 in the weights' unpacked order (2 bytes per column).
    static func widen(_ x: QuantizedActivations) -> UnsafeMutableRawPointer {
        let count = x.tokens * x.columns
        let widened = UnsafeMutableRawPointer.allocate(byteCount: max(16, 2 * count), alignment: 16)
        let source = UnsafeRawPointer(x.values)
        for chunk in 0..<(count / 16) {
            // Sixteen int8 values read as eight Int16: the low byte is element 2i, the high byte 2i+1.
            let pairs = source.loadUnaligned(fromByteOffset: 16 * chunk, as: SIMD8<Int16>.self)
            widened.storeBytes(of: (pairs &<< 8) &>> 8, toByteOffset: 32 * chunk, as: SIMD8<Int16>.self)
            widened.storeBytes(of: pairs &>> 8, toByteOffset: 32 * chunk + 16, as: SIMD8<Int16>.self)
        }
        return widened
    }

    /// Unpacks one row: 64 bytes of Int16 weights per block into `integers`, and per block the scale d and
    /// the offset term m (weight = d·q + m, so Σ w·x = d·dx·Σ q·qx + m·s) into lane `lane` of `d`, `m`.
    static func unpack(_ format: WeightFormat, row: UnsafeRawPointer, blocks: Int, into integers: UnsafeMutableRawPointer,
                       d: UnsafeMutablePointer<Float>, m: UnsafeMutablePointer<Float>, lane: Int) {
        let mask = SIMD8<UInt16>(repeating: 0x000F)
        for b in 0..<blocks {
            let block = row + b * format.bytesPerBlock, out = integers + 64 * b
            let scale = Dequantize.half(block.loadUnaligned(as: UInt16.self))
            d[groupRows * b + lane] = scale
            switch format {
            case .q8_0:
                m[groupRows * b + lane] = 0
                for half in 0..<2 {
                    let pairs = block.loadUnaligned(fromByteOffset: 2 + 16 * half, as: SIMD8<Int16>.self)
                    out.storeBytes(of: (pairs &<< 8) &>> 8, toByteOffset: 32 * half, as: SIMD8<Int16>.self)
                    out.storeBytes(of: pairs &>> 8, toByteOffset: 32 * half + 16, as: SIMD8<Int16>.self)
                }
                continue
            case .q4_0:
                m[groupRows * b + lane] = -8 * scale
            default:
                m[groupRows * b + lane] = Dequantize.half(block.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
            }
            let pairs = block.loadUnaligned(fromByteOffset: format == .q4_0 ? 2 : 4, as: SIMD8<UInt16>.self)
            out.storeBytes(of: pairs & mask, as: SIMD8<UInt16>.self)
            out.storeBytes(of: (pairs &>> 8) & mask, toByteOffset: 16, as: SIMD8<UInt16>.self)
            out.storeBytes(of: (pairs &>> 4) & mask, toByteOffset: 32, as: SIMD8<UInt16>.self)
            out.storeBytes(of: pairs &>> 12, toByteOffset: 48, as: SIMD8<UInt16>.self)
        }
    }

    /// Four unpacked rows (`rowStride` bytes apart) against one token's widened activations: lane r is
    /// row r's Σ_b Float(dot)·(d·dx) + m·s, accumulated in block order.
    @inline(__always)
    static func fourRows(_ integers: UnsafeRawPointer, rowStride: Int, x: UnsafeRawPointer, scales: UnsafePointer<Float>,
                         sums: UnsafePointer<Float>, d: UnsafePointer<Float>, m: UnsafePointer<Float>, blocks: Int) -> SIMD4<Float> {
        var totals = SIMD4<Float>()
        let rawD = UnsafeRawPointer(d), rawM = UnsafeRawPointer(m)
        for b in 0..<blocks {
            let w = integers + 64 * b, xb = x + 64 * b
            let dots = laneTotals(blockDot(w, xb), blockDot(w + rowStride, xb), blockDot(w + 2 * rowStride, xb),
                                  blockDot(w + 3 * rowStride, xb))
            let blockD = rawD.loadUnaligned(fromByteOffset: 16 * b, as: SIMD4<Float>.self)
            let blockM = rawM.loadUnaligned(fromByteOffset: 16 * b, as: SIMD4<Float>.self)
            let exact = SIMD4<Float>(Float(dots[0]), Float(dots[1]), Float(dots[2]), Float(dots[3]))  // |dot| < 2²⁴
            totals += exact * (blockD * scales[b]) + blockM * sums[b]
        }
        return totals
    }

    /// `output[t, r] (+)= Σ_c W[r, c] · x[t, c]` for Q8_0, Q4_0 and Q4_1 weights and int8 activations.
    static func forward(_ weights: WeightMatrix, quantized x: QuantizedActivations, output: UnsafeMutablePointer<Float>,
                        accumulate: Bool, pool: ThreadPool) {
        require(weights.format.hasIntegerKernel, "no integer kernel for \(weights.format)")
        let tokens = x.tokens, rows = weights.rows, columns = weights.columns, blocks = columns / 32
        nonisolated(unsafe) let widened = UnsafeRawPointer(widen(x)), output = output
        defer { widened.deallocate() }
        pool.parallelFor(rows, minimumChunk: 16) { range in
            let integers = UnsafeMutableRawPointer.allocate(byteCount: max(16, groupRows * 2 * columns), alignment: 16)
            let d = UnsafeMutablePointer<Float>.allocate(capacity: max(1, groupRows * blocks))
            let m = UnsafeMutablePointer<Float>.allocate(capacity: max(1, groupRows * blocks))
            defer { integers.deallocate(); d.deallocate(); m.deallocate() }
            var row = range.lowerBound
            while row < range.upperBound {
                let count = min(groupRows, range.upperBound - row)
                // A group short of four rows repeats its last row in the spare lanes (not stored).
                for lane in 0..<groupRows {
                    unpack(weights.format, row: weights.rowPointer(row + min(lane, count - 1)), blocks: blocks,
                           into: integers + lane * 2 * columns, d: d, m: m, lane: lane)
                }
                for t in 0..<tokens {
                    let totals = fourRows(integers, rowStride: 2 * columns, x: widened + t * 2 * columns,
                                          scales: x.scales + t * blocks, sums: x.sums + t * blocks, d: d, m: m, blocks: blocks)
                    let out = output + t * rows + row
                    for lane in 0..<count {
                        if accumulate { out[lane] += totals[lane] } else { out[lane] = totals[lane] }
                    }
                }
                row += count
            }
        }
        withExtendedLifetime(x) {}
    }
}
