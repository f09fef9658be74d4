import Foundation

/// One Swift source file as the architecture checks read it: its path relative to the package root and
/// its text, with comments (and, for the code view, string literals) blanked so that braces, keywords
/// and calls inside them are never counted. Line numbers are kept: blanking never removes a newline.
struct SourceFile {
    /// Path relative to the package root, e.g. `Sources/Wire/Frame.swift`.
    let path: String
    let text: String
    /// The text with comments and string literals (interpolations included) replaced by spaces.
    let code: String

    init(path: String, text: String) {
        self.path = path
        self.text = text
        code = SwiftLexer.blank(text, strings: true)
    }

    /// The module a file belongs to, by its folder: `Sources/<M>/`, `Tests/<M>/`, `Benchmarks/<M>/`, or
    /// the executable's top folder (`Client`, `Coordinator`).
    var module: String {
        let parts = path.split(separator: "/").map(String.init)
        if parts.count > 2, ["Sources", "Tests", "Benchmarks"].contains(parts[0]) { return parts[1] }
        return parts.first ?? path
    }
}

/// Blanks comments and, optionally, string literals in Swift text: `//` and nested `/* */` comments,
/// `"…"`, `"""…"""` and raw `#"…"#` strings with their `\( )` interpolations (which may hold strings).
enum SwiftLexer {
    static func blank(_ text: String, strings: Bool) -> String {
        var scanner = Scanner(bytes: Array(text.utf8), blankStrings: strings)
        scanner.code(untilClosingParenthesis: false)
        return String(decoding: scanner.output, as: UTF8.self)
    }

    private struct Scanner {
        let bytes: [UInt8]
        let blankStrings: Bool
        var output: [UInt8]
        var i = 0

        init(bytes: [UInt8], blankStrings: Bool) {
            self.bytes = bytes
            self.blankStrings = blankStrings
            output = bytes
        }

        func at(_ offset: Int) -> UInt8? { i + offset < bytes.count ? bytes[i + offset] : nil }

        mutating func blank(_ range: Range<Int>) {
            for k in range where output[k] != UInt8(ascii: "\n") { output[k] = UInt8(ascii: " ") }
        }

        /// Code until the end of the text, or until the `)` that closes an interpolation.
        mutating func code(untilClosingParenthesis: Bool) {
            var depth = 0
            while i < bytes.count {
                let c = bytes[i]
                if c == UInt8(ascii: "/"), at(1) == UInt8(ascii: "/") {
                    let start = i
                    while i < bytes.count, bytes[i] != UInt8(ascii: "\n") { i += 1 }
                    blank(start..<i)
                } else if c == UInt8(ascii: "/"), at(1) == UInt8(ascii: "*") {
                    blockComment()
                } else if c == UInt8(ascii: "\"") || c == UInt8(ascii: "#") && rawStringHashes() != nil {
                    stringLiteral()
                } else if c == UInt8(ascii: "(") {
                    depth += 1; i += 1
                } else if c == UInt8(ascii: ")") {
                    i += 1
                    if untilClosingParenthesis {
                        if depth == 0 { return }
                        depth -= 1
                    }
                } else {
                    i += 1
                }
            }
        }

        /// `#…#"` at `i`: the number of hashes of a raw string's opening delimiter, else nil.
        func rawStringHashes() -> Int? {
            var n = 0
            while at(n) == UInt8(ascii: "#") { n += 1 }
            return at(n) == UInt8(ascii: "\"") ? n : nil
        }

        mutating func blockComment() {
            let start = i
            var depth = 0
            while i < bytes.count {
                if bytes[i] == UInt8(ascii: "/"), at(1) == UInt8(ascii: "*") {
                    depth += 1; i += 2
                } else if bytes[i] == UInt8(ascii: "*"), at(1) == UInt8(ascii: "/") {
                    depth -= 1; i += 2
                    if depth == 0 { break }
                } else {
                    i += 1
                }
            }
            blank(start..<i)
        }

        mutating func stringLiteral() {
            let start = i
            let hashes = rawStringHashes() ?? 0
            i += hashes
            let quote = UInt8(ascii: "\"")
            let multiline = at(1) == quote && at(2) == quote
            i += multiline ? 3 : 1
            while i < bytes.count {
                let c = bytes[i]
                if c == UInt8(ascii: "\\"), (0..<hashes).allSatisfy({ at(1 + $0) == UInt8(ascii: "#") }) {
                    i += 1 + hashes
                    if at(0) == UInt8(ascii: "(") {
                        i += 1
                        code(untilClosingParenthesis: true)
                    } else {
                        i += 1  // the escaped character
                    }
                } else if c == quote, !multiline || at(1) == quote && at(2) == quote {
                    let close = multiline ? 3 : 1
                    if (0..<hashes).allSatisfy({ at(close + $0) == UInt8(ascii: "#") }) {
                        i += close + hashes
                        break
                    }
                    i += 1
                } else if c == UInt8(ascii: "\n"), !multiline {
                    break  // an unterminated literal ends at the line's end; the compiler rejects it anyway
                } else {
                    i += 1
                }
            }
            if blankStrings { blank(start..<i) }
        }
    }
}

/// A token of blanked Swift code: an identifier or keyword, or one punctuation character (`->` is one).
struct Token: Equatable {
    let text: String
    let line: Int
}

enum SwiftTokens {
    /// Tokens of code already blanked by `SwiftLexer` (so no comments or strings remain).
    static func of(_ code: String) -> [Token] {
        var tokens: [Token] = []
        var line = 1
        let bytes = Array(code.utf8)
        var i = 0
        func isIdentifier(_ b: UInt8) -> Bool {
            b == UInt8(ascii: "_") || b >= 0x80 || (b >= 0x30 && b <= 0x39) || (b | 0x20 >= 0x61 && b | 0x20 <= 0x7A)
        }
        while i < bytes.count {
            let b = bytes[i]
            if b == UInt8(ascii: "\n") {
                line += 1; i += 1
            } else if b == UInt8(ascii: " ") || b == UInt8(ascii: "\t") || b == UInt8(ascii: "\r") {
                i += 1
            } else if b == UInt8(ascii: "`") {
                var j = i + 1
                while j < bytes.count, bytes[j] != UInt8(ascii: "`"), bytes[j] != UInt8(ascii: "\n") { j += 1 }
                tokens.append(Token(text: String(decoding: bytes[(i + 1)..<j], as: UTF8.self), line: line))
                i = min(j + 1, bytes.count)
            } else if isIdentifier(b) {
                var j = i
                while j < bytes.count, isIdentifier(bytes[j]) { j += 1 }
                tokens.append(Token(text: String(decoding: bytes[i..<j], as: UTF8.self), line: line))
                i = j
            } else if b == UInt8(ascii: "-"), i + 1 < bytes.count, bytes[i + 1] == UInt8(ascii: ">") {
                tokens.append(Token(text: "->", line: line)); i += 2
            } else {
                tokens.append(Token(text: String(UnicodeScalar(b)), line: line)); i += 1
            }
        }
        return tokens
    }
}

/// One `import` line of a file.
struct ImportLine: Equatable {
    let module: String
    let line: Int
}

enum SwiftImports {
    /// The system modules every layer may use; they are not part of the module table.
    static let system: Set<String> = ["Foundation", "FoundationEssentials", "Glibc", "Darwin", "Dispatch",
                                      "Synchronization", "XCTest"]

    /// Every `import M` (with attributes, access level or a declaration kind) of a file, system modules included.
    static func of(_ file: SourceFile) -> [ImportLine] {
        var result: [ImportLine] = []
        for (index, raw) in file.code.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var words = raw.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
            while let first = words.first, first.hasPrefix("@") || accessLevels.contains(first) { words.removeFirst() }
            guard words.first == "import", words.count >= 2 else { continue }
            var name = words[1]
            if declarationKinds.contains(name), words.count >= 3 { name = words[2] }
            let module = String(name.prefix { $0 != "." && $0 != ";" })
            result.append(ImportLine(module: module, line: index + 1))
        }
        return result
    }

    private static let accessLevels: Set<String> = ["public", "package", "internal", "fileprivate", "private"]
    private static let declarationKinds: Set<String> = ["typealias", "struct", "class", "enum", "protocol",
                                                        "let", "var", "func"]
}

/// A function, initializer, deinitializer or subscript with a body, and the lines it spans.
struct FunctionSpan: Equatable {
    /// `name(label:label:)`, `init(label:)`, `deinit`, `subscript(_:)`.
    let name: String
    /// The line of the `func` / `init` keyword.
    let firstLine: Int
    /// The line of the body's closing brace.
    let lastLine: Int

    var lineCount: Int { lastLine - firstLine + 1 }
}

enum SwiftFunctions {
    /// Every function-like declaration with a body, found by brace counting over blanked code.
    static func of(_ file: SourceFile) -> [FunctionSpan] {
        let tokens = SwiftTokens.of(file.code)
        var spans: [FunctionSpan] = []
        for k in tokens.indices {
            let word = tokens[k].text
            let previous = k > 0 ? tokens[k - 1].text : ""
            let next = k + 1 < tokens.count ? tokens[k + 1].text : ""
            switch word {
            case "func", "subscript", "init", "deinit":
                // `.init(`, `init:` as a label, and `subscript` as a member name are uses, not declarations.
                if previous == "." || next == ":" { continue }
            default:
                continue
            }
            if let span = span(of: tokens, declarationAt: k) { spans.append(span) }
        }
        return spans
    }

    /// Keywords that begin another declaration: reaching one before a `{` means the first had no body.
    private static let declarationStarts: Set<String> = [
        "func", "init", "deinit", "subscript", "var", "let", "case", "typealias", "associatedtype", "struct",
        "class", "enum", "protocol", "extension", "actor", "static", "mutating", "nonmutating", "public",
        "private", "fileprivate", "internal", "package", "open", "final", "override", "import", "@", "#", "}", ";",
    ]

    private static func span(of tokens: [Token], declarationAt k: Int) -> FunctionSpan? {
        let keyword = tokens[k].text
        var j = k + 1
        var name = keyword
        if keyword == "func" {
            name = ""
            while j < tokens.count, tokens[j].text != "(", tokens[j].text != "<" || name.isEmpty {
                name += tokens[j].text
                j += 1
                if let first = name.unicodeScalars.first, first == "_" || CharacterSet.letters.contains(first) { break }
            }
        } else if keyword == "init", j < tokens.count, tokens[j].text == "?" || tokens[j].text == "!" {
            j += 1
        }
        if j < tokens.count, tokens[j].text == "<" { j = skipGenerics(tokens, from: j) }
        var labels: [String]? = nil
        if keyword != "deinit", j < tokens.count, tokens[j].text == "(" {
            (labels, j) = parameterLabels(tokens, from: j)
        }
        // The body: the first `{` outside parentheses and brackets, unless another declaration comes first.
        var depth = 0
        while j < tokens.count {
            let t = tokens[j].text
            if t == "(" || t == "[" { depth += 1 } else if t == ")" || t == "]" { depth -= 1 }
            if depth == 0 {
                if t == "{" { break }
                if declarationStarts.contains(t) { return nil }
            }
            j += 1
        }
        guard j < tokens.count else { return nil }
        var braces = 0
        while j < tokens.count {
            if tokens[j].text == "{" { braces += 1 }
            if tokens[j].text == "}" {
                braces -= 1
                if braces == 0 { break }
            }
            j += 1
        }
        guard j < tokens.count else { return nil }
        let fullName = labels.map { name + "(" + $0.map { $0 + ":" }.joined() + ")" } ?? name
        return FunctionSpan(name: fullName, firstLine: tokens[k].line, lastLine: tokens[j].line)
    }

    /// Past the `>` that closes a generic parameter clause opened at `from`.
    private static func skipGenerics(_ tokens: [Token], from: Int) -> Int {
        var depth = 0, j = from
        while j < tokens.count {
            if tokens[j].text == "<" { depth += 1 }
            if tokens[j].text == ">" {
                depth -= 1
                if depth == 0 { return j + 1 }
            }
            j += 1
        }
        return j
    }

    /// The argument labels of a parameter clause opened at `from`, and the index past its `)`.
    private static func parameterLabels(_ tokens: [Token], from: Int) -> ([String], Int) {
        var labels: [String] = []
        var depth = 0, angle = 0, j = from
        var atParameterStart = true
        while j < tokens.count {
            let t = tokens[j].text
            switch t {
            case "(", "[": depth += 1
            case ")", "]": depth -= 1
            case "<": angle += 1
            case ">": angle = max(0, angle - 1)
            default: break
            }
            if depth == 0 { return (labels, j + 1) }
            if depth == 1, angle == 0, t == "," {
                atParameterStart = true
            } else if atParameterStart, depth == 1, t != "(" {
                if t != "@", t != "inout", t != "borrowing", t != "consuming", t != "isolated" {
                    labels.append(t)
                    atParameterStart = false
                }
            }
            j += 1
        }
        return (labels, j)
    }
}
