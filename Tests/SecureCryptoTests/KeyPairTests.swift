import Foundation
import XCTest
@testable import SecureCrypto

final class KeyPairTests: XCTestCase {
    private func secret(_ hex: String) throws -> SecretBytes { SecretBytes(copying: try Hex.decode(hex)) }

    /// RFC 8032 §7.1 TEST 1 (empty message) and TEST 2 (one byte 0x72): public keys and signatures.
    func testEd25519MatchesRFC8032() throws {
        let one = try SigningKeyPair(seed: secret("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
        XCTAssertEqual(Hex.encode(one.publicKey.bytes), "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
        let signatureOne = one.signature(for: [UInt8]())
        XCTAssertEqual(Hex.encode(signatureOne),
                       "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
        XCTAssertTrue(one.publicKey.isValidSignature(signatureOne, for: [UInt8]()))

        let two = try SigningKeyPair(seed: secret("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"))
        XCTAssertEqual(Hex.encode(two.publicKey.bytes), "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
        XCTAssertEqual(Hex.encode(two.signature(for: [0x72])),
                       "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00")
        XCTAssertTrue(constantTimeEqual(two.seed, try Hex.decode("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")))
    }

    /// A flipped bit in the message or in any part of the signature, another key, or a truncated
    /// signature all fail verification.
    func testTamperedSignaturesAreRejected() throws {
        let pair = SigningKeyPair()
        let message = Array("round 7: participants 1,2,5".utf8)
        let signature = pair.signature(for: message)
        XCTAssertTrue(pair.publicKey.isValidSignature(signature, for: message))
        var changedMessage = message
        changedMessage[6] ^= 0x01
        XCTAssertFalse(pair.publicKey.isValidSignature(signature, for: changedMessage))
        for position in [0, 31, 32, 63] {
            var changed = signature
            changed[position] ^= 0x80
            XCTAssertFalse(pair.publicKey.isValidSignature(changed, for: message), "flip at \(position) accepted")
        }
        XCTAssertFalse(SigningKeyPair().publicKey.isValidSignature(signature, for: message))
        XCTAssertFalse(pair.publicKey.isValidSignature(Array(signature.dropLast()), for: message))
        XCTAssertFalse(pair.publicKey.isValidSignature([UInt8](), for: message))
    }

    /// RFC 7748 §6.1: Alice's and Bob's public keys and their shared secret.
    func testX25519MatchesRFC7748() throws {
        let alice = try KeyAgreementKeyPair(secretKey: secret("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
        let bob = try KeyAgreementKeyPair(secretKey: secret("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"))
        XCTAssertEqual(Hex.encode(alice.publicKey.bytes), "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        XCTAssertEqual(Hex.encode(bob.publicKey.bytes), "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
        let expected = try Hex.decode("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
        XCTAssertTrue(constantTimeEqual(try alice.rawSharedSecret(with: bob.publicKey), expected))
        XCTAssertTrue(constantTimeEqual(try bob.rawSharedSecret(with: alice.publicKey), expected))

        // The derived key: BLAKE2b-256 over the documented layout, computed independently with hashlib.
        let key = try alice.sharedKey(with: bob.publicKey, context: "conclave/test")
        XCTAssertTrue(constantTimeEqual(key, try Hex.decode("a48481cbea2496a95a010a9f49bd0ee40fa4a7717a6ddf12fe1faf51363cc281")))
        XCTAssertTrue(constantTimeEqual(try bob.sharedKey(with: alice.publicKey, context: "conclave/test"), key))
    }

    /// Both sides derive the same key; another context or another peer gives another key.
    func testSharedKeyIsSymmetricAndSeparatedByContext() throws {
        let u = KeyAgreementKeyPair(), v = KeyAgreementKeyPair(), w = KeyAgreementKeyPair()
        let uv = try u.sharedKey(with: v.publicKey, context: "mask")
        XCTAssertEqual(uv.count, 32)
        XCTAssertTrue(constantTimeEqual(uv, try v.sharedKey(with: u.publicKey, context: "mask")))
        XCTAssertFalse(constantTimeEqual(uv, try u.sharedKey(with: v.publicKey, context: "share")))
        XCTAssertFalse(constantTimeEqual(uv, try u.sharedKey(with: w.publicKey, context: "mask")))
        // A reconstructed secret key (as after Shamir recovery) derives the same key.
        let recovered = try KeyAgreementKeyPair(secretKey: SecretBytes(copying: u.secretKey))
        XCTAssertEqual(recovered.publicKey, u.publicKey)
        XCTAssertTrue(constantTimeEqual(try recovered.sharedKey(with: v.publicKey, context: "mask"), uv))
    }

    /// Low-order peer keys (zero, and the order-8 point from RFC 7748 discussions) are refused;
    /// wrong lengths are refused with the field named.
    func testWeakAndMalformedKeysAreRefused() throws {
        let pair = KeyAgreementKeyPair()
        let zero = try KeyAgreementPublicKey(bytes: [UInt8](repeating: 0, count: 32))
        XCTAssertThrowsError(try pair.sharedKey(with: zero, context: "x")) {
            XCTAssertEqual($0 as? SecureCryptoError, .weakPublicKey)
        }
        var one = [UInt8](repeating: 0, count: 32)
        one[0] = 1
        XCTAssertThrowsError(try pair.sharedKey(with: try KeyAgreementPublicKey(bytes: one), context: "x")) {
            XCTAssertEqual($0 as? SecureCryptoError, .weakPublicKey)
        }
        XCTAssertThrowsError(try KeyAgreementPublicKey(bytes: [UInt8](repeating: 9, count: 31))) {
            XCTAssertEqual($0 as? SecureCryptoError, .invalidLength(what: "X25519 public key", expected: "32", actual: 31))
        }
        XCTAssertThrowsError(try SigningPublicKey(bytes: [UInt8](repeating: 9, count: 33))) {
            XCTAssertEqual($0 as? SecureCryptoError, .invalidLength(what: "Ed25519 public key", expected: "32", actual: 33))
        }
        XCTAssertThrowsError(try SigningKeyPair(seed: SecretBytes(randomCount: 64))) {
            XCTAssertEqual($0 as? SecureCryptoError, .invalidLength(what: "Ed25519 seed", expected: "32", actual: 64))
        }
        XCTAssertThrowsError(try KeyAgreementKeyPair(secretKey: SecretBytes(randomCount: 16))) {
            XCTAssertEqual($0 as? SecureCryptoError, .invalidLength(what: "X25519 secret key", expected: "32", actual: 16))
        }
    }

    /// Key pairs print their public key only.
    func testDescriptionsShowOnlyPublicKeys() {
        let pair = KeyAgreementKeyPair()
        XCTAssertEqual("\(pair)", "KeyAgreementKeyPair(public: \(Hex.encode(pair.publicKey.bytes)))")
        let signing = SigningKeyPair()
        XCTAssertEqual("\(signing)", "SigningKeyPair(public: \(Hex.encode(signing.publicKey.bytes)))")
    }
}

final class SecretKeyFileTests: XCTestCase {
    private var directory = ""

    override func setUpWithError() throws {
        var template = Array((NSTemporaryDirectory() + "conclave-keyfile-XXXXXX").utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        directory = try XCTUnwrap(made.map { String(cString: $0) })
    }

    override func tearDownWithError() throws {
        try FileManager.default.removeItem(atPath: directory)
    }

    private func mode(_ path: String) throws -> Int {
        try XCTUnwrap(FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int)
    }

    /// Both kinds round-trip; the file is 0600 even under a permissive umask, and no temporary is left.
    func testRoundTripWithMode0600() throws {
        let oldMask = umask(0)
        defer { umask(oldMask) }
        let signing = SigningKeyPair()
        let signingPath = directory + "/signing.key"
        try signing.writeSecretKeyFile(path: signingPath)
        XCTAssertEqual(try mode(signingPath), 0o600)
        let readSigning = try SigningKeyPair.readSecretKeyFile(path: signingPath)
        XCTAssertEqual(readSigning.publicKey, signing.publicKey)
        XCTAssertTrue(constantTimeEqual(readSigning.seed, signing.seed))

        let agreement = KeyAgreementKeyPair()
        let agreementPath = directory + "/agreement.key"
        try agreement.writeSecretKeyFile(path: agreementPath)
        XCTAssertEqual(try mode(agreementPath), 0o600)
        let readAgreement = try KeyAgreementKeyPair.readSecretKeyFile(path: agreementPath)
        XCTAssertTrue(constantTimeEqual(readAgreement.secretKey, agreement.secretKey))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory).sorted(), ["agreement.key", "signing.key"])
    }

    /// An existing file is refused (and kept) unless replacement is asked for, which swaps it atomically.
    func testExistingFileRefusedUnlessReplacing() throws {
        let path = directory + "/signing.key"
        let first = SigningKeyPair(), second = SigningKeyPair()
        try first.writeSecretKeyFile(path: path)
        XCTAssertThrowsError(try second.writeSecretKeyFile(path: path)) {
            XCTAssertEqual($0 as? SecureCryptoError, .fileSystem(path: path, operation: "create (must not exist)", errno: EEXIST))
        }
        XCTAssertEqual(try SigningKeyPair.readSecretKeyFile(path: path).publicKey, first.publicKey)
        try second.writeSecretKeyFile(path: path, replacingExisting: true)
        XCTAssertEqual(try SigningKeyPair.readSecretKeyFile(path: path).publicKey, second.publicKey)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory), ["signing.key"])
    }

    /// Group- or other-accessible files are refused, naming the path and mode.
    func testGroupOrOtherBitsAreRefused() throws {
        let path = directory + "/signing.key"
        try SigningKeyPair().writeSecretKeyFile(path: path)
        for bits in [0o640, 0o604, 0o602, 0o610] {
            XCTAssertEqual(chmod(path, mode_t(bits)), 0)
            XCTAssertThrowsError(try SigningKeyPair.readSecretKeyFile(path: path)) { error in
                XCTAssertEqual(error as? SecureCryptoError, .insecurePermissions(path: path, mode: UInt32(0o100000 | bits)))
                XCTAssertTrue("\(error)".contains(path))
            }
        }
    }

    /// Wrong size, wrong magic, the other key kind, a corrupted public key and a missing file are each
    /// refused with a precise reason.
    func testMalformedFilesAreRefused() throws {
        let path = directory + "/signing.key"
        try SigningKeyPair().writeSecretKeyFile(path: path)
        let good = try XCTUnwrap(FileManager.default.contents(atPath: path))
        func rewrite(_ bytes: Data) throws {
            try bytes.write(to: URL(fileURLWithPath: path))
            XCTAssertEqual(chmod(path, 0o600), 0)
        }
        func expect(_ reason: String, file: StaticString = #filePath, line: UInt = #line) {
            XCTAssertThrowsError(try SigningKeyPair.readSecretKeyFile(path: path), file: file, line: line) {
                XCTAssertEqual($0 as? SecureCryptoError, .malformedKeyFile(path: path, reason: reason), file: file, line: line)
            }
        }
        try rewrite(good.dropLast())
        expect("size 72 bytes, expected 73")
        try rewrite(good + [0])
        expect("size 74 bytes, expected 73")
        var badMagic = good
        badMagic[0] = UInt8(ascii: "X")
        try rewrite(badMagic)
        expect("missing magic CNCLVSK1")
        var otherKind = good
        otherKind[8] = 2
        try rewrite(otherKind)
        expect("key kind 2, expected 1 (ed25519Seed)")
        var corrupt = good
        corrupt[72] ^= 0x01
        try rewrite(corrupt)
        expect("stored public key does not match the seed (corrupt file)")
        let missing = directory + "/absent.key"
        XCTAssertThrowsError(try KeyAgreementKeyPair.readSecretKeyFile(path: missing)) {
            XCTAssertEqual($0 as? SecureCryptoError, .fileSystem(path: missing, operation: "open", errno: ENOENT))
        }
    }
}
