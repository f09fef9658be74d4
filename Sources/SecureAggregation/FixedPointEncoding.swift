import SecureCrypto

/// Fixed-point encoding of float updates into `UInt32` words, for summing modulo 2^32.
///
/// Each value is clipped to [-C, C] (C = `clipBound`), multiplied by the scale 2^f (f =
/// `fractionalBits`), rounded to an integer q, and stored as q's two's complement modulo 2^32.
/// Adding the words of several clients modulo 2^32 adds the q's; the sum decodes exactly as long as
/// it stays inside the signed 32-bit range, which the scale guarantees:
///
///     |q| <= ceil(C · 2^f)            (clipping, and rounding up by less than one unit)
///     N · ceil(C · 2^f) <= 2^31 - 1    (how f is chosen, N = `maximumClients`)
///
/// so the sum of up to N clients' integers lies in [-(2^31 - 1), 2^31 - 1] and never wraps. The
/// largest f satisfying this is chosen: log2 N + log2 C + f <= 31 bits, i.e. 31 - log2(N·C)
/// fractional bits of precision.
///
/// Rounding: `.stochastic` (the default) rounds up with probability equal to the fractional part,
/// using `SecureRandom`, so the encoding is unbiased (E[q] = x · 2^f) and a value's rounding leaks
/// nothing deterministic; the error per value is below 2^-f. `.nearest` rounds half away from zero,
/// error at most 2^-f / 2, and is deterministic (for tests and reproducible runs).
///
/// Differential-privacy noise is added by the client before encoding, so C must bound the noised
/// values: values beyond it are clipped, and `EncodedUpdate.clippedCount` says how many were.
public struct FixedPointEncoding: Sendable, Equatable, CustomStringConvertible {
    /// How a scaled value becomes an integer.
    public enum Rounding: Sendable, Equatable {
        /// Up with probability equal to the fractional part (unbiased), from `SecureRandom`.
        case stochastic
        /// To the nearest integer, halves away from zero (deterministic).
        case nearest
    }

    /// The largest signed 32-bit value: the bound the decoded sum's integer must respect.
    static let signedLimit: Double = 2_147_483_647

    /// Every value is clipped to [-clipBound, clipBound] before scaling.
    public let clipBound: Double
    /// The largest number of clients whose encodings may be summed without wrapping.
    public let maximumClients: Int
    /// f: values are scaled by 2^f.
    public let fractionalBits: Int

    /// The multiplier 2^f.
    public var scale: Double { Double(sign: .plus, exponent: fractionalBits, significand: 1) }
    /// The largest |q| a single value encodes to: ceil(C · 2^f).
    public var maximumMagnitude: Double { (clipBound * scale).rounded(.up) }

    /// The encoding with the most precision for which `maximumClients` encodings always sum without
    /// wrapping: the largest f with N · ceil(C · 2^f) <= 2^31 - 1.
    /// - Throws: `SecureAggregationError.invalidEncoding` unless C is finite and positive and N >= 1, or
    ///   if no f in -62...62 fits (N · C of about 2^31 or more).
    public init(clipBound: Double, maximumClients: Int) throws {
        try Self.validate(clipBound: clipBound, maximumClients: maximumClients)
        var bits = 62
        while bits >= -62 {
            if Self.fits(clipBound: clipBound, maximumClients: maximumClients, fractionalBits: bits) { break }
            bits -= 1
        }
        guard bits >= -62 else {
            throw SecureAggregationError.invalidEncoding(
                "no scale lets \(maximumClients) clients with clip bound \(clipBound) sum within 32 bits")
        }
        self.clipBound = clipBound
        self.maximumClients = maximumClients
        self.fractionalBits = bits
    }

    /// An encoding with a stated number of fractional bits.
    /// - Throws: `SecureAggregationError.invalidEncoding` if `maximumClients` encodings could wrap
    ///   (N · ceil(C · 2^f) > 2^31 - 1), or for a non-positive clip bound or client count.
    public init(clipBound: Double, maximumClients: Int, fractionalBits: Int) throws {
        try Self.validate(clipBound: clipBound, maximumClients: maximumClients)
        guard (-62...62).contains(fractionalBits),
              Self.fits(clipBound: clipBound, maximumClients: maximumClients, fractionalBits: fractionalBits)
        else {
            throw SecureAggregationError.invalidEncoding(
                "\(fractionalBits) fractional bits with clip bound \(clipBound) let \(maximumClients) clients' sum exceed 2^31 - 1")
        }
        self.clipBound = clipBound
        self.maximumClients = maximumClients
        self.fractionalBits = fractionalBits
    }

    private static func validate(clipBound: Double, maximumClients: Int) throws {
        guard clipBound.isFinite, clipBound > 0 else {
            throw SecureAggregationError.invalidEncoding("clip bound must be finite and positive, got \(clipBound)")
        }
        guard maximumClients >= 1 else {
            throw SecureAggregationError.invalidEncoding("maximum client count must be at least 1, got \(maximumClients)")
        }
    }

    private static func fits(clipBound: Double, maximumClients: Int, fractionalBits: Int) -> Bool {
        let magnitude = (clipBound * Double(sign: .plus, exponent: fractionalBits, significand: 1)).rounded(.up)
        return Double(maximumClients) * magnitude <= signedLimit
    }

    /// The largest error of one decoded value against its clipped input: 2^-f for stochastic
    /// rounding, 2^-f / 2 for nearest. A sum of n clients is off by at most n times this.
    public func maximumRoundingError(_ rounding: Rounding) -> Double {
        rounding == .stochastic ? 1 / scale : 0.5 / scale
    }

    /// An encoded update: the words to mask and upload, and how many values were clipped.
    public struct EncodedUpdate: Sendable, Equatable {
        /// q mod 2^32 for every value, in order.
        public var words: [UInt32]
        /// How many values lay outside [-C, C] and were clipped.
        public var clippedCount: Int
    }

    /// Clips, scales and rounds `values` into words modulo 2^32.
    /// - Throws: `SecureAggregationError.invalidEncoding` naming the index of the first NaN or infinity.
    public func encode(_ values: [Float], rounding: Rounding = .stochastic) throws -> EncodedUpdate {
        var words = [UInt32](repeating: 0, count: values.count)
        var clipped = 0
        let scale = self.scale, bound = clipBound
        // Stochastic rounding draws one 32-bit uniform per value, in blocks to amortise the calls.
        let blockSize = 4096
        var uniforms = [UInt32](repeating: 0, count: rounding == .stochastic ? min(blockSize, values.count) : 0)
        var start = 0
        while start < values.count {
            let end = min(start + blockSize, values.count)
            if rounding == .stochastic {
                uniforms.withUnsafeMutableBytes { SecureRandom.fill(UnsafeMutableRawBufferPointer(rebasing: $0[0..<(end - start) * 4])) }
            }
            for i in start..<end {
                let value = Double(values[i])
                guard value.isFinite else {
                    throw SecureAggregationError.invalidEncoding("value at index \(i) is \(values[i]), not finite")
                }
                var x = value
                if x > bound { x = bound; clipped += 1 } else if x < -bound { x = -bound; clipped += 1 }
                let scaled = x * scale
                let q: Double
                switch rounding {
                case .nearest:
                    q = scaled.rounded(.toNearestOrAwayFromZero)
                case .stochastic:
                    let floor = scaled.rounded(.down)
                    // Round up when u < frac, u uniform on [0, 1) in steps of 2^-32.
                    let u = Double(uniforms[i - start]) * 0x1p-32
                    q = u < scaled - floor ? floor + 1 : floor
                }
                words[i] = UInt32(bitPattern: Int32(q))
            }
            start = end
        }
        return EncodedUpdate(words: words, clippedCount: clipped)
    }

    /// The real value of every word of a sum of `clientCount` encodings: the word read as a signed
    /// 32-bit integer, divided by 2^f. Exact (an Int32 over a power of two is a Double).
    /// - Throws: `SecureAggregationError.invalidEncoding` if `clientCount` is outside 1...N, for which
    ///   the sum could have wrapped.
    public func decodeSum(_ words: [UInt32], clientCount: Int) throws -> [Double] {
        guard (1...maximumClients).contains(clientCount) else {
            throw SecureAggregationError.invalidEncoding(
                "a sum of \(clientCount) clients cannot be decoded by an encoding for at most \(maximumClients)")
        }
        let inverse = 1 / scale
        return words.map { Double(Int32(bitPattern: $0)) * inverse }
    }

    /// The average of a sum of `clientCount` encodings, as floats (the sum decoded exactly, then
    /// divided by the count and rounded once to `Float`).
    public func decodeAverage(_ words: [UInt32], clientCount: Int) throws -> [Float] {
        let count = Double(clientCount)
        return try decodeSum(words, clientCount: clientCount).map { Float($0 / count) }
    }

    public var description: String {
        "FixedPointEncoding(clip ±\(clipBound), up to \(maximumClients) clients, scale 2^\(fractionalBits))"
    }
}
