import Foundation
import TestSupport
import XCTest

/// The README's printed examples are the binary's output: every `$ conclave-client ...` line in a code
/// block of README.md that needs no model or only the default model is run, and what the README shows
/// under it is compared with what the command prints, figures included. Only timings, rates and memory
/// (which depend on the machine) are masked. A README that drifts from the binary fails here.
final class ReadmeTests: XCTestCase {
    /// One example: the command line as written and the output lines shown under it.
    struct Example {
        let command: String
        let output: [String]
    }

    /// Client subcommands whose examples run here: deterministic, needing nothing but the default model.
    static let runnable: Set<String> = ["tokenize", "generate", "eval", "synth", "privacy", "chat"]

    func testReadmeExamplesPrintWhatTheBinaryPrints() throws {
        let readme = try String(contentsOf: Fixtures.repositoryRoot.appendingPathComponent("README.md"), encoding: .utf8)
        let examples = Self.examples(readme)
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        var ran = 0
        for example in examples {
            var words = Self.words(example.command)
            var input: Data?
            // `echo "TEXT" | conclave-client ...` feeds TEXT and a newline to standard input (as `chat` reads it).
            if words.count > 3 && words[0] == "echo" && words[2] == "|" {
                input = Data((words[1] + "\n").utf8)
                words.removeFirst(3)
            }
            guard words.first == "conclave-client", words.count > 1, Self.runnable.contains(words[1]) else { continue }
            var arguments = words.dropFirst().map { Self.resolve($0, in: directory) }
            // `--state NAME` (`privacy plan`): a fresh state directory, named bare in the output like outputs.
            if let flag = arguments.firstIndex(of: "--state"), flag + 1 < arguments.count {
                let state = directory.appendingPathComponent(arguments[flag + 1])
                try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
                arguments[flag + 1] = state.path
            }
            let result = try Executables.run(Executables.client, Array(arguments), stdin: input)
            XCTAssertEqual(result.status, 0, "\(example.command): \(result.stderr)")
            ran += 1
            if example.output.first?.hasPrefix("{") == true {
                try compareJSON(example, result.stdout)
            } else {
                // Outputs were written to the temporary directory; the README names them bare.
                let local = directory.path + "/"
                compareLines(example, stdout: result.stdout.replacingOccurrences(of: local, with: ""),
                             stderr: result.stderr.replacingOccurrences(of: local, with: ""))
            }
        }
        XCTAssertGreaterThanOrEqual(ran, 6, "the README's examples were not found: \(examples.map(\.command))")
    }

    /// Every line the README shows is printed (on standard output or, for progress, standard error), and
    /// every line of standard output is shown.
    func compareLines(_ example: Example, stdout: String, stderr: String) {
        let shown = example.output.map(Self.masked)
        let printed = Self.lines(stdout).map(Self.masked)
        let progress = Self.lines(stderr).map(Self.masked)
        for line in shown where !printed.contains(line) && !progress.contains(line) {
            XCTFail("README shows a line the binary does not print.\n  command: \(example.command)\n  README:  \(line)\n"
                    + "  binary:  \((printed + progress).joined(separator: "\n           "))")
        }
        for line in printed where !shown.contains(line) {
            XCTFail("the binary prints a line the README does not show.\n  command: \(example.command)\n  binary:  \(line)")
        }
    }

    /// The README's JSON (wrapped over lines) has the same keys and, timings aside, the same values.
    func compareJSON(_ example: Example, _ stdout: String) throws {
        let volatile: Set<String> = ["time_to_first_token_ms", "tokens_per_second", "peak_rss_bytes", "seconds"]
        func parse(_ text: String) throws -> NSDictionary {
            let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as! [String: Any]
            return NSDictionary(dictionary: object.filter { !volatile.contains($0.key) })
        }
        let shown = try parse(example.output.joined())
        let printed = try parse(stdout)
        XCTAssertEqual(Set(shown.allKeys as! [String]), Set(printed.allKeys as! [String]), example.command)
        XCTAssertEqual(shown, printed, example.command)
    }

    /// `$ ` lines in fenced code blocks, with their `\` continuations, and the lines up to the next blank line or `$`.
    static func examples(_ readme: String) -> [Example] {
        var examples: [Example] = []
        var inBlock = false
        var command: String?
        var output: [String] = []
        var continuing = false
        func finish() {
            if let command { examples.append(Example(command: command, output: output)) }
            command = nil
            output = []
        }
        for line in lines(readme) {
            if line.hasPrefix("```") {
                finish()
                inBlock.toggle()
                continue
            }
            guard inBlock else { continue }
            if continuing, let current = command {
                command = current + " " + line.trimmingCharacters(in: .whitespaces)
            } else if line.hasPrefix("$ ") {
                finish()
                command = String(line.dropFirst(2))
            } else if line.isEmpty {
                finish()
            } else if command != nil {
                output.append(line)
            }
            continuing = command != nil && line.hasSuffix("\\")
            if continuing, let current = command { command = String(current.dropLast()).trimmingCharacters(in: .whitespaces) }
        }
        return examples
    }

    /// A command line split as a shell would for these examples: spaces outside double quotes.
    static func words(_ line: String) -> [String] {
        var words: [String] = []
        var current = "", quoted = false, started = false
        for character in line {
            if character == "\"" {
                quoted.toggle()
                started = true
            } else if character == " " && !quoted {
                if started { words.append(current) }
                current = ""
                started = false
            } else {
                current.append(character)
                started = true
            }
        }
        if started { words.append(current) }
        return words
    }

    /// The default model and `Config/` as this checkout has them; a bare file name (an output) in `directory`.
    static func resolve(_ word: String, in directory: URL) -> String {
        if word.hasPrefix("models/") { return Fixtures.defaultModel.path }
        if word.hasPrefix("Config/") { return Fixtures.repositoryRoot.appendingPathComponent(word).path }
        if word.hasSuffix(".jsonl") || word.hasSuffix(".gguf") || word.hasSuffix(".html") {
            return directory.appendingPathComponent(word).path
        }
        return word
    }

    /// A line with the machine's timings, rates and memory replaced by `#`.
    static func masked(_ line: String) -> String {
        var line = line
        for pattern in [#"[0-9.]+ tokens/s"#, #"first token [0-9.]+ ms"#, #"eta [0-9.]+s"#, #"(?<= )[0-9.]+s$"#] {
            line = line.replacingOccurrences(of: pattern, with: "#", options: .regularExpression)
        }
        return line
    }

    static func lines(_ text: String) -> [String] {
        text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            .reversed().drop(while: \.isEmpty).reversed()
    }

    /// The parser finds commands, continuations and output, and masks only timings.
    func testExampleParsing() {
        let examples = Self.examples("""
            text
            ```
            $ conclave-client a --x "two  words" \\
                  --y 1
            out 1
            out 2

            $ conclave-client b
            ```
            """)
        XCTAssertEqual(examples.map(\.command), ["conclave-client a --x \"two  words\" --y 1", "conclave-client b"])
        XCTAssertEqual(examples.first?.output, ["out 1", "out 2"])
        XCTAssertEqual(Self.words(examples[0].command), ["conclave-client", "a", "--x", "two  words", "--y", "1"])
        XCTAssertEqual(Self.masked("eval: 4/4  loss 3.5081  219 tokens/s  0.6s"), "eval: 4/4  loss 3.5081  #  #")
        XCTAssertEqual(Self.masked("37 prompt tokens, 7 generated (eos), first token 142 ms, 34.7 tokens/s"),
                       "37 prompt tokens, 7 generated (eos), #, #")
    }
}
