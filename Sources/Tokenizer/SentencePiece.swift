import ModelFormats

/// A SentencePiece-style BPE vocabulary (Llama 2, TinyLlama, Mistral, Gemma, Phi-3): GGUF
/// `tokenizer.ggml.model = llama`, or a `tokenizer.json` BPE with `byte_fallback` and "▁" for spaces.
///
/// Encoding a piece of text, as sentencepiece's `bpe_model.cc` and llama.cpp's `llm_tokenizer_spm` do:
/// spaces become "▁" (U+2581), one "▁" goes first when `addSpacePrefix` (every piece of text between special
/// tokens gets it, as llama.cpp and HF's legacy `Prepend` normaliser do), the UTF-8 characters are merged
/// pairwise, highest priority first and leftmost on ties, into pieces of the vocabulary; a character that no
/// piece holds becomes its bytes' `<0xAB>` tokens (byte fallback) or the unknown token.
/// Priorities come from the pieces' scores (GGUF, sentencepiece) or from merge ranks (HF `tokenizer.json`,
/// whose converter writes the merges in score order; HF ranks pairs, so its ranks are used as they are).
struct SentencePieceModel: Sendable {
    /// How a pair of adjacent symbols is ranked.
    enum Priority: Sendable {
        /// Score of the merged piece, by id (GGUF `tokenizer.ggml.scores`, sentencepiece's model).
        case scores([Float])
        /// `(left id << 32 | right id)` → `(rank << 32 | merged id)` (HF `model.merges`).
        case ranks([UInt64: UInt64])
    }

    let priority: Priority
    /// Whether "▁" goes before each piece of text (GGUF `tokenizer.ggml.add_space_prefix`).
    let addSpacePrefix: Bool
    /// Whether characters without a piece become byte tokens (otherwise the unknown token).
    let byteFallback: Bool
    /// Ids of the pieces merges may form, by their UTF-8 bytes ("▁" as E2 96 81): normal, user-defined and
    /// unused tokens (sentencepiece's `pieces_`); the first id wins if a text repeats.
    let pieceIds: [ArraySlice<UInt8>: Int32]
    /// Ids whose type is unused: sentencepiece splits them back into the pieces they were merged from.
    let unusedIds: Set<Int32>
    /// The `<0xAB>` token of each byte value, -1 where there is none.
    let byteIds: [Int32]
    /// The unknown token, when the vocabulary has one.
    let unknownId: Int32?

    static let spaceMark: [UInt8] = [0xE2, 0x96, 0x81]   // "▁"

    /// Reads the pieces of a vocabulary whose token types have already been checked.
    /// - Throws: `TokenizerError` naming the token or field at fault.
    init(tokens: [String], types: [BPETokenizer.TokenType], priority: Priority, addSpacePrefix: Bool,
         byteFallback: Bool) throws {
        if case .scores(let scores) = priority, scores.count != tokens.count {
            throw TokenizerError("\(scores.count) scores for \(tokens.count) tokens")
        }
        var pieces = [ArraySlice<UInt8>: Int32](minimumCapacity: tokens.count)
        var unused = Set<Int32>()
        var bytes = [Int32](repeating: -1, count: 256)
        var unknown: Int32? = nil
        for (id, text) in tokens.enumerated() {
            switch types[id] {
            case .normal, .undefined, .userDefined, .unused:
                let key = ArraySlice(Array(text.utf8))
                if !key.isEmpty, pieces[key] == nil { pieces[key] = Int32(id) }
                if types[id] == .unused { unused.insert(Int32(id)) }
            case .byte:
                guard let value = Self.byteValue(text) else {
                    throw TokenizerError("byte token \(id) \"\(text)\" is not of the form <0xAB>")
                }
                if bytes[Int(value)] < 0 { bytes[Int(value)] = Int32(id) }
            case .unknown:
                if unknown == nil { unknown = Int32(id) }
            case .control:
                break
            }
        }
        if byteFallback, let missing = bytes.firstIndex(of: -1) {
            throw TokenizerError("byte fallback needs all 256 byte tokens; <0x\(Self.hex(UInt8(missing)))> is missing")
        }
        if !byteFallback && unknown == nil {
            throw TokenizerError("the vocabulary has neither byte tokens nor an unknown token for characters it lacks")
        }
        self.priority = priority
        self.addSpacePrefix = addSpacePrefix
        self.byteFallback = byteFallback
        self.pieceIds = pieces
        self.unusedIds = unused
        self.byteIds = bytes
        self.unknownId = unknown
    }

    /// The value of a "<0xAB>" token text.
    static func byteValue(_ text: String) -> UInt8? {
        guard text.utf8.count == 6, text.hasPrefix("<0x"), text.hasSuffix(">") else { return nil }
        return UInt8(text.dropFirst(3).dropLast(), radix: 16)
    }

    static func hex(_ byte: UInt8) -> String {
        let digits = Array("0123456789ABCDEF")
        return String([digits[Int(byte >> 4)], digits[Int(byte & 15)]])
    }

    /// Bytes a normal or unused token decodes to: its text with "▁" back to spaces.
    static func decodedBytes(of text: String) -> [UInt8] {
        let utf8 = Array(text.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(utf8.count)
        var i = 0
        while i < utf8.count {
            if i + 2 < utf8.count && utf8[i] == 0xE2 && utf8[i + 1] == 0x96 && utf8[i + 2] == 0x81 {
                out.append(0x20)
                i += 3
            } else {
                out.append(utf8[i])
                i += 1
            }
        }
        return out
    }

    // MARK: Encoding

    /// The escaped text of `bytes[range]` ("▁" for spaces, one more first when `prefix`) and, for each of its
    /// bytes, the offset in `bytes` just after the input byte it came from (the prefix maps to the start).
    private func escape(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, prefix: Bool)
        -> (text: [UInt8], ends: [Int])
    {
        var text: [UInt8] = []
        var ends: [Int] = []
        text.reserveCapacity(range.count + 3)
        ends.reserveCapacity(range.count + 3)
        if prefix {
            text += Self.spaceMark
            ends += [range.lowerBound, range.lowerBound, range.lowerBound]
        }
        for i in range {
            if bytes[i] == 0x20 {
                text += Self.spaceMark
                ends += [i + 1, i + 1, i + 1]
            } else {
                text.append(bytes[i])
                ends.append(i + 1)
            }
        }
        return (text, ends)
    }

    /// Appends the ids of `bytes[range]`, a piece of text holding no special token, to `ids`, and when
    /// `tokenEnds` is given, each id's end offset in `bytes` (the end of the last input byte it covers).
    /// - Parameter prefix: put "▁" first (the caller passes `addSpacePrefix` for each piece of text).
    func encode(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, prefix: Bool, into ids: inout [Int],
                tokenEnds: inout [Int]?) {
        if range.isEmpty && !prefix { return }
        let (text, ends) = escape(bytes, range, prefix: prefix)
        var merger = SymbolMerger(text: text)
        if case .ranks = priority {
            // The rank form looks pairs up by id: single characters that are pieces carry theirs.
            for s in 0..<merger.start.count {
                merger.id[s] = pieceIds[text[merger.start[s]..<(merger.start[s] + merger.length[s])]] ?? -1
            }
        }
        merger.merge { start, length, left, right in pairPriority(text, start, length, left, right) }
        var lastWasUnknown = false
        func emit(_ id: Int32, end: Int) {
            ids.append(Int(id))
            tokenEnds?.append(end)
        }
        func resegment(_ node: Int) {
            let (start, length) = (merger.nodeStart[node], merger.nodeLength[node])
            if let id = pieceIds[text[start..<(start + length)]] {
                if !unusedIds.contains(id) || merger.children[node] == nil {
                    emit(id, end: ends[start + length - 1])
                    lastWasUnknown = false
                    return
                }
            }
            if let (left, right) = merger.children[node] {
                resegment(left)
                resegment(right)
                return
            }
            if byteFallback {
                for k in start..<(start + length) { emit(byteIds[Int(text[k])], end: ends[k]) }
                lastWasUnknown = false
            } else if let unknownId {
                // sentencepiece (and HF's fuse_unk) join a run of unknown characters into one unknown token.
                if !lastWasUnknown {
                    emit(unknownId, end: ends[start + length - 1])
                } else if tokenEnds != nil {
                    tokenEnds![tokenEnds!.count - 1] = ends[start + length - 1]
                }
                lastWasUnknown = true
            }
        }
        var symbol = merger.first
        while symbol >= 0 {
            resegment(merger.node[symbol])
            symbol = Int(merger.next[symbol])
        }
    }

    /// The heap key of merging two adjacent symbols, `text[start..<start + length]` together, of ids `l` and `r`
    /// (smaller keys merge first), and the merged id; nil when the pair forms no piece.
    @inline(__always)
    private func pairPriority(_ text: [UInt8], _ start: Int, _ length: Int, _ l: Int32, _ r: Int32)
        -> (key: UInt32, id: Int32)?
    {
        switch priority {
        case .scores(let scores):
            guard let id = pieceIds[text[start..<(start + length)]] else { return nil }
            return (Self.descendingKey(scores[Int(id)]), id)
        case .ranks(let ranks):
            guard l >= 0, r >= 0, let value = ranks[UInt64(UInt32(l)) << 32 | UInt64(UInt32(r))] else { return nil }
            return (UInt32(truncatingIfNeeded: value >> 32), Int32(truncatingIfNeeded: value & 0xFFFF_FFFF))
        }
    }

    /// A key that sorts higher scores first: the float's total order, flipped.
    @inline(__always)
    static func descendingKey(_ score: Float) -> UInt32 {
        let bits = score.bitPattern
        let ascending = bits & 0x8000_0000 != 0 ? ~bits : bits | 0x8000_0000
        return ~ascending
    }
}

/// The UTF-8 characters of an escaped text as a linked list of symbols, merged pair by pair; every merge is
/// kept as a node with its two children, so that a merged piece can be split back (sentencepiece's
/// `resegment`).
struct SymbolMerger {
    /// Per symbol: byte offset, byte length (0 once merged away), piece id (-1: none), neighbours, tree node.
    var start: [Int] = [], length: [Int] = [], id: [Int32] = [], next: [Int32] = [], prev: [Int32] = []
    var node: [Int] = []
    /// Per tree node: byte range and children (nil for a single character).
    var nodeStart: [Int] = [], nodeLength: [Int] = [], children: [(Int, Int)?] = []
    /// The first symbol, -1 for an empty text.
    var first: Int { start.isEmpty ? -1 : 0 }

    init(text: [UInt8]) {
        var i = 0
        while i < text.count {
            let lead = text[i]
            // The lead byte's high bits give the character's length (RFC 3629 section 3); a stray byte stands alone.
            let size = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1
            let count = min(size, text.count - i)
            let index = start.count
            start.append(i)
            length.append(count)
            id.append(-1)
            prev.append(Int32(index - 1))
            next.append(i + count < text.count ? Int32(index + 1) : -1)
            node.append(index)
            nodeStart.append(i)
            nodeLength.append(count)
            children.append(nil)
            i += count
        }
    }

    /// Merges adjacent symbols while any pair forms a piece: the smallest key first, then the leftmost.
    /// `pair(start, length, leftId, rightId)` gives the key and merged id of two neighbours covering
    /// `length` bytes from `start`; a popped entry is used only if its pair still has that key (a stale entry
    /// with an equal key stands for the same merge at the same place).
    mutating func merge(_ pair: (Int, Int, Int32, Int32) -> (key: UInt32, id: Int32)?) {
        var heap = MinHeap()
        func lookup(_ left: Int, _ right: Int) -> (key: UInt32, id: Int32)? {
            pair(start[left], length[left] + length[right], id[left], id[right])
        }
        func push(_ left: Int32) {
            guard left >= 0, next[Int(left)] >= 0, let p = lookup(Int(left), Int(next[Int(left)])) else { return }
            heap.push(UInt64(p.key) << 32 | UInt64(left))
        }
        for s in 0..<start.count { push(Int32(s)) }
        while let top = heap.pop() {
            let left = Int(top & 0xFFFF_FFFF)
            let right = Int(next[left])
            guard length[left] > 0, right >= 0, let p = lookup(left, right), UInt64(p.key) == top >> 32 else { continue }
            length[left] += length[right]
            length[right] = 0
            id[left] = p.id
            next[left] = next[right]
            if next[right] >= 0 { prev[Int(next[right])] = Int32(left) }
            nodeStart.append(start[left])
            nodeLength.append(length[left])
            children.append((node[left], node[right]))
            node[left] = nodeStart.count - 1
            push(prev[left])
            push(Int32(left))
        }
    }
}

extension BPETokenizer {
    /// The `tokenizer.ggml.*` keys (and `tokenizer.chat_template`) that describe this tokenizer in a GGUF file,
    /// as llama.cpp's converter writes them; `init(ggufMetadata:)` reads them back to the same tokenizer.
    /// A SentencePiece vocabulary from `tokenizer.json` has merge ranks, not scores: each merged piece is given
    /// minus the rank of the first rule that makes it, so that higher scores merge first as the ranks did.
    public var ggufMetadata: [(key: String, value: GGUFValue)] {
        var keys: [(key: String, value: GGUFValue)] = []
        let types = GGUFValue.array(tokenTypes.map { .int32(Int32($0.rawValue)) })
        if let sentencePiece {
            keys += [("tokenizer.ggml.model", .string("llama")), ("tokenizer.ggml.pre", .string("default")),
                     ("tokenizer.ggml.tokens", .array(tokens.map { .string($0) })),
                     ("tokenizer.ggml.scores", .array((scores ?? rankScores(sentencePiece)).map { .float32($0) })),
                     ("tokenizer.ggml.token_type", types),
                     ("tokenizer.ggml.add_space_prefix", .bool(sentencePiece.addSpacePrefix))]
        } else {
            keys += [("tokenizer.ggml.model", .string("gpt2")), ("tokenizer.ggml.pre", .string(preTokenizer.ggufName)),
                     ("tokenizer.ggml.tokens", .array(tokens.map { .string($0) })), ("tokenizer.ggml.token_type", types),
                     ("tokenizer.ggml.merges", .array(mergeRules.map { .string($0) }))]
        }
        if let bos = bosTokenId { keys.append(("tokenizer.ggml.bos_token_id", .uint32(UInt32(bos)))) }
        if let eos = eosTokenId { keys.append(("tokenizer.ggml.eos_token_id", .uint32(UInt32(eos)))) }
        keys.append(("tokenizer.ggml.add_bos_token", .bool(addBOS)))
        if let template = chatTemplate { keys.append(("tokenizer.chat_template", .string(template))) }
        return keys
    }

    /// Scores standing for merge ranks: minus the first rank that makes each piece, 0 for pieces no rule makes.
    private func rankScores(_ model: SentencePieceModel) -> [Float] {
        var scores = [Float](repeating: 0, count: tokens.count)
        guard case .ranks(let ranks) = model.priority else { return scores }
        var made = [Bool](repeating: false, count: tokens.count)
        for value in ranks.values.sorted() {
            let id = Int(value & 0xFFFF_FFFF)
            if !made[id] {
                made[id] = true
                scores[id] = -Float(value >> 32)
            }
        }
        return scores
    }
}
