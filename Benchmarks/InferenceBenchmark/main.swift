import CommandLineParsing
import Foundation
import Kernels
import LanguageModel
import SystemIO

// Inference benchmark on a GGUF model: prompt processing (a 128-token prompt), generation (64 tokens),
// time to first token and peak RSS, medians over several runs; then the linear-layer kernel with the
// portable Swift path against the AVX2 path, in the same run. Figures go to Benchmarks/RESULTS.md.

var arguments = Arguments(Array(CommandLine.arguments.dropFirst()))
if arguments.helpRequested {
    print("""
    usage: conclave-bench-inference --model M [--threads N] [--runs R] [--prompt-tokens P] [--generate-tokens G] [--precision int8|float32] [--no-row-groups] [--json]
    Reports medians of R runs (default 5) with N threads (default 2). --no-row-groups runs int8 inference on
    the file's own layout instead of the 16-row-group VNNI kernel (for comparisons).
    """)
    exit(0)
}
do {
    let modelPath = try arguments.required("--model")
    let threads = try arguments.int("--threads", in: 1...256) ?? 2
    let runs = try arguments.int("--runs", in: 1...100) ?? 5
    let promptTokens = try arguments.int("--prompt-tokens", in: 1...4096) ?? 128
    let generateTokens = try arguments.int("--generate-tokens", in: 1...4096) ?? 64
    let json = arguments.flag("--json")
    let noRowGroups = arguments.flag("--no-row-groups")
    let precision = ActivationPrecision(rawValue: try arguments.choice(
        "--precision", among: ActivationPrecision.allCases.map(\.rawValue)) ?? "int8")!
    try arguments.finish()

    let loaded = try ModelLoader.load(path: modelPath, threads: threads)
    let model = loaded.model
    model.precision = precision
    model.rowGroupedInference = !noRowGroups
    let tokenizer = try ModelLoader.requireTokenizer(loaded, path: modelPath)
    // A natural-language prompt, repeated to the wanted length.
    var prompt = tokenizer.encode("Patient presents with a persistent cough and mild fever for three days. ")
    while prompt.count < promptTokens { prompt += prompt }
    prompt = Array(prompt.prefix(promptTokens))

    func median(_ values: [Double]) -> Double {
        let sorted = values.sorted()
        return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    var prefillRates: [Double] = [], decodeRates: [Double] = [], firstToken: [Double] = [], scoringRates: [Double] = []
    for run in 0...runs {
        // Prompt processing: one forward over the prompt, logits of the last position only.
        let cache = model.makeCache(capacity: promptTokens + generateTokens)
        let start = ProcessStatistics.now()
        var next = 0
        try model.forward(tokens: prompt, cache: cache, logits: .last) { _, logits in
            var best = 0
            for v in 1..<model.configuration.vocabSize where logits[v] > logits[best] { best = v }
            next = best
        }
        let prefill = ProcessStatistics.now() - start
        // Generation: greedy, one token at a time, never stopping early.
        let decodeStart = ProcessStatistics.now()
        for _ in 0..<generateTokens {
            try model.forward(tokens: [next], cache: cache, logits: .last) { _, logits in
                var best = 0
                for v in 1..<model.configuration.vocabSize where logits[v] > logits[best] { best = v }
                next = best
            }
        }
        let decode = ProcessStatistics.now() - decodeStart
        if run == 0 { continue }  // warm-up
        prefillRates.append(Double(promptTokens) / prefill)
        decodeRates.append(Double(generateTokens) / decode)
        firstToken.append(prefill * 1000)
        StandardError.write(String(format: "run %d/%d: prompt %.1f tok/s, generation %.1f tok/s\n", run, runs,
                                   prefillRates.last!, decodeRates.last!))
    }

    // Peak RSS of the runs themselves, before the scoring runs and kernel comparisons below add buffers
    // and copies that a prompt-and-generate run does not have.
    let peakResident = ProcessStatistics.peakResidentBytes()

    // Scoring (what `eval` does per record): the same prompt with the logits of every position.
    for run in 0...runs {
        let scoreStart = ProcessStatistics.now()
        _ = try model.score(tokens: prompt)
        if run > 0 { scoringRates.append(Double(promptTokens) / (ProcessStatistics.now() - scoreStart)) }
    }

    // Kernel comparison: one Q4_1 projection of the model (576 → 1536), generic Swift against AVX2.
    let matrix = model.weights.layers[0].projection(.gateProj)
    var input = [Float](repeating: 0, count: 128 * matrix.columns)
    for i in input.indices { input[i] = Float(i % 17) / 17 - 0.5 }
    let output = [Float](repeating: 0, count: 128 * matrix.rows)
    func time(tokens: Int, _ body: () -> Void) -> Double {
        var samples: [Double] = []
        for _ in 0..<7 {
            let start = ProcessStatistics.now()
            body()
            samples.append(ProcessStatistics.now() - start)
        }
        return median(samples)
    }
    let pool = ThreadPool(threads: 1)
    var kernel: [String: Double] = [:]
    let format = "\(matrix.format)"
    for tokens in [1, 128] {
        let x = UnsafeMutablePointer<Float>.allocate(capacity: input.count)
        x.initialize(from: input, count: input.count)
        let y = UnsafeMutablePointer<Float>.allocate(capacity: output.count)
        defer { x.deallocate(); y.deallocate() }
        func run(_ body: (UnsafePointer<Float>, UnsafeMutablePointer<Float>) -> Void) -> Double {
            time(tokens: tokens) { body(x, y) }
        }
        let backend = KernelBackend.selected.rawValue
        let grouped = RowGroupedMatrix([matrix])
        for name in ["float32_generic", "float32_\(backend)", "int8_generic", "int8_\(backend)"] + (grouped == nil ? [] : ["int8_rowgrouped"])
        where kernel["\(tokens)_tokens_\(name)_ms"] == nil {
            kernel["\(tokens)_tokens_\(name)_ms"] = 1000 * run { x, y in
                switch name {
                case "float32_generic": Linear.genericForward(matrix, input: x, tokens: tokens, output: y, pool: pool)
                case "int8_generic": Linear.genericInt8Forward(matrix, input: x, tokens: tokens, output: y, pool: pool)
                case "int8_\(backend)": Linear.forward(matrix, input: x, tokens: tokens, output: y, precision: .int8, pool: pool)
                case "int8_rowgrouped": grouped!.forward(input: x, tokens: tokens, output: y, pool: pool)
                default: Linear.forward(matrix, input: x, tokens: tokens, output: y, pool: pool)
                }
            }
        }
    }
    // The output matrix (the largest, streamed from memory once per generated token), int8, 1 token.
    let head = model.weights.output
    let headInput = UnsafeMutablePointer<Float>.allocate(capacity: head.columns)
    let headOutput = UnsafeMutablePointer<Float>.allocate(capacity: head.rows)
    for i in 0..<head.columns { headInput[i] = Float(i % 13) / 13 - 0.5 }
    let headSeconds = time(tokens: 1) {
        Linear.forward(head, input: headInput, tokens: 1, output: headOutput, precision: .int8, pool: pool)
    }
    kernel["output_matrix_1_token_int8_ms"] = headSeconds * 1000
    let groupedHead = RowGroupedMatrix([head])
    let groupedHeadSeconds = groupedHead.map { grouped in
        time(tokens: 1) { grouped.forward(input: headInput, tokens: 1, output: headOutput, pool: pool) }
    }
    if let groupedHeadSeconds { kernel["output_matrix_1_token_int8_rowgrouped_ms"] = groupedHeadSeconds * 1000 }
    let headGigabytes = Double(head.rowBytes * head.rows) / 1e9
    let result: [String: Any] = [
        "model": modelPath, "threads": threads, "runs": runs, "kernel_backend": KernelBackend.selected.rawValue,
        "prompt_tokens": promptTokens, "generate_tokens": generateTokens,
        "prompt_tokens_per_second": median(prefillRates), "scoring_tokens_per_second": median(scoringRates), "generation_tokens_per_second": median(decodeRates),
        "time_to_first_token_ms": median(firstToken), "peak_rss_bytes": peakResident,
        "precision": model.precision.rawValue, "row_grouped": model.rowGroupedInference,
        "kernel_single_thread": ["matrix": "\(format) \(matrix.rows)x\(matrix.columns)", "milliseconds": kernel] as [String: Any],
    ]
    if json {
        try JSONOutput.print(result)
    } else {
        print(String(format: "%@ (%d threads, %@ kernels, median of %d):", modelPath, threads, KernelBackend.selected.rawValue, runs))
        print(String(format: "  prompt %d tokens: %.1f tok/s   time to first token %.1f ms", promptTokens, median(prefillRates), median(firstToken)))
        print(String(format: "  generation %d tokens: %.1f tok/s", generateTokens, median(decodeRates)))
        print(String(format: "  scoring %d tokens (every position's logits, as eval): %.1f tok/s", promptTokens,
                     median(scoringRates)))
        print(String(format: "  peak RSS %.1f MB", Double(peakResident) / 1e6))
        print("  single-thread linear layer, \(format) \(matrix.rows)x\(matrix.columns), median ms (speed-up over float32 generic):")
        let backend = KernelBackend.selected.rawValue
        for tokens in [1, 128] {
            let base = kernel["\(tokens)_tokens_float32_generic_ms"]!
            for name in ["float32_generic", "float32_\(backend)", "int8_generic", "int8_\(backend)", "int8_rowgrouped"] {
                guard let ms = kernel["\(tokens)_tokens_\(name)_ms"] else { continue }
                print(String(format: "    %3d tokens, %@: %.3f ms (%.1fx)", tokens, name, ms, base / ms))
            }
        }
        print(String(format: "  output matrix %@ %dx%d, 1 token, int8, 1 thread: %.3f ms (%.1f GB/s)", "\(head.format)",
                     head.rows, head.columns, headSeconds * 1000, headGigabytes / headSeconds))
        if let groupedHeadSeconds {
            print(String(format: "  output matrix, row-grouped kernel: %.3f ms (%.1f GB/s)", groupedHeadSeconds * 1000,
                         headGigabytes / groupedHeadSeconds))
        }
    }
} catch {
    StandardError.write("conclave-bench-inference: \(error)\n")
    exit(1)
}
