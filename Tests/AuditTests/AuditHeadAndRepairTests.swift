import Audit
import Foundation
import SecureCrypto
import SystemIO
import TestSupport
import Wire
import XCTest

/// The audit log's signed head (truncation and rewrites found against a head a client kept) and the
/// repair of a torn tail (which never removes a whole, correctly signed record).
final class AuditHeadAndRepairTests: XCTestCase {
    var directory: URL!
    var log: AuditLog!
    let signer = SigningKeyPair()

    override func setUpWithError() throws {
        directory = try Fixtures.temporaryDirectory("conclave-audit-head")
        log = AuditLog(url: directory.appendingPathComponent("audit.jsonl"))
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    func appendRounds(_ rounds: [UInt64]) throws {
        for round in rounds { try log.append(AuditLogTests.record(round: round, small: true), signer: signer) }
    }

    func contents() throws -> [UInt8] { Array(try Data(contentsOf: log.url)) }
    func write(_ bytes: [UInt8]) throws { try Data(bytes).write(to: log.url) }
    /// The bytes without the last line (its newline included).
    func withoutLastLine(_ bytes: [UInt8]) -> [UInt8] {
        let end = bytes.dropLast().lastIndex(of: 10).map { $0 + 1 } ?? 0
        return Array(bytes[..<end])
    }

    // MARK: Head

    func testHeadCountsCommittedLinesAndHashesTheLast() throws {
        XCTAssertEqual(try log.signedHead(signer: signer).records, 0)
        try appendRounds([1, 2, 3])
        let head = try log.signedHead(signer: signer)
        XCTAssertEqual(head.records, 3)
        let lines = try contents().split(separator: 10)
        XCTAssertEqual(head.lastHashHex, Hex.encode(Hash.blake2b(Array(lines[2]))))
        XCTAssertTrue(head.isSigned(by: signer.publicKey))
        XCTAssertNil(try AuditLog.checkHead(head, url: log.url, publicKey: signer.publicKey))
        // Records appended after the head was signed are not its concern.
        try appendRounds([4])
        XCTAssertNil(try AuditLog.checkHead(head, url: log.url, publicKey: signer.publicKey))
        // A torn tail is not a committed record: it does not count.
        try write(try contents() + Array(#"{"record":{"round":5"#.utf8))
        XCTAssertEqual(try log.signedHead(signer: signer).records, 4)
    }

    /// Deleting the last record keeps the chain valid (`verify` cannot see it: the positive control
    /// that today's code misses it); the head a client kept finds it and names both counts.
    func testTruncatingOneRecordFailsAgainstTheHead() throws {
        try appendRounds([1, 2, 3])
        let head = try log.signedHead(signer: signer)
        try write(withoutLastLine(try contents()))
        XCTAssertTrue(try log.verify(publicKey: signer.publicKey).verified, "a cut tail leaves a valid chain")
        let problem = try XCTUnwrap(try AuditLog.checkHead(head, url: log.url, publicKey: signer.publicKey))
        XCTAssertTrue(problem.contains("held 3 records"), problem)
        XCTAssertTrue(problem.contains("has 2"), problem)
        XCTAssertTrue(problem.contains(head.lastHashHex), problem)
    }

    /// The key's holder rewrites record 2 and re-signs the chain: it verifies, the head does not match.
    func testRewrittenAndResignedLogFailsAgainstTheHead() throws {
        try appendRounds([1, 2])
        let head = try log.signedHead(signer: signer)
        let original = try contents()
        try FileManager.default.removeItem(at: log.url)
        try log.append(AuditLogTests.record(round: 1, small: true), signer: signer)
        var changed = AuditLogTests.record(round: 2, small: true)
        changed.cohort = ["someone-else"]
        try log.append(changed, signer: signer)
        XCTAssertNotEqual(try contents(), original)
        XCTAssertTrue(try log.verify(publicKey: signer.publicKey).verified)
        let problem = try XCTUnwrap(try AuditLog.checkHead(head, url: log.url, publicKey: signer.publicKey))
        XCTAssertTrue(problem.contains("rewritten at or before record 2"), problem)
        XCTAssertTrue(problem.contains(head.lastHashHex), problem)
    }

    func testForgedHeadSignatureIsRefused() throws {
        try appendRounds([1, 2])
        let head = try log.signedHead(signer: signer)
        var signature = head.signature
        signature[7] ^= 0x01
        let forged = AuditHead(records: head.records, lastHash: head.lastHash, publicKey: head.publicKey, signature: signature)
        XCTAssertFalse(forged.isSelfConsistent)
        let problem = try XCTUnwrap(try AuditLog.checkHead(forged, url: log.url, publicKey: signer.publicKey))
        XCTAssertTrue(problem.contains("signature does not verify"), problem)
        // Signed by another key that it names honestly: also refused, the key named.
        let other = SigningKeyPair()
        let foreign = AuditHead.sign(records: 1, lastHash: head.lastHash, signer: other)
        XCTAssertTrue(foreign.isSelfConsistent)
        let named = try XCTUnwrap(try AuditLog.checkHead(foreign, url: log.url, publicKey: signer.publicKey))
        XCTAssertTrue(named.contains(Hex.encode(other.publicKey.bytes)), named)
        // A head claiming more records than the log, forged: refused for its signature, not compared.
        let inflated = AuditHead(records: 9, lastHash: head.lastHash, publicKey: head.publicKey, signature: head.signature)
        XCTAssertTrue(try XCTUnwrap(try AuditLog.checkHead(inflated, url: log.url, publicKey: signer.publicKey))
            .contains("signature does not verify"))
    }

    func testHeadFileRoundTripsAndBadFilesNameTheField() throws {
        try appendRounds([1])
        let head = try log.signedHead(signer: signer)
        let url = directory.appendingPathComponent("audit-head.json")
        try JSONEncoder().encode(head).write(to: url)
        XCTAssertEqual(try AuditLog.readHead(from: url), head)
        try Data(#"{"records":1,"last_hash":"00","public_key":"00","signature":"00"}"#.utf8).write(to: url)
        XCTAssertThrowsError(try AuditLog.readHead(from: url)) { error in
            XCTAssertTrue("\(error)".contains("last_hash"), "\(error)")
            XCTAssertTrue("\(error)".contains(url.path), "\(error)")
        }
    }

    // MARK: Repair

    /// A crash mid-append leaves a line without its newline: `verify` (and so `serve`) fails at it;
    /// the repair removes exactly those bytes, keeps them in a copy, and the chain verifies again.
    func testTornLineIsRemovedWithACopyKept() throws {
        try appendRounds([1, 2])
        let whole = try contents()
        let torn = Array(#"{"record":{"abort_reason":null,"adapter_sha256":"ab"#.utf8)
        try write(whole + torn)
        let failed = try log.verify(publicKey: signer.publicKey)
        XCTAssertEqual(failed.failure?.record, 3)
        XCTAssertTrue(try AuditLog.endsInTornWrite(url: log.url, publicKey: signer.publicKey, failingLine: 3))

        let repair = try log.repairTornTail(publicKey: signer.publicKey, now: Date(timeIntervalSince1970: 1_750_000_000.25))
        guard case let .remove(offset, line, _) = repair.action else { return XCTFail("\(repair)") }
        XCTAssertEqual(offset, whole.count)
        XCTAssertEqual(line, 3)
        XCTAssertEqual(try contents(), whole)
        let copy = try XCTUnwrap(repair.savedTo)
        XCTAssertEqual(copy.lastPathComponent, "audit.jsonl.torn-20250615T150640.250Z")
        XCTAssertEqual(Array(try Data(contentsOf: copy)), torn)
        XCTAssertTrue(try log.verify(publicKey: signer.publicKey).verified)
        XCTAssertEqual(try log.repairTornTail(publicKey: signer.publicKey).action, .none)
    }

    /// A whole line out of the format (zeros a crash left, a cut line followed by a newline) is a torn tail too.
    func testTerminatedGarbageLastLineIsRemoved() throws {
        try appendRounds([1])
        let whole = try contents()
        try write(whole + [0, 0, 0, 0, 10])
        let repair = try log.repairTornTail(publicKey: signer.publicKey)
        guard case .remove(whole.count, 2, _) = repair.action else { return XCTFail("\(repair)") }
        XCTAssertEqual(try contents(), whole)
    }

    /// Never a whole, correctly signed record: a clean log is left alone; a last line in the format
    /// whose signature fails is refused (tampering, not a tear) and left as it is; a signed record
    /// missing only its newline gets the newline back.
    func testRepairNeverRemovesAValidRecord() throws {
        try appendRounds([1, 2, 3])
        let whole = try contents()
        XCTAssertEqual(try log.repairTornTail(publicKey: signer.publicKey), AuditRepair(action: .none, savedTo: nil))
        XCTAssertEqual(try contents(), whole)

        // Under another key every line is whole and signed, just not by this key: refused, untouched.
        XCTAssertThrowsError(try log.repairTornTail(publicKey: SigningKeyPair().publicKey)) { error in
            XCTAssertTrue("\(error)".contains("not a torn write"), "\(error)")
        }
        XCTAssertEqual(try contents(), whole)

        // One byte changed inside the last record: its signature fails; refused, untouched.
        var tampered = whole
        let lastStart = withoutLastLine(whole).count
        tampered[lastStart + 20] ^= 0x01
        try write(tampered)
        XCTAssertThrowsError(try log.repairTornTail(publicKey: signer.publicKey))
        XCTAssertEqual(try contents(), tampered)
        XCTAssertFalse(try AuditLog.endsInTornWrite(url: log.url, publicKey: signer.publicKey, failingLine: 3))

        // The last record whole and signed, only its newline lost: restored, nothing removed.
        try write(Array(whole.dropLast()))
        XCTAssertEqual(try log.verify(publicKey: signer.publicKey).failure?.record, 3)
        let repair = try log.repairTornTail(publicKey: signer.publicKey)
        XCTAssertEqual(repair, AuditRepair(action: .completeLastLine(line: 3), savedTo: nil))
        XCTAssertEqual(try contents(), whole)
        XCTAssertEqual(try log.verify(publicKey: signer.publicKey).records.count, 3)
        let copies = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.contains("torn") }
        XCTAssertEqual(copies, [])
    }

    func testMissingLogNeedsNoRepair() throws {
        XCTAssertEqual(try log.repairTornTail(publicKey: signer.publicKey).action, .none)
        XCTAssertFalse(FileManager.default.fileExists(atPath: log.url.path))
    }
}
