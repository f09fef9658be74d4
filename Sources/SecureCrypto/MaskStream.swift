import CSodium

/// The pseudorandom generator that expands a 32-byte seed into mask words for secure aggregation
/// (Bonawitz et al., CCS 2017: PRG(b_u) and PRG(s_u,v)): the ChaCha20 keystream (RFC 8439, 96-bit
/// zero nonce, block counter from 0) read as little-endian `UInt32` words, i.e. uniform values
/// mod 2^32 for masking fixed-point updates.
///
/// One seed gives one stream: derive distinct seeds for distinct purposes (rounds, pairs, self-masks)
/// rather than reusing a seed. The stream is random-access by word, so a long vector can be masked
/// in chunks. At most 2^36 words (the 32-bit block counter) can be drawn from one seed.
public struct MaskStream: Sendable {
    /// Seed length: a ChaCha20 key.
    public static let seedByteCount = Int(crypto_stream_chacha20_ietf_KEYBYTES)
    /// Words per ChaCha20 block.
    static let wordsPerBlock = 16
    /// The stream's length limit in words: 2^32 blocks of 16 words.
    public static let maximumWordCount = (1 << 32) * wordsPerBlock
    private static let nonce = [UInt8](repeating: 0, count: Int(crypto_stream_chacha20_ietf_NONCEBYTES))

    private let seed: SecretBytes

    /// The stream of a 32-byte seed.
    /// - Throws: `SecureCryptoError.invalidLength` if the seed is not 32 bytes.
    public init(seed: SecretBytes) throws {
        guard seed.count == Self.seedByteCount else {
            throw SecureCryptoError.invalidLength(what: "mask seed", expected: "\(Self.seedByteCount)", actual: seed.count)
        }
        Sodium.initialize()
        self.seed = seed
    }

    /// Overwrites `out` with stream words `offset ..< offset + out.count`, generated directly in place.
    public func fill(_ out: UnsafeMutableBufferPointer<UInt32>, startingAtWord offset: Int = 0) {
        precondition(offset >= 0 && offset <= Self.maximumWordCount - out.count,
                     "mask words \(offset)..<\(offset + out.count) exceed the stream's \(Self.maximumWordCount) words")
        guard var base = out.baseAddress, out.count > 0 else { return }
        var remaining = out.count
        var block = offset / Self.wordsPerBlock
        let skip = offset % Self.wordsPerBlock
        if skip != 0 {
            // A start inside a block: generate the whole block and keep its tail.
            var partial = [UInt32](repeating: 0, count: Self.wordsPerBlock)
            partial.withUnsafeMutableBufferPointer { generate(into: $0.baseAddress!, words: Self.wordsPerBlock, block: block) }
            let taken = min(remaining, Self.wordsPerBlock - skip)
            base.update(from: partial.withUnsafeBufferPointer { $0.baseAddress! + skip }, count: taken)
            base += taken
            remaining -= taken
            block += 1
        }
        if remaining > 0 { generate(into: base, words: remaining, block: block) }
        #if _endian(big)
        for i in 0..<out.count { out[i] = UInt32(littleEndian: out[i]) }
        #endif
    }

    /// `count` stream words starting at word `offset`.
    public func words(count: Int, startingAtWord offset: Int = 0) -> [UInt32] {
        [UInt32](unsafeUninitializedCapacity: count) { buffer, initialized in
            buffer.initialize(repeating: 0)
            fill(buffer, startingAtWord: offset)
            initialized = count
        }
    }

    /// Keystream from block `block` on: XOR of the keystream into zeros, in place (libsodium allows
    /// in-place and picks its SIMD implementation at `sodium_init`).
    private func generate(into start: UnsafeMutablePointer<UInt32>, words: Int, block: Int) {
        start.update(repeating: 0, count: words)
        let bytes = UnsafeMutableRawPointer(start).assumingMemoryBound(to: UInt8.self)
        seed.withUnsafeBytes { key in
            _ = crypto_stream_chacha20_ietf_xor_ic(
                bytes, bytes, UInt64(words * 4), Self.nonce, UInt32(block), key.bindMemory(to: UInt8.self).baseAddress!)
        }
    }
}
