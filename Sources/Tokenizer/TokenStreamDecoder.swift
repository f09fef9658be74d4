/// Turns generated ids into text as they arrive, holding back a UTF-8 character split across tokens
/// (byte-level tokens often end inside a character, e.g. the first byte of an emoji).
public struct TokenStreamDecoder: Sendable {
    private let tokenizer: BPETokenizer
    private var pending: [UInt8] = []

    public init(tokenizer: BPETokenizer) { self.tokenizer = tokenizer }

    /// Text completed by `id` (possibly empty); invalid UTF-8 is emitted as U+FFFD at once.
    public mutating func append(_ id: Int) -> String {
        pending += tokenizer.decodeBytes([id])
        let cut = Self.completePrefixLength(pending)
        let text = String(decoding: pending[..<cut], as: UTF8.self)
        pending.removeFirst(cut)
        return text
    }

    /// Whatever is still held back (an unfinished character becomes U+FFFD); the decoder is then empty.
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }

    /// Length of the longest prefix not ending inside a character that later bytes could still complete.
    static func completePrefixLength(_ bytes: [UInt8]) -> Int {
        // Look back at most 3 bytes for the lead byte of the last character (RFC 3629 section 3).
        var i = bytes.count - 1
        var continuations = 0
        while i >= 0 && continuations < 3 && bytes[i] & 0xC0 == 0x80 {
            continuations += 1
            i -= 1
        }
        guard i >= 0 else { return bytes.count }
        let lead = bytes[i]
        let needed: Int
        switch lead {
        case 0xC2...0xDF: needed = 1
        case 0xE0...0xEF: needed = 2
        case 0xF0...0xF4: needed = 3
        default: return bytes.count   // ASCII, or a byte that can never start a valid character
        }
        return continuations < needed ? i : bytes.count
    }
}
