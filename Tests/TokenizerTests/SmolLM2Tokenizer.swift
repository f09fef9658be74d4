import Foundation
import ModelFormats
import TestSupport
import Tokenizer

/// SmolLM2's tokenizer, built once through `BPETokenizer(ggufMetadata:)` and shared by the tests.
///
/// TEMPORARY until ModelFormats' GGUF reader is merged: the metadata comes from a JSON dump of the default
/// model's `tokenizer.*` keys, written by the Python `gguf` package:
///
///     python3 -c "from gguf import GGUFReader; import json; r = GGUFReader('models/SmolLM2-135M-Instruct.Q4_1.gguf'); \
///       json.dump({k: f.contents() for k, f in r.fields.items() if k.startswith('tokenizer')}, \
///       open('/tmp/smollm2-tokenizer.json', 'w'))"
///
/// At merge, the lead replaces `loadMetadata()` with
/// `try GGUFFile(url: Fixtures.defaultModel).metadata` and deletes `DumpedValue`.
enum SmolLM2 {
    static let tokenizer: Result<BPETokenizer, Error> = Result {
        try BPETokenizer(ggufMetadata: try loadMetadata())
    }

    static func metadata() throws -> [String: GGUFValue] { try loadMetadata() }

    private static func loadMetadata() throws -> [String: GGUFValue] {
        let path = ProcessInfo.processInfo.environment["CONCLAVE_TOKENIZER_DUMP"] ?? "/tmp/smollm2-tokenizer.json"
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return try JSONDecoder().decode([String: DumpedValue].self, from: data).mapValues(\.gguf)
    }
}

/// A JSON value of the dump, typed as the GGUF reader types it (bool before int: JSON has no int8/bool mix).
private enum DumpedValue: Decodable {
    case bool(Bool), int(Int), double(Double), string(String), array([DumpedValue])

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let b = try? container.decode(Bool.self) { self = .bool(b) }
        else if let i = try? container.decode(Int.self) { self = .int(i) }
        else if let d = try? container.decode(Double.self) { self = .double(d) }
        else if let s = try? container.decode(String.self) { self = .string(s) }
        else { self = .array(try container.decode([DumpedValue].self)) }
    }

    var gguf: GGUFValue {
        switch self {
        case .bool(let b): return .bool(b)
        case .int(let i): return .int32(Int32(i))
        case .double(let d): return .float64(d)
        case .string(let s): return .string(s)
        case .array(let a): return .array(a.map(\.gguf))
        }
    }
}
