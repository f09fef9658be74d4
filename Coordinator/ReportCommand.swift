import Audit
import CommandLineParsing
import CoordinatorService
import Foundation
import ModelFormats
import Reports
import SystemIO
import Wire

/// `report`: the auditor's report of a coordinator's state directory as one self-contained HTML file.
struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "report", abstract: "Write the auditor's report (privacy spent, model quality, participation) as HTML.",
        help: """
        usage: conclave-coordinator report --state DIR --out FILE [--json]

          --state DIR   the coordinator's state directory: its audit.jsonl (verified with signing.pub, or the
                        public half of signing.key), coordinator.json, the latest committed adapter and, when
                        the demo kept one, its public probe (public-probe.json)
          --out FILE    the HTML file to write: self-contained (inline CSS and SVG charts, no script, no
                        external resource), readable offline in any browser
          --json        print {"out", "verified", "rounds", "clients", "problems": [...]}: rounds is the number of
                        records read, clients the number of distinct clients the log names
        The page states the audit chain's verification result at the top. A missing log, missing rounds, a
        tampered log or a missing signing key do not stop the report: it shows what could be read and lists
        each problem in a red banner at the top. The exit status is 0 whenever the file is written; use
        `audit --verify` to fail a script on a broken chain.

        examples:
          conclave-coordinator report --state coord --out report.html
        """)

    static var options: [Option<Self>] {
        [.required("--state", \.statePath), .required("--out", \.outPath), .flag("--json", \.json)]
    }

    var statePath = ""
    var outPath = ""
    var json = false

    func validate() throws {
        try CoordinatorCommands.checkState(statePath)
        try PathCheck.outputFile("--out", outPath, expected: "the HTML report to write")
    }

    func run() throws -> Int32 {
        let input = AuditReport.load(stateDirectory: URL(fileURLWithPath: statePath))
        let problems = AuditReport.problems(input)
        let out = URL(fileURLWithPath: outPath)
        do {
            try writeFileAtomically(Data(AuditReport.html(input).utf8), to: out)
        } catch {
            throw FederationError.state(path: outPath, "cannot write the report: \(error)")
        }
        for problem in problems { StandardError.write("report: \(problem)\n") }
        if json {
            try JSONOutput.print([
                "out": out.path, "verified": input.chain.isVerified, "rounds": input.records.count,
                "clients": AuditReport.clientIDs(input.records).count, "problems": problems,
            ])
        } else {
            print("report written to \(out.path): \(input.records.count) round\(input.records.count == 1 ? "" : "s"), "
                  + (input.chain.isVerified ? "audit chain verified" : "audit chain NOT verified")
                  + (problems.isEmpty ? "" : ", \(problems.count) problem\(problems.count == 1 ? "" : "s") stated at the top"))
        }
        return 0
    }
}
