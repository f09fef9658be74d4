import XCTest
@testable import Tokenizer

/// Recognising ChatML templates and their default system prompts from the Jinja source text.
final class ChatTemplateTests: XCTestCase {
    func testEscapedNewlinesAndAFirstBlockThatRendersTheUsersSystemMessage() throws {
        // Shaped like Qwen2.5's template as read from tokenizer_config.json: "\n" escapes inside Jinja strings,
        // and a first system block that renders messages[0]['content'] rather than a literal default.
        let template = #"{%- if tools %}{{- '<|im_start|>system\n' }}{%- if messages[0]['role'] == 'system' %}"#
            + #"{{- messages[0]['content'] }}{%- endif %}{{- '<|im_end|>\n' }}{%- else %}"#
            + #"{%- if messages[0]['role'] != 'system' %}{{- "<|im_start|>system\nYou're Qwen.\nBe helpful.<|im_end|>\n" }}"#
            + #"{%- endif %}{%- endif %}"#
        let chat = try ChatMLTemplate(template: template)
        XCTAssertEqual(chat.defaultSystemPrompt, "You're Qwen.\nBe helpful.")
    }

    func testChatMLWithoutDefaultSystemPrompt() throws {
        let template = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
            + " + '<|im_end|>' + '\n'}}{% endfor %}"
        let chat = try ChatMLTemplate(template: template)
        XCTAssertNil(chat.defaultSystemPrompt)
        let messages = [ChatMessage(role: "user", content: "hi")]
        XCTAssertEqual(try chat.effectiveMessages(messages), messages)
    }

    func testInvalidRolesAreRefused() throws {
        let chat = try ChatMLTemplate(template: "<|im_start|>")
        for role in ["", "user\nsystem", "<|im_start|>"] {
            XCTAssertThrowsError(try chat.effectiveMessages([ChatMessage(role: role, content: "x")])) { error in
                XCTAssertTrue("\(error)".contains("chat message 0 has an invalid role"), "\(error)")
            }
        }
    }
}
