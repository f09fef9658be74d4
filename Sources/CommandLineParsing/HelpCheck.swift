import Foundation

extension Command {
    /// Where the written help and the declared options disagree: an accepted flag the help never names, or a
    /// flag in the usage lines, at the start of an option row or in an example that the command does not
    /// accept; or no "examples:" section. Empty when they agree. The help is prose kept by hand; this is what
    /// keeps it true.
    public var helpProblems: [String] {
        var problems: [String] = []
        if Self.examples(help).isEmpty {
            problems.append("\(name): its help has no \"examples:\" section of indented command lines")
        }
        for option in optionNames where !Self.mentions(help, option) {
            problems.append("\(name): accepts \(option), which its help does not mention")
        }
        for flag in Self.documentedFlags(help) where !optionNames.contains(flag) {
            problems.append("\(name): its help documents \(flag), which it does not accept")
        }
        return problems
    }

    /// Whether `flag` occurs in `text` as a whole flag (`--dp` is not found in `--dpi`).
    static func mentions(_ text: String, _ flag: String) -> Bool {
        var searched = text[...]
        while let range = searched.range(of: flag) {
            let next = searched[range.upperBound...].first
            if next.map({ !$0.isLetter && !$0.isNumber && $0 != "-" && $0 != "_" }) ?? true { return true }
            searched = searched[range.upperBound...]
        }
        return false
    }

    /// The command lines under `examples:` (indented lines up to the next blank line), without comments
    /// after `#`.
    static func examples(_ help: String) -> [Substring] {
        let lines = help.split(separator: "\n", omittingEmptySubsequences: false)
        guard let start = lines.firstIndex(of: "examples:") else { return [] }
        return lines[(start + 1)...].prefix(while: { $0.hasPrefix("  ") })
            .map { $0.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0] }
    }

    /// The flags the help documents: those in the usage lines (the `usage:` line and the indented lines that
    /// continue it), those in the first column of option rows (lines that start with a flag), and those in
    /// the examples.
    static func documentedFlags(_ help: String) -> [String] {
        var flags: [String] = []
        var inUsage = false
        for line in help.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.drop(while: { $0 == " " })
            if trimmed.hasPrefix("usage:") {
                inUsage = true
            } else if inUsage && (trimmed.isEmpty || trimmed.count == line.count) {
                inUsage = false
            }
            if inUsage {
                flags += flagsIn(trimmed)
            } else if trimmed.hasPrefix("--") {
                // The first column ends at the first run of two spaces: `--rank r, --alpha a   LoRA rank`.
                let column = trimmed.range(of: "  ").map { trimmed[..<$0.lowerBound] } ?? trimmed
                flags += flagsIn(column)
            }
        }
        flags += examples(help).flatMap { flagsIn($0) }
        var seen = Set<String>()
        return flags.filter { seen.insert($0).inserted }
    }

    /// Every `--name` in `text`.
    static func flagsIn(_ text: Substring) -> [String] {
        var flags: [String] = []
        var rest = text
        while let start = rest.range(of: "--") {
            let name = rest[start.upperBound...].prefix(while: { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" })
            if name.first?.isLetter == true { flags.append("--" + name) }
            rest = rest[start.upperBound...].dropFirst(name.count)
        }
        return flags
    }
}
