import Foundation

/// BPE tokenizer, producing exactly the ids of HF `tokenizers` and llama.cpp, over either kind of vocabulary:
/// byte-level (GPT-2 family: SmolLM, Llama 3, Qwen) or SentencePiece-style (Llama 2, TinyLlama, Mistral,
/// Gemma, Phi-3; see `SentencePieceModel`).
///
/// Encoding: special tokens are cut out of the text whole; for a byte-level vocabulary the rest is split
/// into words by the pre-tokenizer, and each word's bytes are merged pairwise by merge rank (lowest rank
/// first, leftmost on ties), as HF `BPE::merge_word` and llama.cpp's `llm_tokenizer_bpe_session` do; for a
/// SentencePiece one, each piece of text between special tokens is merged whole over its characters.
/// Thread-safe: the word cache is behind a lock, everything else is immutable after `init`.
public final class BPETokenizer: @unchecked Sendable {
    /// GGUF `tokenizer.ggml.token_type` values (llama.cpp `llama_token_type`).
    public enum TokenType: Int, Sendable {
        case undefined = 0, normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
    }

    /// Vocabulary strings, indexed by id.
    public let tokens: [String]
    /// Token types, indexed by id (`normal` when the source had none).
    public let tokenTypes: [TokenType]
    /// How text is cut into words before merging (byte-level vocabularies only).
    public let preTokenizer: PreTokenizer
    /// Beginning-of-sequence id (SmolLM2: 1, `<|im_start|>`), put first only when `addBOS`.
    public let bosTokenId: Int?
    /// End-of-sequence id (SmolLM2: 2, `<|im_end|>`).
    public let eosTokenId: Int?
    /// Whether `encode` puts `bosTokenId` first (GGUF `tokenizer.ggml.add_bos_token`).
    public let addBOS: Bool
    /// The model's Jinja chat template text, when it has one; see `applyChatTemplate`.
    public let chatTemplate: String?
    /// Ids that end a generated turn: the EOS token plus the usual end-of-turn control tokens.
    public let endOfTurnTokenIds: Set<Int>
    /// Whether text is put in Unicode NFC before it is split (a tokenizer.json `normalizer` of type NFC).
    public let normalizesToNFC: Bool

    /// Number of ids (valid ids are `0..<vocabularySize`).
    public var vocabularySize: Int { tokens.count }

    /// Bytes each id decodes to.
    let tokenBytes: [[UInt8]]
    /// Id of the one-byte token for each byte value.
    let byteTokenIds: [Int32]
    /// `(left << 32 | right)` → `(rank << 32 | merged id)`.
    let merges: [UInt64: UInt64]
    /// Special tokens matched whole in the input, grouped by first byte, longest first.
    let specialsByFirstByte: [[SpecialToken]]

    /// Byte-level tokens by raw bytes, filled only when merges are skipped for words found whole.
    let wholeWordIds: [[UInt8]: Int32]
    /// The SentencePiece model, when the vocabulary is one (nil: byte-level BPE).
    let sentencePiece: SentencePieceModel?

    /// Whether the vocabulary is SentencePiece-style (GGUF `tokenizer.ggml.model = llama`).
    public var isSentencePiece: Bool { sentencePiece != nil }
    /// Whether each piece of text starts with "▁" (SentencePiece's dummy prefix; GGUF `add_space_prefix`).
    public var addSpacePrefix: Bool { sentencePiece?.addSpacePrefix ?? false }
    /// The pieces' scores, when the vocabulary came with them (GGUF `tokenizer.ggml.scores`).
    public var scores: [Float]? {
        if case .scores(let scores) = sentencePiece?.priority { return scores }
        return nil
    }

    private let cacheLock = NSLock()
    private var wordCache: [[UInt8]: [Int32]] = [:]
    private static let wordCacheLimit = 200_000

    /// Builds a tokenizer from plain values.
    /// - Parameters:
    ///   - tokens: vocabulary strings in GPT-2 byte-level form, indexed by id.
    ///   - merges: merge rules by rank, each `"left right"`.
    ///   - tokenTypes: GGUF token types (3 = control, 4 = user-defined are matched whole in the input).
    /// - Throws: `TokenizerError` naming the merge, token or id that is inconsistent.
    public convenience init(tokens: [String], merges: [String], tokenTypes: [Int]?, preTokenizer: PreTokenizer,
                            bosTokenId: Int?, eosTokenId: Int?, addBOS: Bool, chatTemplate: String?) throws {
        var pairs: [(String, String)] = []
        pairs.reserveCapacity(merges.count)
        for (rank, rule) in merges.enumerated() {
            // Byte-level tokens never contain U+0020 (it maps to "Ġ"), so one space separates the pair.
            let parts = rule.split(separator: " ", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw TokenizerError("merge rule \(rank) \"\(rule)\" is not two tokens separated by one space")
            }
            pairs.append((String(parts[0]), String(parts[1])))
        }
        try self.init(tokens: tokens, mergePairs: pairs, tokenTypes: tokenTypes, preTokenizer: preTokenizer,
                      bosTokenId: bosTokenId, eosTokenId: eosTokenId, addBOS: addBOS, chatTemplate: chatTemplate)
    }

    /// What a SentencePiece-style vocabulary needs beyond tokens and types.
    struct SentencePieceOptions {
        /// The pieces' scores (GGUF); nil ranks pairs by the merge rules instead (HF `tokenizer.json`).
        var scores: [Float]?
        var addSpacePrefix: Bool
        var byteFallback: Bool
    }

    /// Builds a tokenizer from merge rules given as pairs (HF `tokenizer.json` may store them so).
    /// `ignoreMerges` (default: on for `llama3`, as llama.cpp does) emits a word that is itself a token as is.
    /// With `sentencePiece`, the vocabulary is SentencePiece-style and `preTokenizer` is not used.
    init(tokens: [String], mergePairs: [(String, String)], tokenTypes: [Int]?, preTokenizer: PreTokenizer,
         bosTokenId: Int?, eosTokenId: Int?, addBOS: Bool, chatTemplate: String?, ignoreMerges: Bool? = nil,
         normalizesToNFC: Bool = false, sentencePiece: SentencePieceOptions? = nil) throws {
        guard !tokens.isEmpty, tokens.count < Int(Int32.max) else {
            throw TokenizerError("vocabulary has \(tokens.count) tokens")
        }
        let types = try Self.validatedTypes(tokenTypes, of: tokens)
        for (name, id) in [("BOS", bosTokenId), ("EOS", eosTokenId)] {
            if let id, !(0..<tokens.count).contains(id) {
                throw TokenizerError("\(name) token id \(id) is outside the vocabulary of \(tokens.count)")
            }
        }
        if addBOS && bosTokenId == nil { throw TokenizerError("add_bos_token is set but there is no BOS token id") }
        let vocabulary = try Self.readVocabulary(tokens, types: types, sentencePiece: sentencePiece != nil)
        let merges = try Self.mergeTable(mergePairs, idForText: vocabulary.idForText)
        if let options = sentencePiece {
            self.sentencePiece = try SentencePieceModel(
                tokens: tokens, types: types, priority: options.scores.map { .scores($0) } ?? .ranks(merges),
                addSpacePrefix: options.addSpacePrefix, byteFallback: options.byteFallback)
        } else {
            self.sentencePiece = nil
        }

        self.tokens = tokens
        self.tokenTypes = types
        self.preTokenizer = preTokenizer
        self.bosTokenId = bosTokenId
        self.eosTokenId = eosTokenId
        self.addBOS = addBOS
        self.chatTemplate = chatTemplate
        self.endOfTurnTokenIds = Self.endOfTurnIds(tokens, types: types, eosTokenId: eosTokenId)
        self.normalizesToNFC = normalizesToNFC
        self.tokenBytes = vocabulary.bytes
        self.byteTokenIds = Self.byteTokenIds(vocabulary.idForText)
        self.merges = sentencePiece == nil ? merges : [:]
        self.specialsByFirstByte = Self.groupedByFirstByte(vocabulary.specials)
        var whole = [[UInt8]: Int32]()
        if sentencePiece == nil, ignoreMerges ?? (preTokenizer == .llama3) {
            for (text, id) in vocabulary.idForText { whole[ByteLevel.bytes(of: text)] = id }
        }
        self.wholeWordIds = whole
    }

    /// A token matched whole in the input (control and user-defined tokens).
    typealias SpecialToken = (bytes: [UInt8], id: Int, isControl: Bool)

    /// What `init` reads from the vocabulary in one pass.
    private struct Vocabulary {
        /// Ids of ordinary (mergeable) tokens by text; the first id wins if a text repeats.
        var idForText: [String: Int32]
        /// Bytes each id decodes to.
        var bytes: [[UInt8]] = []
        /// Control and user-defined tokens, in id order.
        var specials: [SpecialToken] = []
    }

    /// The token types by id, `normal` for all when the source had none.
    private static func validatedTypes(_ tokenTypes: [Int]?, of tokens: [String]) throws -> [TokenType] {
        var types: [TokenType] = Array(repeating: .normal, count: tokens.count)
        guard let tokenTypes else { return types }
        guard tokenTypes.count == tokens.count else {
            throw TokenizerError("\(tokenTypes.count) token types for \(tokens.count) tokens")
        }
        for (id, raw) in tokenTypes.enumerated() {
            guard let type = TokenType(rawValue: raw) else {
                throw TokenizerError("token \(id) \"\(tokens[id])\" has unknown token type \(raw)")
            }
            types[id] = type
        }
        return types
    }

    /// Each token's bytes, the ids of mergeable tokens by text, and the tokens matched whole.
    /// A SentencePiece vocabulary's normal tokens decode with "▁" as a space, its unknown token as its text.
    private static func readVocabulary(_ tokens: [String], types: [TokenType], sentencePiece: Bool) throws
        -> Vocabulary
    {
        var vocabulary = Vocabulary(idForText: [String: Int32](minimumCapacity: tokens.count))
        vocabulary.bytes.reserveCapacity(tokens.count)
        for (id, text) in tokens.enumerated() {
            switch types[id] {
            case .unknown where sentencePiece:
                // Matched whole like a control token, as llama.cpp does and Llama 2's tokenizer.json (an added token).
                vocabulary.bytes.append(Array(text.utf8))
                if !text.isEmpty { vocabulary.specials.append((Array(text.utf8), id, true)) }
            case .normal, .undefined, .unknown:
                vocabulary.bytes.append(sentencePiece ? SentencePieceModel.decodedBytes(of: text) : ByteLevel.bytes(of: text))
                if types[id] != .unknown, vocabulary.idForText[text] == nil { vocabulary.idForText[text] = Int32(id) }
            case .control, .userDefined:
                // Rendered as their own text (HF decode with special tokens kept; llama.cpp `special`).
                vocabulary.bytes.append(Array(text.utf8))
                if !text.isEmpty { vocabulary.specials.append((Array(text.utf8), id, types[id] == .control)) }
            case .byte:
                // SentencePiece-style "<0xAB>".
                if text.count == 6, text.hasPrefix("<0x"), text.hasSuffix(">"),
                   let value = UInt8(text.dropFirst(3).dropLast(), radix: 16) {
                    vocabulary.bytes.append([value])
                } else {
                    throw TokenizerError("byte token \(id) \"\(text)\" is not of the form <0xAB>")
                }
            case .unused:
                vocabulary.bytes.append(sentencePiece ? SentencePieceModel.decodedBytes(of: text) : [])
            }
        }
        return vocabulary
    }

    /// The one-byte token of each byte value, -1 where there is none.
    private static func byteTokenIds(_ idForText: [String: Int32]) -> [Int32] {
        // SmolLM2 lacks some bytes (e.g. 0x04, and 0xC0/0xC1/0xF5… never occur in UTF-8); like llama.cpp
        // (and HF without an unknown token) such bytes are dropped from the output.
        var byteIds = [Int32](repeating: -1, count: 256)
        for byte in 0..<256 {
            if let id = idForText[ByteLevel.text(forByte: UInt8(byte))] { byteIds[byte] = id }
        }
        return byteIds
    }

    /// `(left << 32 | right)` → `(rank << 32 | merged id)`; throws for a rule whose tokens are not in the
    /// vocabulary.
    private static func mergeTable(_ mergePairs: [(String, String)],
                                   idForText: [String: Int32]) throws -> [UInt64: UInt64] {
        var table = [UInt64: UInt64](minimumCapacity: mergePairs.count)
        for (rank, (left, right)) in mergePairs.enumerated() {
            guard let l = idForText[left], let r = idForText[right] else {
                throw TokenizerError("merge rule \(rank) \"\(left) \(right)\" uses a token missing from the vocabulary")
            }
            guard let merged = idForText[left + right] else {
                throw TokenizerError("merge rule \(rank) \"\(left) \(right)\" makes \"\(left + right)\", "
                                     + "which is missing from the vocabulary")
            }
            let key = UInt64(UInt32(l)) << 32 | UInt64(UInt32(r))
            // HF keeps the first rank of a repeated rule.
            if table[key] == nil { table[key] = UInt64(rank) << 32 | UInt64(UInt32(merged)) }
        }
        return table
    }

    /// Special tokens by first byte, longest first, so that the longest match wins.
    private static func groupedByFirstByte(_ specials: [SpecialToken]) -> [[SpecialToken]] {
        var grouped = [[SpecialToken]](repeating: [], count: 256)
        for special in specials { grouped[Int(special.bytes[0])].append(special) }
        for i in 0..<256 { grouped[i].sort { $0.bytes.count > $1.bytes.count } }
        return grouped
    }

    /// The EOS token and every control token whose text llama.cpp also treats as end-of-generation.
    private static func endOfTurnIds(_ tokens: [String], types: [TokenType], eosTokenId: Int?) -> Set<Int> {
        var endOfTurn = Set<Int>()
        if let eosTokenId { endOfTurn.insert(eosTokenId) }
        let endTexts: Set<String> = ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>", "<end_of_turn>",
                                     "<|end_of_text|>", "</s>"]
        for (id, text) in tokens.enumerated() where types[id] == .control && endTexts.contains(text) {
            endOfTurn.insert(id)
        }
        return endOfTurn
    }

    // MARK: Encoding

    /// Token ids of `text`; BOS first when `addBOS`, unless the text's own first token is BOS already (a chat
    /// template that writes it, as HF's `apply_chat_template(tokenize=True)` keeps it single). Bytes with no
    /// byte-level token are dropped.
    /// - Parameter parseSpecialTokens: match control tokens such as `<|im_start|>` in the text
    ///   (user-defined tokens are always matched, as in llama.cpp); false encodes them as plain text.
    public func encode(_ text: String, parseSpecialTokens: Bool = true) -> [Int] {
        var ids: [Int] = []
        appendEncoded(text, parseSpecialTokens: parseSpecialTokens, into: &ids)
        if addBOS, let bosTokenId, ids.first != bosTokenId { ids.insert(bosTokenId, at: 0) }
        return ids
    }

    /// Ids of `text` as it tokenizes after other text: no BOS, no SentencePiece dummy prefix at its start
    /// (a completion after its prompt), special-token text kept as plain text.
    public func encodeContinuation(_ text: String) -> [Int] {
        var ids: [Int] = []
        appendEncoded(text, parseSpecialTokens: false, into: &ids, continuing: true)
        return ids
    }

    /// Appends the ids of `text` (never BOS) to `ids`; `continuing` leaves out the dummy prefix at its start.
    func appendEncoded(_ text: String, parseSpecialTokens: Bool, into ids: inout [Int], continuing: Bool = false) {
        // NFC over the whole text, special tokens included: HF normalises the pieces between them, which is
        // the same unless a combining mark directly follows a special token.
        var utf8 = Array((normalizesToNFC ? text.precomposedStringWithCanonicalMapping : text).utf8)
        ids.reserveCapacity(ids.count + utf8.count / 3)
        var noEnds: [Int]? = nil
        utf8.withUnsafeBufferPointer { bytes in
            appendEncoded(bytes, parseControlAt: { _ in parseSpecialTokens }, into: &ids, tokenEnds: &noEnds,
                          continuing: continuing)
        }
        utf8.removeAll()
    }

    /// Appends the ids of `bytes` (valid UTF-8) to `ids` and each id's end offset to `tokenEnds`; a control
    /// token is matched only where `parseControlAt` is true at its first byte (user-defined ones always).
    func appendEncoded(_ bytes: UnsafeBufferPointer<UInt8>, parseControlAt: [Bool], into ids: inout [Int],
                       tokenEnds: inout [Int]) {
        var ends: [Int]? = []
        appendEncoded(bytes, parseControlAt: { parseControlAt[$0] }, into: &ids, tokenEnds: &ends)
        tokenEnds += ends!
    }

    private func appendEncoded(_ bytes: UnsafeBufferPointer<UInt8>, parseControlAt: (Int) -> Bool,
                               into ids: inout [Int], tokenEnds: inout [Int]?, continuing: Bool = false) {
        var splitter = WordSplitter()
        var ends: [Int] = []
        var textStart = 0
        var i = 0
        while i < bytes.count {
            if !specialsByFirstByte[Int(bytes[i])].isEmpty,
               let (id, length) = specialToken(at: i, in: bytes, parseControl: parseControlAt(i)) {
                appendText(bytes, textStart..<i, splitter: &splitter, ends: &ends, into: &ids, tokenEnds: &tokenEnds,
                           prefix: !(continuing && textStart == 0))
                ids.append(id)
                tokenEnds?.append(i + length)
                i += length
                textStart = i
            } else {
                i += 1
            }
        }
        appendText(bytes, textStart..<bytes.count, splitter: &splitter, ends: &ends, into: &ids, tokenEnds: &tokenEnds,
                   prefix: !(continuing && textStart == 0))
    }

    /// Longest special token starting at byte `i`, as (id, byte length).
    @inline(__always)
    private func specialToken(at i: Int, in bytes: UnsafeBufferPointer<UInt8>, parseControl: Bool) -> (Int, Int)? {
        let candidates = specialsByFirstByte[Int(bytes[i])]
        if candidates.isEmpty { return nil }
        for candidate in candidates where parseControl || !candidate.isControl {
            let length = candidate.bytes.count
            guard i + length <= bytes.count else { continue }
            var k = 1
            while k < length && bytes[i + k] == candidate.bytes[k] { k += 1 }
            if k == length { return (candidate.id, length) }
        }
        return nil
    }

    /// Encodes text without special tokens: pre-tokenizer words, then BPE per word (SentencePiece: the whole
    /// piece of text at once, with its dummy prefix).
    /// With `tokenEnds`, each token's end offset in `bytes` is appended to it; `prefix` false leaves out the
    /// SentencePiece dummy prefix.
    private func appendText(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, splitter: inout WordSplitter,
                            ends: inout [Int], into ids: inout [Int], tokenEnds: inout [Int]?, prefix: Bool) {
        if range.isEmpty { return }
        if let sentencePiece {
            sentencePiece.encode(bytes, range, prefix: prefix && sentencePiece.addSpacePrefix, into: &ids,
                                 tokenEnds: &tokenEnds)
            return
        }
        splitter.load(bytes, range)
        ends.removeAll(keepingCapacity: true)
        splitter.split(preTokenizer, bytes: bytes, ends: &ends)
        var start = range.lowerBound
        for end in ends {
            let first = ids.count
            appendWord(UnsafeBufferPointer(rebasing: bytes[start..<end]), into: &ids)
            if tokenEnds != nil {
                // Byte-level tokens cover their word's bytes in order.
                var offset = start
                for id in ids[first...] {
                    offset = min(offset + tokenBytes[id].count, end)
                    tokenEnds!.append(offset)
                }
            }
            start = end
        }
    }

    /// Appends the BPE tokens of one word, through the word cache.
    private func appendWord(_ word: UnsafeBufferPointer<UInt8>, into ids: inout [Int]) {
        if word.count == 1 {
            let id = byteTokenIds[Int(word[0])]
            if id >= 0 { ids.append(Int(id)) }
            return
        }
        let key = Array(word)
        cacheLock.lock()
        let cached = wordCache[key]
        cacheLock.unlock()
        if let cached {
            for id in cached { ids.append(Int(id)) }
            return
        }
        let merged = wholeWordIds[key].map { [$0] } ?? mergeWord(word)
        for id in merged { ids.append(Int(id)) }
        cacheLock.lock()
        if wordCache.count >= Self.wordCacheLimit { wordCache.removeAll(keepingCapacity: true) }
        wordCache[key] = merged
        cacheLock.unlock()
    }

    /// BPE over one word: a min-heap of candidate pairs keyed `(rank, position)` over a linked list of
    /// symbols; stale heap entries are skipped when the pair at that position no longer has that rank.
    func mergeWord(_ word: UnsafeBufferPointer<UInt8>) -> [Int32] {
        let n = word.count
        var ids = [Int32](repeating: 0, count: n)
        var next = [Int32](repeating: -1, count: n)
        var prev = [Int32](repeating: -1, count: n)
        for i in 0..<n {
            ids[i] = byteTokenIds[Int(word[i])]
            next[i] = i + 1 < n ? Int32(i + 1) : -1
            prev[i] = Int32(i - 1)
        }
        var heap = MinHeap()
        @inline(__always) func rule(_ left: Int32, _ right: Int32) -> UInt64? {
            // A byte missing from the vocabulary (-1) never appears in a rule.
            left < 0 || right < 0 ? nil : merges[UInt64(UInt32(left)) << 32 | UInt64(UInt32(right))]
        }
        for i in 0..<(n - 1) {
            if let r = rule(ids[i], ids[i + 1]) { heap.push((r >> 32) << 32 | UInt64(i)) }
        }
        while let top = heap.pop() {
            let rank = top >> 32
            let p = Int(top & 0xFFFF_FFFF)
            let q = Int(next[p])
            guard ids[p] >= 0, q >= 0, let r = rule(ids[p], ids[q]), r >> 32 == rank else { continue }
            ids[p] = Int32(truncatingIfNeeded: r & 0xFFFF_FFFF)
            ids[q] = -2   // unlinked
            let after = next[q]
            next[p] = after
            if after >= 0 { prev[Int(after)] = Int32(p) }
            let before = prev[p]
            if before >= 0, let r = rule(ids[Int(before)], ids[p]) { heap.push((r >> 32) << 32 | UInt64(before)) }
            if after >= 0, let r = rule(ids[p], ids[Int(after)]) { heap.push((r >> 32) << 32 | UInt64(p)) }
        }
        var out: [Int32] = []
        var i: Int32 = 0
        while i >= 0 {
            if ids[Int(i)] >= 0 { out.append(ids[Int(i)]) }
            i = next[Int(i)]
        }
        return out
    }

    // MARK: Decoding

    /// The raw bytes of `ids` concatenated (for streaming: a character may span two calls).
    /// Ids outside `0..<vocabularySize` are skipped, so a bad id from a sampler never traps.
    public func decodeBytes(_ ids: [Int]) -> [UInt8] {
        var out: [UInt8] = []
        for id in ids where id >= 0 && id < tokenBytes.count { out.append(contentsOf: tokenBytes[id]) }
        return out
    }

    /// Text of `ids`; invalid or incomplete UTF-8 becomes U+FFFD, out-of-range ids are skipped.
    /// Each token's text as llama.cpp's `token_to_piece` gives it: a SentencePiece dummy prefix stays a space
    /// (HF's decoder drops one space at the very start; a generated continuation's first space is real).
    public func decode(_ ids: [Int]) -> String {
        String(decoding: decodeBytes(ids), as: UTF8.self)
    }

    /// The vocabulary string of `id` (byte-level form, e.g. "Ġworld"), or "" outside the vocabulary.
    public func tokenText(_ id: Int) -> String {
        id >= 0 && id < tokens.count ? tokens[id] : ""
    }

    /// The id of a vocabulary string, e.g. `tokenId("<|im_end|>")`.
    public func tokenId(_ text: String) -> Int? {
        tokens.firstIndex(of: text)
    }
}

/// Binary min-heap of packed `(rank << 32 | position)` keys.
struct MinHeap {
    private var items: [UInt64] = []

    mutating func push(_ value: UInt64) {
        items.append(value)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if items[parent] <= items[i] { break }
            items.swapAt(parent, i)
            i = parent
        }
    }

    mutating func pop() -> UInt64? {
        guard let first = items.first else { return nil }
        let last = items.removeLast()
        if items.isEmpty { return first }
        items[0] = last
        var i = 0
        let count = items.count
        while true {
            let l = 2 * i + 1, r = l + 1
            var smallest = i
            if l < count && items[l] < items[smallest] { smallest = l }
            if r < count && items[r] < items[smallest] { smallest = r }
            if smallest == i { break }
            items.swapAt(i, smallest)
            i = smallest
        }
        return first
    }
}

extension BPETokenizer {
    /// The merge rules by rank as `"left right"` strings (GGUF's `tokenizer.ggml.merges` form).
    public var mergeRules: [String] {
        merges.map { key, value in
            (rank: Int(value >> 32), rule: tokens[Int(key >> 32)] + " " + tokens[Int(key & 0xFFFF_FFFF)])
        }.sorted { $0.rank < $1.rank }.map(\.rule)
    }
}
