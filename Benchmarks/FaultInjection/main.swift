import CommandLineParsing
import FaultInjection
import FederationDemo
import Foundation
import SystemIO

// Fault injection (issue 14): a federation of real processes (conclave-coordinator serve and four
// conclave-client join, beside this executable, over mutual TLS on loopback, the tiny fixture model),
// killed with SIGKILL at random points of real rounds, secure and plain, over many iterations. After
// each kill and restart: the audit log verifies (also against every client's kept head), every
// committed adapter hashes to its record's adapter_sha256, no client's ledger lacks a round the
// coordinator saw it accept or upload in, and one more round commits. Exits 1 on any violation.

let usage = """
usage: conclave-bench-faults [--iterations N] [--fresh-every K] [--model DIR] [--stop-on-violation] [--keep] [--json]

Each iteration draws (from the system's random generator; no seed, each plan is printed): secure or
plain; the coordinator with probability 1/2 and up to two of the four clients (at least one victim);
each victim killed at a named fault point (CONCLAVE_FAULT_POINT, armed in its environment when it is
started: the process kills itself with SIGKILL there) or, with probability 1/2, by SIGKILL from here a
uniform random delay after the round is requested (0 to 1.2 x the median clean round). A coordinator
that dies mid-round is, with probability 1/2, restarted armed to die again inside its recovery. Then
every dead process is restarted, the checks run, one clean round must commit, and the checks run again.

Figures: iterations (secure, plain), kill points hit (point:NAME for named points,
random:ROLE:after-EVENT for timed kills, EVENT the last coordinator event of the round before the
kill), named points armed but not reached, how the killed rounds ended, violations (each with its
plan), the clean rounds' median seconds, wall time.
  --iterations N       default 20
  --fresh-every K      a new federation every K iterations (default 40): each ledger charge composes
                       every entry anew, so a client's accept slows as its history grows
  --model DIR          the HF directory every process loads (default: the tiny fixture,
                       $CONCLAVE_FIXTURES/tiny-llama or the repository's Tests/Fixtures/tiny-llama)
  --stop-on-violation  stop at the first iteration with a violation (its state is kept)
  --keep               keep the federation's directory (printed on standard error)
"""

var arguments = Arguments(Array(CommandLine.arguments.dropFirst()))
if arguments.helpRequested {
    print(usage)
    exit(0)
}

func median(_ values: [Double]) -> Double? {
    let sorted = values.sorted()
    return sorted.isEmpty ? nil : sorted[sorted.count / 2]
}

func clock(_ seconds: Double) -> String {
    let s = Int(seconds.rounded())
    return String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60)
}

do {
    let iterations = try arguments.int("--iterations", in: 1...1_000_000) ?? 20
    let freshEvery = try arguments.int("--fresh-every", in: 1...1_000_000) ?? 40
    let committed = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Tests/Fixtures").path
    let fixtures = ProcessInfo.processInfo.environment["CONCLAVE_FIXTURES"] ?? committed
    let model = try arguments.option("--model") ?? "\(fixtures)/tiny-llama"
    let stopOnViolation = arguments.flag("--stop-on-violation")
    let keep = arguments.flag("--keep")
    let json = arguments.flag("--json")
    try arguments.finish()
    guard FileManager.default.fileExists(atPath: URL(fileURLWithPath: model).appendingPathComponent("config.json").path) else {
        throw UsageError("--model: \(model)/config.json does not exist; give the tiny fixture model's directory")
    }
    let bin = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
    let executables = try FederationExecutables.beside(coordinator: bin.appendingPathComponent("conclave-coordinator"))
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("conclave-bench-faults-\(getpid())")
    try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    let started = Date()
    let summary = try runFaultCampaign(iterations: iterations, freshEvery: freshEvery, stopOnViolation: stopOnViolation, make: { k in
        let directory = root.appendingPathComponent("federation-\(k)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return try FaultFederation(root: directory, executables: executables, model: model)
    }) { i, outcome, summary in
        let elapsed = Date().timeIntervalSince(started)
        let eta = elapsed / Double(i) * Double(iterations - i)
        var line = "[\(i)/\(iterations)] \(outcome.plan): round \(outcome.round) \(outcome.status); hit "
            + (outcome.hits.isEmpty ? "-" : outcome.hits.joined(separator: ", "))
            + (outcome.missed.isEmpty ? "" : "; not reached " + outcome.missed.joined(separator: ", "))
            + String(format: "; %.1f s; violations %d so far; ETA %@\n", outcome.seconds, summary.violations.count, clock(eta))
        for violation in outcome.violations { line += "  VIOLATION \(violation)\n" }
        StandardError.write(line)
    }
    let wall = Date().timeIntervalSince(started)
    if keep || !summary.violations.isEmpty {
        StandardError.write("federation kept in \(root.path)\n")
    } else {
        try? FileManager.default.removeItem(at: root)
    }
    if json {
        try JSONOutput.print([
            "iterations": summary.iterations, "secure_iterations": summary.secureIterations,
            "plain_iterations": summary.plainIterations, "hits": summary.hits, "armed_not_reached": summary.missed,
            "named_points_hit": summary.namedPointsHit, "named_points": FaultPoint.names,
            "killed_round_status": summary.killedRoundStatuses, "violations": summary.violations.map {
                ["iteration": $0.iteration, "plan": $0.plan, "check": $0.violation.check, "detail": $0.violation.detail]
            },
            "clean_round_seconds_median": ["secure": median(summary.cleanRoundSeconds[true] ?? []).map { $0 as Any } ?? NSNull(),
                                           "plain": median(summary.cleanRoundSeconds[false] ?? []).map { $0 as Any } ?? NSNull()],
            "wall_seconds": wall, "model": model, "fresh_every": freshEvery,
        ])
    } else {
        print("iterations \(summary.iterations) (secure \(summary.secureIterations), plain \(summary.plainIterations)), "
              + "wall \(clock(wall)); violations \(summary.violations.count)")
        print("killed rounds ended: " + summary.killedRoundStatuses.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
                .joined(separator: ", "))
        print(String(format: "clean round median: secure %.2f s, plain %.2f s", median(summary.cleanRoundSeconds[true] ?? []) ?? .nan,
                     median(summary.cleanRoundSeconds[false] ?? []) ?? .nan))
        print("kill points hit:")
        for (label, count) in summary.hits.sorted(by: { $0.key < $1.key }) { print(String(format: "  %6d  %@", count, label)) }
        print("named points armed and not reached (the round ended another way):")
        for (label, count) in summary.missed.sorted(by: { $0.key < $1.key }) { print(String(format: "  %6d  %@", count, label)) }
        for entry in summary.violations { print("VIOLATION iteration \(entry.iteration) (\(entry.plan)): \(entry.violation)") }
    }
    exit(summary.violations.isEmpty ? 0 : 1)
} catch {
    StandardError.write("conclave-bench-faults: \(error)\n")
    exit(2)
}
