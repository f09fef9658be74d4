import SecureCrypto

/// One PRG term of a mask: the stream of a seed, added or subtracted modulo 2^32.
struct MaskTerm {
    /// Whether the term is added (+PRG) or subtracted (-PRG).
    enum Sign { case plus, minus }

    let stream: MaskStream
    let sign: Sign
}

/// Adds mask streams into vectors, chunk by chunk so the scratch words stay in cache while every
/// term is applied to one chunk (one pass over the vector, whatever the number of terms).
enum Masking {
    /// Words per chunk: 32 KiB of scratch, a multiple of the 16-word ChaCha20 block.
    static let chunkWords = 8192

    /// vector += Σ ±PRG(seed) mod 2^32 over `terms`.
    static func apply(_ terms: [MaskTerm], to vector: inout [UInt32]) {
        guard !terms.isEmpty, !vector.isEmpty else { return }
        var scratch = [UInt32](repeating: 0, count: min(chunkWords, vector.count))
        let total = vector.count
        vector.withUnsafeMutableBufferPointer { target in
            scratch.withUnsafeMutableBufferPointer { words in
                var start = 0
                while start < total {
                    let length = min(chunkWords, total - start)
                    let chunk = UnsafeMutableBufferPointer(rebasing: words[0..<length])
                    let base = target.baseAddress! + start
                    for term in terms {
                        term.stream.fill(chunk, startingAtWord: start)
                        switch term.sign {
                        case .plus: for i in 0..<length { base[i] &+= chunk[i] }
                        case .minus: for i in 0..<length { base[i] &-= chunk[i] }
                        }
                    }
                    start += length
                }
            }
        }
    }
}
