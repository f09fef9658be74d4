import Foundation
import ModelFormats

extension BPETokenizer {
    /// Builds the tokenizer from GGUF metadata (`tokenizer.ggml.*` keys, as written by llama.cpp's converter).
    ///
    /// Requires `tokenizer.ggml.model` = "gpt2", `tokenizer.ggml.tokens` and `tokenizer.ggml.merges`;
    /// reads `token_type`, `pre` (default "default" = GPT-2 pattern), `bos_token_id`, `eos_token_id`,
    /// `add_bos_token` (default false) and `tokenizer.chat_template` when present.
    public convenience init(ggufMetadata metadata: [String: GGUFValue]) throws {
        func key(_ name: String) -> String { "tokenizer.ggml.\(name)" }
        func stringArray(_ name: String) throws -> [String] {
            guard let value = metadata[name] else { throw TokenizerError("GGUF metadata has no \(name)") }
            guard let array = value.arrayValue else { throw TokenizerError("GGUF \(name) is not an array") }
            var out: [String] = []
            out.reserveCapacity(array.count)
            for (i, element) in array.enumerated() {
                guard let s = element.stringValue else { throw TokenizerError("GGUF \(name)[\(i)] is not a string") }
                out.append(s)
            }
            return out
        }
        func optionalInt(_ name: String) throws -> Int? {
            guard let value = metadata[name] else { return nil }
            guard let int = value.intValue else { throw TokenizerError("GGUF \(name) is not an integer") }
            return int
        }

        guard let modelValue = metadata[key("model")] else { throw TokenizerError("GGUF metadata has no \(key("model"))") }
        guard let model = modelValue.stringValue else { throw TokenizerError("GGUF \(key("model")) is not a string") }
        guard model == "gpt2" else {
            throw TokenizerError("GGUF \(key("model")) is \"\(model)\"; only \"gpt2\" (byte-level BPE) is supported")
        }
        let tokens = try stringArray(key("tokens"))
        let merges = try stringArray(key("merges"))
        var types: [Int]? = nil
        if let value = metadata[key("token_type")] {
            guard let array = value.arrayValue else { throw TokenizerError("GGUF \(key("token_type")) is not an array") }
            types = try array.enumerated().map { i, element in
                guard let t = element.intValue else {
                    throw TokenizerError("GGUF \(key("token_type"))[\(i)] is not an integer")
                }
                return t
            }
        }
        var preTokenizer = PreTokenizer.gpt2
        if let value = metadata[key("pre")] {
            guard let name = value.stringValue else { throw TokenizerError("GGUF \(key("pre")) is not a string") }
            guard let pre = PreTokenizer(ggufName: name) else {
                throw TokenizerError("GGUF \(key("pre")) is \"\(name)\", a pre-tokenizer not implemented here "
                                     + "(supported: smollm, gpt2, llama-bpe, qwen2 and their llama.cpp aliases)")
            }
            preTokenizer = pre
        }
        var addBOS = false
        if let value = metadata[key("add_bos_token")] {
            guard let flag = value.boolValue else { throw TokenizerError("GGUF \(key("add_bos_token")) is not a bool") }
            addBOS = flag
        }
        var template: String? = nil
        if let value = metadata["tokenizer.chat_template"] {
            guard let text = value.stringValue else { throw TokenizerError("GGUF tokenizer.chat_template is not a string") }
            template = text
        }
        do {
            try self.init(tokens: tokens, merges: merges, tokenTypes: types, preTokenizer: preTokenizer,
                          bosTokenId: try optionalInt(key("bos_token_id")),
                          eosTokenId: try optionalInt(key("eos_token_id")),
                          addBOS: addBOS, chatTemplate: template)
        } catch let error as TokenizerError {
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

        let (tokens, types) = try Self.vocabulary(model: vocab, addedTokens: root["added_tokens"], file: file)
        let pairs = try Self.mergePairs(rawMerges, file: file)
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
    private static func tokenizerConfig(beside url: URL, tokens: [String]) throws
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
