import Foundation
import LanguageModel
import ModelServing
import TestSupport
import Tokenizer
import XCTest

/// Conversations and generation with the default model (CONCLAVE_MODEL).
final class ChatSessionTests: XCTestCase {
    static let model: LocalModel = {
        let path = Fixtures.defaultModel.path
        let loaded = try! ModelLoader.load(path: path, threads: 2)
        return LocalModel(model: loaded.model, tokenizer: try! ModelLoader.requireTokenizer(loaded, path: path), name: "m")
    }()
    let greedy = GenerationOptions(maxTokens: 12, sampling: .greedy)

    func testSecondTurnPromptHoldsTheFirstExchange() throws {
        let session = ChatSession(backend: Self.model, system: "You are terse.")
        let firstPrompt = try session.prompt(forUser: "Name a colour.")
        var streamed = ""
        let first = try session.reply(to: "Name a colour.", options: greedy) { streamed += $0 }
        XCTAssertFalse(first.text.isEmpty)
        XCTAssertEqual(streamed, first.text, "the streamed pieces add up to the answer")
        let secondPrompt = try session.prompt(forUser: "And another?")
        // Turn 1's prompt without its trailing generation header, then the answer, closed, then turn 2.
        let turnOne = String(firstPrompt.dropLast("<|im_start|>assistant\n".count))
        XCTAssertTrue(secondPrompt.hasPrefix(turnOne + "<|im_start|>assistant\n" + first.text + "<|im_end|>\n"
                                             + "<|im_start|>user\nAnd another?<|im_end|>\n"), secondPrompt)
        XCTAssertTrue(secondPrompt.hasPrefix("<|im_start|>system\nYou are terse.<|im_end|>\n"), secondPrompt)
        _ = try session.reply(to: "And another?", options: greedy) { _ in }
        XCTAssertEqual(session.messages.map(\.role), ["system", "user", "assistant", "user", "assistant"])
    }

    /// Two requests at once: the second waits for the whole first generation (their streamed pieces never
    /// interleave), and each answer equals the one it gets alone.
    func testConcurrentCompletionsWaitTheirTurnAndMatchSequentialOnes() throws {
        let prompts = ["The capital of France is", "One, two, three,"]
        let options = GenerationOptions(maxTokens: 24, sampling: .greedy)
        let sequential = try prompts.map { try Self.model.complete(prompt: $0, options: options) { _ in true }.text }
        nonisolated(unsafe) var concurrent = [String](repeating: "", count: 2)
        nonisolated(unsafe) var order: [Int] = []
        let orderLock = NSLock()
        DispatchQueue.concurrentPerform(iterations: 2) { i in
            concurrent[i] = (try? Self.model.complete(prompt: prompts[i], options: options) { _ in
                orderLock.withLock { order.append(i) }
                return true
            }.text) ?? "failed"
        }
        XCTAssertEqual(concurrent, sequential)
        let switches = zip(order, order.dropFirst()).filter { $0 != $1 }.count
        XCTAssertEqual(switches, 1, "the two generations overlapped: pieces arrived in the order \(order)")
    }

    /// A reader that stops after the first piece (a streaming client that left) ends the generation there.
    func testGenerationStopsWhenTheReaderStops() throws {
        var pieces = 0
        let options = GenerationOptions(maxTokens: 64, sampling: .greedy)
        let done = try Self.model.complete(prompt: "One, two, three,", options: options) { _ in
            pieces += 1
            return false
        }
        XCTAssertEqual(pieces, 1)
        XCTAssertEqual(done.finishReason, "cancelled")
        XCTAssertLessThanOrEqual(done.completionTokens, 2, "generation went on after the reader stopped")
    }

    func testPromptLongerThanTheContextIs400() {
        let long = String(repeating: "word ", count: 10_000)
        XCTAssertThrowsError(try Self.model.complete(prompt: long, options: greedy) { _ in true }) { error in
            XCTAssertEqual((error as? HTTPError)?.status, 400)
            XCTAssertTrue((error as? HTTPError)?.message.contains("context") == true, "\(error)")
        }
    }

    func testUTF8StreamHoldsBackASplitCharacter() {
        var stream = UTF8Stream()
        let euro = Array("€".utf8)
        XCTAssertEqual(stream.append([65] + euro.prefix(2)), "A")
        XCTAssertEqual(stream.append(Array(euro.suffix(1))), "€")
        XCTAssertEqual(stream.append([0xE2]), "")
        XCTAssertEqual(stream.finish(), "\u{FFFD}")
    }
}
