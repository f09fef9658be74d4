import TestSupport
import XCTest
@testable import Tokenizer

final class TokenStreamDecoderTests: XCTestCase {
    func testStreamingHoldsBackSplitCharactersAndReassemblesTheText() throws {
        let tok = try SmolLM2.tokenizer.get()
        let text = "emoji 😀👍🏽 done, 日本語のテキスト, café"
        let ids = tok.encode(text)
        var decoder = TokenStreamDecoder(tokenizer: tok)
        var pieces: [String] = []
        for id in ids { pieces.append(decoder.append(id)) }
        pieces.append(decoder.finish())
        XCTAssertEqual(pieces.joined(), text)
        XCTAssertFalse(pieces.contains { $0.contains("\u{FFFD}") }, "no replacement characters mid-stream: \(pieces)")
        XCTAssertGreaterThan(pieces.filter(\.isEmpty).count, 0, "some tokens end inside a character")
    }

    func testUnfinishedCharacterAtTheEndBecomesReplacementCharacter() throws {
        let tok = try SmolLM2.tokenizer.get()
        let firstOfEmoji = try XCTUnwrap(tok.encode("😀").first)
        var decoder = TokenStreamDecoder(tokenizer: tok)
        XCTAssertEqual(decoder.append(firstOfEmoji), "")
        XCTAssertEqual(decoder.finish(), "\u{FFFD}")
        XCTAssertEqual(decoder.finish(), "")
    }

    func testCompletePrefixLength() {
        XCTAssertEqual(TokenStreamDecoder.completePrefixLength([]), 0)
        XCTAssertEqual(TokenStreamDecoder.completePrefixLength([0x61, 0xF0, 0x9F]), 1)
        XCTAssertEqual(TokenStreamDecoder.completePrefixLength([0xF0, 0x9F, 0x98, 0x80]), 4)
        XCTAssertEqual(TokenStreamDecoder.completePrefixLength([0xE6, 0x97]), 0)
        XCTAssertEqual(TokenStreamDecoder.completePrefixLength([0x80, 0x80, 0x80, 0x80]), 4, "stray continuations")
        XCTAssertEqual(TokenStreamDecoder.completePrefixLength([0x61, 0xFF]), 2, "0xFF never starts a character")
    }
}
