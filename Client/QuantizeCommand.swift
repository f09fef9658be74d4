import CommandLineParsing
import Foundation
import LanguageModel
import ModelFormats
import SystemIO

/// `quantize`: write a model (with an adapter merged) as a GGUF that llama.cpp and Ollama load.
struct QuantizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "quantize", abstract: "Write a model, optionally with a LoRA adapter merged, as a GGUF file.",
        help: """
        usage: conclave-client quantize --model M [--adapter A] --type TYPE --out F.gguf [--json]

          --model M     a .gguf file or an HF directory
          --adapter A   a PEFT LoRA adapter directory merged into the weights first (W + scaling·B·A)
          --type T      q8_0, q4_0, q4_1, f16 or f32 for every weight matrix (for q4_0 and q4_1 the embedding
                        stays q8_0); or llama.cpp's mixes q4_k_m, q5_k_m, q6_k (the output head and some
                        attn_v/ffn_down in q6_k; rows that are not whole 256-value super-blocks in q5_0,
                        q5_1 or q8_0, as llama-quantize does)
          --out F       the GGUF v3 file to write (atomically)
          --json        print {"out", "type", "bytes", "tensors", "seconds"}
        Architecture, hyper-parameters and tokenizer metadata are carried over. A model without a tokenizer
        gives a GGUF without one, which Conclave loads for pre-tokenized data ({"input_ids"}) only.

        examples:
          conclave-client quantize --model models/SmolLM2-135M-Instruct.Q4_1.gguf --adapter adapter --type q8_0 --out merged.gguf
          conclave-client quantize --model hf-model-dir --type f16 --out model.gguf
        """)

    static var options: [Option<Self>] {
        [
            .required("--model", \.modelPath), .option("--adapter", \.adapterPath), .required("--type", \.typeName),
            .required("--out", \.out), .flag("--json", \.json),
        ]
    }

    var modelPath = ""
    var adapterPath: String?
    /// As typed: the text output repeats it, the JSON output gives it in lower case.
    var typeName = ""
    var out = ""
    var json = false

    /// The output's weight formats; `validate()` has checked that `--type` names a scheme.
    var scheme: ExportScheme { ExportScheme.byName[typeName.lowercased()]! }

    func validate() throws {
        try ModelCommands.checkModel(modelPath, adapter: adapterPath)
        try PathCheck.outputFile("--out", out, expected: "the GGUF file to write (replaced atomically if it exists)")
        guard ExportScheme.byName[typeName.lowercased()] != nil else {
            throw UsageError("--type must be one of \(ExportScheme.byName.keys.sorted().joined(separator: ", ")), got '\(typeName)'")
        }
    }

    func run() throws -> Int32 {
        let start = ProcessStatistics.now()
        let loaded = try ModelLoader.load(path: modelPath, threads: 1)
        if loaded.tokenizer == nil && !json {
            StandardError.write("note: \(modelPath) has no tokenizer.json, so \(out) has no tokenizer: Conclave can use it "
                                + "for pre-tokenized data ({\"input_ids\"}) only, and llama.cpp cannot load it\n")
        }
        let adapter = try adapterPath.map { try ModelLoader.loadAdapter(path: $0, for: loaded.model) }
        let progress = ProgressReporter(label: "quantize", total: loaded.model.configuration.numHiddenLayers + 1)
        try ModelExporter.export(loaded, adapter: adapter, scheme: scheme, to: URL(fileURLWithPath: out)) { done, _ in
            progress.update(done)
        }
        let written = try GGUFFile(url: URL(fileURLWithPath: out))
        let bytes = (try FileManager.default.attributesOfItem(atPath: out)[.size] as? Int) ?? 0
        if json {
            try JSONOutput.print(["out": out, "type": typeName.lowercased(), "bytes": bytes, "tensors": written.tensors.count,
                                  "seconds": ProcessStatistics.now() - start])
        } else {
            print(String(format: "wrote %@: %d tensors, %.1f MB (%@)", out, written.tensors.count, Double(bytes) / 1e6, typeName))
        }
        return 0
    }
}
