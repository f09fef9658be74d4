/// Conversion of float32 rows into stored formats, with ggml's reference rounding rules.
public enum Quantize {
    @inline(__always)
    static func storeHalf(_ value: Float, _ pointer: UnsafeMutableRawPointer, _ offset: Int) {
        pointer.storeBytes(of: Float16(value).bitPattern, toByteOffset: offset, as: UInt16.self)
    }

    /// Writes `count` values (a multiple of the block size) in `format` to `destination`
    /// (`format.rowBytes(columns: count)` bytes).
    public static func row(_ values: UnsafePointer<Float>, count: Int, format: WeightFormat,
                           into destination: UnsafeMutableRawPointer) {
        require(count % format.blockSize == 0, "row of \(count) is not a multiple of \(format.blockSize)")
        switch format {
        case .f32:
            destination.copyMemory(from: values, byteCount: 4 * count)
        case .f16:
            for i in 0..<count { storeHalf(values[i], destination, 2 * i) }
        case .bf16:
            // Round to nearest even on the upper 16 bits; NaN stays NaN.
            for i in 0..<count {
                let bits = values[i].bitPattern
                let rounded: UInt32 = values[i].isNaN ? (bits | 0x0040_0000) : bits &+ 0x7FFF &+ ((bits >> 16) & 1)
                destination.storeBytes(of: UInt16(truncatingIfNeeded: rounded >> 16), toByteOffset: 2 * i, as: UInt16.self)
            }
        case .q8_0:
            // d = max|x| / 127, q = round(x / d)
            for block in 0..<(count / 32) {
                let x = values + block * 32, base = destination + block * 34
                var amax: Float = 0
                for j in 0..<32 { amax = max(amax, abs(x[j])) }
                let d = amax / 127
                let inverse: Float = d != 0 ? 1 / d : 0
                storeHalf(d, base, 0)
                for j in 0..<32 {
                    base.storeBytes(of: Int8((x[j] * inverse).rounded()), toByteOffset: 2 + j, as: Int8.self)
                }
            }
        case .q4_0:
            // d = m / −8 where m is the value of largest magnitude; q = clamp(x/d + 8.5) in 0...15
            for block in 0..<(count / 32) {
                let x = values + block * 32, base = destination + block * 18
                var amax: Float = 0, signedMax: Float = 0
                for j in 0..<32 where abs(x[j]) > amax {
                    amax = abs(x[j])
                    signedMax = x[j]
                }
                let d = signedMax / -8
                let inverse: Float = d != 0 ? 1 / d : 0
                storeHalf(d, base, 0)
                for j in 0..<16 {
                    let lo = min(15, Int8(truncatingIfNeeded: Int(x[j] * inverse + 8.5)))
                    let hi = min(15, Int8(truncatingIfNeeded: Int(x[j + 16] * inverse + 8.5)))
                    base.storeBytes(of: UInt8(lo) | UInt8(hi) << 4, toByteOffset: 2 + j, as: UInt8.self)
                }
            }
        case .q4_1:
            // d = (max − min) / 15, m = min, q = clamp((x − min)/d + 0.5) in 0...15
            for block in 0..<(count / 32) {
                let x = values + block * 32, base = destination + block * 20
                var lowest = Float.infinity, highest = -Float.infinity
                for j in 0..<32 {
                    lowest = min(lowest, x[j])
                    highest = max(highest, x[j])
                }
                let d = (highest - lowest) / 15
                let inverse: Float = d != 0 ? 1 / d : 0
                storeHalf(d, base, 0)
                storeHalf(lowest, base, 2)
                for j in 0..<16 {
                    let lo = min(15, Int8(truncatingIfNeeded: Int((x[j] - lowest) * inverse + 0.5)))
                    let hi = min(15, Int8(truncatingIfNeeded: Int((x[j + 16] - lowest) * inverse + 0.5)))
                    base.storeBytes(of: UInt8(lo) | UInt8(hi) << 4, toByteOffset: 4 + j, as: UInt8.self)
                }
            }
        case .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K:
            QuantBlocks.quantizeRow(values, count: count, format: format, into: destination)
        }
    }

    /// A whole (rows, columns) float32 matrix quantized into a new owned `WeightMatrix`.
    public static func matrix(_ values: [Float], rows: Int, columns: Int, format: WeightFormat) -> WeightMatrix {
        let rowBytes = format.rowBytes(columns: columns)
        let storage = ByteBuffer(count: rows * rowBytes)
        values.withUnsafeBufferPointer { source in
            for r in 0..<rows {
                row(source.baseAddress! + r * columns, count: columns, format: format, into: storage.pointer + r * rowBytes)
            }
        }
        return WeightMatrix(format: format, rows: rows, columns: columns, data: UnsafeRawPointer(storage.pointer), owner: storage)
    }
}

/// An owned, 64-byte aligned byte buffer (quantized matrices made in memory).
public final class ByteBuffer: @unchecked Sendable {
    public let pointer: UnsafeMutableRawPointer
    public let count: Int

    public init(count: Int) {
        self.count = count
        pointer = .allocate(byteCount: max(count, 1), alignment: 64)
        pointer.initializeMemory(as: UInt8.self, repeating: 0, count: max(count, 1))
    }

    deinit { pointer.deallocate() }
}
