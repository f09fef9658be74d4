/// GPT-2's reversible byte ↔ printable-character mapping (`bytes_to_unicode` in openai/gpt-2 `encoder.py`).
///
/// Printable Latin-1 bytes ('!'…'~', '¡'…'¬', '®'…'ÿ') stand for themselves; the other 68 bytes are
/// given the code points 256, 257, … in byte order, so every vocabulary string is printable text.
enum ByteLevel {
    /// Code point standing for each byte value.
    static let scalarForByte: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var next: UInt32 = 256
        for byte in 0..<256 {
            if (33...126).contains(byte) || (161...172).contains(byte) || (174...255).contains(byte) {
                table[byte] = UInt32(byte)
            } else {
                table[byte] = next
                next += 1
            }
        }
        return table
    }()

    /// Byte value for each code point of the mapping (inverse of `scalarForByte`).
    static let byteForScalar: [UInt32: UInt8] = {
        var map = [UInt32: UInt8]()
        for (byte, scalar) in scalarForByte.enumerated() { map[scalar] = UInt8(byte) }
        return map
    }()

    /// The vocabulary string that stands for one raw byte.
    static func text(forByte byte: UInt8) -> String {
        String(Character(Unicode.Scalar(scalarForByte[Int(byte)])!))
    }

    /// Raw bytes of a byte-level vocabulary string; characters outside the mapping keep their UTF-8
    /// bytes (such tokens cannot come out of BPE, but decoding them stays lossless and total).
    static func bytes(of text: String) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            if let byte = byteForScalar[scalar.value] {
                out.append(byte)
            } else {
                out.append(contentsOf: String(scalar).utf8)
            }
        }
        return out
    }
}
