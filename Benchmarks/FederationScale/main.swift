import Audit
import CommandLineParsing
import CoordinatorService
import FederationProtocol
import Foundation
import SystemIO
import Wire

// Federation scale benchmark: one coordinator (a child process of this executable) and N light
// clients over mutual TLS on loopback, for several N. Reports the coordinator's memory per
// connection, round latency, and the coordinator's CPU as a fraction of round time.

let usage = """
usage: conclave-bench-federation [--clients 10,100,1000] [--rounds R] [--flood N] [--model DIR] [--keep] [--json]

For each N: a fresh federation in a temporary directory (CA, N clients enrolled by CSR), the
coordinator started as a child process (`--serve-coordinator`), N light clients in this process
(one thread and one TLS 1.3 connection each, the real protocol through ClientAgent; each accepts
every invitation and at once uploads a random rank-1 q_proj update of the plan's layout, no
training). When all N are connected, R rounds (default 3) are started one at a time through the
control socket, each with min_clients = max_clients = N.

Figures, all of the coordinator process (VmRSS and utime+stime from /proc/PID):
  KiB/conn     (VmRSS with N connected − VmRSS with none) / N, 2 s after the last connect
  round s      median over the rounds of: 'start' request → the round's audit record written
  coord CPU    coordinator CPU seconds per round (median), in 10 ms ticks
  overhead     coordinator CPU ÷ wall time, summed over all rounds: the share of one core the
               coordinator keeps busy while a round runs (the light clients run on the same
               two cores, so round time is bounded by both)
  idle CPU     coordinator CPU ÷ wall over 3 s with N connected and no round (the per-connection
               0.25 s read timeouts)
--flood N: after those rounds, R more while N unauthenticated peers (from 64 loopback addresses,
127.0.1.x) trickle a TLS record a byte a second, reopened whenever the coordinator closes them;
reported: round s under the flood, the coordinator's threads and RSS 12 s into it, and how many
flood connections it closed.
--model: an HF directory whose config.json gives the adapter shapes (default: the tiny fixture).
"""

var arguments = Arguments(Array(CommandLine.arguments.dropFirst()))
if arguments.helpRequested {
    print(usage)
    exit(0)
}

raiseOpenFileLimit()

if arguments.flag("--serve-coordinator") {
    // The child: the coordinator exactly as `conclave-coordinator serve` runs it.
    do {
        let state = try arguments.required("--state")
        let configPath = try arguments.required("--config")
        try arguments.finish()
        let paths = CoordinatorPaths(path: state)
        let configuration = try CoordinatorConfiguration.load(URL(fileURLWithPath: configPath))
        let server = try CoordinatorServer(paths: paths, configuration: configuration, log: OperatorLog(url: paths.serverLog))
        let signals = [SIGINT, SIGTERM].map { signalNumber -> DispatchSourceSignal in
            signal(signalNumber, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
            source.setEventHandler { server.stop() }
            source.resume()
            return source
        }
        try server.run()
        _ = signals
        exit(0)
    } catch {
        StandardError.write("conclave-bench-federation --serve-coordinator: \(error)\n")
        exit(1)
    }
}

do {
    let counts = try (arguments.option("--clients") ?? "10,100,1000").split(separator: ",").map { text -> Int in
        guard let count = Int(text.trimmingCharacters(in: .whitespaces)), (1...5000).contains(count) else {
            throw UsageError("--clients: expected a comma-separated list of integers in 1...5000, got '\(text)'")
        }
        return count
    }
    let rounds = try arguments.int("--rounds", in: 1...100) ?? 3
    let flood = try arguments.int("--flood", in: 0...10_000) ?? 0
    let committed = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Tests/Fixtures/tiny-llama").path
    let model = try arguments.option("--model") ?? committed
    let keep = arguments.flag("--keep")
    let json = arguments.flag("--json")
    try arguments.finish()
    guard FileManager.default.fileExists(atPath: URL(fileURLWithPath: model).appendingPathComponent("config.json").path) else {
        throw UsageError("--model: \(model)/config.json does not exist")
    }

    let root = FileManager.default.temporaryDirectory
        .appendingPathComponent("conclave-bench-federation-\(getpid())")
    try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    var results: [ScaleResult] = []
    for count in counts {
        let directory = root.appendingPathComponent("clients-\(count)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var run = ScaleRun(clients: count, rounds: rounds, modelPath: model, workDirectory: directory) {
            StandardError.write($0 + "\n")
        }
        run.flood = flood
        results.append(try run.run())
    }
    if keep {
        StandardError.write("state kept in \(root.path)\n")
    } else {
        try? FileManager.default.removeItem(at: root)
    }

    let mib = 1024.0 * 1024.0
    if json {
        try JSONOutput.print([
            "rounds_per_run": rounds,
            "model": model,
            "runs": results.map { r -> [String: Any] in
                [
                    "clients": r.clients,
                    "connect_seconds": r.connectSeconds,
                    "coordinator_rss_bytes_none": r.baselineRSS,
                    "coordinator_rss_bytes_connected": r.connectedRSS,
                    "coordinator_rss_bytes_after_rounds": r.afterRoundsRSS,
                    "coordinator_threads_none": r.baselineThreads,
                    "coordinator_threads_connected": r.connectedThreads,
                    "bytes_per_connection": r.bytesPerConnection,
                    "bytes_per_connection_after_rounds": r.bytesPerConnectionAfterRounds,
                    "idle_cpu_fraction_none": r.idleCPUNone,
                    "idle_cpu_fraction_connected": r.idleCPUConnected,
                    "round_seconds_median": r.medianLatency,
                    "all_results_seconds_median": r.medianResultLatency,
                    "coordinator_overhead_fraction": r.coordinatorOverhead,
                    "flood": r.flood.map { f -> [String: Any] in
                        ["peers": f.peers, "addresses": f.addresses, "round_seconds_median": f.medianLatency,
                         "round_seconds": f.rounds.map(\.latency), "coordinator_rss_bytes": f.rss,
                         "coordinator_threads": f.threads, "closed_by_coordinator": f.closedByCoordinator,
                         "seconds": f.seconds]
                    } ?? NSNull(),
                    "rounds": r.rounds.map { m -> [String: Any] in
                        ["round": m.round, "seconds": m.latency, "all_results_seconds": m.resultLatency,
                         "coordinator_cpu_seconds": m.coordinatorCPU, "client_process_cpu_seconds": m.clientProcessCPU,
                         "client_update_cpu_seconds": m.clientCompute, "status": m.status,
                         "participants": m.participants]
                    },
                ]
            },
        ])
    } else {
        print("clients  connect s  RSS none MiB  RSS conn MiB  KiB/conn  KiB/conn after  threads  idle CPU  "
              + "round s  results s  coord CPU s  overhead  client CPU s")
        for r in results {
            let coordinatorCPU = median(r.rounds.map(\.coordinatorCPU))
            let clientCPU = median(r.rounds.map(\.clientProcessCPU))
            print(String(format: "%7d  %9.2f  %12.1f  %12.1f  %8.1f  %14.1f  %7d  %7.1f%%  %7.3f  %9.3f  %11.2f  %7.1f%%  %12.2f",
                         r.clients, r.connectSeconds, Double(r.baselineRSS) / mib, Double(r.connectedRSS) / mib,
                         r.bytesPerConnection / 1024, r.bytesPerConnectionAfterRounds / 1024, r.connectedThreads,
                         r.idleCPUConnected * 100, r.medianLatency, r.medianResultLatency, coordinatorCPU,
                         r.coordinatorOverhead * 100, clientCPU))
            if let f = r.flood {
                print(String(format: "         under a flood of %d trickling peers from %d addresses: round s %.3f (median; "
                             + "%.3f without), coordinator %d threads, %.1f MiB; %d flood connections closed in %.0f s",
                             f.peers, f.addresses, f.medianLatency, r.medianLatency, f.threads, Double(f.rss) / mib,
                             f.closedByCoordinator, f.seconds))
            }
        }
        print("""

        KiB/conn: coordinator VmRSS with N connected minus with none, over N; 'after': the same after the rounds.
        round s: median of 'start' request → audit record; results s: → every client has the RoundResult.
        coord CPU s: coordinator utime+stime per round (median); overhead: coordinator CPU ÷ round wall time, all
        rounds summed (share of one core). client CPU s: this process (light clients) over the same interval.
        idle CPU: coordinator CPU ÷ wall over 3 s with N connected and no round in flight.
        """)
    }
} catch {
    StandardError.write("conclave-bench-federation: \(error)\n")
    exit(1)
}
