/// How text is cut into words before BPE merges (merges never cross a word boundary).
///
/// Both cases follow llama.cpp's `llama-vocab.cpp` regex lists, written out by hand over Unicode
/// properties because a regex engine is far too slow here:
/// - `gpt2`: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
/// - `smollm`: first every `\p{N}` code point becomes its own word (HF `Digits(individual_digits)`),
///   then the GPT-2 pattern splits the text between digits; lookahead stops at those pieces' ends.
/// - `llama3`: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|`
///   `\s*[\r\n]+|\s+(?!\S)|\s+`; its tokenizers also skip merging a word that is itself a token
///   (HF `ignore_merges`, which llama.cpp turns on for this pre-tokenizer).
/// - `qwen2`: the Llama 3 pattern with `\p{N}` for `\p{N}{1,3}` (each digit its own word), and merges
///   applied to every word (llama.cpp's `LLAMA_VOCAB_PRE_TYPE_QWEN2`).
public enum PreTokenizer: String, Sendable, CaseIterable {
    case gpt2
    case smollm
    case llama3
    case qwen2

    /// The HF `Split` pattern of the Llama 3 tokenizer.json.
    static let llama3Pattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// The HF `Split` pattern of Qwen2's tokenizer.json (Llama 3's with single digits).
    static let qwen2Pattern = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// The `tokenizer.ggml.pre` name written for it: llama.cpp's own, which for GPT-2's is "gpt-2" (what
    /// convert_hf_to_gguf.py writes; llama.cpp refuses a file that says "gpt2").
    public var ggufName: String { self == .gpt2 ? "gpt-2" : rawValue }

    /// The pre-tokenizer for a GGUF `tokenizer.ggml.pre` name; nil when we do not implement it.
    ///
    /// llama.cpp gives "starcoder", "refact", "command-r", "codeshell", "exaone" and "minerva" the same
    /// regex list as "smollm", and "gpt2", "gpt-2" (what convert_hf_to_gguf.py writes for GPT-2), "mpt", "olmo",
    /// "jais" and "default" the GPT-2 pattern.
    public init?(ggufName name: String) {
        switch name {
        case "smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva": self = .smollm
        case "gpt2", "gpt-2", "default", "mpt", "olmo", "jais": self = .gpt2
        case "llama3", "llama-v3", "llama-bpe": self = .llama3
        case "qwen2": self = .qwen2
        default: return nil
        }
    }
}

/// Character classes the splitting patterns need.
enum ScalarClass {
    static let other: UInt8 = 0
    static let letter: UInt8 = 1
    static let number: UInt8 = 2
    static let whitespace: UInt8 = 3   // \s other than U+0020
    static let space: UInt8 = 4        // U+0020, the only character ` ?` accepts
    static let apostrophe: UInt8 = 5   // U+0027, starts contractions; otherwise "other"
    static let lineBreak: UInt8 = 6    // \r or \n, which the Llama 3 pattern treats apart; also \s

    static func classify(_ scalar: Unicode.Scalar) -> UInt8 {
        if scalar == " " { return space }
        if scalar == "'" { return apostrophe }
        if scalar == "\r" || scalar == "\n" { return lineBreak }
        let properties = scalar.properties
        if properties.isWhitespace { return whitespace }
        switch properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            return letter
        case .decimalNumber, .letterNumber, .otherNumber:
            return number
        default:
            return other
        }
    }

    static let ascii: [UInt8] = (0..<128).map { classify(Unicode.Scalar(UInt8($0))) }

    @inline(__always) static func isWhitespace(_ c: UInt8) -> Bool { c == whitespace || c == space || c == lineBreak }
    @inline(__always) static func isOther(_ c: UInt8) -> Bool { c == other || c == apostrophe }
}

/// Splits UTF-8 text into words: the code-point classes are computed once, then the pattern runs over them.
struct WordSplitter {
    /// Class of each code point of the current text.
    private(set) var classes: [UInt8] = []
    /// UTF-8 offset of each code point, plus one final entry for the end of the text.
    private(set) var offsets: [Int] = []

    /// Computes classes and offsets of `bytes[range]`, which must be valid UTF-8 (it comes from a String).
    mutating func load(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) {
        classes.removeAll(keepingCapacity: true)
        offsets.removeAll(keepingCapacity: true)
        var i = range.lowerBound
        while i < range.upperBound {
            let lead = bytes[i]
            offsets.append(i)
            if lead < 0x80 {
                classes.append(ScalarClass.ascii[Int(lead)])
                i += 1
                continue
            }
            // Multi-byte sequence: the lead byte's high bits give its length (RFC 3629 section 3).
            let length = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : 2
            var value = UInt32(lead) & (length == 4 ? 0x07 : length == 3 ? 0x0F : 0x1F)
            for k in 1..<length where i + k < range.upperBound {
                value = (value << 6) | (UInt32(bytes[i + k]) & 0x3F)
            }
            classes.append(Unicode.Scalar(value).map(ScalarClass.classify) ?? ScalarClass.other)
            i += length
        }
        offsets.append(range.upperBound)
    }

    /// Appends the UTF-8 end offset of every word of the loaded text to `ends`.
    func split(_ preTokenizer: PreTokenizer, bytes: UnsafeBufferPointer<UInt8>, ends: inout [Int]) {
        let count = classes.count
        switch preTokenizer {
        case .gpt2:
            splitGPT2(0, count, bytes: bytes, ends: &ends)
        case .smollm:
            var start = 0
            for i in 0..<count where classes[i] == ScalarClass.number {
                if start < i { splitGPT2(start, i, bytes: bytes, ends: &ends) }
                ends.append(offsets[i + 1])
                start = i + 1
            }
            if start < count { splitGPT2(start, count, bytes: bytes, ends: &ends) }
        case .llama3:
            splitLlama3(bytes: bytes, ends: &ends, digitRun: 3)
        case .qwen2:
            splitLlama3(bytes: bytes, ends: &ends, digitRun: 1)
        }
    }

    /// The Llama 3 pattern over all loaded code points, alternative by alternative; `digitRun` is the
    /// most digits one word takes (3 for Llama 3's `\p{N}{1,3}`, 1 for Qwen2's `\p{N}`).
    private func splitLlama3(bytes: UnsafeBufferPointer<UInt8>, ends: inout [Int], digitRun: Int) {
        let upper = classes.count
        var i = 0
        while i < upper {
            let c = classes[i]
            var end: Int
            if c == ScalarClass.apostrophe, let e = contractionEnd(i, upper, bytes: bytes, caseInsensitive: true) {
                end = e
            } else if c == ScalarClass.letter
                        || (c != ScalarClass.lineBreak && c != ScalarClass.number && i + 1 < upper
                            && classes[i + 1] == ScalarClass.letter) {
                // `[^\r\n\p{L}\p{N}]?\p{L}+`
                end = i + 1
                while end < upper && classes[end] == ScalarClass.letter { end += 1 }
            } else if c == ScalarClass.number {
                end = i + 1
                while end < upper && end < i + digitRun && classes[end] == ScalarClass.number { end += 1 }
            } else if ScalarClass.isOther(c) || (c == ScalarClass.space && i + 1 < upper && ScalarClass.isOther(classes[i + 1])) {
                // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
                end = i + 1
                while end < upper && ScalarClass.isOther(classes[end]) { end += 1 }
                while end < upper && classes[end] == ScalarClass.lineBreak { end += 1 }
            } else {
                var k = i + 1
                while k < upper && ScalarClass.isWhitespace(classes[k]) { k += 1 }
                if let last = (i..<k).last(where: { classes[$0] == ScalarClass.lineBreak }) {
                    end = last + 1   // `\s*[\r\n]+` backs off to the last line break
                } else {
                    end = (k == upper || k - i == 1) ? k : k - 1
                }
            }
            ends.append(offsets[end])
            i = end
        }
    }

    /// The GPT-2 pattern over code points `lower..<upper`, tried alternative by alternative as the regex does.
    private func splitGPT2(_ lower: Int, _ upper: Int, bytes: UnsafeBufferPointer<UInt8>, ends: inout [Int]) {
        var i = lower
        while i < upper {
            let c = classes[i]
            var end: Int
            if c == ScalarClass.apostrophe, let e = contractionEnd(i, upper, bytes: bytes) {
                end = e
            } else {
                let j = (c == ScalarClass.space && i + 1 < upper) ? i + 1 : i
                let cj = classes[j]
                if cj == ScalarClass.letter || cj == ScalarClass.number {
                    end = j + 1
                    while end < upper && classes[end] == cj { end += 1 }
                } else if ScalarClass.isOther(cj) {
                    end = j + 1
                    while end < upper && ScalarClass.isOther(classes[end]) { end += 1 }
                } else {
                    // `\s+(?!\S)` backs off one character before a non-space; `\s+` takes a lone one.
                    var k = i + 1
                    while k < upper && ScalarClass.isWhitespace(classes[k]) { k += 1 }
                    end = (k == upper || k - i == 1) ? k : k - 1
                }
            }
            ends.append(offsets[end])
            i = end
        }
    }

    /// End of `'s|'t|'re|'ve|'m|'ll|'d` at code point `i`, if any (GPT-2 is case-sensitive, Llama 3 not).
    private func contractionEnd(_ i: Int, _ upper: Int, bytes: UnsafeBufferPointer<UInt8>,
                                caseInsensitive: Bool = false) -> Int? {
        guard i + 1 < upper else { return nil }
        @inline(__always) func letter(_ k: Int) -> UInt8 {
            let b = bytes[offsets[k]]
            return caseInsensitive && b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z") ? b + 32 : b
        }
        let first = letter(i + 1)
        switch first {
        case UInt8(ascii: "s"), UInt8(ascii: "t"), UInt8(ascii: "m"), UInt8(ascii: "d"):
            return i + 2
        case UInt8(ascii: "r"), UInt8(ascii: "v"), UInt8(ascii: "l"):
            guard i + 2 < upper else { return nil }
            let second = letter(i + 2)
            let expected = first == UInt8(ascii: "l") ? UInt8(ascii: "l") : UInt8(ascii: "e")
            return second == expected ? i + 3 : nil
        default:
            return nil
        }
    }
}
