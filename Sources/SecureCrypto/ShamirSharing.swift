/// One Shamir share: the point (index, f(index)) of the dealer's polynomials over the prime field
/// GF(p), p = 2^61 - 1, with the threshold it was dealt under (so reconstruction can refuse too few
/// shares) and the length of the secret it is a share of.
///
/// The value holds one field element per 7-byte chunk of the secret, each as 8 little-endian bytes
/// below p: a 32-byte secret has 5 chunks and a 40-byte value, 44 bytes serialized.
public struct ShamirShare: Sendable, CustomStringConvertible {
    /// The x coordinate, 1...65535 (0 is where the secret sits).
    public let index: UInt16
    /// How many shares reconstruct the secret.
    public let threshold: UInt16
    /// Length in bytes of the shared secret.
    public let secretByteCount: Int
    /// f(index), one 8-byte little-endian field element below p per 7-byte chunk of the secret.
    public let value: SecretBytes

    /// Bytes of a share's value for a `secretByteCount`-byte secret: 8 per 7-byte chunk.
    public static func valueByteCount(secretByteCount: Int) -> Int {
        PrimeField.elementByteCount * ShamirSharing.chunkCount(secretByteCount: secretByteCount)
    }

    /// Bytes of a serialized share of a `secretByteCount`-byte secret: 2 (index) + 2 (threshold) + value.
    public static func serializedByteCount(secretByteCount: Int) -> Int {
        4 + valueByteCount(secretByteCount: secretByteCount)
    }

    /// A share from its parts.
    /// - Throws: `SecureCryptoError.zeroShareIndex` for index 0; `.invalidShare` for threshold 0, a
    ///   secret length below 1, or a field element not below p; `.invalidLength` for a value that is
    ///   not `valueByteCount(secretByteCount:)` bytes.
    public init(index: UInt16, threshold: UInt16, secretByteCount: Int, value: SecretBytes) throws {
        guard index != 0 else { throw SecureCryptoError.zeroShareIndex }
        guard threshold != 0 else { throw SecureCryptoError.invalidShare(reason: "threshold 0 (share index \(index))") }
        guard secretByteCount >= 1 else {
            throw SecureCryptoError.invalidShare(reason: "secret length \(secretByteCount) (share index \(index))")
        }
        let expected = Self.valueByteCount(secretByteCount: secretByteCount)
        guard value.count == expected else {
            throw SecureCryptoError.invalidLength(what: "Shamir share \(index) value", expected: "\(expected)", actual: value.count)
        }
        // One branch on the OR of all "element >= p" flags, not one per element.
        let outOfRange: UInt64 = value.withUnsafeBytes { raw in
            var flags: UInt64 = 0
            for k in 0..<(expected / PrimeField.elementByteCount) { flags |= PrimeField.notReducedFlag(PrimeField.load(raw, k)) }
            return flags
        }
        guard outOfRange == 0 else {
            throw SecureCryptoError.invalidShare(reason: "share \(index) holds a field element not below p = 2^61 - 1")
        }
        self.index = index
        self.threshold = threshold
        self.secretByteCount = secretByteCount
        self.value = value
    }

    /// The wire form: index and threshold (2 bytes each, big-endian), then the value bytes
    /// (`serializedByteCount(secretByteCount:)` bytes in all), as a secret.
    public func serialized() -> SecretBytes {
        SecretBytes(count: value.count + 4) { out in
            out[0] = UInt8(truncatingIfNeeded: index >> 8)
            out[1] = UInt8(truncatingIfNeeded: index)
            out[2] = UInt8(truncatingIfNeeded: threshold >> 8)
            out[3] = UInt8(truncatingIfNeeded: threshold)
            value.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: out[4...]).copyMemory(from: $0) }
        }
    }

    /// Parses the wire form of a share of a `secretByteCount`-byte secret.
    /// - Throws: `SecureCryptoError.invalidLength` unless exactly `serializedByteCount(secretByteCount:)`
    ///   bytes; otherwise whatever `init(index:threshold:secretByteCount:value:)` throws.
    public init(serialized bytes: some ContiguousByteStorage, secretByteCount: Int) throws {
        guard secretByteCount >= 1 else {
            throw SecureCryptoError.invalidShare(reason: "secret length \(secretByteCount)")
        }
        let expected = Self.serializedByteCount(secretByteCount: secretByteCount)
        let (index, threshold, value): (UInt16, UInt16, SecretBytes) = try bytes.withUnsafeBytes { raw in
            guard raw.count == expected else {
                throw SecureCryptoError.invalidLength(what: "Shamir share", expected: "\(expected)", actual: raw.count)
            }
            return (UInt16(raw[0]) << 8 | UInt16(raw[1]), UInt16(raw[2]) << 8 | UInt16(raw[3]),
                    SecretBytes(copying: UnsafeRawBufferPointer(rebasing: raw[4...])))
        }
        try self.init(index: index, threshold: threshold, secretByteCount: secretByteCount, value: value)
    }

    /// Index, threshold and length only; the value is never printed.
    public var description: String {
        "ShamirShare(index: \(index), threshold: \(threshold), \(secretByteCount)-byte secret, \(value.count) bytes redacted)"
    }
}

/// Shamir t-of-n secret sharing (Shamir 1979) over the prime field GF(p), p = 2^61 - 1 (a Mersenne
/// prime, so reduction is a shift and an add). The secret is cut into 7-byte little-endian chunks
/// (each below 2^56 < p, a field element); each chunk is the constant term of its own polynomial of
/// degree t - 1 with coefficients uniform in GF(p) from `SecureRandom`, and share i holds every
/// polynomial evaluated at x = i, for i in 1...n, n up to 65535. Any t shares give the secret by
/// Lagrange interpolation at 0; any t - 1 are consistent with every secret. Arithmetic on secret
/// values is branch-free; only the public indices go through the (variable-time) inversion.
public enum ShamirSharing {
    /// Secret bytes per field element: 7, so every chunk is below 2^56 < p.
    public static let chunkByteCount = 7
    /// The largest number of shares: indices are `UInt16`.
    public static let maximumShareCount = Int(UInt16.max)

    /// Number of field elements for a `secretByteCount`-byte secret: ceil(secretByteCount / 7).
    public static func chunkCount(secretByteCount: Int) -> Int {
        (max(secretByteCount, 0) + chunkByteCount - 1) / chunkByteCount
    }

    /// Splits `secret` into `shareCount` shares with indices 1...shareCount, any `threshold` of which
    /// reconstruct it. Polynomial coefficients come from `SecureRandom`, held in `SecretBytes`.
    /// - Throws: `SecureCryptoError.invalidThreshold` unless 1 <= threshold <= shareCount <= 65535;
    ///   `.invalidLength` for an empty secret.
    public static func split(_ secret: SecretBytes, threshold: Int, shareCount: Int) throws -> [ShamirShare] {
        guard threshold >= 1, threshold <= shareCount, shareCount <= maximumShareCount else {
            throw SecureCryptoError.invalidThreshold(threshold: threshold, shareCount: shareCount)
        }
        guard secret.count > 0 else {
            throw SecureCryptoError.invalidLength(what: "Shamir secret", expected: ">= 1", actual: 0)
        }
        let chunks = chunkCount(secretByteCount: secret.count)
        let width = chunks * PrimeField.elementByteCount
        // The constant terms: the secret's chunks as field elements.
        let constants = SecretBytes(count: width) { out in
            secret.withUnsafeBytes { raw in
                for chunk in 0..<chunks {
                    var element: UInt64 = 0
                    let start = chunk * chunkByteCount
                    for byte in stride(from: min(start + chunkByteCount, raw.count) - 1, through: start, by: -1) {
                        element = element << 8 | UInt64(raw[byte])
                    }
                    PrimeField.store(element, out, chunk)
                    element = 0
                }
            }
        }
        // Coefficients a_1 ... a_{t-1} for every chunk: row k - 1 holds a_k for all chunks.
        let coefficients = SecretBytes(count: (threshold - 1) * width) { PrimeField.fillUniform($0) }
        return try (1...shareCount).map { x in
            let point = UInt64(x)
            let value = SecretBytes(count: width) { out in
                constants.withUnsafeBytes { constant in
                    coefficients.withUnsafeBytes { random in
                        for chunk in 0..<chunks {
                            // Horner: ((a_{t-1} x + a_{t-2}) x + ... ) x + a_0.
                            var y: UInt64 = 0
                            var k = threshold - 1
                            while k >= 1 {
                                y = PrimeField.add(PrimeField.multiply(y, point), PrimeField.load(random, (k - 1) * chunks + chunk))
                                k -= 1
                            }
                            PrimeField.store(PrimeField.add(PrimeField.multiply(y, point), PrimeField.load(constant, chunk)), out, chunk)
                            y = 0
                        }
                    }
                }
            }
            return try ShamirShare(index: UInt16(x), threshold: UInt16(threshold), secretByteCount: secret.count, value: value)
        }
    }

    /// The secret from `shares` (any subset of at least `threshold` of them, in any order; all given
    /// shares are used, so they must all be genuine).
    /// - Throws: `SecureCryptoError.notEnoughShares` below the threshold, `.duplicateShareIndex`,
    ///   `.inconsistentShares` if thresholds or secret lengths differ or the interpolated chunks do
    ///   not fit the secret's length (shares of different secrets, or tampered ones). Field elements
    ///   not below p cannot occur: `ShamirShare` refuses them when built.
    public static func reconstruct(_ shares: [ShamirShare]) throws -> SecretBytes {
        guard let first = shares.first else { throw SecureCryptoError.notEnoughShares(have: 0, need: 1) }
        var seen = Set<UInt16>()
        for share in shares {
            guard share.threshold == first.threshold else {
                throw SecureCryptoError.inconsistentShares(
                    reason: "share \(share.index) has threshold \(share.threshold), share \(first.index) has \(first.threshold)")
            }
            guard share.secretByteCount == first.secretByteCount, share.value.count == first.value.count else {
                throw SecureCryptoError.inconsistentShares(
                    reason: "share \(share.index) is of a \(share.secretByteCount)-byte secret, share \(first.index) of a \(first.secretByteCount)-byte one")
            }
            guard seen.insert(share.index).inserted else { throw SecureCryptoError.duplicateShareIndex(share.index) }
        }
        guard shares.count >= Int(first.threshold) else {
            throw SecureCryptoError.notEnoughShares(have: shares.count, need: Int(first.threshold))
        }
        let elements = interpolateAtZero(shares)
        let length = first.secretByteCount
        let chunks = chunkCount(secretByteCount: length)
        // Each chunk must fit its byte width; checked branch-free over all chunks, one branch at the end.
        let overflow: UInt64 = elements.withUnsafeBytes { raw in
            var flags: UInt64 = 0
            for chunk in 0..<chunks {
                let bits = 8 * (min((chunk + 1) * chunkByteCount, length) - chunk * chunkByteCount)
                flags |= PrimeField.load(raw, chunk) >> UInt64(bits)
            }
            return flags
        }
        guard overflow == 0 else {
            throw SecureCryptoError.inconsistentShares(
                reason: "the interpolated secret does not fit \(length) bytes (shares of different secrets, or altered)")
        }
        return SecretBytes(count: length) { out in
            elements.withUnsafeBytes { raw in
                for chunk in 0..<chunks {
                    var element = PrimeField.load(raw, chunk)
                    for byte in (chunk * chunkByteCount)..<min((chunk + 1) * chunkByteCount, length) {
                        out[byte] = UInt8(truncatingIfNeeded: element)
                        element >>= 8
                    }
                }
            }
        }
    }

    /// Lagrange interpolation at x = 0 through the given points, without threshold checks (indices
    /// must be distinct and non-zero): f(0) = Σ_i y_i Π_{j≠i} x_j / (x_j - x_i), one field element
    /// (8 little-endian bytes) per chunk, in a `SecretBytes`.
    static func interpolateAtZero(_ shares: [ShamirShare]) -> SecretBytes {
        let width = shares[0].value.count
        let chunks = width / PrimeField.elementByteCount
        // The indices are public, so the basis coefficients may be computed in variable time.
        let basis: [UInt64] = shares.map { share in
            var numerator: UInt64 = 1, denominator: UInt64 = 1
            for other in shares where other.index != share.index {
                numerator = PrimeField.multiply(numerator, UInt64(other.index))
                denominator = PrimeField.multiply(denominator, PrimeField.subtract(UInt64(other.index), UInt64(share.index)))
            }
            return PrimeField.multiply(numerator, PrimeField.inverse(denominator))
        }
        return SecretBytes(count: width) { out in
            for (share, coefficient) in zip(shares, basis) {
                share.value.withUnsafeBytes { y in
                    for chunk in 0..<chunks {
                        let sum = PrimeField.add(PrimeField.load(UnsafeRawBufferPointer(out), chunk),
                                                 PrimeField.multiply(coefficient, PrimeField.load(y, chunk)))
                        PrimeField.store(sum, out, chunk)
                    }
                }
            }
        }
    }
}

/// GF(p) for the Mersenne prime p = 2^61 - 1, elements as `UInt64` in 0..<p. Addition, subtraction
/// and multiplication are branch-free (constant time); `inverse` is not and is only used on public
/// share indices.
enum PrimeField {
    /// p = 2^61 - 1.
    static let modulus: UInt64 = (1 << 61) - 1
    /// Bytes per stored element (little-endian).
    static let elementByteCount = 8

    /// s mod p for s < 2p (two reduced values' sum, or a folded product), without branches.
    @inline(__always)
    static func reduceOnce(_ s: UInt64) -> UInt64 {
        let difference = s &- modulus
        let borrow = 0 &- (difference >> 63)  // all ones when s < p (the subtraction wrapped)
        return (s & borrow) | (difference & ~borrow)
    }

    /// (a + b) mod p for a, b < p.
    @inline(__always)
    static func add(_ a: UInt64, _ b: UInt64) -> UInt64 { reduceOnce(a &+ b) }

    /// (a - b) mod p for a, b < p.
    @inline(__always)
    static func subtract(_ a: UInt64, _ b: UInt64) -> UInt64 { reduceOnce(a &+ modulus &- b) }

    /// (a · b) mod p for a, b < p: the 122-bit product h·2^64 + l is (l mod 2^61) + (h·2^3 + l >> 61)
    /// mod p because 2^61 ≡ 1; both parts are below 2^61, and their sum below 2p.
    @inline(__always)
    static func multiply(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (high, low) = a.multipliedFullWidth(by: b)
        return reduceOnce((low & modulus) &+ (high << 3 | low >> 61))
    }

    /// a^-1 = a^(p-2) (Fermat) by square-and-multiply over the public exponent; maps 0 to 0.
    static func inverse(_ a: UInt64) -> UInt64 {
        var result: UInt64 = 1, power = a, exponent = modulus - 2
        while exponent > 0 {
            if exponent & 1 == 1 { result = multiply(result, power) }
            power = multiply(power, power)
            exponent >>= 1
        }
        return result
    }

    /// Non-zero if `x >= p`, 0 otherwise, without branches: x >= p iff x has a bit above bit 60 or
    /// x == p (and for x < 2^61, (x ^ p) - 1 has its top bit set iff x ^ p == 0).
    @inline(__always)
    static func notReducedFlag(_ x: UInt64) -> UInt64 {
        (x >> 61) | (((x ^ modulus) &- 1) >> 63)
    }

    /// Element `k` of a buffer of little-endian 8-byte elements.
    @inline(__always)
    static func load(_ raw: UnsafeRawBufferPointer, _ k: Int) -> UInt64 {
        UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: k * elementByteCount, as: UInt64.self))
    }

    /// Writes element `k` of a buffer of little-endian 8-byte elements.
    @inline(__always)
    static func store(_ x: UInt64, _ raw: UnsafeMutableRawBufferPointer, _ k: Int) {
        raw.storeBytes(of: x.littleEndian, toByteOffset: k * elementByteCount, as: UInt64.self)
    }

    /// Fills `buffer` (a multiple of 8 bytes) with elements uniform in 0..<p from `SecureRandom`:
    /// 61 random bits each, redrawn in the (probability 2^-61) case that they equal p.
    static func fillUniform(_ buffer: UnsafeMutableRawBufferPointer) {
        SecureRandom.fill(buffer)
        for k in 0..<(buffer.count / elementByteCount) {
            var x = load(UnsafeRawBufferPointer(buffer), k) & modulus
            while x == modulus {
                SecureRandom.fill(UnsafeMutableRawBufferPointer(rebasing: buffer[(k * elementByteCount)..<((k + 1) * elementByteCount)]))
                x = load(UnsafeRawBufferPointer(buffer), k) & modulus
            }
            store(x, buffer, k)
            x = 0
        }
    }
}
