/// Conversion of stored weights to float32: half precision, bfloat16 and ggml's quantized blocks.
public enum Dequantize {
    /// IEEE 754 binary16 bits to float32 (exact, every pattern: zeros, subnormals, infinities, NaN payloads).
    ///
    /// Integer and float32 operations only: on x86-64 without F16C (the generic tier's baseline),
    /// `Float(Float16(bitPattern:))` is a call into the compiler runtime (`__extendhfsf2`), which took 16%
    /// of generic-tier generation. The magnitude's bits shifted into float32's exponent and mantissa read
    /// as a float 2¹¹² too small (15 − 127 in the exponent bias), so one exact multiplication by 2¹¹²
    /// rescales normal and subnormal halves alike; an all-ones exponent (infinity, NaN) stays all ones.
    @inline(__always)
    public static func half(_ bits: UInt16) -> Float {
        let magnitude = UInt32(bits & 0x7FFF) << 13
        let value = magnitude >= 0x0F80_0000 ? magnitude | 0x7F80_0000 : (Float(bitPattern: magnitude) * 0x1p112).bitPattern
        return Float(bitPattern: value | UInt32(bits & 0x8000) << 16)
    }

    /// bfloat16 bits to float32 (exact: bfloat16 is float32's upper half).
    @inline(__always)
    public static func bfloat16(_ bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) << 16)
    }

    @inline(__always)
    static func loadHalf(_ pointer: UnsafeRawPointer, _ offset: Int) -> Float {
        half(pointer.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    /// Dequantizes `count` elements of one row (count a multiple of the block size): the generic tier's
    /// path, in Swift SIMD for the quantized formats (equal bit for bit to `scalarRow`, its reference).
    public static func row(format: WeightFormat, source: UnsafeRawPointer, count: Int,
                           into output: UnsafeMutablePointer<Float>) {
        let out = UnsafeMutableRawPointer(output)
        switch format {
        case .q8_0:
            for block in 0..<(count / 32) {
                let base = source + block * 34
                let d = SIMD8<Float>(repeating: loadHalf(base, 0))
                for part in 0..<4 {
                    let q = base.loadUnaligned(fromByteOffset: 2 + 8 * part, as: SIMD8<Int8>.self)
                    out.storeBytes(of: floats(q) * d, toByteOffset: 128 * block + 32 * part, as: SIMD8<Float>.self)
                }
            }
        case .q4_0, .q4_1:
            // Element j < 16 is byte j's low nibble, element 16 + j its high nibble.
            let q4_0 = format == .q4_0, blockBytes = format.bytesPerBlock
            for block in 0..<(count / 32) {
                let base = source + block * blockBytes
                let d = SIMD8<Float>(repeating: loadHalf(base, 0))
                let m = q4_0 ? SIMD8<Float>() : SIMD8<Float>(repeating: loadHalf(base, 2))
                let bytes = base.loadUnaligned(fromByteOffset: q4_0 ? 2 : 4, as: SIMD16<UInt8>.self)
                let at = out + 128 * block
                storeNibbles(bytes.lowHalf & 0x0F, d: d, m: m, q4_0: q4_0, to: at)
                storeNibbles(bytes.highHalf & 0x0F, d: d, m: m, q4_0: q4_0, to: at + 32)
                storeNibbles(bytes.lowHalf &>> 4, d: d, m: m, q4_0: q4_0, to: at + 64)
                storeNibbles(bytes.highHalf &>> 4, d: d, m: m, q4_0: q4_0, to: at + 96)
            }
        default:
            scalarRow(format: format, source: source, count: count, into: output)
        }
    }

    /// Eight 4-bit values as floats: (q − 8)·d for Q4_0, q·d + m for Q4_1 (the scalar path's operations;
    /// q − 8 is exact in float).
    @inline(__always)
    static func storeNibbles(_ nibbles: SIMD8<UInt8>, d: SIMD8<Float>, m: SIMD8<Float>, q4_0: Bool,
                             to out: UnsafeMutableRawPointer) {
        let q = floats(nibbles)
        out.storeBytes(of: q4_0 ? (q - 8) * d : q * d + m, as: SIMD8<Float>.self)
    }

    /// Lane-by-lane conversions, always inlined (the standard library's generic SIMD conversions are
    /// element loops the inliner may leave out of line; see `GenericInt8.widened`).
    @inline(__always)
    static func floats(_ v: SIMD8<Int8>) -> SIMD8<Float> {
        SIMD8<Float>(Float(v[0]), Float(v[1]), Float(v[2]), Float(v[3]), Float(v[4]), Float(v[5]), Float(v[6]), Float(v[7]))
    }

    @inline(__always)
    static func floats(_ v: SIMD8<UInt8>) -> SIMD8<Float> {
        SIMD8<Float>(Float(v[0]), Float(v[1]), Float(v[2]), Float(v[3]), Float(v[4]), Float(v[5]), Float(v[6]), Float(v[7]))
    }

    /// `row` one element at a time: the reference the SIMD path is tested against (and the path for
    /// float32, float16 and bfloat16 rows, which have no block structure to vectorise).
    static func scalarRow(format: WeightFormat, source: UnsafeRawPointer, count: Int,
                          into output: UnsafeMutablePointer<Float>) {
        switch format {
        case .f32:
            output.update(from: source.assumingMemoryBound(to: Float.self), count: count)
        case .f16:
            for i in 0..<count { output[i] = loadHalf(source, 2 * i) }
        case .bf16:
            for i in 0..<count { output[i] = bfloat16(source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
        case .q8_0:
            for block in 0..<(count / 32) {
                let base = source + block * 34
                let d = loadHalf(base, 0)
                let quants = (base + 2).assumingMemoryBound(to: Int8.self)
                for j in 0..<32 { output[block * 32 + j] = Float(quants[j]) * d }
            }
        case .q4_0:
            for block in 0..<(count / 32) {
                let base = source + block * 18
                let d = loadHalf(base, 0)
                let nibbles = (base + 2).assumingMemoryBound(to: UInt8.self)
                for j in 0..<16 {
                    output[block * 32 + j] = Float(Int(nibbles[j] & 0x0F) - 8) * d
                    output[block * 32 + j + 16] = Float(Int(nibbles[j] >> 4) - 8) * d
                }
            }
        case .q4_1:
            for block in 0..<(count / 32) {
                let base = source + block * 20
                let d = loadHalf(base, 0)
                let m = loadHalf(base, 2)
                let nibbles = (base + 4).assumingMemoryBound(to: UInt8.self)
                for j in 0..<16 {
                    output[block * 32 + j] = Float(nibbles[j] & 0x0F) * d + m
                    output[block * 32 + j + 16] = Float(nibbles[j] >> 4) * d + m
                }
            }
        case .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K:
            QuantBlocks.dequantizeRow(format: format, source: source, count: count, into: output)
        }
    }
}
