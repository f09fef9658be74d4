import Foundation

extension BPETokenizer {
    /// The largest `tokenizer.model` read (Llama 2's is 0.5 MB, Gemma's 4 MB).
    static let sentencePieceModelLimit = 64 << 20

    /// Builds the tokenizer from a sentencepiece `tokenizer.model` (its `ModelProto`, read field by field:
    /// pieces with score and type, the trainer's model type, byte fallback and BOS/EOS ids, the normaliser's
    /// settings), reading `tokenizer_config.json` beside it, when present, for BOS/EOS, `add_bos_token` (true
    /// without one, as sentencepiece models are used) and `chat_template`.
    ///
    /// Only BPE models with the identity normaliser are accepted (Llama 2, TinyLlama, Mistral, Gemma, Phi-3);
    /// a Unigram model, a precompiled normalisation map, `remove_extra_whitespaces`, unescaped whitespace or
    /// whitespace as a suffix are refused by name, as is any malformed field (named with its byte offset).
    public convenience init(sentencePieceModel url: URL) throws {
        let file = url.lastPathComponent
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: url.path),
              let size = (attributes[.size] as? NSNumber)?.intValue else { throw TokenizerError("cannot read \(url.path)") }
        guard size <= Self.sentencePieceModelLimit else {
            throw TokenizerError("\(file) is \(size) bytes, more than the \(Self.sentencePieceModelLimit) read")
        }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw TokenizerError("cannot read \(url.path): \(error.localizedDescription)")
        }
        let proto = try SentencePieceProto(Array(data), file: file)
        let (configBOS, configEOS, configAddBOS, template) = try Self.tokenizerConfig(beside: url, tokens: proto.pieces)
        let hasConfig = FileManager.default.fileExists(
            atPath: url.deletingLastPathComponent().appendingPathComponent("tokenizer_config.json").path)
        func id(_ raw: Int) -> Int? { raw >= 0 && raw < proto.pieces.count ? raw : nil }
        let bos = configBOS ?? id(proto.bosId)
        do {
            try self.init(tokens: proto.pieces, mergePairs: [], tokenTypes: proto.types, preTokenizer: .gpt2,
                          bosTokenId: bos, eosTokenId: configEOS ?? id(proto.eosId),
                          addBOS: (hasConfig ? configAddBOS : true) && bos != nil, chatTemplate: template,
                          sentencePiece: SentencePieceOptions(scores: proto.scores, addSpacePrefix: proto.addDummyPrefix,
                                                              byteFallback: proto.byteFallback))
        } catch let error as TokenizerError {
            throw TokenizerError("\(file): \(error.message)")
        }
    }
}

/// The fields of sentencepiece's `ModelProto` (sentencepiece_model.proto) the tokenizer needs, checked.
struct SentencePieceProto {
    var pieces: [String] = []
    var scores: [Float] = []
    var types: [Int] = []
    var modelType = 1               // TrainerSpec.model_type (3): 1 unigram (the default), 2 BPE
    var byteFallback = false        // TrainerSpec.byte_fallback (35)
    var bosId = 1, eosId = 2        // TrainerSpec.bos_id (41), eos_id (42)
    var addDummyPrefix = true       // NormalizerSpec.add_dummy_prefix (3)
    var normalizerName = ""         // NormalizerSpec.name (1)
    var removeExtraWhitespaces = true, escapeWhitespaces = true   // NormalizerSpec fields 4 and 5 (defaults true)

    init(_ bytes: [UInt8], file: String) throws {
        var reader = ProtobufReader(bytes: bytes, range: 0..<bytes.count, file: file)
        var refusals: [String] = []
        while let (field, wire) = try reader.field() {
            switch (field, wire) {
            case (1, 2): try readPiece(try reader.message())
            case (2, 2): try readTrainer(try reader.message(), refusals: &refusals)
            case (3, 2): try readNormalizer(try reader.message(), refusals: &refusals)
            default: try reader.skip(wire)
            }
        }
        guard !pieces.isEmpty, pieces.count < 10_000_000 else { throw TokenizerError("\(file) has \(pieces.count) pieces") }
        if modelType != 2 {
            refusals.append("trainer_spec.model_type \(modelType == 1 ? "unigram" : String(modelType)) (only BPE, 2)")
        }
        if !["identity", ""].contains(normalizerName) {
            refusals.append("normalizer_spec.name \"\(normalizerName)\" (only identity)")
        }
        if removeExtraWhitespaces { refusals.append("normalizer_spec.remove_extra_whitespaces = true") }
        if !escapeWhitespaces { refusals.append("normalizer_spec.escape_whitespaces = false") }
        if let first = refusals.first { throw TokenizerError("\(file): \(first) is not supported") }
    }

    private mutating func readPiece(_ message: ProtobufReader) throws {
        var reader = message
        var piece: String? = nil, score: Float = 0, type = 1
        while let (field, wire) = try reader.field() {
            switch (field, wire) {
            case (1, 2): piece = try reader.string()
            case (2, 5): score = Float(bitPattern: try reader.fixed32())
            case (3, 0): type = Int(truncatingIfNeeded: try reader.varint())
            default: try reader.skip(wire)
            }
        }
        guard let piece else { throw TokenizerError("\(reader.file) piece \(pieces.count) has no text") }
        guard score.isFinite else { throw TokenizerError("\(reader.file) piece \(pieces.count) has a score that is not finite") }
        pieces.append(piece)
        scores.append(score)
        types.append(type)
    }

    private mutating func readTrainer(_ message: ProtobufReader, refusals: inout [String]) throws {
        var reader = message
        while let (field, wire) = try reader.field() {
            switch (field, wire) {
            case (3, 0): modelType = Int(truncatingIfNeeded: try reader.varint())
            case (24, 0): if try reader.varint() != 0 { refusals.append("trainer_spec.treat_whitespace_as_suffix") }
            case (35, 0): byteFallback = try reader.varint() != 0
            case (41, 0): bosId = Int(Int32(truncatingIfNeeded: try reader.varint()))
            case (42, 0): eosId = Int(Int32(truncatingIfNeeded: try reader.varint()))
            default: try reader.skip(wire)
            }
        }
    }

    private mutating func readNormalizer(_ message: ProtobufReader, refusals: inout [String]) throws {
        var reader = message
        while let (field, wire) = try reader.field() {
            switch (field, wire) {
            case (1, 2): normalizerName = try reader.string()
            case (2, 2): if !(try reader.byteField()).isEmpty { refusals.append("normalizer_spec.precompiled_charsmap") }
            case (3, 0): addDummyPrefix = try reader.varint() != 0
            case (4, 0): removeExtraWhitespaces = try reader.varint() != 0
            case (5, 0): escapeWhitespaces = try reader.varint() != 0
            default: try reader.skip(wire)
            }
        }
    }
}

/// Reads protobuf wire format over a byte range; every length is checked against what remains first.
struct ProtobufReader {
    let bytes: [UInt8]
    var offset: Int
    let end: Int
    let file: String

    init(bytes: [UInt8], range: Range<Int>, file: String) {
        self.bytes = bytes
        self.offset = range.lowerBound
        self.end = range.upperBound
        self.file = file
    }

    func fail(_ what: String) -> TokenizerError { TokenizerError("\(file) at byte \(offset): \(what)") }

    mutating func varint() throws -> UInt64 {
        var value: UInt64 = 0
        for shift in stride(from: 0, to: 70, by: 7) {
            guard offset < end else { throw fail("a varint runs past the end") }
            let byte = bytes[offset]
            offset += 1
            if shift == 63 && byte > 1 { throw fail("a varint is longer than 64 bits") }
            value |= UInt64(byte & 0x7F) << UInt64(shift)
            if byte & 0x80 == 0 { return value }
        }
        throw fail("a varint is longer than 10 bytes")
    }

    /// The next field's number and wire type, or nil at the end.
    mutating func field() throws -> (Int, Int)? {
        guard offset < end else { return nil }
        let key = try varint()
        guard key >> 3 > 0, key >> 3 < 1 << 29 else { throw fail("field number \(key >> 3) is invalid") }
        return (Int(key >> 3), Int(key & 7))
    }

    /// A length-delimited field's byte range.
    mutating func lengthDelimited() throws -> Range<Int> {
        let length = try varint()
        guard length <= UInt64(end - offset) else { throw fail("a field of \(length) bytes runs past the end") }
        let range = offset..<(offset + Int(length))
        offset = range.upperBound
        return range
    }

    mutating func message() throws -> ProtobufReader {
        ProtobufReader(bytes: bytes, range: try lengthDelimited(), file: file)
    }

    mutating func byteField() throws -> ArraySlice<UInt8> { bytes[try lengthDelimited()] }

    mutating func string() throws -> String {
        let range = try lengthDelimited()
        guard let text = String(validating: bytes[range], as: UTF8.self) else { throw fail("a string is not UTF-8") }
        return text
    }

    mutating func fixed32() throws -> UInt32 {
        guard end - offset >= 4 else { throw fail("a 32-bit field runs past the end") }
        let value = (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[offset + $1]) << UInt32(8 * $1) }
        offset += 4
        return value
    }

    mutating func skip(_ wire: Int) throws {
        switch wire {
        case 0: _ = try varint()
        case 1:
            guard end - offset >= 8 else { throw fail("a 64-bit field runs past the end") }
            offset += 8
        case 2: _ = try lengthDelimited()
        case 5: _ = try fixed32()
        default: throw fail("wire type \(wire) is not supported")
        }
    }
}
