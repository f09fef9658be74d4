import ClientService
import Foundation
import SecureCrypto
import SystemIO
import TestSupport
import Wire
import XCTest

/// The client's kept audit-log head: the key pinned at first sight, a head going backwards or
/// rewritten refused, a forged signature refused, and the kept head durable in the state directory.
final class ClientAuditHeadTests: XCTestCase {
    var directory: URL!
    var paths: ClientPaths!
    let coordinator = SigningKeyPair()

    override func setUpWithError() throws {
        directory = try Fixtures.temporaryDirectory("client-audit-head")
        paths = ClientPaths(root: directory)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    func hash(_ byte: UInt8) -> [UInt8] { [UInt8](repeating: byte, count: 32) }

    func testNewerHeadsAreKeptDurablyAndReadBack() throws {
        XCTAssertNil(try ClientAuditHead.read(paths: paths))
        let first = AuditHead.sign(records: 2, lastHash: hash(1), signer: coordinator)
        XCTAssertEqual(try ClientAuditHead.keep(first, paths: paths), .keep)
        XCTAssertEqual(try ClientAuditHead.read(paths: paths), first)
        XCTAssertEqual(try ClientAuditHead.keep(first, paths: paths), .unchanged)
        let second = AuditHead.sign(records: 3, lastHash: hash(2), signer: coordinator)
        XCTAssertEqual(try ClientAuditHead.keep(second, paths: paths), .keep)
        XCTAssertEqual(try ClientAuditHead.read(paths: paths), second)
        // The file is the JSON `audit --head` reads, fields as documented.
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: paths.auditHead)) as? [String: Any])
        XCTAssertEqual(json["records"] as? Int, 3)
        XCTAssertEqual(json["last_hash"] as? String, Hex.encode(hash(2)))
        XCTAssertEqual(json["public_key"] as? String, Hex.encode(coordinator.publicKey.bytes))
    }

    func testForgedSignatureIsRefusedAndNotKept() throws {
        let kept = AuditHead.sign(records: 2, lastHash: hash(1), signer: coordinator)
        try ClientAuditHead.keep(kept, paths: paths)
        let genuine = AuditHead.sign(records: 5, lastHash: hash(3), signer: coordinator)
        var signature = genuine.signature
        signature[0] ^= 0x80
        let forged = AuditHead(records: 5, lastHash: hash(3), publicKey: coordinator.publicKey.bytes, signature: signature)
        guard case let .refuse(reason) = try ClientAuditHead.keep(forged, paths: paths) else { return XCTFail("forged head kept") }
        XCTAssertTrue(reason.contains("signature does not verify"), reason)
        XCTAssertEqual(try ClientAuditHead.read(paths: paths), kept)
        // The first head, forged, is refused too: nothing is kept.
        try FileManager.default.removeItem(at: paths.auditHead)
        XCTAssertNotEqual(ClientAuditHead.judge(forged, kept: nil), .keep)
    }

    func testAnotherKeyIsRefusedOnceOneIsPinned() throws {
        try ClientAuditHead.keep(AuditHead.sign(records: 1, lastHash: hash(1), signer: coordinator), paths: paths)
        let other = SigningKeyPair()
        let verdict = try ClientAuditHead.keep(AuditHead.sign(records: 4, lastHash: hash(4), signer: other), paths: paths)
        guard case let .refuse(reason) = verdict else { return XCTFail("\(verdict)") }
        XCTAssertTrue(reason.contains(Hex.encode(coordinator.publicKey.bytes)), reason)
        XCTAssertEqual(try ClientAuditHead.read(paths: paths)?.records, 1)
    }

    func testShorterOrRewrittenLogIsRefused() throws {
        let kept = AuditHead.sign(records: 3, lastHash: hash(3), signer: coordinator)
        guard case let .refuse(shorter) = ClientAuditHead.judge(AuditHead.sign(records: 2, lastHash: hash(2), signer: coordinator),
                                                                  kept: kept) else { return XCTFail("shorter head kept") }
        XCTAssertTrue(shorter.contains("holds 2 records") && shorter.contains("says 3"), shorter)
        guard case let .refuse(rewritten) = ClientAuditHead.judge(AuditHead.sign(records: 3, lastHash: hash(9), signer: coordinator),
                                                                    kept: kept) else { return XCTFail("rewritten head kept") }
        XCTAssertTrue(rewritten.contains("rewritten"), rewritten)
    }

    /// The head travels as the round result's trailing field, bit-exactly; a wrong length is refused by name.
    func testRoundResultCarriesTheHeadOnTheWire() throws {
        let head = AuditHead.sign(records: 7, lastHash: hash(7), signer: coordinator)
        let result = RoundResult(round: 7, committed: true, adapterSHA256: String(repeating: "c", count: 64), reason: "committed",
                                 auditHead: head)
        let decoded = try RoundResult(frame: Frame.decode(result.frame().encoded()))
        XCTAssertEqual(decoded, result)
        XCTAssertTrue(try XCTUnwrap(decoded.auditHead).isSigned(by: coordinator.publicKey))
        let bare = RoundResult(round: 8, committed: false, adapterSHA256: "", reason: "aborted")
        XCTAssertNil(try RoundResult(frame: bare.frame()).auditHead)

        var payload = try result.frame().payload
        // The last field is the signature: a 4-byte length then 64 bytes. Claim 63 and drop a byte.
        payload.removeLast()
        payload[payload.count - 63 - 4 + 3] = 63
        XCTAssertThrowsError(try RoundResult(frame: Frame(type: .roundResult, payload: payload))) { error in
            XCTAssertTrue("\(error)".contains("auditHead.signature"), "\(error)")
        }
    }

    func testBadHeadFileNamesItself() throws {
        try Data("{}".utf8).write(to: paths.auditHead)
        XCTAssertThrowsError(try ClientAuditHead.read(paths: paths)) { error in
            XCTAssertTrue("\(error)".contains(self.paths.auditHead.path), "\(error)")
        }
    }
}
