import CommandLineParsing
import Foundation
import Privacy
import SystemIO

// Gaussian-noise benchmark: how long DP-SGD's noise takes per step, as `GaussianNoise.fill` of D floats
// (a LoRA gradient's size) from the operating system's CSPRNG through Box–Muller; median and best of R
// runs, in million floats per second on one core. Moved out of the unit tests, which check the noise's
// law instead. Never run by the tests.

var arguments = Arguments(Array(CommandLine.arguments.dropFirst()))
if arguments.helpRequested {
    print("""
    usage: conclave-bench-noise [--parameters D] [--runs R] [--json]
      --parameters D   floats per fill (default 1000000, about a LoRA gradient's size)
      --runs R         timed fills after one warm-up (default 15)
      --json           print {"parameters", "runs", "median_seconds", "best_seconds", "median_floats_per_second"}
    """)
    exit(0)
}

do {
    let d = try arguments.int("--parameters", in: 1...(1 << 28)) ?? 1_000_000
    let runs = try arguments.int("--runs", in: 1...1000) ?? 15
    let json = arguments.flag("--json")
    try arguments.finish()

    var values = [Float](repeating: 0, count: d)
    var times: [Double] = []
    for run in 0...runs {
        let start = ProcessStatistics.now()
        values.withUnsafeMutableBufferPointer { GaussianNoise.fill($0, standardDeviation: 1) }
        if run > 0 { times.append(ProcessStatistics.now() - start) }  // run 0 warms the pages and the CSPRNG
    }
    let sorted = times.sorted()
    let median = sorted[sorted.count / 2], best = sorted[0]
    if json {
        try JSONOutput.print(["parameters": d, "runs": runs, "median_seconds": median, "best_seconds": best,
                              "median_floats_per_second": Double(d) / median])
    } else {
        print(String(format: "Gaussian noise: %d floats in %.2f ms (median of %d), best %.2f ms; %.0f M floats/s",
                     d, median * 1000, runs, best * 1000, Double(d) / median / 1e6))
    }
} catch {
    StandardError.write("conclave-bench-noise: \(error)\n")
    exit(1)
}
