import Audit
import CommandLineParsing
import CoordinatorService
import Foundation
import SecureCrypto
import SystemIO
import Wire

/// `audit`: the rounds of the audit log as a table or JSON, always with the chain verified.
struct AuditCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "audit", abstract: "Show every round of the audit log and verify its signed hash chain.",
        help: """
        usage: conclave-coordinator audit --state DIR [--json] [--verify]

          --state DIR   the coordinator's state directory: its audit.jsonl, verified with signing.pub
                        (or, when that is absent, the public half of signing.key)
          --verify      exit with status 1 when the chain does not verify
          --json        print {"verified", "failure": {"record", "reason"} or null, "public_key",
                        "records": [{"round", "status", "cohort", "participants", "declines", "dropouts",
                        "aggregation", "secure_aggregation", "max_epsilon", "eval_loss_before",
                        "eval_loss_after", "adapter_sha256", "plan", "clients", "started", "finished",
                        "abort_reason"}]}
        The table has one row per round (participants, declined and dropped are counts; max ε is the largest
        cumulative ε among participants), then "audit chain: verified (N records)" or
        "audit chain: FAILED at record K: reason", where K is the 1-based line of audit.jsonl.
        A missing audit.jsonl is a federation with no rounds yet: zero records, verified.

        examples:
          conclave-coordinator audit --state coord
          conclave-coordinator audit --state coord --verify --json   # exit 1 if tampered
        """)

    static var options: [Option<Self>] {
        [.required("--state", \.statePath), .flag("--json", \.json), .flag("--verify", \.verifyOnly)]
    }

    var statePath = ""
    var json = false
    /// `--verify`: a chain that does not verify is exit status 1.
    var verifyOnly = false

    func validate() throws { try CoordinatorCommands.checkState(statePath) }

    func run() throws -> Int32 {
        let paths = CoordinatorPaths(path: statePath)
        let publicKey = try AuditLog.verifyingKey(in: paths)
        let result = try AuditLog.verify(url: paths.auditLog, publicKey: publicKey)
        let chainLine = result.failure.map { "audit chain: FAILED at record \($0.record): \($0.reason)" }
            ?? "audit chain: verified (\(result.records.count) record\(result.records.count == 1 ? "" : "s"))"

        if json {
            try JSONOutput.print([
                "verified": result.verified,
                "failure": result.failure.map { ["record": $0.record, "reason": $0.reason] as [String: Any] } ?? NSNull(),
                "public_key": Hex.encode(publicKey.bytes),
                "records": try result.records.map(Self.jsonObject),
            ])
            if !result.verified { StandardError.write(chainLine + "\n") }
        } else {
            print(Self.table(result.records))
            print(chainLine)
        }
        return verifyOnly && !result.verified ? 1 : 0
    }

    static let dateStyle = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    /// One record as the `--json` contract names its fields.
    static func jsonObject(_ record: AuditRecord) throws -> [String: Any] {
        [
            "round": record.round, "status": record.status, "cohort": record.cohort, "participants": record.participants,
            "declines": try encoded(record.declines), "dropouts": try encoded(record.dropouts),
            "aggregation": record.aggregation, "secure_aggregation": record.secureAggregation,
            "max_epsilon": record.maxEpsilon ?? NSNull(), "eval_loss_before": record.evalLossBefore ?? NSNull(),
            "eval_loss_after": record.evalLossAfter ?? NSNull(), "adapter_sha256": record.adapterSHA256,
            "plan": try encoded(record.plan), "clients": try encoded(record.clients),
            "started": record.started.formatted(dateStyle), "finished": record.finished.formatted(dateStyle),
            "abort_reason": record.abortReason ?? NSNull(),
        ]
    }

    /// A Codable value as the JSON object or array its own coding keys give.
    static func encoded(_ value: some Encodable) throws -> Any {
        try JSONSerialization.jsonObject(with: JSONEncoder().encode(value))
    }

    /// The rounds as an aligned text table.
    static func table(_ records: [AuditRecord]) -> String {
        let header = ["round", "status", "participants", "declined", "dropped", "aggregation", "secure-agg", "max ε",
                      "eval loss", "adapter", "duration"]
        let rightAligned: Set<Int> = [0, 2, 3, 4, 7, 10]
        let rows = records.map { record -> [String] in
            let loss: String
            if let before = record.evalLossBefore, let after = record.evalLossAfter {
                loss = String(format: "%.4f → %.4f", before, after)
            } else {
                loss = "-"
            }
            return [
                String(record.round), record.status, String(record.participants.count), String(record.declines.count),
                String(record.dropouts.count), record.aggregation, record.secureAggregation ? "yes" : "no",
                record.maxEpsilon.map { String(format: "%.2f", $0) } ?? "-", loss,
                String(record.adapterSHA256.prefix(12)), duration(record.finished.timeIntervalSince(record.started)),
            ]
        }
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { column, cell in
                let pad = String(repeating: " ", count: widths[column] - cell.count)
                return rightAligned.contains(column) ? pad + cell : cell + pad
            }.joined(separator: "  ").replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
        }
        return ([line(header)] + rows.map(line)).joined(separator: "\n")
    }

    /// Seconds as `42.5s`, `3m07s` or `2h05m`.
    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0 else { return "-" }
        if seconds < 60 { return String(format: "%.1fs", seconds) }
        let whole = Int(seconds.rounded())
        if whole < 3600 { return String(format: "%dm%02ds", whole / 60, whole % 60) }
        return String(format: "%dh%02dm", whole / 3600, whole % 3600 / 60)
    }
}
