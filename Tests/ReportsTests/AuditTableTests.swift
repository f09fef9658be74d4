import Audit
import Foundation
import Privacy
import Reports
import SecureCrypto
import TestSupport
import Wire
import XCTest

/// `audit`'s table, chain line and JSON, and the one-line round summary, from records built here.
final class AuditTableTests: XCTestCase {
    let records = [
        ReportFixtures.committed(1, [ReportFixtures.metrics("alpha", epsilon: 1.234, before: 2.5, after: 2.0, tokens: 4000),
                                     ReportFixtures.metrics("beta", epsilon: 0.5, before: 3.0, after: 2.5, tokens: 1000)],
                                 declines: [ClientReason(client: "gamma", reason: "budget")]),
        ReportFixtures.aborted(12),
    ]

    /// Columns as wide as their widest cell; counts, ε and durations right-aligned; no trailing blanks. The
    /// eval loss is the DP-released one, with the standard error of its noise, and says so.
    func testTableAlignsEveryColumn() {
        XCTAssertEqual(AuditTable.text(records), """
            round  status     participants  declined  dropped  aggregation  secure-agg  max ε  unit    eval loss                      adapter       duration
                1  committed             2         1        0  fedavg       no           1.23  record  2.6000 → 2.1000 ± 0.1602 (DP)  000000000000     3m05s
               12  aborted               0         0        1  fedavg       yes             -  record  -                              aaaaaaaaaaaa     12.2s
            """)
        XCTAssertEqual(AuditTable.text([]),
                       "round  status  participants  declined  dropped  aggregation  secure-agg  max ε  unit  eval loss  adapter  duration")
    }

    /// A robust aggregator and the coordinator's clip are shown and named; records written before them
    /// (no aggregator: all were means) show the strategy alone and null fields.
    func testRobustAggregatorIsShownAndNamed() throws {
        var robust = records[0]
        robust.aggregator = "trimmed_mean"
        robust.trimFraction = 0.2
        robust.updateNormClip = 1.5
        XCTAssertEqual(robust.aggregationText, "fedavg+trimmed_mean(0.2)")
        XCTAssertTrue(AuditTable.text([robust]).contains("  fedavg+trimmed_mean(0.2)  no  "), AuditTable.text([robust]))
        var median = robust
        median.aggregator = "median"
        median.trimFraction = nil
        XCTAssertEqual(median.aggregationText, "fedavg+median")
        median.aggregator = "mean"
        XCTAssertEqual(median.aggregationText, "fedavg")
        XCTAssertEqual(records[0].aggregationText, "fedavg")
        let row = try AuditTable.json(robust)
        XCTAssertEqual(row["aggregator"] as? String, "trimmed_mean")
        XCTAssertEqual(row["trim_fraction"] as? Double, 0.2)
        XCTAssertEqual(row["update_norm_clip"] as? Double, 1.5)
        let old = try AuditTable.json(records[0])
        XCTAssertTrue(old["aggregator"] is NSNull && old["trim_fraction"] is NSNull && old["update_norm_clip"] is NSNull)
        // The fields survive the log's own encoding (the signed line), and an old line without them still reads.
        let directory = try Fixtures.temporaryDirectory("audit-aggregator")
        let log = AuditLog(url: directory.appendingPathComponent("audit.jsonl"))
        let signer = SigningKeyPair()
        try log.append(records[0], signer: signer)
        robust.round = 2
        try log.append(robust, signer: signer)
        let read = try log.verify(publicKey: signer.publicKey)
        XCTAssertTrue(read.verified)
        XCTAssertEqual(read.records.map(\.aggregator), [nil, "trimmed_mean"])
        XCTAssertEqual(read.records.last?.trimFraction, 0.2)
        XCTAssertEqual(read.records.last?.updateNormClip, 1.5)
    }

    func testDurations() {
        XCTAssertEqual(AuditTable.duration(0), "0.0s")
        XCTAssertEqual(AuditTable.duration(42.5), "42.5s")
        XCTAssertEqual(AuditTable.duration(187), "3m07s")
        XCTAssertEqual(AuditTable.duration(3599.4), "59m59s")
        XCTAssertEqual(AuditTable.duration(7500), "2h05m")
        XCTAssertEqual(AuditTable.duration(-1), "-")
        XCTAssertEqual(AuditTable.duration(.nan), "-")
        XCTAssertEqual(AuditTable.duration(.infinity), "-")
    }

    func testChainLine() {
        XCTAssertEqual(AuditTable.chainLine(AuditVerification(records: records, failure: nil)), "audit chain: verified (2 records)")
        XCTAssertEqual(AuditTable.chainLine(AuditVerification(records: [records[0]], failure: nil)),
                       "audit chain: verified (1 record)")
        XCTAssertEqual(AuditTable.chainLine(AuditVerification(records: records, failure: (record: 2, reason: "bad signature"))),
                       "audit chain: FAILED at record 2: bad signature")
    }

    func testJSONNamesEveryFieldAndNullsWhatIsAbsent() throws {
        let signer = SigningKeyPair()
        let document = try AuditTable.json(AuditVerification(records: records, failure: (record: 2, reason: "bad")),
                                           publicKey: signer.publicKey)
        XCTAssertEqual(document["verified"] as? Bool, false)
        XCTAssertEqual((document["failure"] as? [String: Any])?["record"] as? Int, 2)
        XCTAssertEqual(document["public_key"] as? String, Hex.encode(signer.publicKey.bytes))
        let rows = try XCTUnwrap(document["records"] as? [[String: Any]])
        XCTAssertEqual(rows.count, 2)
        XCTAssertEqual(Set(rows[1].keys), ["round", "status", "cohort", "participants", "declines", "dropouts", "aggregation",
                                           "secure_aggregation", "aggregator", "trim_fraction", "update_norm_clip", "max_epsilon", "eval_loss_before", "eval_loss_after",
                                           "eval_loss_standard_error", "eval_loss_released",
                                           "adapter_sha256", "plan", "clients", "started", "finished", "abort_reason",
                                           "distributed", "client_level", "condition_accuracy_before", "condition_accuracy_after",
                                           "condition_accuracy_standard_error"])
        XCTAssertTrue(rows[0]["condition_accuracy_before"] is NSNull, "no client released a condition accuracy")
        XCTAssertTrue(rows[1]["distributed"] is NSNull, "a local round has no distributed noise")
        XCTAssertTrue(rows[1]["client_level"] is NSNull, "nor a client-level sampling")
        XCTAssertEqual(rows[0]["eval_loss_released"] as? Bool, true)
        XCTAssertEqual(rows[0]["eval_loss_standard_error"] as? Double, records[0].evalLossStandardError)
        XCTAssertNotNil(((rows[0]["clients"] as? [[String: Any]])?.first?["held_out"] as? [String: Any])?["count"])
        XCTAssertEqual(rows[1]["started"] as? String, "2025-06-15T17:06:40.000Z")
        XCTAssertEqual(rows[1]["finished"] as? String, "2025-06-15T17:06:52.250Z")
        XCTAssertTrue(rows[1]["max_epsilon"] is NSNull)
        XCTAssertTrue(rows[1]["eval_loss_before"] is NSNull)
        XCTAssertEqual(rows[1]["abort_reason"] as? String, "too few participants: 1 < 2")
        XCTAssertTrue(rows[0]["abort_reason"] is NSNull)
        XCTAssertEqual((rows[0]["declines"] as? [[String: String]])?.first, ["client": "gamma", "reason": "budget"])
        XCTAssertEqual((rows[0]["plan"] as? [String: Any])?["noise_multiplier"] as? Double, 1.2)
        XCTAssertTrue(try AuditTable.json(AuditVerification(records: [], failure: nil), publicKey: signer.publicKey)["failure"]
                      is NSNull)
    }

    func testRoundSummaryLineAndJSON() throws {
        XCTAssertEqual(RoundSummary(records[0]).line,
                       "round 1: committed, 2 participants, held-out loss (DP-released, ± 0.1602) 2.6000 → 2.1000, max ε 1.23, "
                       + "185.0 s")
        XCTAssertEqual(RoundSummary(records[1]).line,
                       "round 12: aborted, 0 participants, held-out loss - → -, max ε -, 12.2 s (too few participants: 1 < 2)")
        func json(_ summary: RoundSummary) throws -> [String: Any] {
            try XCTUnwrap(JSONSerialization.jsonObject(with: JSONEncoder().encode(summary)) as? [String: Any])
        }
        let committed = try json(RoundSummary(records[0]))
        XCTAssertEqual(Set(committed.keys), ["round", "status", "participants", "eval_loss_before", "eval_loss_after",
                                             "eval_loss_standard_error", "eval_loss_released", "max_epsilon", "seconds"])
        XCTAssertEqual(committed["eval_loss_released"] as? Bool, true)
        XCTAssertEqual(committed["participants"] as? Int, 2)
        XCTAssertEqual(committed["max_epsilon"] as? Double, 1.234)
        let aborted = try json(RoundSummary(records[1]))
        XCTAssertEqual(aborted["abort_reason"] as? String, "too few participants: 1 < 2")
        XCTAssertTrue(aborted["eval_loss_before"] is NSNull)
        XCTAssertTrue(aborted["max_epsilon"] is NSNull)
        // JSON has no NaN: a diverged loss is null rather than a failure to print.
        var diverged = RoundSummary(records[0])
        diverged.evalLossAfter = .nan
        XCTAssertTrue(try json(diverged)["eval_loss_after"] is NSNull)
    }
}

/// The unit of a round's ε (the plan's privacy unit) in the text table, the HTML report and a ledger page.
final class PrivacyUnitReportTests: XCTestCase {
    func testUserLevelRoundsAndLedgersSayPerUser() throws {
        var record = ReportFixtures.committed(1, [ReportFixtures.metrics("alpha", epsilon: 1.5, before: 2.5, after: 2.0)])
        record.plan.privacyUnit = .user
        let row = AuditTable.text([record]).split(separator: "\n")[1].split(separator: " ").map(String.init)
        XCTAssertEqual(row[8], "user", "the unit column follows max ε: \(row)")

        let directory = try Fixtures.temporaryDirectory("conclave-unit-report")
        defer { try? FileManager.default.removeItem(at: directory) }
        var ledger = try PrivacyLedger(directory: directory,
                                       creatingWith: PrivacyBudget(epsilon: 6, delta: 1e-5, accountant: .rdp, unit: .user))
        try ledger.charge(purpose: "run:1", samplingRate: 0.1, noiseMultiplier: 1.1, clipNorm: 1, steps: 10, unit: .user)
        let html = LedgerReport.html(budget: ledger.budget, entries: ledger.entries, ledgerPath: ledger.fileURL.path)
        XCTAssertTrue(html.contains("per <span data-field=\"unit\">user</span>"), "headline states the unit")
        XCTAssertEqual(ReportFixtures.rows(html, table: "entries-table").map { $0.cells["unit"] }, ["user"])
    }
}
