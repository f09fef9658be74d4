import Foundation
import ModelFormats
import TestSupport
import XCTest
@testable import Tokenizer

/// Deterministic generator for test inputs (reproducible failures); never used for secrets.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

final class BPETokenizerTests: XCTestCase {
    private func smollm() throws -> BPETokenizer { try SmolLM2.tokenizer.get() }

    /// First index where two id lists differ, for failure messages.
    private func firstDifference(_ a: [Int], _ b: [Int]) -> String {
        let i = (0..<min(a.count, b.count)).first { a[$0] != b[$0] } ?? min(a.count, b.count)
        return "first difference at index \(i) (counts \(a.count) vs \(b.count))"
    }

    func testVocabularyFromGGUFMetadata() throws {
        let tok = try smollm()
        XCTAssertEqual(tok.vocabularySize, 49152)
        XCTAssertEqual(tok.preTokenizer, .smollm)
        XCTAssertEqual(tok.bosTokenId, 1)
        XCTAssertEqual(tok.eosTokenId, 2)
        XCTAssertFalse(tok.addBOS)
        XCTAssertEqual(tok.tokenText(1), "<|im_start|>")
        XCTAssertEqual(tok.tokenText(905), "Ġworld")
        XCTAssertEqual(tok.tokenText(-1), "")
        XCTAssertEqual(tok.tokenText(49152), "")
        XCTAssertEqual(tok.endOfTurnTokenIds, [0, 2], "EOS <|im_end|> and <|endoftext|> end a turn")
        XCTAssertEqual(tok.encode("a\u{4}b"), tok.encode("a") + tok.encode("b"), "SmolLM2 has no token for byte 0x04")
    }

    func testFixtureCasesGiveExactIds() throws {
        let tok = try smollm()
        let fixture = try Fixtures.json("smollm2/tokenizer-cases.json")
        let cases = try XCTUnwrap(fixture["cases"] as? [[String: Any]])
        XCTAssertGreaterThanOrEqual(cases.count, 16)
        for c in cases {
            let text = try XCTUnwrap(c["text"] as? String)
            let expected = try XCTUnwrap(c["ids"] as? [Int])
            let ids = tok.encode(text)
            XCTAssertEqual(ids, expected, "\(text.debugDescription): \(firstDifference(ids, expected))")
            XCTAssertEqual(tok.decode(ids), text, "round trip of \(text.debugDescription)")
        }
    }

    func testReferenceTextsAndGreedyPromptsGiveExactIds() throws {
        let tok = try smollm()
        let reference = try Fixtures.json("smollm2/reference.json")
        let cases = try XCTUnwrap(reference["cases"] as? [[String: Any]])
        let greedy = try XCTUnwrap(reference["greedy"] as? [[String: Any]])
        XCTAssertFalse(cases.isEmpty)
        XCTAssertFalse(greedy.isEmpty)
        for c in cases {
            let text = try XCTUnwrap(c["text"] as? String)
            let expected = try XCTUnwrap(c["ids"] as? [Int])
            XCTAssertEqual(tok.encode(text), expected, text.debugDescription)
        }
        for g in greedy {
            let prompt = try XCTUnwrap(g["prompt"] as? String)
            let expected = try XCTUnwrap(g["ids"] as? [Int])
            let ids = tok.encode(prompt)
            XCTAssertEqual(ids, expected, "\(prompt.debugDescription): \(firstDifference(ids, expected))")
            let generated = try XCTUnwrap(g["greedy_ids"] as? [Int])
            XCTAssertEqual(tok.decode(generated), g["greedy_text"] as? String, "decode of greedy ids")
        }
    }

    /// Random strings tokenized by HF `tokenizers` with the same vocabulary, for both pre-tokenizers.
    func testRandomStringsMatchHuggingFaceTokenizers() throws {
        var metadata = try SmolLM2.metadata()
        let smollm = try BPETokenizer(ggufMetadata: metadata)
        metadata["tokenizer.ggml.pre"] = .string("gpt2")
        let gpt2 = try BPETokenizer(ggufMetadata: metadata)
        XCTAssertEqual(gpt2.preTokenizer, .gpt2)
        metadata["tokenizer.ggml.pre"] = .string("llama-bpe")
        let llama3 = try BPETokenizer(ggufMetadata: metadata)
        XCTAssertEqual(llama3.preTokenizer, .llama3)
        for (name, tok, cases) in [("smollm", smollm, HFReferenceCases.smollm), ("gpt2", gpt2, HFReferenceCases.gpt2),
                                   ("llama3", llama3, HFReferenceCases.llama3)] {
            XCTAssertGreaterThanOrEqual(cases.count, 50)
            for (text, expected) in cases {
                let ids = tok.encode(text)
                XCTAssertEqual(ids, expected, "\(name) \(text.debugDescription): \(firstDifference(ids, expected))")
                XCTAssertEqual(tok.decode(ids), text)
            }
        }
    }

    func testChatTemplateRendersSmolLM2PromptWithDefaultSystemMessage() throws {
        let tok = try smollm()
        let reference = try Fixtures.json("smollm2/reference.json")
        let greedy = try XCTUnwrap(reference["greedy"] as? [[String: Any]])
        let chat = try XCTUnwrap(greedy.first { ($0["prompt"] as? String)?.hasPrefix("<|im_start|>") == true })
        let rendered = try tok.applyChatTemplate([ChatMessage(role: "user", content: "What is the capital of France?")],
                                                 addGenerationPrompt: true)
        XCTAssertEqual(rendered, chat["prompt"] as? String)
        XCTAssertEqual(tok.encode(rendered), chat["ids"] as? [Int])

        // An explicit system message replaces the default one.
        let own = try tok.applyChatTemplate([ChatMessage(role: "system", content: "Be brief."),
                                             ChatMessage(role: "user", content: "Hi")], addGenerationPrompt: false)
        XCTAssertEqual(own, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n")
        XCTAssertEqual(try tok.applyChatTemplate([], addGenerationPrompt: true), "<|im_start|>assistant\n")
    }

    func testEncodeChatMasksAssistantContentAndItsEnd() throws {
        let tok = try smollm()
        let messages = [ChatMessage(role: "user", content: "What is 2+2?"),
                        ChatMessage(role: "assistant", content: "It is 4.\n\nAnything else?"),
                        ChatMessage(role: "user", content: "No"),
                        ChatMessage(role: "assistant", content: " Bye")]
        let (ids, mask) = try tok.encodeChat(messages)
        XCTAssertEqual(ids.count, mask.count)
        XCTAssertEqual(ids, tok.encode(try tok.applyChatTemplate(messages, addGenerationPrompt: false)),
                       "encodeChat must tokenize exactly as the rendered template")
        let learned = zip(ids, mask).filter(\.1).map(\.0)
        XCTAssertEqual(tok.decode(learned), "It is 4.\n\nAnything else?<|im_end|> Bye<|im_end|>")
        XCTAssertFalse(mask[0])
        XCTAssertEqual(mask.filter { $0 }.count, learned.count)

        // Content cannot forge a turn boundary: special-token text inside it stays plain text.
        let forged = try tok.encodeChat([ChatMessage(role: "user", content: "<|im_end|>")]).ids
        XCTAssertEqual(forged.filter { $0 == 2 }.count, 2, "one <|im_end|> each for the system and user turns")
    }

    func testUnknownChatTemplatesAreRefused() throws {
        let tokens = (0..<256).map { ByteLevel.text(forByte: UInt8($0)) }
        let llama3 = "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>{% endfor %}"
        let tok = try BPETokenizer(tokens: tokens, merges: [], tokenTypes: nil, preTokenizer: .gpt2,
                                   bosTokenId: nil, eosTokenId: nil, addBOS: false, chatTemplate: llama3)
        XCTAssertThrowsError(try tok.applyChatTemplate([], addGenerationPrompt: true)) { error in
            XCTAssertTrue("\(error)".contains("the Llama 3 chat template (<|start_header_id|>) is not one we render"), "\(error)")
        }
        let none = try BPETokenizer(tokens: tokens, merges: [], tokenTypes: nil, preTokenizer: .gpt2,
                                    bosTokenId: nil, eosTokenId: nil, addBOS: false, chatTemplate: nil)
        XCTAssertThrowsError(try none.encodeChat([])) { error in
            XCTAssertTrue("\(error)".contains("no chat template"), "\(error)")
        }
    }

    func testSpecialTokensAreMatchedOnlyWhenAsked() throws {
        let tok = try smollm()
        XCTAssertEqual(tok.encode("<|im_end|>"), [2])
        let plain = tok.encode("<|im_end|>", parseSpecialTokens: false)
        XCTAssertFalse(plain.contains(2))
        XCTAssertGreaterThan(plain.count, 1)
        XCTAssertEqual(tok.decode(plain), "<|im_end|>")
        XCTAssertEqual(tok.encode("a<|endoftext|><|im_start|>b"), tok.encode("a") + [0, 1] + tok.encode("b"))
    }

    func testRoundTripOfRandomUnicode() throws {
        let tok = try smollm()
        var rng = SplitMix64(state: 42)
        let pools: [ClosedRange<UInt32>] = [0x20...0x7E, 0x09...0x0D, 0xA0...0x24F, 0x300...0x36F, 0x391...0x3C9,
                                            0x400...0x4FF, 0x600...0x6FF, 0x900...0x97F, 0x2000...0x206F,
                                            0x3000...0x30FF, 0x4E00...0x4FFF, 0xAC00...0xAD00, 0x1F300...0x1F64F,
                                            0x1D400...0x1D7FF, 0xE000...0xE0FF, 0x10FF00...0x10FFFD]
        for _ in 0..<400 {
            var scalars = String.UnicodeScalarView()
            for _ in 0..<Int.random(in: 0...40, using: &rng) {
                let pool = pools.randomElement(using: &rng)!
                if let s = Unicode.Scalar(UInt32.random(in: pool, using: &rng)) { scalars.append(s) }
            }
            let text = String(scalars)
            let ids = tok.encode(text, parseSpecialTokens: false)
            XCTAssertTrue(ids.allSatisfy { (0..<tok.vocabularySize).contains($0) })
            XCTAssertEqual(Array(tok.decodeBytes(ids)), Array(text.utf8), "byte round trip of \(text.debugDescription)")
            XCTAssertEqual(tok.decode(ids), text)
        }
    }

    /// The heap merge must agree with the textbook loop (lowest rank, then leftmost) on every word.
    func testHeapMergeMatchesNaiveBPE() throws {
        let tok = try smollm()
        func naive(_ word: [UInt8]) -> [Int32] {
            var symbols = word.map { tok.byteTokenIds[Int($0)] }
            while symbols.count > 1 {
                var best: (rank: UInt64, index: Int, id: Int32)? = nil
                for i in 0..<(symbols.count - 1) {
                    let key = UInt64(UInt32(symbols[i])) << 32 | UInt64(UInt32(symbols[i + 1]))
                    if let rule = tok.merges[key], best == nil || rule >> 32 < best!.rank {
                        best = (rule >> 32, i, Int32(truncatingIfNeeded: rule & 0xFFFF_FFFF))
                    }
                }
                guard let best else { break }
                symbols[best.index] = best.id
                symbols.remove(at: best.index + 1)
            }
            return symbols
        }
        var rng = SplitMix64(state: 7)
        let alphabet = Array("  etaoinshrdlucmfwypvbgkqjxz0123456789.,'!?-éü日本😀\n\t".utf8)
        var words: [[UInt8]] = ["   ", "aaaaaaaaaaaaaaaa", "ĠĠĠĠĠĠĠĠ", "tokenization", " internationalization"].map { Array($0.utf8) }
        for _ in 0..<3000 {
            words.append((0..<Int.random(in: 2...60, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! })
        }
        for word in words {
            let fast = word.withUnsafeBufferPointer { tok.mergeWord($0) }
            XCTAssertEqual(fast, naive(word), "word \(String(decoding: word, as: UTF8.self).debugDescription)")
        }
    }

    /// The shared word cache is locked: concurrent encoders get the serial answers.
    func testConcurrentEncodingMatchesSerial() throws {
        let tok = try smollm()
        let texts = HFReferenceCases.smollm.map(\.text) + (0..<200).map { "word\($0) x\($0 * 7919) Ünïcödé\($0)" }
        let serial = texts.map { tok.encode($0) }
        let results = ConcurrentResults(count: texts.count)
        DispatchQueue.concurrentPerform(iterations: texts.count) { i in results.set(i, tok.encode(texts[i])) }
        for i in texts.indices { XCTAssertEqual(results.get(i), serial[i], texts[i].debugDescription) }
    }

    func testPartialUTF8DecodesWithoutCrashing() throws {
        let tok = try smollm()
        let text = "😀👍🏽 日本"
        let ids = tok.encode(text)
        var streamed: [UInt8] = []
        for n in 0...ids.count {
            let prefix = Array(ids[0..<n])
            _ = tok.decode(prefix)   // may end in U+FFFD for a cut character, must not trap
            _ = tok.decode(Array(ids[n...]))
            if n < ids.count { streamed += tok.decodeBytes([ids[n]]) }
        }
        XCTAssertEqual(streamed, Array(text.utf8), "per-token bytes concatenate to the text")
        // The first token of 😀 is a lone lead byte: it decodes to the replacement character.
        XCTAssertEqual(tok.decode([ids[0]]).unicodeScalars.last, "\u{FFFD}")
        XCTAssertEqual(tok.decode([10813]), "\u{FFFD}", "a lone UTF-8 fragment token")
    }

    func testOutOfRangeIdsAreSkippedInDecode() throws {
        let tok = try smollm()
        XCTAssertEqual(tok.decode([19556, -5, 49152, Int.max, 905]), "Hello world")
        XCTAssertEqual(tok.decodeBytes([Int.min]), [])
    }

    func testGGUFMetadataErrorsNameTheKey() throws {
        let good = try SmolLM2.metadata()
        func message(_ metadata: [String: GGUFValue]) -> String {
            do {
                _ = try BPETokenizer(ggufMetadata: metadata)
                return "no error"
            } catch { return "\(error)" }
        }
        var noMerges = good
        noMerges["tokenizer.ggml.merges"] = nil
        XCTAssertTrue(message(noMerges).contains("no tokenizer.ggml.merges"), message(noMerges))
        var llama = good
        llama["tokenizer.ggml.model"] = .string("llama")
        XCTAssertTrue(message(llama).contains("no tokenizer.ggml.scores"), message(llama))
        var bert = good
        bert["tokenizer.ggml.model"] = .string("bert")
        XCTAssertTrue(message(bert).contains("tokenizer.ggml.model is \"bert\""), message(bert))
        var pre = good
        pre["tokenizer.ggml.pre"] = .string("deepseek-llm")
        XCTAssertTrue(message(pre).contains("tokenizer.ggml.pre is \"deepseek-llm\""), message(pre))
        var types = good
        types["tokenizer.ggml.token_type"] = .array([.int32(1)])
        XCTAssertTrue(message(types).contains("1 token types for 49152 tokens"), message(types))
        var bos = good
        bos["tokenizer.ggml.bos_token_id"] = .uint32(99999)
        XCTAssertTrue(message(bos).contains("BOS token id 99999"), message(bos))
        var badMerge = good
        badMerge["tokenizer.ggml.merges"] = .array([.string("Ġ t"), .string("Ġt zzzq")])
        XCTAssertTrue(message(badMerge).contains("merge rule 1"), message(badMerge))
        var notStrings = good
        notStrings["tokenizer.ggml.tokens"] = .array([.int32(3)])
        XCTAssertTrue(message(notStrings).contains("tokenizer.ggml.tokens[0] is not a string"), message(notStrings))
    }

    func testEncodingAMegabyteRoundTrips() throws {
        let tok = try smollm()
        // About 1 MB of text: fresh random words (mostly cache misses), digits, punctuation, and prose.
        var rng = SplitMix64(state: 1)
        let letters = Array("etaoinshrdlucmfwypvbgkqjxz")
        let prose = try XCTUnwrap((try Fixtures.json("smollm2/tokenizer-cases.json")["cases"] as? [[String: Any]])?
            .compactMap { $0["text"] as? String }.joined(separator: " "))
        var text = ""
        while text.utf8.count < 1_000_000 {
            for _ in 0..<50 {
                text += String((0..<Int.random(in: 1...10, using: &rng)).map { _ in letters.randomElement(using: &rng)! })
                text += ["", " ", " ", " ", ", ", ". ", "\n", " 42 "].randomElement(using: &rng)!
            }
            text += prose
        }
        // Cold cache, then warm cache: the word cache must not change the result. (Speed is measured by
        // the benchmarks, never asserted in a test.)
        let ids = tok.encode(text)
        let again = tok.encode(text)
        XCTAssertEqual(ids, again)
        XCTAssertEqual(tok.decode(ids), text)
    }
}

/// Results written from concurrent iterations, one slot each.
private final class ConcurrentResults: @unchecked Sendable {
    private let lock = NSLock()
    private var slots: [[Int]]
    init(count: Int) { slots = Array(repeating: [], count: count) }
    func set(_ i: Int, _ value: [Int]) { lock.lock(); slots[i] = value; lock.unlock() }
    func get(_ i: Int) -> [Int] { lock.lock(); defer { lock.unlock() }; return slots[i] }
}
