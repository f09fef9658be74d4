import CommandLineParsing
import Foundation
import Privacy
import SystemIO

// DP noise benchmark: how long DP-SGD's noise takes per step, as D draws (a LoRA gradient's size) of the
// discrete Gaussian N_Z(0, σ²) that every DP path uses (`DiscreteGaussian.samples`, exact, libsodium
// bits), against the Box–Muller sampler in doubles it replaced (`BoxMullerBaseline`); median and best of
// R runs, in million draws per second on one core. The unit tests check the noise's law instead. Never
// run by the tests.

var arguments = Arguments(Array(CommandLine.arguments.dropFirst()))
if arguments.helpRequested {
    print("""
    usage: conclave-bench-noise [--parameters D] [--sigma S] [--runs R] [--json]
      --parameters D   draws per step (default 1000000, about a LoRA gradient's size)
      --sigma S        the discrete Gaussian's σ on the integer grid (default 100000: σ = 1 at DP-SGD's
                       integer sensitivity for D = 10^6, see DPSGDGrid)
      --runs R         timed steps after one warm-up (default 15)
      --json           print {"parameters", "sigma", "runs", "discrete": {...}, "box_muller": {...}, "slowdown"}
    """)
    exit(0)
}

/// Median and best seconds of `runs` timed calls after one warm-up (pages, the CSPRNG).
func time(runs: Int, _ body: () throws -> Void) rethrows -> (median: Double, best: Double) {
    var times: [Double] = []
    for run in 0...runs {
        let start = ProcessStatistics.now()
        try body()
        if run > 0 { times.append(ProcessStatistics.now() - start) }
    }
    let sorted = times.sorted()
    return (sorted[sorted.count / 2], sorted[0])
}

do {
    let d = try arguments.int("--parameters", in: 1...(1 << 28)) ?? 1_000_000
    let sigma = try arguments.double("--sigma", in: DiscreteGaussian.sigmaRange) ?? 100_000
    let runs = try arguments.int("--runs", in: 1...1000) ?? 15
    let json = arguments.flag("--json")
    try arguments.finish()

    var sink: Int64 = 0
    let discrete = try time(runs: runs) { sink &+= try DiscreteGaussian.samples(count: d, sigma: sigma)[d - 1] }
    var floats = [Float](repeating: 0, count: d)
    let boxMuller = time(runs: runs) {
        floats.withUnsafeMutableBufferPointer { BoxMullerBaseline.fill($0, standardDeviation: sigma) }
    }
    let slowdown = discrete.median / boxMuller.median
    if json {
        func entry(_ t: (median: Double, best: Double)) -> [String: Any] {
            ["median_seconds": t.median, "best_seconds": t.best, "median_draws_per_second": Double(d) / t.median]
        }
        try JSONOutput.print(["parameters": d, "sigma": sigma, "runs": runs, "discrete": entry(discrete),
                              "box_muller": entry(boxMuller), "slowdown": slowdown])
    } else {
        for (name, t) in [("discrete Gaussian (exact)", discrete), ("Box–Muller baseline", boxMuller)] {
            print(String(format: "%@: %d draws in %.2f ms (median of %d), best %.2f ms; %.2f M draws/s",
                         name, d, t.median * 1000, runs, t.best * 1000, Double(d) / t.median / 1e6))
        }
        print(String(format: "discrete / Box–Muller time: %.1f×  (checksum %lld)", slowdown, sink))
    }
} catch {
    StandardError.write("conclave-bench-noise: \(error)\n")
    exit(1)
}
