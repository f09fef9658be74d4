/// One Shamir share: the point (index, f(index)) of the dealer's polynomials, byte by byte over
/// GF(2^8), with the threshold it was dealt under so reconstruction can refuse too few shares.
public struct ShamirShare: Sendable, CustomStringConvertible {
    /// The x coordinate, 1...255 (0 is where the secret sits).
    public let index: UInt8
    /// How many shares reconstruct the secret.
    public let threshold: UInt8
    /// f(index), one byte per secret byte.
    public let value: SecretBytes

    /// A share from its parts.
    /// - Throws: `SecureCryptoError.zeroShareIndex` for index 0, `.invalidShare` for threshold 0.
    public init(index: UInt8, threshold: UInt8, value: SecretBytes) throws {
        guard index != 0 else { throw SecureCryptoError.zeroShareIndex }
        guard threshold != 0 else { throw SecureCryptoError.invalidShare(reason: "threshold 0 (share index \(index))") }
        self.index = index
        self.threshold = threshold
        self.value = value
    }

    /// The wire form: index, threshold, then the value bytes (`value.count + 2` bytes), as a secret.
    public func serialized() -> SecretBytes {
        SecretBytes(count: value.count + 2) { out in
            out[0] = index
            out[1] = threshold
            value.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: out[2...]).copyMemory(from: $0) }
        }
    }

    /// Parses the wire form of a share of a `secretByteCount`-byte secret.
    /// - Throws: `SecureCryptoError.invalidLength` unless exactly `secretByteCount + 2` bytes;
    ///   `.zeroShareIndex` or `.invalidShare` for a zero index or threshold.
    public init(serialized bytes: some ContiguousByteStorage, secretByteCount: Int) throws {
        let (index, threshold, value): (UInt8, UInt8, SecretBytes) = try bytes.withUnsafeBytes { raw in
            guard raw.count == secretByteCount + 2 else {
                throw SecureCryptoError.invalidLength(what: "Shamir share", expected: "\(secretByteCount + 2)", actual: raw.count)
            }
            return (raw[0], raw[1], SecretBytes(copying: UnsafeRawBufferPointer(rebasing: raw[2...])))
        }
        try self.init(index: index, threshold: threshold, value: value)
    }

    /// Index and threshold only; the value is never printed.
    public var description: String { "ShamirShare(index: \(index), threshold: \(threshold), \(value.count) bytes redacted)" }
}

/// Shamir t-of-n secret sharing (Shamir 1979) byte-wise over GF(2^8) with the AES polynomial
/// x^8 + x^4 + x^3 + x + 1: each secret byte is the constant term of its own random polynomial of
/// degree t - 1, and share i holds every polynomial evaluated at x = i. Any t shares give the secret
/// by Lagrange interpolation at 0; fewer give no information about it. Field arithmetic on secret
/// values is table-free and branch-free (constant time).
public enum ShamirSharing {
    /// Splits `secret` into `shareCount` shares with indices 1...shareCount, any `threshold` of which
    /// reconstruct it. Polynomial coefficients come from `SecureRandom`.
    /// - Throws: `SecureCryptoError.invalidThreshold` unless 1 <= threshold <= shareCount <= 255;
    ///   `.invalidLength` for an empty secret.
    public static func split(_ secret: SecretBytes, threshold: Int, shareCount: Int) throws -> [ShamirShare] {
        guard threshold >= 1, threshold <= shareCount, shareCount <= 255 else {
            throw SecureCryptoError.invalidThreshold(threshold: threshold, shareCount: shareCount)
        }
        guard secret.count > 0 else {
            throw SecureCryptoError.invalidLength(what: "Shamir secret", expected: ">= 1", actual: 0)
        }
        let length = secret.count
        // Coefficients a_1 ... a_{t-1} for every byte: row k holds a_k for all bytes.
        let coefficients = SecretBytes(randomCount: (threshold - 1) * length)
        return try (1...shareCount).map { x in
            let value = SecretBytes(count: length) { out in
                secret.withUnsafeBytes { constant in
                    coefficients.withUnsafeBytes { random in
                        for byte in 0..<length {
                            // Horner: ((a_{t-1} x + a_{t-2}) x + ... ) x + a_0.
                            var y: UInt8 = 0
                            var k = threshold - 1
                            while k >= 1 {
                                y = GF256.multiply(y, UInt8(x)) ^ random[(k - 1) * length + byte]
                                k -= 1
                            }
                            out[byte] = GF256.multiply(y, UInt8(x)) ^ constant[byte]
                        }
                    }
                }
            }
            return try ShamirShare(index: UInt8(x), threshold: UInt8(threshold), value: value)
        }
    }

    /// The secret from `shares` (any subset of at least `threshold` of them, in any order; all given
    /// shares are used, so they must all be genuine).
    /// - Throws: `SecureCryptoError.notEnoughShares` below the threshold, `.duplicateShareIndex`,
    ///   `.inconsistentShares` if thresholds or lengths differ.
    public static func reconstruct(_ shares: [ShamirShare]) throws -> SecretBytes {
        guard let first = shares.first else { throw SecureCryptoError.notEnoughShares(have: 0, need: 1) }
        var seen = Set<UInt8>()
        for share in shares {
            guard share.threshold == first.threshold else {
                throw SecureCryptoError.inconsistentShares(
                    reason: "share \(share.index) has threshold \(share.threshold), share \(first.index) has \(first.threshold)")
            }
            guard share.value.count == first.value.count else {
                throw SecureCryptoError.inconsistentShares(
                    reason: "share \(share.index) has \(share.value.count) bytes, share \(first.index) has \(first.value.count)")
            }
            guard seen.insert(share.index).inserted else { throw SecureCryptoError.duplicateShareIndex(share.index) }
        }
        guard shares.count >= Int(first.threshold) else {
            throw SecureCryptoError.notEnoughShares(have: shares.count, need: Int(first.threshold))
        }
        return interpolateAtZero(shares)
    }

    /// Lagrange interpolation at x = 0 through the given points, without threshold checks
    /// (indices must be distinct and non-zero): f(0) = Σ_i y_i Π_{j≠i} x_j / (x_j - x_i),
    /// where subtraction in GF(2^8) is XOR.
    static func interpolateAtZero(_ shares: [ShamirShare]) -> SecretBytes {
        let length = shares[0].value.count
        // The indices are public, so the basis coefficients may be computed in any way.
        let basis: [UInt8] = shares.map { share in
            var numerator: UInt8 = 1, denominator: UInt8 = 1
            for other in shares where other.index != share.index {
                numerator = GF256.multiply(numerator, other.index)
                denominator = GF256.multiply(denominator, other.index ^ share.index)
            }
            return GF256.multiply(numerator, GF256.inverse(denominator))
        }
        return SecretBytes(count: length) { out in
            for (share, coefficient) in zip(shares, basis) {
                share.value.withUnsafeBytes { y in
                    for byte in 0..<length { out[byte] ^= GF256.multiply(coefficient, y[byte]) }
                }
            }
        }
    }
}

/// GF(2^8) with the AES reduction polynomial 0x11B, without tables or data-dependent branches.
enum GF256 {
    /// a · b: shift-and-add with masks instead of branches (FIPS-197 §4.2).
    @inline(__always)
    static func multiply(_ a: UInt8, _ b: UInt8) -> UInt8 {
        var a = a, b = b, product: UInt8 = 0
        for _ in 0..<8 {
            product ^= a & (0 &- (b & 1))
            let carry = 0 &- (a >> 7)
            a = (a << 1) ^ (0x1B & carry)
            b >>= 1
        }
        return product
    }

    /// a^-1 = a^254 (Fermat, the multiplicative group has order 255); maps 0 to 0.
    static func inverse(_ a: UInt8) -> UInt8 {
        var result: UInt8 = 1, power = a
        for _ in 1...7 {
            power = multiply(power, power)  // a^(2^k)
            result = multiply(result, power)
        }
        return result  // a^(2 + 4 + ... + 128) = a^254
    }
}
