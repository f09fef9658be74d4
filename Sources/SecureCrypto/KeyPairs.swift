import CSodium

/// An Ed25519 public key (32 bytes), for verifying signatures.
public struct SigningPublicKey: Hashable, Sendable, CustomStringConvertible {
    /// Length of an Ed25519 public key.
    public static let byteCount = Int(crypto_sign_PUBLICKEYBYTES)
    /// The 32 key bytes, as sent on the wire.
    public let bytes: [UInt8]

    /// A public key from its 32 bytes.
    /// - Throws: `SecureCryptoError.invalidLength` for any other length.
    public init(bytes: some ContiguousByteStorage) throws {
        let copy = bytes.withUnsafeBytes { Array($0) }
        guard copy.count == Self.byteCount else {
            throw SecureCryptoError.invalidLength(what: "Ed25519 public key", expected: "\(Self.byteCount)", actual: copy.count)
        }
        self.bytes = copy
    }

    /// Whether `signature` is a valid Ed25519 signature of `message` under this key (libsodium rejects
    /// non-canonical signatures and small-order keys). A signature of the wrong length is invalid.
    public func isValidSignature(_ signature: some ContiguousByteStorage, for message: some ContiguousByteStorage) -> Bool {
        Sodium.initialize()
        return signature.withUnsafeBytes { sig in
            guard sig.count == SigningKeyPair.signatureByteCount else { return false }
            return message.withUnsafeBytes { msg in
                crypto_sign_verify_detached(
                    sig.bindMemory(to: UInt8.self).baseAddress!, msg.bindMemory(to: UInt8.self).baseAddress,
                    UInt64(msg.count), bytes) == 0
            }
        }
    }

    /// The key in hex.
    public var description: String { "SigningPublicKey(\(Hex.encode(bytes)))" }
}

/// An Ed25519 key pair: signs audit records, round results and key advertisements.
/// The secret key stays in `SecretBytes`.
public final class SigningKeyPair: Sendable, CustomStringConvertible {
    /// Length of the seed from which a key pair is derived.
    public static let seedByteCount = Int(crypto_sign_SEEDBYTES)
    /// Length of a detached signature.
    public static let signatureByteCount = Int(crypto_sign_BYTES)

    /// The public half.
    public let publicKey: SigningPublicKey
    /// libsodium's 64-byte secret key: seed followed by public key.
    private let secretKey: SecretBytes

    /// A fresh key pair from a `SecureRandom` seed.
    public convenience init() {
        // A 32-byte seed is the right length by construction.
        try! self.init(seed: SecretBytes(randomCount: Self.seedByteCount))
    }

    /// The key pair derived from a 32-byte seed (RFC 8032's "private key").
    /// - Throws: `SecureCryptoError.invalidLength` if the seed is not 32 bytes.
    public init(seed: SecretBytes) throws {
        guard seed.count == Self.seedByteCount else {
            throw SecureCryptoError.invalidLength(what: "Ed25519 seed", expected: "\(Self.seedByteCount)", actual: seed.count)
        }
        Sodium.initialize()
        var publicBytes = [UInt8](repeating: 0, count: SigningPublicKey.byteCount)
        secretKey = SecretBytes(count: Int(crypto_sign_SECRETKEYBYTES)) { secret in
            seed.withUnsafeBytes { seedBytes in
                _ = crypto_sign_seed_keypair(
                    &publicBytes, secret.bindMemory(to: UInt8.self).baseAddress!,
                    seedBytes.bindMemory(to: UInt8.self).baseAddress!)
            }
        }
        publicKey = try SigningPublicKey(bytes: publicBytes)
    }

    /// The 32-byte seed this key pair derives from (what the key file stores).
    public var seed: SecretBytes {
        secretKey.withUnsafeBytes { SecretBytes(copying: UnsafeRawBufferPointer(rebasing: $0[0..<Self.seedByteCount])) }
    }

    /// The detached 64-byte Ed25519 signature of `message`.
    public func signature(for message: some ContiguousByteStorage) -> [UInt8] {
        var signature = [UInt8](repeating: 0, count: Self.signatureByteCount)
        message.withUnsafeBytes { msg in
            secretKey.withUnsafeBytes { secret in
                _ = crypto_sign_detached(
                    &signature, nil, msg.bindMemory(to: UInt8.self).baseAddress, UInt64(msg.count),
                    secret.bindMemory(to: UInt8.self).baseAddress!)
            }
        }
        return signature
    }

    /// Writes the seed to a new file at `path` with mode 0600 (see `SecretKeyFile`): refuses an existing
    /// file unless `replacingExisting`, in which case the old file is replaced atomically.
    /// - Throws: `SecureCryptoError.fileSystem` naming the path and the failed operation.
    public func writeSecretKeyFile(path: String, replacingExisting: Bool = false) throws {
        try SecretKeyFile.write(path: path, kind: .ed25519Seed, secret: seed, publicKey: publicKey.bytes,
                                replacingExisting: replacingExisting)
    }

    /// Reads a key pair written by `writeSecretKeyFile`.
    /// - Throws: `SecureCryptoError.insecurePermissions` if group/other bits are set,
    ///   `.malformedKeyFile` for a wrong size, magic, kind or a public key that does not match,
    ///   `.fileSystem` if the file cannot be opened or read; each names `path`.
    public static func readSecretKeyFile(path: String) throws -> SigningKeyPair {
        let (seed, storedPublic) = try SecretKeyFile.read(path: path, kind: .ed25519Seed)
        let pair = try SigningKeyPair(seed: seed)
        guard pair.publicKey.bytes == storedPublic else {
            throw SecureCryptoError.malformedKeyFile(path: path, reason: "stored public key does not match the seed (corrupt file)")
        }
        return pair
    }

    /// The public key only; the secret is never printed.
    public var description: String { "SigningKeyPair(public: \(Hex.encode(publicKey.bytes)))" }
}

/// An X25519 public key (32 bytes), for key agreement.
public struct KeyAgreementPublicKey: Hashable, Sendable, CustomStringConvertible {
    /// Length of an X25519 public key.
    public static let byteCount = Int(crypto_scalarmult_BYTES)
    /// The 32 key bytes, as sent on the wire.
    public let bytes: [UInt8]

    /// A public key from its 32 bytes.
    /// - Throws: `SecureCryptoError.invalidLength` for any other length.
    public init(bytes: some ContiguousByteStorage) throws {
        let copy = bytes.withUnsafeBytes { Array($0) }
        guard copy.count == Self.byteCount else {
            throw SecureCryptoError.invalidLength(what: "X25519 public key", expected: "\(Self.byteCount)", actual: copy.count)
        }
        self.bytes = copy
    }

    /// The key in hex.
    public var description: String { "KeyAgreementPublicKey(\(Hex.encode(bytes)))" }
}

/// An X25519 key pair: the per-round keys of secure aggregation, from which each pair of clients
/// derives the same symmetric key (for encrypting shares, and as the pairwise mask seed).
public final class KeyAgreementKeyPair: Sendable, CustomStringConvertible {
    /// Length of an X25519 secret key.
    public static let secretKeyByteCount = Int(crypto_scalarmult_SCALARBYTES)
    /// Length of a key derived by `sharedKey(with:context:)`.
    public static let sharedKeyByteCount = 32

    /// The public half.
    public let publicKey: KeyAgreementPublicKey
    /// The 32-byte secret scalar (Shamir-shared in secure aggregation so a dropped client's pairwise
    /// masks can be recomputed).
    public let secretKey: SecretBytes

    /// A fresh key pair with a `SecureRandom` secret.
    public convenience init() {
        // A 32-byte secret is the right length by construction.
        try! self.init(secretKey: SecretBytes(randomCount: Self.secretKeyByteCount))
    }

    /// The key pair of a given 32-byte secret (X25519 clamps it when used).
    /// - Throws: `SecureCryptoError.invalidLength` if the secret is not 32 bytes.
    public init(secretKey: SecretBytes) throws {
        guard secretKey.count == Self.secretKeyByteCount else {
            throw SecureCryptoError.invalidLength(
                what: "X25519 secret key", expected: "\(Self.secretKeyByteCount)", actual: secretKey.count)
        }
        Sodium.initialize()
        var publicBytes = [UInt8](repeating: 0, count: KeyAgreementPublicKey.byteCount)
        secretKey.withUnsafeBytes { secret in
            _ = crypto_scalarmult_base(&publicBytes, secret.bindMemory(to: UInt8.self).baseAddress!)
        }
        self.secretKey = secretKey
        publicKey = try KeyAgreementPublicKey(bytes: publicBytes)
    }

    /// The raw X25519 output with `peer`. Not a key: use `sharedKey(with:context:)`.
    /// - Throws: `SecureCryptoError.weakPublicKey` if the result is all zeros (low-order peer key).
    func rawSharedSecret(with peer: KeyAgreementPublicKey) throws -> SecretBytes {
        try SecretBytes(count: Int(crypto_scalarmult_BYTES)) { out in
            let status = secretKey.withUnsafeBytes { secret in
                crypto_scalarmult(out.bindMemory(to: UInt8.self).baseAddress!,
                                  secret.bindMemory(to: UInt8.self).baseAddress!, peer.bytes)
            }
            guard status == 0 else { throw SecureCryptoError.weakPublicKey }
        }
    }

    /// The 32-byte symmetric key both parties derive, whichever side computes it:
    /// BLAKE2b-256(len(context) as UInt32 big-endian ‖ context ‖ X25519(sk, peer) ‖ pk_low ‖ pk_high),
    /// where pk_low, pk_high are the two public keys in lexicographic order. The context separates
    /// uses (e.g. "conclave/secagg/round-7/share-encryption" versus ".../pairwise-mask").
    /// - Throws: `SecureCryptoError.weakPublicKey` for a low-order peer key.
    public func sharedKey(with peer: KeyAgreementPublicKey, context: String) throws -> SecretBytes {
        let shared = try rawSharedSecret(with: peer)
        let contextBytes = Array(context.utf8)
        let length = UInt32(contextBytes.count)
        let (low, high) = publicKey.bytes.lexicographicallyPrecedes(peer.bytes)
            ? (publicKey.bytes, peer.bytes) : (peer.bytes, publicKey.bytes)
        let hasher = Blake2bHasher(outputLength: Self.sharedKeyByteCount)
        hasher.update([UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)])
        hasher.update(contextBytes)
        hasher.update(shared)
        hasher.update(low)
        hasher.update(high)
        return hasher.finalizeSecret()
    }

    /// Writes the secret key to a new file at `path` with mode 0600 (see `SigningKeyPair.writeSecretKeyFile`).
    public func writeSecretKeyFile(path: String, replacingExisting: Bool = false) throws {
        try SecretKeyFile.write(path: path, kind: .x25519SecretKey, secret: secretKey, publicKey: publicKey.bytes,
                                replacingExisting: replacingExisting)
    }

    /// Reads a key pair written by `writeSecretKeyFile`; errors as `SigningKeyPair.readSecretKeyFile`.
    public static func readSecretKeyFile(path: String) throws -> KeyAgreementKeyPair {
        let (secret, storedPublic) = try SecretKeyFile.read(path: path, kind: .x25519SecretKey)
        let pair = try KeyAgreementKeyPair(secretKey: secret)
        guard pair.publicKey.bytes == storedPublic else {
            throw SecureCryptoError.malformedKeyFile(path: path, reason: "stored public key does not match the secret key (corrupt file)")
        }
        return pair
    }

    /// The public key only; the secret is never printed.
    public var description: String { "KeyAgreementKeyPair(public: \(Hex.encode(publicKey.bytes)))" }
}
