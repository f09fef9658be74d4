/// Quantization to Q4_K, Q5_K and Q6_K (layouts in `QuantBlocks`), by weighted least squares per sub-block
/// as ggml's reference quantizer does (each sub-block's scale, and min, fitted to minimise Σ w·(value − x)²
/// over a range of candidate roundings, w = rms + |x| for Q4_K/Q5_K and x² for Q6_K), then the sub-block
/// scales quantized against the super-block's largest, and the values rounded again with the stored scales.
/// Not bit-exact with ggml (its search steps differ); KQuantizeTests holds the round-trip error to ggml's own.
extension QuantBlocks {
    /// `count` values (whole blocks) of one row in `format`, Q5_0, Q5_1, Q4_K, Q5_K or Q6_K.
    static func quantizeRow(_ values: UnsafePointer<Float>, count: Int, format: WeightFormat,
                            into destination: UnsafeMutableRawPointer) {
        let size = format.blockSize
        for block in 0..<(count / size) {
            let x = values + block * size, target = destination + block * format.bytesPerBlock
            switch format {
            case .q5_0, .q5_1: quantizeQ5(x, minimum: format == .q5_1, into: target)
            case .q4_K, .q5_K: quantizeQ4KQ5K(x, bits: format == .q4_K ? 4 : 5, into: target)
            case .q6_K: quantizeQ6K(x, into: target)
            default: require(false, "quantizing to \(format) is not implemented: Conclave reads it; llama-quantize writes it")
            }
        }
    }

    /// One super-block of 256 values in Q4_K (`bits` 4) or Q5_K (`bits` 5).
    static func quantizeQ4KQ5K(_ x: UnsafePointer<Float>, bits: Int, into block: UnsafeMutableRawPointer) {
        let nmax = (1 << bits) - 1
        var scales = [Float](repeating: 0, count: 8), mins = scales
        for j in 0..<8 {
            let sub = UnsafeBufferPointer(start: x + 32 * j, count: 32)
            let rms = (sub.reduce(0) { $0 + $1 * $1 } / 32).squareRoot()
            (scales[j], mins[j]) = fitScaleAndMin(sub, weights: sub.map { rms + abs($0) }, nmax: nmax)
        }
        let maxScale = scales.max()!, maxMin = mins.max()!
        let inverseScale: Float = maxScale > 0 ? 63 / maxScale : 0, inverseMin: Float = maxMin > 0 ? 63 / maxMin : 0
        let d = Float16(maxScale / 63), dmin = Float16(maxMin / 63)
        block.storeBytes(of: d.bitPattern, as: UInt16.self)
        block.storeBytes(of: dmin.bitPattern, toByteOffset: 2, as: UInt16.self)
        var packed = [UInt8](repeating: 0, count: 12)
        var levels = [Int](repeating: 0, count: 256)
        for j in 0..<8 {
            let sc = min(63, Int((inverseScale * scales[j]).rounded())), m = min(63, Int((inverseMin * mins[j]).rounded()))
            if j < 4 {
                packed[j] = UInt8(sc)
                packed[j + 4] = UInt8(m)
            } else {
                packed[j + 4] = UInt8(sc & 15 | (m & 15) << 4)
                packed[j - 4] |= UInt8(sc >> 4) << 6
                packed[j] |= UInt8(m >> 4) << 6
            }
            let step = Float(d) * Float(sc), offset = Float(dmin) * Float(m)
            guard step != 0 else { continue }
            for i in 0..<32 { levels[32 * j + i] = max(0, min(nmax, Int(((x[32 * j + i] + offset) / step).rounded()))) }
        }
        for i in 0..<12 { block.storeBytes(of: packed[i], toByteOffset: 4 + i, as: UInt8.self) }
        let quants = bits == 5 ? 48 : 16
        for c in 0..<4 {
            for l in 0..<32 {
                let low = levels[64 * c + l] & 15, high = levels[64 * c + 32 + l] & 15
                block.storeBytes(of: UInt8(low | high << 4), toByteOffset: quants + 32 * c + l, as: UInt8.self)
            }
        }
        guard bits == 5 else { return }
        for l in 0..<32 {
            var fifth: UInt8 = 0
            for j in 0..<8 where levels[32 * j + l] >= 16 { fifth |= 1 << UInt8(j) }
            block.storeBytes(of: fifth, toByteOffset: 16 + l, as: UInt8.self)
        }
    }

    /// value ≈ scale·L − min with L in 0...nmax and min ≥ 0, fitted by weighted least squares over
    /// candidate roundings of the range; returns (scale, min).
    static func fitScaleAndMin(_ x: UnsafeBufferPointer<Float>, weights w: [Float], nmax: Int) -> (Float, Float) {
        let low = min(0, x.min()!), high = x.max()!
        guard high > low else { return (0, -low) }
        func levels(_ inverse: Float) -> [Int] { x.map { max(0, min(nmax, Int((($0 - low) * inverse).rounded()))) } }
        func error(_ l: [Int], _ scale: Float, _ offset: Float) -> Float {
            var total: Float = 0
            for i in x.indices { total += w[i] * (scale * Float(l[i]) + offset - x[i]) * (scale * Float(l[i]) + offset - x[i]) }
            return total
        }
        var best = (scale: (high - low) / Float(nmax), offset: low)
        var bestError = error(levels(Float(nmax) / (high - low)), best.scale, best.offset)
        for step in 0...20 {
            let l = levels((Float(nmax) - 1 + 0.1 * Float(step)) / (high - low))
            var sw: Float = 0, sl: Float = 0, sl2: Float = 0, sx: Float = 0, sxl: Float = 0
            for i in x.indices {
                let level = Float(l[i])
                sw += w[i]; sl += w[i] * level; sl2 += w[i] * level * level; sx += w[i] * x[i]; sxl += w[i] * level * x[i]
            }
            let determinant = sw * sl2 - sl * sl
            guard determinant > 0 else { continue }
            var scale = (sw * sxl - sx * sl) / determinant, offset = (sl2 * sx - sl * sxl) / determinant
            if offset > 0 { (scale, offset) = (sxl / sl2, 0) }
            let e = error(l, scale, offset)
            if e < bestError { (best, bestError) = ((scale, offset), e) }
        }
        return (best.scale, -best.offset)
    }

    /// One super-block of 256 values in Q6_K.
    static func quantizeQ6K(_ x: UnsafePointer<Float>, into block: UnsafeMutableRawPointer) {
        var scales = [Float](repeating: 0, count: 16)
        for g in 0..<16 { scales[g] = fitSignedScale(UnsafeBufferPointer(start: x + 16 * g, count: 16), nmax: 32) }
        let largest = scales.max { abs($0) < abs($1) }!
        var levels = [Int](repeating: 32, count: 256)
        guard largest != 0 else {
            block.initializeMemory(as: UInt8.self, repeating: 0, count: 210)  // d = 0, every value 0
            storeQ6K(levels, block)
            return
        }
        let inverse = -128 / largest, d = Float16(1 / inverse)
        block.storeBytes(of: d.bitPattern, toByteOffset: 208, as: UInt16.self)
        for g in 0..<16 {
            let sc = min(127, Int((inverse * scales[g]).rounded()))
            block.storeBytes(of: Int8(sc), toByteOffset: 192 + g, as: Int8.self)
            let step = Float(d) * Float(sc)
            guard step != 0 else { continue }
            for i in 0..<16 { levels[16 * g + i] = max(-32, min(31, Int((x[16 * g + i] / step).rounded()))) + 32 }
        }
        storeQ6K(levels, block)
    }

    /// Q6_K's packed values: low nibbles in ql, the two high bits in qh (layout in `QuantBlocks`).
    static func storeQ6K(_ levels: [Int], _ block: UnsafeMutableRawPointer) {
        for h in 0..<2 {
            for m in 0..<64 {
                let low = levels[128 * h + m] & 15, high = levels[128 * h + 64 + m] & 15
                block.storeBytes(of: UInt8(low | high << 4), toByteOffset: 64 * h + m, as: UInt8.self)
            }
            for l in 0..<32 {
                var bits = 0
                for t in 0..<4 { bits |= (levels[128 * h + 32 * t + l] >> 4) << (2 * t) }
                block.storeBytes(of: UInt8(bits), toByteOffset: 128 + 32 * h + l, as: UInt8.self)
            }
        }
    }

    /// value ≈ scale·L with L in −nmax..<nmax, fitted by least squares weighted by x² over candidate roundings
    /// (scale negative when the value of largest magnitude is positive, so that it maps to −nmax).
    static func fitSignedScale(_ x: UnsafeBufferPointer<Float>, nmax: Int) -> Float {
        let peak = x.max { abs($0) < abs($1) }!
        guard abs(peak) > 1e-15 else { return 0 }
        var best: Float = 0, bestGain: Float = -1
        for step in -9...9 {
            let inverse = -(Float(nmax) + 0.1 * Float(step)) / peak
            var sxl: Float = 0, sl2: Float = 0
            for v in x {
                let l = Float(max(-nmax, min(nmax - 1, Int((inverse * v).rounded()))))
                sxl += v * v * v * l
                sl2 += v * v * l * l
            }
            // The weighted error after the best scale is Σw·x² − sxl²/sl2: the largest sxl²/sl2 wins.
            if sl2 > 0 && sxl * sxl / sl2 > bestGain { (best, bestGain) = (sxl / sl2, sxl * sxl / sl2) }
        }
        return best
    }
}
