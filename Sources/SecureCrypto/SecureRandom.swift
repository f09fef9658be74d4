import CSodium

/// Cryptographically secure randomness from libsodium (`randombytes_buf`: the OS generator, or a
/// ChaCha20 stream keyed from it). The only source of randomness for keys, masks and DP noise.
public enum SecureRandom {
    /// Fills `buffer` with secure random bytes.
    public static func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        Sodium.initialize()
        randombytes_buf(base, buffer.count)
    }

    /// `count` secure random bytes.
    public static func bytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        out.withUnsafeMutableBytes { fill($0) }
        return out
    }

    /// A uniformly distributed 64-bit value.
    public static func uint64() -> UInt64 {
        var value: UInt64 = 0
        withUnsafeMutableBytes(of: &value) { fill($0) }
        return value
    }

    /// A uniform integer in `0..<upperBound`, without modulo bias (libsodium's rejection sampling).
    public static func uniform(_ upperBound: UInt32) -> UInt32 {
        precondition(upperBound > 0, "upper bound must be positive")
        Sodium.initialize()
        return randombytes_uniform(upperBound)
    }

    /// Fills `out` with uniform doubles in the open interval (0, 1): 53 random bits each, offset by half
    /// a unit in the last place, so neither 0 nor 1 can occur (safe for `log` and Box–Muller).
    public static func fillUnitDoubles(_ out: UnsafeMutableBufferPointer<Double>) {
        guard let base = out.baseAddress, out.count > 0 else { return }
        // Draw the 64-bit words into the same storage, then convert in place.
        let raw = UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(base), count: out.count * 8)
        fill(raw)
        let scale = 1.0 / 9_007_199_254_740_992.0  // 2^-53
        for i in 0..<out.count {
            let bits = base[i].bitPattern >> 11  // the random word, read back
            base[i] = (Double(bits) + 0.5) * scale
        }
    }

    /// `count` uniform doubles in (0, 1), see `fillUnitDoubles`.
    public static func unitDoubles(count: Int) -> [Double] {
        var out = [Double](repeating: 0, count: count)
        out.withUnsafeMutableBufferPointer { fillUnitDoubles($0) }
        return out
    }
}
