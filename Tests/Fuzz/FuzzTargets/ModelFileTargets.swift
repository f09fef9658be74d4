import Foundation
import ModelFormats
import Tokenizer
import LanguageModel

/// GGUF, safetensors, `tokenizer.json` and PEFT adapters: the files a client is pointed at.
enum ModelFileTargets {
    /// GGUF: the header, metadata and tensor table, then what the loader reads from them (the model's
    /// configuration, the weights, the tokenizer from metadata) and every tensor's bytes.
    static func gguf(_ data: Data) throws {
        let file = try GGUFFile(url: Scratch.shared.write(data, as: "model.gguf"))
        for tensor in file.tensors { touch(file.data(for: tensor)) }
        for key in file.metadataKeys {
            _ = try? file.stringArray(key)
            _ = try? file.intArray(key)
        }
        _ = try? LlamaConfiguration(gguf: file)
        _ = try? ModelLoader.loadGGUF(file)
        if let tokenizer = try? BPETokenizer(ggufMetadata: file.metadata) { exercise(tokenizer) }
    }

    /// safetensors: the header, then every tensor as Float32 (the adapter and model loaders' path).
    static func safetensors(_ data: Data) throws {
        let file = try SafetensorsFile(url: Scratch.shared.write(data, as: "model.safetensors"))
        for name in file.tensors.keys.sorted() {
            touch(try file.data(name))
            _ = try file.floats(name)
        }
    }

    /// `tokenizer.json` (or a sentencepiece `tokenizer.model`), then encoding and decoding a few strings and
    /// rendering a chat with what it built.
    static func tokenizer(_ data: Data) throws {
        // Input that does not start like JSON is read as a sentencepiece tokenizer.model (protobuf), the other
        // tokenizer file an HF directory holds.
        if data.first(where: { !" \t\r\n".utf8.contains($0) }) != UInt8(ascii: "{") {
            let model = try Scratch.shared.write(data, as: "tokenizer.model", in: "tokenizer")
            exercise(try BPETokenizer(sentencePieceModel: model))
            return
        }
        let url = try Scratch.shared.write(data, as: "tokenizer.json", in: "tokenizer")
        exercise(try BPETokenizer(tokenizerJSON: url))
    }

    /// A PEFT adapter directory: `adapter_config.json` (the input up to its first NUL byte) and
    /// `adapter_model.safetensors` (the rest).
    static func peft(_ data: Data) throws {
        let (config, weights) = splitAtFirstNul(data)
        _ = try Scratch.shared.write(config, as: "adapter_config.json", in: "adapter")
        let directory = try Scratch.shared.write(weights, as: "adapter_model.safetensors", in: "adapter")
            .deletingLastPathComponent()
        let adapter = try PEFTAdapter(directory: directory)
        for key in adapter.tensors.keys.sorted() { _ = adapter.tensors[key]?.values.count }
        _ = adapter.pair(layer: 0, module: "q_proj")
    }

    /// Reads the first and last byte of a tensor's range, so that a range past the file faults here.
    static func touch(_ bytes: UnsafeRawBufferPointer) {
        guard let first = bytes.first, let last = bytes.last else { return }
        Scratch.shared.sink(first ^ last)
    }

    static func exercise(_ tokenizer: BPETokenizer) {
        for text in ["Patient presents with a persistent cough.", "héllo 123 <|im_start|>\u{0}\u{FFFD}", "", " the  12 <s>"] {
            let ids = tokenizer.encode(text)
            _ = tokenizer.decode(ids)
        }
        // The chat template the file carries: recognised (or refused) and rendered, as `chat` would.
        let messages = [ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: " hi <|im_end|>"),
                        ChatMessage(role: "assistant", content: "Hello.")]
        _ = try? tokenizer.encodeChat(messages)
        _ = try? tokenizer.applyChatTemplate(Array(messages.dropLast()), addGenerationPrompt: true)
    }
}
