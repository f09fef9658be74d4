/// ggml's Q5_0, Q5_1 and K-quant blocks, decoded one element at a time: the reference that the dequantizer,
/// the integer products and the C kernels are checked against (and the generic tier's path).
///
/// Every one of these formats stores value = scale·q + offset, with integers q and, per group of 16
/// values, one scale and one offset (the 32-value formats repeat theirs over both halves), so a block
/// decodes to `q` (Int8) plus `scales`/`offsets` per 16 values. Layouts (byte offsets in a block, f16
/// values as `d`, `dmin`; element e of a super-block of 256):
///
/// | format | bytes | layout | q of element e | scale, offset of group g = e/16 |
/// |---|---|---|---|---|
/// | Q5_0 | 22 | d, qh u32, qs[16] | (nibble | bit e of qh << 4) − 16; nibble: qs[e % 16], low half for e < 16 | d, 0 |
/// | Q5_1 | 24 | d, m, qh u32, qs[16] | nibble | bit e of qh << 4 | d, m |
/// | Q2_K | 84 | scales[16], qs[64], d, dmin | qs[32h + l] >> 2s & 3, e = 128h + 32s + l | d·(sc & 15), −dmin·(sc >> 4) |
/// | Q3_K | 110 | hmask[32], qs[64], scales[12], d | as Q2_K, − 4 unless bit e/32 of hmask[e % 32] | d·(6-bit scale − 32), 0 |
/// | Q4_K | 144 | d, dmin, scales[12], qs[128] | qs[32c + l] >> 4s & 15, e = 64c + 32s + l | d·sc(e/32), −dmin·m(e/32) |
/// | Q5_K | 176 | d, dmin, scales[12], qh[32], qs[128] | Q4_K's | bit e/32 of qh[e % 32] << 4 | as Q4_K |
/// | Q6_K | 210 | ql[128], qh[64], scales[16] (int8), d | (ql[64h + m] >> 4s & 15 | (qh[32h + l] >> 2t & 3) << 4) − 32, e = 128h + 64s + m = 128h + 32t + l | d·scales[g], 0 |
///
/// The 6-bit scales and mins of Q4_K/Q5_K (8 sub-blocks of 32) pack into 12 bytes: for j < 4, sc = b[j] & 63 and
/// m = b[j + 4] & 63; for j ≥ 4, sc = b[j + 4] & 15 | (b[j − 4] >> 6) << 4 and m = b[j + 4] >> 4 | (b[j] >> 6) << 4.
/// Q3_K's 16 scales: the low 4 bits from b[i] (i < 8) or b[i − 8] >> 4, the high 2 from b[8 + i % 4] >> 2(i / 4).
/// Source of the layouts: ggml-common.h's block structs, read against gguf-py's `quants.py`, which the tests use
/// as the reference (Tests/LanguageModelTests/Reference/make_quant_types.py).
public enum QuantBlocks {
    /// Whether `format` is one of the formats decoded here.
    public static func handles(_ format: WeightFormat) -> Bool {
        switch format {
        case .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K: return true
        default: return false
        }
    }

    @inline(__always)
    static func half(_ block: UnsafeRawPointer, _ offset: Int) -> Float {
        Dequantize.half(block.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    @inline(__always)
    static func byte(_ block: UnsafeRawPointer, _ offset: Int) -> Int { Int(block.load(fromByteOffset: offset, as: UInt8.self)) }

    /// Decodes one block of `format` (`format.blockSize` values): q[i], and per 16 values scales[g], offsets[g],
    /// so that value i = scales[i / 16]·q[i] + offsets[i / 16], rounded as ggml (and gguf-py) round it.
    public static func decode(_ format: WeightFormat, _ block: UnsafeRawPointer, q: UnsafeMutablePointer<Int8>,
                              scales: UnsafeMutablePointer<Float>, offsets: UnsafeMutablePointer<Float>) {
        switch format {
        case .q5_0, .q5_1:
            let isQ5_0 = format == .q5_0
            let high = block.loadUnaligned(fromByteOffset: isQ5_0 ? 2 : 4, as: UInt32.self)
            let quants = isQ5_0 ? 6 : 8
            for j in 0..<16 {
                let packed = byte(block, quants + j)
                let low = packed & 15 | Int((high >> UInt32(j)) & 1) << 4
                let up = packed >> 4 | Int((high >> UInt32(j + 16)) & 1) << 4
                q[j] = Int8(isQ5_0 ? low - 16 : low)
                q[j + 16] = Int8(isQ5_0 ? up - 16 : up)
            }
            let d = half(block, 0), m: Float = isQ5_0 ? 0 : half(block, 2)
            scales[0] = d; scales[1] = d
            offsets[0] = m; offsets[1] = m
        case .q2_K:
            let d = half(block, 80), dmin = half(block, 82)
            for e in 0..<256 {
                let (h, s, l) = (e / 128, (e / 32) % 4, e % 32)
                q[e] = Int8((byte(block, 16 + 32 * h + l) >> (2 * s)) & 3)
            }
            for g in 0..<16 {
                let packed = byte(block, g)
                scales[g] = d * Float(packed & 15)
                offsets[g] = -(dmin * Float(packed >> 4))
            }
        case .q3_K:
            let d = half(block, 108)
            for e in 0..<256 {
                let (h, s, l) = (e / 128, (e / 32) % 4, e % 32)
                let low = (byte(block, 32 + 32 * h + l) >> (2 * s)) & 3
                let keep = (byte(block, e % 32) >> (e / 32)) & 1
                q[e] = Int8(low - (keep == 1 ? 0 : 4))
            }
            for g in 0..<16 {
                let low = g < 8 ? byte(block, 96 + g) & 15 : byte(block, 96 + g - 8) >> 4
                let high = (byte(block, 104 + g % 4) >> (2 * (g / 4))) & 3
                scales[g] = d * Float((low | high << 4) - 32)
                offsets[g] = 0
            }
        case .q4_K, .q5_K:
            let d = half(block, 0), dmin = half(block, 2)
            let isQ5 = format == .q5_K, quants = isQ5 ? 48 : 16
            for e in 0..<256 {
                let (c, s, l) = (e / 64, (e / 32) % 2, e % 32)
                var value = (byte(block, quants + 32 * c + l) >> (4 * s)) & 15
                if isQ5 { value |= ((byte(block, 16 + l) >> (e / 32)) & 1) << 4 }
                q[e] = Int8(value)
            }
            for j in 0..<8 {
                let (sc, m) = scaleAndMin(block + 4, j)
                scales[2 * j] = d * Float(sc); scales[2 * j + 1] = scales[2 * j]
                offsets[2 * j] = -(dmin * Float(m)); offsets[2 * j + 1] = offsets[2 * j]
            }
        case .q6_K:
            let d = half(block, 208)
            for e in 0..<256 {
                let h = e / 128, inHalf = e % 128
                let low = (byte(block, 64 * h + inHalf % 64) >> (4 * (inHalf / 64))) & 15
                let up = (byte(block, 128 + 32 * h + inHalf % 32) >> (2 * (inHalf / 32))) & 3
                q[e] = Int8((low | up << 4) - 32)
            }
            for g in 0..<16 {
                scales[g] = d * Float(block.load(fromByteOffset: 192 + g, as: Int8.self))
                offsets[g] = 0
            }
        default:
            require(false, "QuantBlocks cannot decode \(format)")
        }
    }

    /// Q4_K/Q5_K's 6-bit scale and min of sub-block j (0..<8) from the 12 packed bytes at `packed`.
    @inline(__always)
    static func scaleAndMin(_ packed: UnsafeRawPointer, _ j: Int) -> (Int, Int) {
        if j < 4 { return (byte(packed, j) & 63, byte(packed, j + 4) & 63) }
        return (byte(packed, j + 4) & 15 | (byte(packed, j - 4) >> 6) << 4, byte(packed, j + 4) >> 4 | (byte(packed, j) >> 6) << 4)
    }

    /// `count` values (whole blocks) of one row to float32: scale·q + offset, per element.
    public static func dequantizeRow(format: WeightFormat, source: UnsafeRawPointer, count: Int,
                                     into output: UnsafeMutablePointer<Float>) {
        let size = format.blockSize
        withUnsafeTemporaryAllocation(of: Int8.self, capacity: size) { q in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * (size / 16)) { factors in
                let scales = factors.baseAddress!, offsets = scales + size / 16
                for block in 0..<(count / size) {
                    decode(format, source + block * format.bytesPerBlock, q: q.baseAddress!, scales: scales, offsets: offsets)
                    let out = output + block * size
                    for i in 0..<size { out[i] = scales[i / 16] * Float(q[i]) + offsets[i / 16] }
                }
            }
        }
    }
}

extension QuantBlocks {
    /// One block of 32 values in Q5_0 (`minimum` false) or Q5_1, with ggml's reference rounding (what
    /// gguf-py's `quantize` also does): Q5_0 d = m / −16 for m the value of largest magnitude, q =
    /// min(31, trunc(x/d + 16.5)); Q5_1 d = (max − min)/31, q = min(31, trunc((x − min)/d + 0.5)).
    static func quantizeQ5(_ x: UnsafePointer<Float>, minimum: Bool, into block: UnsafeMutableRawPointer) {
        var q = [Int](repeating: 0, count: 32)
        if minimum {
            var lowest = Float.infinity, highest = -Float.infinity
            for j in 0..<32 {
                lowest = min(lowest, x[j])
                highest = max(highest, x[j])
            }
            let d = (highest - lowest) / 31
            let inverse: Float = d != 0 ? 1 / d : 0
            for j in 0..<32 { q[j] = min(31, Int((x[j] - lowest) * inverse + 0.5)) }
            block.storeBytes(of: Float16(d).bitPattern, as: UInt16.self)
            block.storeBytes(of: Float16(lowest).bitPattern, toByteOffset: 2, as: UInt16.self)
        } else {
            var amax: Float = 0, signedMax: Float = 0
            for j in 0..<32 where abs(x[j]) > amax {
                amax = abs(x[j])
                signedMax = x[j]
            }
            let d = signedMax / -16
            let inverse: Float = d != 0 ? 1 / d : 0
            for j in 0..<32 { q[j] = min(31, Int(x[j] * inverse + 16.5)) }
            block.storeBytes(of: Float16(d).bitPattern, as: UInt16.self)
        }
        var high: UInt32 = 0
        for j in 0..<32 { high |= UInt32(q[j] >> 4) << UInt32(j) }
        let quants = minimum ? 8 : 6
        block.storeBytes(of: high, toByteOffset: quants - 4, as: UInt32.self)
        for j in 0..<16 {
            block.storeBytes(of: UInt8(q[j] & 15 | (q[j + 16] & 15) << 4), toByteOffset: quants + j, as: UInt8.self)
        }
    }
}
