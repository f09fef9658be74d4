import FaultInjection
import FederationDemo
import Foundation
import SystemIO
import TestSupport
import XCTest

/// Fault injection (issue 14), the short run of `make test`: real `serve` and `join` processes killed
/// with SIGKILL at named points of real rounds, secure and plain, then restarted and checked
/// (`InvariantChecks`); `conclave-bench-faults` runs the same iterations at length, at random points.
/// Each check has its control: the same checks flag a truncated log, a swapped adapter, a rewound
/// ledger, a broken line and a federation that can no longer commit.
final class FaultInjectionTests: XCTestCase {
    private func federation(_ label: String) throws -> FaultFederation {
        try FaultFederation(root: try Fixtures.temporaryDirectory(label), executables: TinyFederation.executables,
                            model: Fixtures.url("tiny-llama").path)
    }

    /// Kills at points that cover both roles and both modes; every promise holds after each, and every
    /// armed point is reached.
    func testKillsAtNamedPointsKeepEveryPromise() throws {
        let faults = try federation("faults")
        try faults.startCoordinator(secure: false)
        defer { faults.stopAll() }
        for client in faults.clients { try faults.startClient(client) }
        let plans = [
            IterationPlan(secure: false, kills: [PlannedKill(victim: "coordinator", point: "coordinator-after-audit-append", delay: 0),
                                                 PlannedKill(victim: "client-1", point: "client-after-upload", delay: 0)],
                          killRecovery: false),
            IterationPlan(secure: true, kills: [PlannedKill(victim: "coordinator", point: "coordinator-after-adapter-write", delay: 0),
                                                PlannedKill(victim: "client-2", point: "client-after-charge", delay: 0)],
                          killRecovery: true),
            IterationPlan(secure: true, kills: [PlannedKill(victim: "client-3", point: "client-after-upload", delay: 0),
                                                PlannedKill(victim: "coordinator", point: "coordinator-after-in-flight-removal", delay: 0)],
                          killRecovery: false),
            IterationPlan(secure: false, kills: [PlannedKill(victim: "client-4", point: "client-after-keep-global", delay: 0),
                                                 PlannedKill(victim: "client-2", point: "client-after-train", delay: 0)],
                          killRecovery: false),
        ]
        for plan in plans {
            let outcome = faults.runIteration(plan)
            XCTAssertEqual(outcome.violations, [], "\(plan)")
            XCTAssertEqual(outcome.missed, [], "every armed point is reached: \(plan)")
            XCTAssertEqual(Set(outcome.hits), Set(plan.kills.compactMap(\.point).map { "point:\($0)" }
                                                  + (plan.killRecovery ? ["point:coordinator-recovery-after-abort-append"] : [])),
                           "\(plan)")
            XCTAssertNotNil(outcome.cleanRoundSeconds, "the clean round after \(plan) commits")
        }
    }

    /// The checks are not vacuous: on a federation after two rounds they pass, and each flags its own fault.
    func testChecksFlagEachBrokenPromise() throws {
        let faults = try federation("fault-controls")
        try faults.startCoordinator(secure: false)
        defer { faults.stopAll() }
        for client in faults.clients { try faults.startClient(client) }
        let paths = faults.federation.paths
        let ledger = faults.federation.directory(of: "client-1").appendingPathComponent("privacy-ledger.json")
        let clean = IterationPlan(secure: false, kills: [], killRecovery: false)
        XCTAssertEqual(faults.runIteration(clean).violations, [])
        let ledgerAfterRound2 = try Data(contentsOf: ledger)
        XCTAssertEqual(faults.runIteration(clean).violations, [])
        XCTAssertEqual(faults.checks.run(), [], "the controls start from a federation that passes")

        // A truncated log verifies alone; the head a client kept sees the missing record.
        try tampered(paths.auditLog, { String(decoding: $0, as: UTF8.self).split(separator: "\n").dropLast()
            .map { $0 + "\n" }.joined().data(using: .utf8)! }) {
            XCTAssertEqual(faults.checks.run().map(\.check), ["head", "head", "head", "head"])
        }
        // A changed byte in a record.
        try tampered(paths.auditLog, { var bytes = $0; bytes[40] ^= 0x01; return bytes }) {
            XCTAssertTrue(faults.checks.run().map(\.check).contains("audit"), "\(faults.checks.run())")
        }
        // Round 2's adapter replaced by round 1's.
        let adapter2 = paths.adapter(round: 2).appendingPathComponent("adapter_model.safetensors")
        let adapter1 = try Data(contentsOf: paths.adapter(round: 1).appendingPathComponent("adapter_model.safetensors"))
        try tampered(adapter2, { _ in adapter1 }) {
            XCTAssertEqual(faults.checks.run().map(\.check), ["adapter"])
        }
        // client-1's ledger rewound to before rounds 3 and 4: the rounds it uploaded in are uncharged, its ε too low.
        try tampered(ledger, { _ in ledgerAfterRound2 }) {
            let found = faults.checks.run()
            XCTAssertEqual(found.map(\.check), ["ledger", "ledger", "ledger"], "\(found)")
            XCTAssertTrue(found.first?.detail.contains("round 3") ?? false, "\(found)")
            XCTAssertTrue(found.last?.detail.contains("below the ε") ?? false, "\(found)")
        }
        XCTAssertEqual(faults.checks.run(), [])

        // No data on three clients: they decline, so no round can commit, and the clean round says so.
        for client in ["client-1", "client-2", "client-3"] {
            let data = faults.federation.directory(of: client).appendingPathComponent("train.jsonl")
            try FileManager.default.moveItem(at: data, to: data.appendingPathExtension("away"))
        }
        let stuck = faults.runIteration(clean)
        XCTAssertEqual(stuck.violations.map(\.check), ["liveness"], "\(stuck.violations)")
    }

    /// Runs `body` with `file` changed by `change`, then puts the original back.
    private func tampered(_ file: URL, _ change: (Data) -> Data, _ body: () throws -> Void) throws {
        let original = try Data(contentsOf: file)
        try change(original).write(to: file)
        defer { try? original.write(to: file) }
        try body()
    }
}
