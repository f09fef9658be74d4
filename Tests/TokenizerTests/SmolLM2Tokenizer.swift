import Foundation
import ModelFormats
import TestSupport
import Tokenizer

/// SmolLM2's tokenizer, built once from the default model's GGUF metadata and shared by the tests.
enum SmolLM2 {
    static let tokenizer: Result<BPETokenizer, Error> = Result {
        try BPETokenizer(ggufMetadata: try loadMetadata())
    }

    static func metadata() throws -> [String: GGUFValue] { try loadMetadata() }

    private static func loadMetadata() throws -> [String: GGUFValue] {
        try GGUFFile(url: Fixtures.defaultModel).metadata
    }
}
