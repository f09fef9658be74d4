import Foundation
import ModelFormats
import Tokenizer
import FineTuning
import Wire
import Audit
import SecureCrypto
import Privacy
import ClientService
import CoordinatorService

/// The fuzz targets of issue 14: each feeds one input to a real parser entry point of the product, the
/// way the product reads it (parsers that take a file get a file), and swallows the errors they throw.
/// Anything else (a trap, an address-sanitizer report, a hang) is a finding. `conclave-fuzz` runs them
/// under libFuzzer; `FuzzTests` replays every committed corpus and regression input through them.
public enum FuzzTarget: String, CaseIterable, Sendable {
    case gguf, safetensors, tokenizer
    case hfConfig = "hf-config"
    case peft, jsonl, wire, secagg, config, audit

    /// Removes this process's scratch directory (the files the targets wrote their inputs to).
    public static func removeScratchFiles() {
        try? FileManager.default.removeItem(at: Scratch.shared.directory)
    }

    /// Runs one input; returns normally whatever the parser thinks of it.
    public func run(_ data: Data) {
        do {
            try parse(data)
        } catch {
            // A thrown error is the parser doing its job; render it, as the product would print it.
            _ = String(describing: error)
        }
    }

    /// Runs one input and throws what the parser throws (an audit log that fails verification counts
    /// as refused): the seeds must pass, and a damaged seed must not.
    public func parse(_ data: Data) throws {
        switch self {
        case .gguf: try ModelFileTargets.gguf(data)
        case .safetensors: try ModelFileTargets.safetensors(data)
        case .tokenizer: try ModelFileTargets.tokenizer(data)
        case .hfConfig: _ = try LlamaConfiguration(configJSON: Scratch.shared.write(data, as: "config.json"))
        case .peft: try ModelFileTargets.peft(data)
        case .jsonl: try DatasetTarget.run(data)
        case .wire: try WireTargets.frames(data)
        case .secagg: try WireTargets.secureAggregation(data)
        case .config: try StateFileTargets.configuration(data)
        case .audit: try StateFileTargets.audit(data)
        }
    }
}

/// One scratch directory per process, for parsers that read files: under $TMPDIR when set, else in
/// /dev/shm when there is one (memory: writing an input costs no disk), else /tmp.
final class Scratch: @unchecked Sendable {
    static let shared = Scratch()
    let directory: URL

    private init() {
        let shm = FileManager.default.isWritableFile(atPath: "/dev/shm") ? "/dev/shm" : "/tmp"
        let base = URL(fileURLWithPath: ProcessInfo.processInfo.environment["TMPDIR"] ?? shm)
        directory = base.appendingPathComponent("conclave-fuzz-\(getpid())", isDirectory: true)
        try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    /// Writes `data` to `name` inside the scratch directory (or a sub-directory of it) and returns its URL.
    func write(_ data: Data, as name: String, in folder: String? = nil) throws -> URL {
        let folderURL = folder.map { directory.appendingPathComponent($0, isDirectory: true) } ?? directory
        try FileManager.default.createDirectory(at: folderURL, withIntermediateDirectories: true)
        let url = folderURL.appendingPathComponent(name)
        try data.write(to: url)
        return url
    }

    /// Keeps a value the optimiser must not drop (a byte read to prove a range is mapped).
    private var sunk: UInt8 = 0
    func sink(_ byte: UInt8) { sunk ^= byte }

}

/// Splits an input in two at its first NUL byte: two files from one input (PEFT's config and weights,
/// a configuration kind and its JSON).
func splitAtFirstNul(_ data: Data) -> (Data, Data) {
    guard let nul = data.firstIndex(of: 0) else { return (data, Data()) }
    return (Data(data[data.startIndex..<nul]), Data(data[(nul + 1)...]))
}
