import Audit
import CommandLineParsing
import CoordinatorService
import Foundation
import Reports
import SystemIO
import Wire

/// `audit`: the rounds of the audit log as a table or JSON, always with the chain verified; with
/// `--head`, checked against a client's signed head; with `--repair`, a torn tail removed first.
struct AuditCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "audit", abstract: "Show every round of the audit log and verify its signed hash chain.",
        help: """
        usage: conclave-coordinator audit --state DIR [--json] [--verify] [--head FILE] [--repair]

          --state DIR   the coordinator's state directory: its audit.jsonl, verified with signing.pub
                        (or, when that is absent, the public half of signing.key)
          --verify      exit with status 1 when the chain does not verify, or the log fails --head's check
          --head FILE   a client's audit-head.json (the log's signed head it received with its latest round
                        result): its signature must verify under the audit key, and the log must still
                        hold its record count with the same last hash; a log cut short or rewritten fails
          --repair      first remove a torn tail (a last line a crash left without its newline or out of
                        the line format), keeping a copy as audit.jsonl.torn-TIME; a whole, correctly
                        signed record is never removed (a missing newline after one is restored), and a
                        last line whose signature fails is refused: not a torn write
          --json        print {"verified", "failure": {"record", "reason"} or null, "public_key",
                        "records": [{"round", "status", "cohort", "participants", "declines", "dropouts",
                        "aggregation", "secure_aggregation", "aggregator", "trim_fraction",
                        "update_norm_clip", "max_epsilon", "eval_loss_before", "eval_loss_after",
                        "adapter_sha256", "plan", "clients", "started", "finished", "abort_reason",
                        "condition_accuracy_before", "condition_accuracy_after",
                        "condition_accuracy_standard_error"}]},
                        with "head": {"file", "records", "last_hash", "verified", "problem"} for --head
                        and "repair": {"action", "line", "saved_to"} for --repair
        The table has one row per round (participants, declined and dropped are counts; max ε is the largest
        cumulative ε among participants), then "audit chain: verified (N records)" or
        "audit chain: FAILED at record K: reason", where K is the 1-based line of audit.jsonl, then with
        --head "audit head: matches (N records)" or "audit head: FAILED: reason".
        A missing audit.jsonl is a federation with no rounds yet: zero records, verified.

        examples:
          conclave-coordinator audit --state coord
          conclave-coordinator audit --state coord --verify --json   # exit 1 if tampered
          conclave-coordinator audit --state coord --verify --head clinic-berlin/audit-head.json
          conclave-coordinator audit --state coord --repair
        """)

    static var options: [Option<Self>] {
        [.required("--state", \.statePath), .flag("--json", \.json), .flag("--verify", \.verifyOnly),
         .option("--head", \.headPath), .flag("--repair", \.repair)]
    }

    var statePath = ""
    var json = false
    /// `--verify`: a chain that does not verify is exit status 1.
    var verifyOnly = false
    var headPath: String?
    var repair = false

    func validate() throws {
        try CoordinatorCommands.checkState(statePath)
        if let headPath {
            try PathCheck.inputFile("--head", headPath, expected: "a client's audit-head.json (in its state directory)")
        }
    }

    func run() throws -> Int32 {
        let paths = CoordinatorPaths(path: statePath)
        let publicKey = try AuditLog.verifyingKey(in: paths)
        let repaired = repair ? try AuditLog(paths: paths).repairTornTail(publicKey: publicKey) : nil
        let result = try AuditLog.verify(url: paths.auditLog, publicKey: publicKey)
        let head = try headPath.map { path in
            let head = try AuditLog.readHead(from: URL(fileURLWithPath: path))
            return (path, head, try AuditLog.checkHead(head, url: paths.auditLog, publicKey: publicKey))
        }
        let chainLine = AuditTable.chainLine(result)
        let headLine = head.map { _, head, problem in
            problem.map { "audit head: FAILED: \($0)" } ?? "audit head: matches (\(head.records) records)"
        }
        if json {
            var document = try AuditTable.json(result, publicKey: publicKey)
            if let (path, head, problem) = head {
                document["head"] = ["file": path, "records": head.records, "last_hash": head.lastHashHex,
                                    "verified": problem == nil, "problem": problem ?? NSNull()] as [String: Any]
            }
            if let repaired { document["repair"] = Self.json(repaired) }
            try JSONOutput.print(document)
            for line in [result.verified ? nil : chainLine, head?.2 == nil ? nil : headLine].compactMap({ $0 }) {
                StandardError.write(line + "\n")
            }
        } else {
            if let repaired { print(Self.text(repaired)) }
            print(AuditTable.text(result.records))
            print(chainLine)
            if let headLine { print(headLine) }
        }
        let failed = !result.verified || (head.map { $0.2 != nil } ?? false)
        return verifyOnly && failed ? 1 : 0
    }

    static func text(_ repair: AuditRepair) -> String {
        switch repair.action {
        case .none: return "repair: nothing to repair (the log ends in a whole line)"
        case let .completeLastLine(line): return "repair: line \(line) is a whole signed record; restored its missing newline"
        case let .remove(_, line, reason):
            return "repair: removed line \(line): \(reason); a copy is in \(repair.savedTo?.path ?? "?")"
        case let .refuse(line, reason): return "repair: refused at line \(line): \(reason)"
        }
    }

    static func json(_ repair: AuditRepair) -> [String: Any] {
        let (action, line): (String, Int?) = switch repair.action {
        case .none: ("none", nil)
        case let .completeLastLine(line): ("restored_newline", line)
        case let .remove(_, line, _): ("removed_torn_tail", line)
        case let .refuse(line, _): ("refused", line)
        }
        return ["action": action, "line": line ?? NSNull(), "saved_to": repair.savedTo?.path ?? NSNull()] as [String: Any]
    }
}
