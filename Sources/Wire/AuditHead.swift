import Foundation
import SecureCrypto

/// The audit log's signed head: how many records the coordinator's log held and the BLAKE2b-256 of
/// its last line, signed with the coordinator's audit key. Sent with every round result; a client
/// keeps the latest, so that an auditor can later show, with `audit --verify --head FILE`, that
/// records the client saw were removed from the end of the log or rewritten.
///
/// The signature is Ed25519 over `"conclave audit head v1\n"`, the record count as 8 bytes
/// big-endian and the 32 hash bytes: a message no audit line can be (those start with `{`).
public struct AuditHead: Sendable, Equatable, Codable {
    /// Committed lines in the log when the head was signed.
    public let records: UInt64
    /// BLAKE2b-256 of line `records` (bytes as written, without its newline); 32 zero bytes for none.
    public let lastHash: [UInt8]
    /// The audit key that signed the head (32 bytes).
    public let publicKey: [UInt8]
    /// Ed25519 signature (64 bytes) over `signedBytes`.
    public let signature: [UInt8]

    static let domain = Array("conclave audit head v1\n".utf8)
    static let hashByteCount = 32

    /// The head of a log of `records` lines whose last line hashes to `lastHash`, signed by `signer`.
    public static func sign(records: UInt64, lastHash: [UInt8], signer: SigningKeyPair) -> AuditHead {
        precondition(lastHash.count == hashByteCount, "an audit head's hash is 32 bytes")
        return AuditHead(records: records, lastHash: lastHash, publicKey: signer.publicKey.bytes,
                         signature: signer.signature(for: signedBytes(records: records, lastHash: lastHash)))
    }

    /// A head as received or read back; the lengths are checked, the signature is not (`isSigned(by:)`).
    public init(records: UInt64, lastHash: [UInt8], publicKey: [UInt8], signature: [UInt8]) {
        self.records = records
        self.lastHash = lastHash
        self.publicKey = publicKey
        self.signature = signature
    }

    /// The exact bytes the signature covers.
    static func signedBytes(records: UInt64, lastHash: [UInt8]) -> [UInt8] {
        var bytes = domain
        appendBigEndian(records, to: &bytes)
        return bytes + lastHash
    }

    /// True when the head names `key` as its signer and its signature verifies under `key`.
    public func isSigned(by key: SigningPublicKey) -> Bool {
        publicKey == key.bytes && key.isValidSignature(signature, for: Self.signedBytes(records: records, lastHash: lastHash))
    }

    /// True when the signature verifies under the key the head names (says nothing about whose key that is).
    public var isSelfConsistent: Bool {
        guard let key = try? SigningPublicKey(bytes: publicKey) else { return false }
        return isSigned(by: key)
    }

    /// `lastHash` as lower-case hex, as the audit log's `previous_hash` fields write hashes.
    public var lastHashHex: String { Hex.encode(lastHash) }

    // MARK: Wire

    func encode(into encoder: inout WireEncoder) throws {
        encoder.uint64(records)
        try encoder.blob(lastHash, field: "auditHead.lastHash")
        try encoder.blob(publicKey, field: "auditHead.publicKey")
        try encoder.blob(signature, field: "auditHead.signature")
    }

    init(from decoder: inout WireDecoder) throws {
        records = try decoder.uint64("auditHead.records")
        lastHash = try decoder.blob("auditHead.lastHash", limit: Self.hashByteCount)
        publicKey = try decoder.blob("auditHead.publicKey", limit: SigningPublicKey.byteCount)
        signature = try decoder.blob("auditHead.signature", limit: SigningKeyPair.signatureByteCount)
        for (field, bytes, expected) in [("lastHash", lastHash, Self.hashByteCount),
                                         ("publicKey", publicKey, SigningPublicKey.byteCount),
                                         ("signature", signature, SigningKeyPair.signatureByteCount)] where bytes.count != expected {
            throw WireError.invalidValue(field: "roundResult.auditHead.\(field)", reason: "\(bytes.count) bytes; expected \(expected)")
        }
    }

    // MARK: JSON (a client's audit-head.json)

    enum CodingKeys: String, CodingKey {
        case records
        case lastHash = "last_hash"
        case publicKey = "public_key"
        case signature
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(records, forKey: .records)
        try container.encode(Hex.encode(lastHash), forKey: .lastHash)
        try container.encode(Hex.encode(publicKey), forKey: .publicKey)
        try container.encode(Hex.encode(signature), forKey: .signature)
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        records = try container.decode(UInt64.self, forKey: .records)
        func bytes(_ key: CodingKeys, _ count: Int) throws -> [UInt8] {
            let text = try container.decode(String.self, forKey: key)
            guard text.utf8.count == 2 * count, let decoded = try? Hex.decode(text) else {
                throw DecodingError.dataCorruptedError(forKey: key, in: container,
                                                       debugDescription: "expected \(2 * count) hex digits")
            }
            return decoded
        }
        lastHash = try bytes(.lastHash, Self.hashByteCount)
        publicKey = try bytes(.publicKey, SigningPublicKey.byteCount)
        signature = try bytes(.signature, SigningKeyPair.signatureByteCount)
    }
}
