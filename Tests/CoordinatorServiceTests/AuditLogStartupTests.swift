import Audit
@testable import CoordinatorService
import FederationProtocol
import Foundation
import SecureCrypto
import SystemIO
import TestSupport
import Wire
import XCTest

/// `serve`'s start over the audit log: a torn last line stops it with the instruction to run
/// `audit --repair`; after the repair it starts, and the head it will send with round results is the
/// log's, signed with the audit key.
final class AuditLogStartupTests: CoordinatorStateTestCase {
    override class var stateLabel: String { "audit-startup" }

    func testTornLineStopsServeUntilRepairedThenTheHeadIsTheLogs() throws {
        let signer = try SigningKeyPair.readSecretKeyFile(path: paths.signingKey.path)
        let log = AuditLog(paths: paths)
        let started = Date(timeIntervalSince1970: 1_750_000_000)
        for round: UInt64 in [1, 2] {
            try log.append(AuditRecord(status: "aborted", round: round, started: started, finished: started + 5, cohort: ["a"],
                                       participants: [], declines: [], dropouts: [], aggregation: "fedavg",
                                       secureAggregation: false, plan: configuration.rounds.plan, clients: [], maxEpsilon: nil,
                                       evalLossBefore: nil, evalLossAfter: nil, adapterSHA256: String(repeating: "0", count: 64),
                                       abortReason: "too few participants", previousHash: ""), signer: signer)
        }
        let whole = try Data(contentsOf: paths.auditLog)
        try (whole + Data(#"{"record":{"abort_reason":"too f"#.utf8)).write(to: paths.auditLog)

        XCTAssertThrowsError(try start()) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("torn by a crash"), text)
            XCTAssertTrue(text.contains("audit --state \(self.paths.root.path) --repair"), text)
        }
        let repair = try log.repairTornTail(publicKey: signer.publicKey)
        guard case .remove(whole.count, 3, _) = repair.action else { return XCTFail("\(repair)") }
        XCTAssertEqual(try Data(contentsOf: paths.auditLog), whole)

        let server = try start()
        let head = try XCTUnwrap(server.auditHead.withLock { $0 })
        XCTAssertEqual(head.records, 2)
        XCTAssertTrue(head.isSigned(by: signer.publicKey))
        XCTAssertNil(try AuditLog.checkHead(head, url: paths.auditLog, publicKey: signer.publicKey))
    }

    /// A broken chain that is not a torn tail keeps the old words: no repair is offered.
    func testTamperedLastRecordIsNotOfferedARepair() throws {
        let signer = try SigningKeyPair.readSecretKeyFile(path: paths.signingKey.path)
        let started = Date(timeIntervalSince1970: 1_750_000_000)
        try AuditLog(paths: paths).append(AuditRecord(
            status: "aborted", round: 1, started: started, finished: started + 5, cohort: ["a"], participants: [], declines: [],
            dropouts: [], aggregation: "fedavg", secureAggregation: false, plan: configuration.rounds.plan, clients: [],
            maxEpsilon: nil, evalLossBefore: nil, evalLossAfter: nil, adapterSHA256: String(repeating: "0", count: 64),
            abortReason: "x", previousHash: ""), signer: signer)
        var bytes = Array(try Data(contentsOf: paths.auditLog))
        bytes[15] ^= 0x01
        try Data(bytes).write(to: paths.auditLog)
        XCTAssertThrowsError(try start()) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("refusing to extend a broken chain"), text)
            XCTAssertFalse(text.contains("--repair"), text)
        }
    }
}
