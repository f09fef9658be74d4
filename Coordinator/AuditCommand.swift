import Audit
import CommandLineParsing
import CoordinatorService
import Foundation
import Reports
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
        let chainLine = AuditTable.chainLine(result)
        if json {
            try JSONOutput.print(try AuditTable.json(result, publicKey: publicKey))
            if !result.verified { StandardError.write(chainLine + "\n") }
        } else {
            print(AuditTable.text(result.records))
            print(chainLine)
        }
        return verifyOnly && !result.verified ? 1 : 0
    }
}
