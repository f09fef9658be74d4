import CSodium

/// BLAKE2b (RFC 7693) through libsodium's `crypto_generichash`: one-shot digests of public data and
/// keyed digests (a MAC / key derivation under a secret key).
public enum Hash {
    /// The default digest length: 32 bytes (BLAKE2b-256).
    public static let defaultOutputLength = 32
    /// Digest lengths libsodium documents as safe: 16 to 64 bytes.
    public static let outputLengths = Int(crypto_generichash_BYTES_MIN)...Int(crypto_generichash_BYTES_MAX)
    /// Key lengths libsodium documents: 16 to 64 bytes.
    public static let keyLengths = Int(crypto_generichash_KEYBYTES_MIN)...Int(crypto_generichash_KEYBYTES_MAX)

    /// The unkeyed BLAKE2b digest of `data`, `outputLength` bytes long (16...64).
    public static func blake2b(_ data: some ContiguousByteStorage, outputLength: Int = defaultOutputLength) -> [UInt8] {
        let hasher = Blake2bHasher(outputLength: outputLength)
        hasher.update(data)
        return hasher.finalize()
    }

    /// The BLAKE2b digest of `data` keyed by `key` (16...64 bytes), `outputLength` bytes long.
    /// - Throws: `SecureCryptoError.invalidLength` if the key length is outside 16...64.
    public static func blake2b(
        _ data: some ContiguousByteStorage, key: SecretBytes, outputLength: Int = defaultOutputLength
    ) throws -> [UInt8] {
        let hasher = try Blake2bHasher(key: key, outputLength: outputLength)
        hasher.update(data)
        return hasher.finalize()
    }
}

/// Incremental BLAKE2b: feed data with `update` in any number of pieces, then `finalize` once.
/// The state (which holds the key, if any) lives in 64-byte-aligned memory wiped on release.
public final class Blake2bHasher {
    /// The digest length this hasher produces.
    public let outputLength: Int
    private let state: OpaquePointer  // crypto_generichash_state (over-aligned, so not imported into Swift)
    private let stateSize: Int
    private var finalized = false

    /// An unkeyed hasher producing `outputLength` bytes (16...64).
    public init(outputLength: Int = Hash.defaultOutputLength) {
        self.outputLength = outputLength
        (state, stateSize) = Blake2bHasher.allocateState(outputLength: outputLength)
        let status = crypto_generichash_init(state, nil, 0, outputLength)
        precondition(status == 0, "crypto_generichash_init failed for output length \(outputLength)")
    }

    /// A hasher keyed by `key` (16...64 bytes) producing `outputLength` bytes (16...64).
    /// - Throws: `SecureCryptoError.invalidLength` if the key length is outside 16...64.
    public init(key: SecretBytes, outputLength: Int = Hash.defaultOutputLength) throws {
        guard Hash.keyLengths.contains(key.count) else {
            throw SecureCryptoError.invalidLength(what: "BLAKE2b key", expected: "16...64", actual: key.count)
        }
        self.outputLength = outputLength
        (state, stateSize) = Blake2bHasher.allocateState(outputLength: outputLength)
        let status = key.withUnsafeBytes { keyBytes in
            crypto_generichash_init(state, keyBytes.bindMemory(to: UInt8.self).baseAddress, key.count, outputLength)
        }
        precondition(status == 0, "crypto_generichash_init failed for output length \(outputLength)")
    }

    private static func allocateState(outputLength: Int) -> (OpaquePointer, Int) {
        precondition(Hash.outputLengths.contains(outputLength),
                     "BLAKE2b output length must be in 16...64, got \(outputLength)")
        Sodium.initialize()
        // The C type is declared 64-byte aligned; Swift's default allocation would not honour that.
        let size = crypto_generichash_statebytes()
        let raw = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
        return (OpaquePointer(raw), size)
    }

    deinit {
        sodium_memzero(UnsafeMutableRawPointer(state), stateSize)
        UnsafeMutableRawPointer(state).deallocate()
    }

    /// Absorbs `data`.
    public func update(_ data: some ContiguousByteStorage) {
        precondition(!finalized, "Blake2bHasher.update after finalize")
        data.withUnsafeBytes { bytes in
            guard let base = bytes.baseAddress, bytes.count > 0 else { return }
            _ = crypto_generichash_update(state, base.assumingMemoryBound(to: UInt8.self), UInt64(bytes.count))
        }
    }

    /// The digest of everything absorbed; may be called once.
    public func finalize() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: outputLength)
        out.withUnsafeMutableBytes { finalize(into: $0) }
        return out
    }

    /// The digest as a secret, for deriving keys; may be called once (instead of `finalize`).
    public func finalizeSecret() -> SecretBytes {
        SecretBytes(count: outputLength) { finalize(into: $0) }
    }

    private func finalize(into out: UnsafeMutableRawBufferPointer) {
        precondition(!finalized, "Blake2bHasher finalized twice")
        finalized = true
        guard let base = out.bindMemory(to: UInt8.self).baseAddress else {
            preconditionFailure("BLAKE2b output buffer is empty")
        }
        let status = crypto_generichash_final(state, base, outputLength)
        precondition(status == 0, "crypto_generichash_final failed")
    }
}

/// Lower-case hexadecimal for public values (digests, public keys). Not constant-time: never
/// use it on secrets.
public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    /// The lower-case hex form of `bytes`.
    public static func encode(_ bytes: some ContiguousByteStorage) -> String {
        bytes.withUnsafeBytes { raw in
            var characters = [UInt8]()
            characters.reserveCapacity(raw.count * 2)
            for byte in raw {
                characters.append(digits[Int(byte >> 4)])
                characters.append(digits[Int(byte & 0x0F)])
            }
            return String(decoding: characters, as: UTF8.self)
        }
    }

    /// The bytes of a hex string (either case, no separators).
    /// - Throws: `SecureCryptoError.invalidHex` naming the first bad position, or the odd length.
    public static func decode(_ hex: String) throws -> [UInt8] {
        let characters = Array(hex.utf8)
        guard characters.count % 2 == 0 else {
            throw SecureCryptoError.invalidHex(position: characters.count, reason: "odd number of digits (\(characters.count))")
        }
        var out = [UInt8]()
        out.reserveCapacity(characters.count / 2)
        var index = 0
        while index < characters.count {
            guard let high = value(of: characters[index]) else {
                throw SecureCryptoError.invalidHex(position: index, reason: "not a hex digit")
            }
            guard let low = value(of: characters[index + 1]) else {
                throw SecureCryptoError.invalidHex(position: index + 1, reason: "not a hex digit")
            }
            out.append(high << 4 | low)
            index += 2
        }
        return out
    }

    private static func value(of character: UInt8) -> UInt8? {
        switch character {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return character - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return character - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return character - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}

extension Hash {
    /// SHA-256 (FIPS 180-4) of public data, through libsodium's `crypto_hash_sha256`: for file and
    /// adapter digests that other tools (sha256sum, HF hub) recompute.
    public static func sha256(_ data: some ContiguousByteStorage) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: Int(crypto_hash_sha256_BYTES))
        data.withUnsafeBytes { input in
            _ = crypto_hash_sha256(&digest, input.bindMemory(to: UInt8.self).baseAddress, UInt64(input.count))
        }
        return digest
    }
}
