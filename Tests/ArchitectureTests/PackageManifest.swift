import Foundation

/// A target as `Package.swift` declares it.
struct PackageTarget: Equatable {
    enum Kind: Equatable { case library, executable, test, systemLibrary, other }

    let name: String
    let kind: Kind
    /// The folder relative to the package root (`path:`, or SwiftPM's default `Sources/<name>`, `Tests/<name>`).
    let path: String
    /// Target and product names from `dependencies: [...]`.
    let dependencies: [String]
    /// The line of the target's declaration in `Package.swift`.
    let line: Int

    /// The name `import` uses: an executable `conclave-client` is imported as `conclave_client`.
    var moduleName: String { name.replacingOccurrences(of: "-", with: "_") }
}

/// Reads the `targets: [...]` array of a `Package.swift` as text: each element's kind, `name:`, `path:`
/// and the names in `dependencies:`. Enough for a manifest written as ours is (literal arrays, no
/// computed target lists); anything else is ignored, and the checks then report the missing targets.
enum PackageManifest {
    static func targets(in manifest: String) -> [PackageTarget] {
        let tokens = tokenize(SwiftLexer.blank(manifest, strings: false))
        // `targets: [` also labels a product's target list; the package's own is the one that declares targets.
        let arrays = tokens.indices.filter { k in
            k + 2 < tokens.count && tokens[k].text == "targets" && tokens[k + 1].text == ":" && tokens[k + 2].text == "["
        }
        return arrays.map { targets(tokens, arrayAt: $0 + 2) }.max { $0.count < $1.count } ?? []
    }

    /// The target declarations among the elements of the array opened at `open`.
    private static func targets(_ tokens: [ManifestToken], arrayAt open: Int) -> [PackageTarget] {
        var targets: [PackageTarget] = []
        var depth = 0
        var k = open
        while k < tokens.count {
            let t = tokens[k].text
            if t == "[" || t == "(" { depth += 1 }
            if t == "]" || t == ")" {
                depth -= 1
                if depth == 0 { break }
            }
            // An element of the targets array: `.kind(` at depth 1.
            if depth == 1, t == ".", k + 2 < tokens.count, tokens[k + 2].text == "(" {
                let (target, end) = target(tokens, kindAt: k + 1)
                if let target { targets.append(target) }
                k = end
                continue
            }
            k += 1
        }
        return targets
    }

    private struct ManifestToken {
        let text: String
        let isString: Bool
        let line: Int
    }

    private static func target(_ tokens: [ManifestToken], kindAt k: Int) -> (PackageTarget?, Int) {
        let kinds: [String: PackageTarget.Kind] = ["target": .library, "executableTarget": .executable,
                                                   "testTarget": .test, "systemLibrary": .systemLibrary]
        let kind = kinds[tokens[k].text] ?? .other
        var name: String?, path: String?, dependencies: [String] = []
        var depth = 0, label = "", previousLabel = ""
        var j = k + 1
        while j < tokens.count {
            let t = tokens[j]
            if !t.isString, t.text == "(" || t.text == "[" { depth += 1 }
            if !t.isString, t.text == ")" || t.text == "]" {
                depth -= 1
                if depth == 0 { j += 1; break }
            }
            if !t.isString, j + 1 < tokens.count, tokens[j + 1].text == ":", !tokens[j + 1].isString {
                if depth == 1 { label = t.text }
                previousLabel = t.text
            }
            if t.isString {
                if depth == 1, label == "name", name == nil { name = t.text }
                if depth == 1, label == "path" { path = t.text }
                if depth >= 2, label == "dependencies", previousLabel != "package" { dependencies.append(t.text) }
            }
            j += 1
        }
        guard let name else { return (nil, j) }
        let defaultPath = (kind == .test ? "Tests/" : "Sources/") + name
        return (PackageTarget(name: name, kind: kind, path: path ?? defaultPath, dependencies: dependencies,
                              line: tokens[k].line), j)
    }

    /// Identifiers, punctuation and string literals (their contents) of comment-free manifest text.
    private static func tokenize(_ text: String) -> [ManifestToken] {
        var tokens: [ManifestToken] = []
        var line = 1
        let chars = Array(text)
        var i = 0
        while i < chars.count {
            let c = chars[i]
            if c == "\n" {
                line += 1; i += 1
            } else if c.isWhitespace {
                i += 1
            } else if c == "\"" {
                var j = i + 1, value = ""
                while j < chars.count, chars[j] != "\"", chars[j] != "\n" {
                    if chars[j] == "\\", j + 1 < chars.count { j += 1 }
                    value.append(chars[j]); j += 1
                }
                tokens.append(ManifestToken(text: value, isString: true, line: line))
                i = j + 1
            } else if c.isLetter || c == "_" {
                var j = i
                while j < chars.count, chars[j].isLetter || chars[j].isNumber || chars[j] == "_" { j += 1 }
                tokens.append(ManifestToken(text: String(chars[i..<j]), isString: false, line: line))
                i = j
            } else {
                tokens.append(ManifestToken(text: String(c), isString: false, line: line)); i += 1
            }
        }
        return tokens
    }
}

/// A row of DESIGN.md's module table: the modules it names and their direct imports, in table order
/// (bottom of the stack first: a module imports only modules of earlier rows).
struct ModuleRow: Equatable {
    let modules: [String]
    let imports: [String]
    /// The row's line in DESIGN.md.
    let line: Int
    /// 0 for the first row.
    let order: Int
}

/// DESIGN.md's module table: the first Markdown table with a column whose heading contains "import".
/// The first column names the module(s) in backticks; the imports column lists direct imports in
/// backticks, comma-separated, or `-` for none.
enum ModuleTable {
    struct Parsed {
        var rows: [ModuleRow] = []
        /// Rows that cannot be read, as (line, what is wrong).
        var problems: [(line: Int, message: String)] = []
    }

    static func parse(_ markdown: String) -> Parsed {
        var parsed = Parsed()
        let lines = markdown.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var k = 0
        while k < lines.count {
            guard isTableLine(lines[k]) else { k += 1; continue }
            let header = cells(lines[k])
            guard let column = header.firstIndex(where: { $0.lowercased().contains("import") }) else {
                while k < lines.count, isTableLine(lines[k]) { k += 1 }
                continue
            }
            k += 2  // past the header and the |---| separator
            while k < lines.count, isTableLine(lines[k]) {
                let row = cells(lines[k])
                let names = backticked(row.first ?? "")
                if names.isEmpty || column >= row.count {
                    parsed.problems.append((k + 1, "module table row names no module in backticks: \(lines[k])"))
                } else {
                    let imports = backticked(row[column])
                    var rest = row[column]
                    for name in imports { rest = rest.replacingOccurrences(of: "`\(name)`", with: "") }
                    rest = rest.replacingOccurrences(of: ",", with: "").trimmingCharacters(in: .whitespaces)
                    if !(rest.isEmpty || ["-", "–", "—"].contains(rest) && imports.isEmpty) {
                        parsed.problems.append((k + 1, "imports cell of \(names.joined(separator: ", ")) must list "
                                                + "modules in backticks or `-`, found \"\(row[column])\""))
                    }
                    parsed.rows.append(ModuleRow(modules: names, imports: imports, line: k + 1, order: parsed.rows.count))
                }
                k += 1
            }
            return parsed
        }
        parsed.problems.append((1, "no module table: DESIGN.md needs a table with an \"imports\" column"))
        return parsed
    }

    private static func isTableLine(_ line: String) -> Bool {
        line.trimmingCharacters(in: .whitespaces).hasPrefix("|")
    }

    private static func cells(_ line: String) -> [String] {
        var parts = line.trimmingCharacters(in: .whitespaces).split(separator: "|", omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: .whitespaces) }
        if parts.first == "" { parts.removeFirst() }
        if parts.last == "" { parts.removeLast() }
        return parts
    }

    private static func backticked(_ cell: String) -> [String] {
        let pieces = cell.split(separator: "`", omittingEmptySubsequences: false)
        return stride(from: 1, to: pieces.count - 1, by: 2).map { String(pieces[$0]) }.filter { !$0.isEmpty }
    }
}
