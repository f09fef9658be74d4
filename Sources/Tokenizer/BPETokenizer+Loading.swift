import Foundation
import ModelFormats

extension BPETokenizer {
    /// Builds the tokenizer from GGUF metadata (`tokenizer.ggml.*` keys, as written by llama.cpp's converter).
    ///
    /// `tokenizer.ggml.model` "gpt2" (byte-level BPE) requires `tokens` and `merges` and reads `token_type`,
    /// `pre` (default "default" = GPT-2 pattern) and `add_bos_token` (default false); "llama" (SentencePiece
    /// BPE) requires `tokens`, `scores` and `token_type` and reads `add_space_prefix` and `add_bos_token`
    /// (both default true, BOS 1 and EOS 2 by default, as llama.cpp has them). Both read `bos_token_id`,
    /// `eos_token_id` and `tokenizer.chat_template` when present.
    public convenience init(ggufMetadata metadata: [String: GGUFValue]) throws {
        let keys = GGUFTokenizerKeys(metadata: metadata)
        let model = try keys.string("model")
        let tokens = try keys.strings("tokens")
        let types = try keys.integers("token_type", required: model == "llama")
        let template = try keys.chatTemplate()
        do {
            switch model {
            case "gpt2":
                var preTokenizer = PreTokenizer.gpt2
                if let name = try keys.optionalString("pre") {
                    guard let pre = PreTokenizer(ggufName: name) else {
                        throw TokenizerError("GGUF \(GGUFTokenizerKeys.key("pre")) is \"\(name)\", a pre-tokenizer not implemented "
                                             + "here (supported: smollm, gpt2, llama-bpe, qwen2 and their llama.cpp aliases)")
                    }
                    preTokenizer = pre
                }
                try self.init(tokens: tokens, merges: try keys.strings("merges"), tokenTypes: types,
                              preTokenizer: preTokenizer, bosTokenId: try keys.optionalInt("bos_token_id"),
                              eosTokenId: try keys.optionalInt("eos_token_id"),
                              addBOS: try keys.optionalBool("add_bos_token") ?? false, chatTemplate: template)
            case "llama":
                let scores = try keys.floats("scores")
                for flag in ["remove_extra_whitespaces", "add_eos_token"] where try keys.optionalBool(flag) == true {
                    throw TokenizerError("GGUF \(GGUFTokenizerKeys.key(flag)) = true is not supported")
                }
                let options = SentencePieceOptions(scores: scores, addSpacePrefix: try keys.optionalBool("add_space_prefix") ?? true,
                                                   byteFallback: types?.contains(TokenType.byte.rawValue) ?? false)
                try self.init(tokens: tokens, mergePairs: [], tokenTypes: types, preTokenizer: .gpt2,
                              bosTokenId: try keys.optionalInt("bos_token_id") ?? 1,
                              eosTokenId: try keys.optionalInt("eos_token_id") ?? 2,
                              addBOS: try keys.optionalBool("add_bos_token") ?? true, chatTemplate: template,
                              sentencePiece: options)
            default:
                throw TokenizerError("GGUF \(GGUFTokenizerKeys.key("model")) is \"\(model)\"; supported: \"gpt2\" (byte-level BPE) "
                                     + "and \"llama\" (SentencePiece BPE)")
            }
        } catch let error as TokenizerError where !error.message.hasPrefix("GGUF ") {
            throw TokenizerError("GGUF tokenizer.ggml.*: \(error.message)")
        }
    }

    /// Builds the tokenizer from a Hugging Face `tokenizer.json` (a byte-level BPE model), reading
    /// `tokenizer_config.json` beside it, when present, for BOS/EOS, `add_bos_token` and `chat_template`.
    ///
    /// Accepts merges as `"a b"` strings or `["a", "b"]` pairs; `added_tokens` become control tokens
    /// (`special: true`) or user-defined tokens; honours `model.ignore_merges`. Pre-tokenizers: `ByteLevel`
    /// (GPT-2 pattern), `Sequence[Digits(individual_digits), ByteLevel]` (SmolLM) or
    /// `Sequence[Split(Llama 3 pattern), ByteLevel]`; anything else is refused by name.
    /// SentencePiece-style files (Llama 2, TinyLlama, Mistral, Gemma, Phi-3, as transformers' converter writes
    /// them): no pre-tokenizer and a normaliser `Sequence[Prepend("▁"), Replace(" ", "▁")]` (dummy prefix) or
    /// `Replace(" ", "▁")` alone; `model.byte_fallback` and `model.unk_token` are honoured. A `Metaspace`
    /// pre-tokenizer (which prepends "▁" only where the text does not start with one) is refused by name.
    public convenience init(tokenizerJSON url: URL) throws {
        let file = url.lastPathComponent
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw TokenizerError("cannot read \(url.path): \(error.localizedDescription)")
        }
        let root: [String: Any]
        do {
            guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw TokenizerError("\(file) is not a JSON object")
            }
            root = object
        } catch let error as TokenizerError { throw error } catch {
            throw TokenizerError("\(file) is not valid JSON: \(error.localizedDescription)")
        }
        guard let model = root["model"] as? [String: Any] else { throw TokenizerError("\(file) has no \"model\" object") }
        guard let type = model["type"] as? String else { throw TokenizerError("\(file) model has no \"type\"") }
        guard type == "BPE" else { throw TokenizerError("\(file) model.type is \"\(type)\"; only \"BPE\" is supported") }
        let ignoreMerges = model["ignore_merges"] as? Bool ?? false
        guard let vocab = model["vocab"] as? [String: Any] else { throw TokenizerError("\(file) has no model.vocab object") }
        guard let rawMerges = model["merges"] as? [Any] else { throw TokenizerError("\(file) has no model.merges array") }

        var (tokens, types) = try Self.vocabulary(model: vocab, addedTokens: root["added_tokens"], file: file)
        let pairs = try Self.mergePairs(rawMerges, file: file)
        if let options = try Self.sentencePieceStyle(root, model: model, file: file) {
            Self.markSentencePieceTypes(tokens, &types, model: model, byteFallback: options.byteFallback)
            let (bos, eos, addBOS, template) = try Self.tokenizerConfig(beside: url, tokens: tokens)
            do {
                try self.init(tokens: tokens, mergePairs: pairs, tokenTypes: types, preTokenizer: .gpt2,
                              bosTokenId: bos, eosTokenId: eos, addBOS: addBOS && bos != nil, chatTemplate: template,
                              sentencePiece: options)
            } catch let error as TokenizerError {
                throw TokenizerError("\(file): \(error.message)")
            }
            return
        }
        let preTokenizer = try Self.preTokenizer(from: root["pre_tokenizer"], file: file)
        let nfc = try Self.normalizesToNFC(root["normalizer"], file: file)
        let (bos, eos, addBOS, template) = try Self.tokenizerConfig(beside: url, tokens: tokens)
        do {
            try self.init(tokens: tokens, mergePairs: pairs, tokenTypes: types, preTokenizer: preTokenizer,
                          bosTokenId: bos, eosTokenId: eos, addBOS: addBOS && bos != nil, chatTemplate: template,
                          ignoreMerges: ignoreMerges, normalizesToNFC: nfc)
        } catch let error as TokenizerError {
            throw TokenizerError("\(file): \(error.message)")
        }
    }

    /// The vocabulary of `model.vocab` and `added_tokens` as dense arrays of texts and token types.
    private static func vocabulary(model vocab: [String: Any], addedTokens: Any?, file: String) throws
        -> (tokens: [String], types: [Int])
    {
        var byId = [Int: (String, Int)]()   // id → (text, token type)
        for (text, value) in vocab {
            guard let id = (value as? NSNumber)?.intValue, id >= 0 else {
                throw TokenizerError("\(file) model.vocab[\"\(text)\"] is not a non-negative integer id")
            }
            if let existing = byId[id] { throw TokenizerError("\(file) ids \(id) used by both \"\(existing.0)\" and \"\(text)\"") }
            byId[id] = (text, TokenType.normal.rawValue)
        }
        for (i, entry) in ((addedTokens as? [Any]) ?? []).enumerated() {
            guard let token = entry as? [String: Any], let id = (token["id"] as? NSNumber)?.intValue, id >= 0,
                  let content = token["content"] as? String else {
                throw TokenizerError("\(file) added_tokens[\(i)] lacks an integer \"id\" or a string \"content\"")
            }
            let special = token["special"] as? Bool ?? false
            byId[id] = (content, special ? TokenType.control.rawValue : TokenType.userDefined.rawValue)
        }
        let count = (byId.keys.max() ?? -1) + 1
        guard count > 0, count <= 10_000_000 else { throw TokenizerError("\(file) vocabulary size \(count) is unreasonable") }
        var tokens = [String](), types = [Int]()
        tokens.reserveCapacity(count)
        for id in 0..<count {
            guard let (text, type) = byId[id] else { throw TokenizerError("\(file) vocabulary has no token with id \(id)") }
            tokens.append(text)
            types.append(type)
        }
        return (tokens, types)
    }

    /// The SentencePiece options of a `tokenizer.json` whose spaces are "▁", or nil for a byte-level one.
    private static func sentencePieceStyle(_ root: [String: Any], model: [String: Any], file: String) throws
        -> SentencePieceOptions?
    {
        func isReplaceSpace(_ step: [String: Any]) -> Bool {
            step["type"] as? String == "Replace" && (step["pattern"] as? [String: Any])?["String"] as? String == " "
                && step["content"] as? String == "\u{2581}"
        }
        let preType = (root["pre_tokenizer"] as? [String: Any])?["type"] as? String
        if preType == "Metaspace" {
            throw TokenizerError("\(file) pre_tokenizer Metaspace is not supported (only the SentencePiece normaliser "
                                 + "Sequence[Prepend(\"\u{2581}\"), Replace(\" \", \"\u{2581}\")] or Replace alone)")
        }
        guard let normalizer = root["normalizer"] as? [String: Any] else { return nil }
        let steps = normalizer["type"] as? String == "Sequence"
            ? (normalizer["normalizers"] as? [[String: Any]] ?? []) : [normalizer]
        let prefix: Bool
        if steps.count == 2, steps[0]["type"] as? String == "Prepend", steps[0]["prepend"] as? String == "\u{2581}",
           isReplaceSpace(steps[1]) {
            prefix = true
        } else if steps.count == 1, isReplaceSpace(steps[0]) {
            prefix = false
        } else {
            return nil
        }
        if let preType { throw TokenizerError("\(file) pre_tokenizer \(preType) beside a SentencePiece normaliser is not supported") }
        if model["ignore_merges"] as? Bool == true {
            throw TokenizerError("\(file) model.ignore_merges = true is not supported for a SentencePiece vocabulary")
        }
        if let dropout = model["dropout"], !(dropout is NSNull) {
            throw TokenizerError("\(file) model.dropout is not supported")
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let affix = model[key] as? String, !affix.isEmpty { throw TokenizerError("\(file) model.\(key) is not supported") }
        }
        return SentencePieceOptions(scores: nil, addSpacePrefix: prefix, byteFallback: model["byte_fallback"] as? Bool ?? false)
    }

    /// Gives a SentencePiece vocabulary's `<0xAB>` pieces the byte type (with byte fallback) and `model.unk_token`
    /// the unknown type, unless `added_tokens` typed them already.
    private static func markSentencePieceTypes(_ tokens: [String], _ types: inout [Int], model: [String: Any],
                                               byteFallback: Bool) {
        let unknown = model["unk_token"] as? String
        for (id, text) in tokens.enumerated() where types[id] == TokenType.normal.rawValue {
            if byteFallback, SentencePieceModel.byteValue(text) != nil {
                types[id] = TokenType.byte.rawValue
            } else if text == unknown {
                types[id] = TokenType.unknown.rawValue
            }
        }
    }

    /// `model.merges` as pairs, from `"a b"` strings or `["a", "b"]` arrays.
    private static func mergePairs(_ rawMerges: [Any], file: String) throws -> [(String, String)] {
        var pairs: [(String, String)] = []
        pairs.reserveCapacity(rawMerges.count)
        for (rank, entry) in rawMerges.enumerated() {
            if let rule = entry as? String {
                let parts = rule.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw TokenizerError("\(file) model.merges[\(rank)] \"\(rule)\" is not \"a b\"") }
                pairs.append((String(parts[0]), String(parts[1])))
            } else if let pair = entry as? [Any], pair.count == 2, let a = pair[0] as? String, let b = pair[1] as? String {
                pairs.append((a, b))
            } else {
                throw TokenizerError("\(file) model.merges[\(rank)] is neither \"a b\" nor [\"a\", \"b\"]")
            }
        }
        return pairs
    }

    /// BOS, EOS, `add_bos_token` and the chat template from `tokenizer_config.json` beside `url`, when present.
    static func tokenizerConfig(beside url: URL, tokens: [String]) throws
        -> (bos: Int?, eos: Int?, addBOS: Bool, template: String?)
    {
        var bos: Int? = nil, eos: Int? = nil, addBOS = false, template: String? = nil
        let configURL = url.deletingLastPathComponent().appendingPathComponent("tokenizer_config.json")
        if let configData = try? Data(contentsOf: configURL) {
            guard let config = (try? JSONSerialization.jsonObject(with: configData)) as? [String: Any] else {
                throw TokenizerError("\(configURL.path) is not a JSON object")
            }
            func tokenContent(_ key: String) -> String? {
                if let s = config[key] as? String { return s }
                return (config[key] as? [String: Any])?["content"] as? String
            }
            func lookup(_ key: String) throws -> Int? {
                guard let text = tokenContent(key) else { return nil }
                guard let id = tokens.firstIndex(of: text) else {
                    throw TokenizerError("tokenizer_config.json \(key) \"\(text)\" is not in the vocabulary")
                }
                return id
            }
            bos = try lookup("bos_token")
            eos = try lookup("eos_token")
            addBOS = config["add_bos_token"] as? Bool ?? false
            if let text = config["chat_template"] as? String {
                template = text
            } else if let named = config["chat_template"] as? [[String: Any]] {
                template = named.first { $0["name"] as? String == "default" }?["template"] as? String
            }
        }
        return (bos, eos, addBOS, template)
    }

    /// Whether the `normalizer` is Unicode NFC (Qwen2's); none is false; any other is refused, since
    /// tokenizing without it would give other ids than HF's.
    private static func normalizesToNFC(_ value: Any?, file: String) throws -> Bool {
        guard let value, !(value is NSNull) else { return false }
        let type = (value as? [String: Any])?["type"] as? String
        guard type == "NFC" else {
            throw TokenizerError("\(file) normalizer \(type.map { "\"\($0)\"" } ?? "(no type)") is not supported "
                                 + "(only none or NFC)")
        }
        return true
    }

    /// Maps a `tokenizer.json` `pre_tokenizer` object to one we implement.
    private static func preTokenizer(from value: Any?, file: String) throws -> PreTokenizer {
        guard let object = value as? [String: Any], let type = object["type"] as? String else {
            throw TokenizerError("\(file) has no pre_tokenizer with a \"type\"; a byte-level one is required")
        }
        func checkByteLevel(_ byteLevel: [String: Any]) throws {
            if byteLevel["add_prefix_space"] as? Bool == true {
                throw TokenizerError("\(file) pre_tokenizer ByteLevel.add_prefix_space = true is not supported")
            }
            if byteLevel["use_regex"] as? Bool == false {
                throw TokenizerError("\(file) pre_tokenizer ByteLevel.use_regex = false is not supported")
            }
        }
        switch type {
        case "ByteLevel":
            try checkByteLevel(object)
            return .gpt2
        case "Sequence":
            let steps = (object["pretokenizers"] as? [[String: Any]]) ?? []
            let kinds = steps.map { $0["type"] as? String ?? "?" }
            if kinds == ["Digits", "ByteLevel"], steps[0]["individual_digits"] as? Bool == true {
                try checkByteLevel(steps[1])
                return .smollm
            }
            if kinds == ["ByteLevel"] {
                try checkByteLevel(steps[0])
                return .gpt2
            }
            // Llama 3 and Qwen2: the regex as a Split step, then ByteLevel without its own regex.
            let patterns = [PreTokenizer.llama3Pattern: PreTokenizer.llama3, PreTokenizer.qwen2Pattern: .qwen2]
            if kinds == ["Split", "ByteLevel"],
               let pattern = (steps[0]["pattern"] as? [String: Any])?["Regex"] as? String, let known = patterns[pattern],
               steps[0]["behavior"] as? String == "Isolated", steps[0]["invert"] as? Bool != true,
               steps[1]["add_prefix_space"] as? Bool != true {
                return known
            }
            throw TokenizerError("\(file) pre_tokenizer Sequence \(kinds) is not supported (supported: ByteLevel, "
                                 + "Sequence[Digits(individual_digits), ByteLevel], Sequence[Split(Llama 3 or Qwen2 regex), "
                                 + "ByteLevel])")
        default:
            throw TokenizerError("\(file) pre_tokenizer type \"\(type)\" is not supported")
        }
    }
}

/// Typed reads of the `tokenizer.ggml.*` keys, each error naming the key.
struct GGUFTokenizerKeys {
    let metadata: [String: GGUFValue]

    static func key(_ name: String) -> String { "tokenizer.ggml.\(name)" }

    func string(_ name: String) throws -> String {
        guard let value = try optionalString(name) else { throw TokenizerError("GGUF metadata has no \(Self.key(name))") }
        return value
    }

    func optionalString(_ name: String) throws -> String? {
        guard let value = metadata[Self.key(name)] else { return nil }
        guard let text = value.stringValue else { throw TokenizerError("GGUF \(Self.key(name)) is not a string") }
        return text
    }

    func optionalInt(_ name: String) throws -> Int? {
        guard let value = metadata[Self.key(name)] else { return nil }
        guard let int = value.intValue else { throw TokenizerError("GGUF \(Self.key(name)) is not an integer") }
        return int
    }

    func optionalBool(_ name: String) throws -> Bool? {
        guard let value = metadata[Self.key(name)] else { return nil }
        guard let flag = value.boolValue else { throw TokenizerError("GGUF \(Self.key(name)) is not a bool") }
        return flag
    }

    func array(_ name: String) throws -> [GGUFValue] {
        guard let value = metadata[Self.key(name)] else { throw TokenizerError("GGUF metadata has no \(Self.key(name))") }
        guard let array = value.arrayValue else { throw TokenizerError("GGUF \(Self.key(name)) is not an array") }
        return array
    }

    func strings(_ name: String) throws -> [String] {
        try array(name).enumerated().map { i, element in
            guard let s = element.stringValue else { throw TokenizerError("GGUF \(Self.key(name))[\(i)] is not a string") }
            return s
        }
    }

    func floats(_ name: String) throws -> [Float] {
        try array(name).enumerated().map { i, element in
            guard case .float32(let f) = element, f.isFinite else {
                throw TokenizerError("GGUF \(Self.key(name))[\(i)] is not a finite float32")
            }
            return f
        }
    }

    func integers(_ name: String, required: Bool) throws -> [Int]? {
        guard metadata[Self.key(name)] != nil || required else { return nil }
        return try array(name).enumerated().map { i, element in
            guard let t = element.intValue else { throw TokenizerError("GGUF \(Self.key(name))[\(i)] is not an integer") }
            return t
        }
    }

    func chatTemplate() throws -> String? {
        guard let value = metadata["tokenizer.chat_template"] else { return nil }
        guard let text = value.stringValue else { throw TokenizerError("GGUF tokenizer.chat_template is not a string") }
        return text
    }
}
