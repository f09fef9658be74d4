/// Every failure the SecureCrypto module reports for data it did not produce itself: wrong lengths,
/// failed authentication, bad key files, inconsistent Shamir shares. Each case names what it concerns.
public enum SecureCryptoError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A byte string had the wrong length; `what` names the field (e.g. "AEAD key").
    case invalidLength(what: String, expected: String, actual: Int)
    /// A hexadecimal string had an odd length or a non-hex character at `position`.
    case invalidHex(position: Int, reason: String)
    /// An AEAD ciphertext failed authentication: wrong key, wrong associated data, or tampering.
    case authenticationFailed
    /// An X25519 public key produced the all-zero shared secret (a low-order point).
    case weakPublicKey
    /// A system call on a key file failed.
    case fileSystem(path: String, operation: String, errno: Int32)
    /// A secret key file is readable or writable by group or others.
    case insecurePermissions(path: String, mode: UInt32)
    /// A secret key file is not what it claims to be.
    case malformedKeyFile(path: String, reason: String)
    /// A Shamir threshold/share-count pair outside `1 <= threshold <= shareCount <= 65535`.
    case invalidThreshold(threshold: Int, shareCount: Int)
    /// A Shamir share with index 0 (the index at which the secret itself sits).
    case zeroShareIndex
    /// Two Shamir shares with the same index.
    case duplicateShareIndex(UInt16)
    /// Fewer Shamir shares than the threshold they were dealt with.
    case notEnoughShares(have: Int, need: Int)
    /// Shamir shares that disagree on threshold or secret length, or that interpolate to no secret of that length.
    case inconsistentShares(reason: String)
    /// A Shamir share that cannot be one (threshold 0, no secret bytes, a field element not below p).
    case invalidShare(reason: String)

    public var description: String {
        switch self {
        case let .invalidLength(what, expected, actual):
            return "\(what): expected \(expected) bytes, got \(actual)"
        case let .invalidHex(position, reason):
            return "invalid hex at position \(position): \(reason)"
        case .authenticationFailed:
            return "AEAD ciphertext failed authentication (wrong key, wrong associated data, or tampered)"
        case .weakPublicKey:
            return "X25519 public key is a low-order point (all-zero shared secret)"
        case let .fileSystem(path, operation, errno):
            return "\(operation) failed for \(path): errno \(errno)"
        case let .insecurePermissions(path, mode):
            return "secret key file \(path) has mode \(String(mode & 0o7777, radix: 8)); group/other bits must be clear (chmod 600)"
        case let .malformedKeyFile(path, reason):
            return "malformed secret key file \(path): \(reason)"
        case let .invalidThreshold(threshold, shareCount):
            return "Shamir threshold \(threshold) with \(shareCount) shares: need 1 <= threshold <= shares <= 65535"
        case .zeroShareIndex:
            return "Shamir share index 0 is not allowed (the secret sits at x = 0)"
        case let .duplicateShareIndex(index):
            return "Shamir share index \(index) appears more than once"
        case let .notEnoughShares(have, need):
            return "Shamir reconstruction needs \(need) shares, got \(have)"
        case let .inconsistentShares(reason):
            return "inconsistent Shamir shares: \(reason)"
        case let .invalidShare(reason):
            return "invalid Shamir share: \(reason)"
        }
    }
}
