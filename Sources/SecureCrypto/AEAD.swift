import CSodium

/// XChaCha20-Poly1305 (IETF construction, libsodium `crypto_aead_xchacha20poly1305_ietf`): the sealed
/// form is nonce (24 random bytes) ‖ ciphertext ‖ tag (16 bytes). 192-bit random nonces make reuse
/// under one key negligible, so callers never manage nonces.
public enum AEAD {
    /// Key length: 32 bytes.
    public static let keyByteCount = Int(crypto_aead_xchacha20poly1305_ietf_KEYBYTES)
    /// Nonce length: 24 bytes, prepended to the ciphertext.
    public static let nonceByteCount = Int(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES)
    /// Authentication tag length: 16 bytes, appended to the ciphertext.
    public static let tagByteCount = Int(crypto_aead_xchacha20poly1305_ietf_ABYTES)
    /// Bytes a sealed message has beyond its plaintext: nonce plus tag.
    public static let overhead = nonceByteCount + tagByteCount

    /// Encrypts and authenticates `plaintext`, binding `associatedData` (authenticated, not encrypted),
    /// under a fresh `SecureRandom` nonce.
    /// - Returns: nonce ‖ ciphertext ‖ tag, `plaintext.count + overhead` bytes.
    /// - Throws: `SecureCryptoError.invalidLength` if the key is not 32 bytes.
    public static func seal(
        _ plaintext: some ContiguousByteStorage, key: SecretBytes,
        associatedData: some ContiguousByteStorage = [UInt8]()
    ) throws -> [UInt8] {
        try seal(plaintext, key: key, associatedData: associatedData, nonce: SecureRandom.bytes(nonceByteCount))
    }

    /// `seal` with a given nonce: for known-answer tests only.
    static func seal(
        _ plaintext: some ContiguousByteStorage, key: SecretBytes, associatedData: some ContiguousByteStorage,
        nonce: [UInt8]
    ) throws -> [UInt8] {
        try checkKey(key)
        precondition(nonce.count == nonceByteCount, "XChaCha20 nonce must be \(nonceByteCount) bytes")
        Sodium.initialize()
        return plaintext.withUnsafeBytes { message in
            var sealed = [UInt8](repeating: 0, count: message.count + overhead)
            sealed.withUnsafeMutableBufferPointer { out in
                _ = UnsafeMutableBufferPointer(rebasing: out[0..<nonceByteCount]).initialize(from: nonce)
                associatedData.withUnsafeBytes { ad in
                    key.withUnsafeBytes { keyBytes in
                        var written: UInt64 = 0
                        _ = crypto_aead_xchacha20poly1305_ietf_encrypt(
                            out.baseAddress! + nonceByteCount, &written,
                            message.bindMemory(to: UInt8.self).baseAddress, UInt64(message.count),
                            ad.bindMemory(to: UInt8.self).baseAddress, UInt64(ad.count),
                            nil, nonce, keyBytes.bindMemory(to: UInt8.self).baseAddress!)
                        precondition(Int(written) == message.count + tagByteCount)
                    }
                }
            }
            return sealed
        }
    }

    /// Verifies and decrypts a message made by `seal` with the same key and associated data.
    /// Nothing is decrypted unless the tag verifies, so no partial plaintext is ever returned.
    /// - Returns: the plaintext, in `SecretBytes` (shares and seeds travel this way).
    /// - Throws: `SecureCryptoError.invalidLength` for a wrong key length or a message shorter than
    ///   `overhead`; `.authenticationFailed` for a wrong key, wrong associated data or any tampering.
    public static func open(
        _ sealed: some ContiguousByteStorage, key: SecretBytes,
        associatedData: some ContiguousByteStorage = [UInt8]()
    ) throws -> SecretBytes {
        try checkKey(key)
        Sodium.initialize()
        return try sealed.withUnsafeBytes { input in
            guard input.count >= overhead, let base = input.bindMemory(to: UInt8.self).baseAddress else {
                throw SecureCryptoError.invalidLength(what: "AEAD sealed message", expected: ">= \(overhead)", actual: input.count)
            }
            return try SecretBytes(count: input.count - overhead) { out in
                let status = associatedData.withUnsafeBytes { ad in
                    key.withUnsafeBytes { keyBytes in
                        var plaintextLength: UInt64 = 0
                        // An empty plaintext has no buffer: libsodium then only verifies the tag.
                        return crypto_aead_xchacha20poly1305_ietf_decrypt(
                            out.bindMemory(to: UInt8.self).baseAddress, &plaintextLength, nil,
                            base + nonceByteCount, UInt64(input.count - nonceByteCount),
                            ad.bindMemory(to: UInt8.self).baseAddress, UInt64(ad.count),
                            base, keyBytes.bindMemory(to: UInt8.self).baseAddress!)
                    }
                }
                guard status == 0 else { throw SecureCryptoError.authenticationFailed }
            }
        }
    }

    private static func checkKey(_ key: SecretBytes) throws {
        guard key.count == keyByteCount else {
            throw SecureCryptoError.invalidLength(what: "AEAD key", expected: "\(keyByteCount)", actual: key.count)
        }
    }
}
