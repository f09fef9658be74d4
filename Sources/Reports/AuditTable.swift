import Audit
import Foundation
import SecureCrypto
import Wire

/// The audit log as `conclave-coordinator audit` shows it: an aligned text table with one row per
/// round and the chain's verdict, or the `--json` document.
public enum AuditTable {
    /// The rounds as an aligned text table: participants, declined and dropped are counts; max ε is the
    /// largest cumulative ε among participants, per the plan's unit (record or user); the eval loss is the
    /// participants' DP-released held-out loss before → after with its standard error from the noise
    /// ("± se"), or, in records written before releases existed, the figures clients sent in clear,
    /// marked "(clear)"; the adapter is its hash's first 12 digits.
    public static func text(_ records: [AuditRecord]) -> String {
        let header = ["round", "status", "participants", "declined", "dropped", "aggregation", "secure-agg", "max ε",
                      "unit", "eval loss", "adapter", "duration"]
        let rightAligned: Set<Int> = [0, 2, 3, 4, 7, 11]
        let rows = records.map(row)
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { column, cell in
                let pad = String(repeating: " ", count: widths[column] - cell.count)
                return rightAligned.contains(column) ? pad + cell : cell + pad
            }.joined(separator: "  ").replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
        }
        return ([line(header)] + rows.map(line)).joined(separator: "\n")
    }

    private static func row(_ record: AuditRecord) -> [String] {
        let loss = lossText(record)
        return [
            String(record.round), record.status, String(record.participants.count), String(record.declines.count),
            String(record.dropouts.count), record.aggregationText, record.secureAggregation ? "yes" : "no",
            record.maxEpsilon.map { String(format: "%.2f", $0) } ?? "-", record.plan.privacyUnit.rawValue, loss,
            String(record.adapterSHA256.prefix(12)), duration(record.finished.timeIntervalSince(record.started)),
        ]
    }

    /// A record's held-out loss: "2.5000 → 2.4000 ± 0.0310 (DP)", "2.5000 → 2.4000 (clear)" for a record
    /// of figures sent in clear, or "-".
    public static func lossText(_ record: AuditRecord) -> String {
        guard let before = record.evalLossBefore, let after = record.evalLossAfter else { return "-" }
        let figures = String(format: "%.4f → %.4f", before, after)
        guard record.metricsReleased else { return figures + " (clear)" }
        return figures + (record.evalLossStandardError.map { String(format: " ± %.4f", $0) } ?? "") + " (DP)"
    }

    /// "audit chain: verified (N records)" or "audit chain: FAILED at record K: reason", K the 1-based
    /// line of audit.jsonl.
    public static func chainLine(_ verification: AuditVerification) -> String {
        let count = verification.records.count
        return verification.failure.map { "audit chain: FAILED at record \($0.record): \($0.reason)" }
            ?? "audit chain: verified (\(count) record\(count == 1 ? "" : "s"))"
    }

    /// Seconds as `42.5s`, `3m07s` or `2h05m`; "-" for a negative or non-finite duration.
    public static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0 else { return "-" }
        if seconds < 60 { return String(format: "%.1fs", seconds) }
        let whole = Int(seconds.rounded())
        if whole < 3600 { return String(format: "%dm%02ds", whole / 60, whole % 60) }
        return String(format: "%dh%02dm", whole / 3600, whole % 3600 / 60)
    }

    /// The `--json` document: `{"verified", "failure": {"record", "reason"} or null, "public_key",
    /// "records": [record]}`, each record as `json(_:)` gives it.
    public static func json(_ verification: AuditVerification, publicKey: SigningPublicKey) throws -> [String: Any] {
        [
            "verified": verification.verified,
            "failure": verification.failure.map { ["record": $0.record, "reason": $0.reason] as [String: Any] } ?? NSNull(),
            "public_key": Hex.encode(publicKey.bytes),
            "records": try verification.records.map(json),
        ]
    }

    /// One record as the `--json` contract names its fields: dates in ISO 8601 with fractions of a
    /// second, absent figures as null (`distributed`: a distributed-DP round's noise, `client_level`: a client-level round's
    /// sampling and federation ε, null otherwise; the condition accuracy: null when no participant released one).
    public static func json(_ record: AuditRecord) throws -> [String: Any] {
        [
            "round": record.round, "status": record.status, "cohort": record.cohort, "participants": record.participants,
            "declines": try encoded(record.declines), "dropouts": try encoded(record.dropouts),
            "aggregation": record.aggregation, "secure_aggregation": record.secureAggregation,
            "aggregator": record.aggregator ?? NSNull(), "trim_fraction": record.trimFraction ?? NSNull(),
            "update_norm_clip": record.updateNormClip ?? NSNull(),
            "max_epsilon": record.maxEpsilon ?? NSNull(), "eval_loss_before": record.evalLossBefore ?? NSNull(),
            "eval_loss_after": record.evalLossAfter ?? NSNull(),
            "eval_loss_standard_error": record.evalLossStandardError ?? NSNull(),
            "eval_loss_released": record.metricsReleased, "adapter_sha256": record.adapterSHA256,
            "plan": try encoded(record.plan), "clients": try encoded(record.clients),
            "started": record.started.formatted(dateStyle), "finished": record.finished.formatted(dateStyle),
            "abort_reason": record.abortReason ?? NSNull(),
            "distributed": try record.distributed.map { try encoded($0) } ?? NSNull(),
            "client_level": try record.clientLevel.map { try encoded($0) } ?? NSNull(),
            "condition_accuracy_before": record.conditionAccuracyBefore ?? NSNull(),
            "condition_accuracy_after": record.conditionAccuracyAfter ?? NSNull(),
            "condition_accuracy_standard_error": record.conditionAccuracyStandardError ?? NSNull(),
        ]
    }

    private static let dateStyle = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    /// A Codable value as the JSON object or array its own coding keys give.
    private static func encoded(_ value: some Encodable) throws -> Any {
        try JSONSerialization.jsonObject(with: JSONEncoder().encode(value))
    }
}
