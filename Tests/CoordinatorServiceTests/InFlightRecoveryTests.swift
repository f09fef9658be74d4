import Audit
@testable import CoordinatorService
import FederationProtocol
import Foundation
import SecureCrypto
import SystemIO
import TestSupport
import Wire
import XCTest

/// `serve`'s recovery of a round a crash left in flight, when a second crash cut the first recovery
/// short (found by fault injection, issue 14: the coordinator killed after writing a round's adapter,
/// then again inside its recovery, between the abort record and the adapter's removal).
final class InFlightRecoveryTests: CoordinatorStateTestCase {
    override class var stateLabel: String { "in-flight-recovery" }

    /// Round 1's adapter was written but never committed, the first restart recorded the round aborted
    /// and died before removing the adapter: the next start removes it (before the fix it stayed for
    /// good, an adapter under a round's name that the audit log says never committed).
    func testAnAbortedRoundsAdapterIsRemovedWhenTheFirstRecoveryDiedBeforeRemovingIt() throws {
        let signer = try SigningKeyPair.readSecretKeyFile(path: paths.signingKey.path)
        let started = Date(timeIntervalSince1970: 1_750_000_000)
        try InFlightMark(round: 1, started: started, cohort: ["a", "b"]).write(paths)
        let uncommitted = paths.adapter(round: 1)
        try FileManager.default.createDirectory(at: uncommitted, withIntermediateDirectories: true)
        try Data("never committed".utf8).write(to: uncommitted.appendingPathComponent("adapter_model.safetensors"))
        try AuditLog(paths: paths).append(AuditRecord(
            status: "aborted", round: 1, started: started, finished: started + 5, cohort: ["a", "b"], participants: [],
            declines: [], dropouts: [], aggregation: "fedavg", secureAggregation: false, plan: configuration.rounds.plan,
            clients: [], maxEpsilon: nil, evalLossBefore: nil, evalLossAfter: nil, adapterSHA256: String(repeating: "0", count: 64),
            abortReason: "the coordinator stopped while the round was in flight", previousHash: ""), signer: signer)

        _ = try CoordinatorServer(paths: paths, configuration: configuration,
                                  log: OperatorLog(url: directory.appendingPathComponent("serve.log")))
        XCTAssertFalse(FileManager.default.fileExists(atPath: uncommitted.path), "the aborted round's adapter must go")
        XCTAssertFalse(FileManager.default.fileExists(atPath: paths.roundInFlight.path))
        let records = try AuditLog.verify(url: paths.auditLog, publicKey: signer.publicKey).records
        XCTAssertEqual(records.map(\.round), [1], "the round is recorded once")
    }

    /// A committed round's adapter is never removed, even with the mark still there (a crash after the
    /// append, before the mark's removal).
    func testACommittedRoundsAdapterStaysWhenTheMarkOutlivedTheAppend() throws {
        // The first start makes the initial adapter (round 0); that server is gone before the next starts.
        let initialSHA256 = try { () throws -> String in
            let first = try CoordinatorServer(paths: paths, configuration: configuration,
                                              log: OperatorLog(url: directory.appendingPathComponent("serve.log")))
            return first.global.withLock { $0 }.fileSHA256
        }()
        let signer = try SigningKeyPair.readSecretKeyFile(path: paths.signingKey.path)
        let started = Date(timeIntervalSince1970: 1_750_000_000)
        try InFlightMark(round: 1, started: started, cohort: ["a"]).write(paths)
        try FileManager.default.copyItem(at: paths.adapter(round: 0), to: paths.adapter(round: 1))
        try AuditLog(paths: paths).append(AuditRecord(
            status: "committed", round: 1, started: started, finished: started + 5, cohort: ["a"], participants: ["a"],
            declines: [], dropouts: [], aggregation: "fedavg", secureAggregation: false, plan: configuration.rounds.plan,
            clients: [], maxEpsilon: nil, evalLossBefore: nil, evalLossAfter: nil, adapterSHA256: initialSHA256,
            abortReason: nil, previousHash: ""), signer: signer)

        let server = try CoordinatorServer(paths: paths, configuration: configuration,
                                           log: OperatorLog(url: directory.appendingPathComponent("serve.log")))
        XCTAssertTrue(FileManager.default.fileExists(atPath: paths.adapter(round: 1).path))
        XCTAssertEqual(server.global.withLock { $0 }.round, 1)
        XCTAssertFalse(FileManager.default.fileExists(atPath: paths.roundInFlight.path))
    }
}
