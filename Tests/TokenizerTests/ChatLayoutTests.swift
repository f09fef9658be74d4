import Foundation
import TestSupport
import XCTest
@testable import Tokenizer

/// Each family's real chat template (Tests/Fixtures/chat-templates.json, with where each was read) rendered
/// by us against transformers' rendering of the same Jinja text, conversation by conversation.
final class ChatLayoutTests: XCTestCase {
    static let specials = ["<s>", "</s>", "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
                           "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>", "<|user|>", "<|assistant|>", "<|system|>",
                           "<|end|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    /// What each family learns after an assistant message's content: the text closing its turn.
    static let assistantEnd = ["llama2": "</s>", "mistral": "</s>", "llama3": "<|eot_id|>", "llama3.2": "<|eot_id|>",
                               "gemma": "<end_of_turn>", "phi3": "<|end|>"]
    /// Families whose template trims message content (Jinja `trim` / `strip()`).
    static let trims: Set<String> = ["llama2", "llama3", "llama3.2", "gemma"]

    static func families() throws -> [String: [String: Any]] {
        try XCTUnwrap(Fixtures.json("chat-templates.json")["families"] as? [String: [String: Any]])
    }

    /// A byte-level tokenizer of one token per byte plus every family's control tokens, with `family`'s template.
    static func tokenizer(_ entry: [String: Any]) throws -> BPETokenizer {
        let tokens = (0..<256).map { ByteLevel.text(forByte: UInt8($0)) } + specials
        let types = Array(repeating: 1, count: 256) + Array(repeating: 3, count: specials.count)
        return try BPETokenizer(tokens: tokens, merges: [], tokenTypes: types, preTokenizer: .gpt2,
                                bosTokenId: tokens.firstIndex(of: entry["bos"] as! String),
                                eosTokenId: tokens.firstIndex(of: entry["eos"] as! String), addBOS: false,
                                chatTemplate: (entry["template"] as! String))
    }

    static let today: Date = {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone.current
        return calendar.date(from: DateComponents(year: 2026, month: 12, day: 5, hour: 12))!
    }()

    static func messages(_ raw: Any?) -> [ChatMessage] {
        (raw as! [[String: String]]).map { ChatMessage(role: $0["role"]!, content: $0["content"]!) }
    }

    func testEachFamilyRendersAsTransformersDoes() throws {
        var rendered = 0, refused = 0
        for (family, entry) in try Self.families() {
            let tokenizer = try Self.tokenizer(entry)
            for case let item as [String: Any] in entry["cases"] as! [Any] {
                let messages = Self.messages(item["messages"])
                let generation = item["add_generation_prompt"] as! Bool
                let label = "\(family) \(messages.map(\.role)) generation \(generation)"
                if let expected = item["text"] as? String {
                    XCTAssertEqual(try tokenizer.applyChatTemplate(messages, addGenerationPrompt: generation, today: Self.today),
                                   expected, label)
                    rendered += 1
                } else {
                    XCTAssertThrowsError(try tokenizer.applyChatTemplate(messages, addGenerationPrompt: generation,
                                                                         today: Self.today), label)
                    refused += 1
                }
            }
        }
        XCTAssertEqual(rendered + refused, 84)
        XCTAssertGreaterThanOrEqual(refused, 14)
    }

    func testEncodeChatTokenizesTheRenderingAndLearnsAssistantTurns() throws {
        for (family, entry) in try Self.families() where family != "chatml" {
            let tokenizer = try Self.tokenizer(entry)
            for case let item as [String: Any] in entry["cases"] as! [Any] where item["text"] != nil {
                guard item["add_generation_prompt"] as! Bool == false else { continue }
                let messages = Self.messages(item["messages"])
                let (ids, mask) = try tokenizer.encodeChat(messages, today: Self.today)
                XCTAssertEqual(ids, tokenizer.encode(item["text"] as! String), "\(family) \(messages.map(\.role))")
                // One token per byte here, so the learned tokens spell exactly the assistant turns' text.
                let learned = tokenizer.decode(zip(ids, mask).filter(\.1).map(\.0))
                let expected = messages.filter { $0.role == "assistant" }.map {
                    (Self.trims.contains(family) ? ChatLayout.strip($0.content) : $0.content) + Self.assistantEnd[family]!
                }.joined()
                XCTAssertEqual(learned, expected, "\(family) \(messages.map(\.role))")
            }
        }
    }

    /// The Llama 2 template over tiny-llama-spm's SentencePiece vocabulary: our ids against HF tokenizers'
    /// over transformers' rendering (BOS written by the template, not added twice).
    func testLlama2ChatIdsMatchHFOnASentencePieceVocabulary() throws {
        let tokenizer = try SentencePieceTests.fromTokenizerJSON()
        let llama2 = try XCTUnwrap(try Self.families()["llama2"])
        var compared = 0
        for case let item as [String: Any] in llama2["cases"] as! [Any] {
            guard let expected = item["tiny_llama_spm_ids"] as? [Int] else { continue }
            let messages = Self.messages(item["messages"])
            XCTAssertEqual(try tokenizer.encodeChat(messages).ids, expected, "\(messages.map(\.role))")
            XCTAssertEqual(tokenizer.encode(item["text"] as! String), expected, "\(messages.map(\.role))")
            compared += 1
        }
        XCTAssertEqual(compared, 12)
    }

    func testOtherVariantsOfAFamilyAreRefusedByName() throws {
        let entry = try XCTUnwrap(try Self.families()["phi3"])
        // Phi-3-mini-4k's older template drops system messages silently; Gemma 3's folds them into the first
        // user turn: neither is one we render, so both are refused rather than approximated.
        let phi3Mini = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') %}{{'<|user|>' + '\n' + "
            + "message['content'] + '<|end|>' + '\n' + '<|assistant|>' + '\n'}}{% elif (message['role'] == 'assistant') %}"
            + "{{message['content'] + '<|end|>' + '\n'}}{% endif %}{% endfor %}"
        let gemma3 = "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- set first_user_prefix = messages[0]['content'][0]['text'] "
            + "+ '\n\n' -%}{%- endif -%}<start_of_turn>"
        for (template, expected) in [(phi3Mini, "the Phi-3 chat template"), (gemma3, "the Gemma chat template"),
                                     ("{{ messages }}", "the chat template is not one we render")] {
            var changed = entry
            changed["template"] = template
            let tokenizer = try Self.tokenizer(changed)
            XCTAssertThrowsError(try tokenizer.applyChatTemplate([ChatMessage(role: "user", content: "hi")],
                                                                 addGenerationPrompt: true)) {
                XCTAssertTrue("\($0)".contains(expected), "\($0)")
            }
        }
    }
}
