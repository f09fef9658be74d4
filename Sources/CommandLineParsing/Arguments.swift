import Foundation

/// An error in what the user typed; the message names the flag or value at fault.
public struct UsageError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A command's arguments, consumed flag by flag; whatever is left at `finish()` is an error.
///
/// Accepts `--name value` and `--name=value`. Flags may repeat where the command reads them as lists.
public struct Arguments: Sendable {
    private var remaining: [String]
    /// True when `--help` or `-h` was given anywhere.
    public let helpRequested: Bool

    public init(_ arguments: [String]) {
        helpRequested = arguments.contains("--help") || arguments.contains("-h")
        remaining = arguments.filter { $0 != "--help" && $0 != "-h" }
    }

    /// Removes a boolean flag; true when it was present.
    public mutating func flag(_ name: String) -> Bool {
        guard let index = remaining.firstIndex(of: name) else { return false }
        remaining.remove(at: index)
        return true
    }

    /// Removes every occurrence of `--name value` (or `--name=value`), in order.
    public mutating func values(_ name: String) throws -> [String] {
        var found: [String] = []
        var index = 0
        while index < remaining.count {
            let argument = remaining[index]
            if argument == name {
                guard index + 1 < remaining.count else { throw UsageError("\(name) needs a value") }
                found.append(remaining[index + 1])
                remaining.removeSubrange(index...(index + 1))
            } else if argument.hasPrefix(name + "=") {
                found.append(String(argument.dropFirst(name.count + 1)))
                remaining.remove(at: index)
            } else {
                index += 1
            }
        }
        return found
    }

    /// Removes `--name value`; nil when absent; an error when given twice.
    public mutating func option(_ name: String) throws -> String? {
        let all = try values(name)
        guard all.count <= 1 else { throw UsageError("\(name) given \(all.count) times") }
        return all.first
    }

    /// Removes `--name value`; an error naming the flag when it is absent.
    public mutating func required(_ name: String) throws -> String {
        guard let value = try option(name) else { throw UsageError("missing \(name)") }
        return value
    }

    /// Removes `--name N` and parses it as an integer within `range`.
    public mutating func int(_ name: String, in range: ClosedRange<Int> = Int.min...Int.max) throws -> Int? {
        guard let text = try option(name) else { return nil }
        guard let value = Int(text) else { throw UsageError("\(name) expects an integer, got '\(text)'") }
        guard range.contains(value) else {
            throw UsageError("\(name) must be in \(range.lowerBound)...\(range.upperBound), got \(value)")
        }
        return value
    }

    /// Removes `--name X` and parses it as a finite number within `range`.
    public mutating func double(_ name: String,
                                in range: ClosedRange<Double> = -Double.greatestFiniteMagnitude...Double.greatestFiniteMagnitude)
        throws -> Double? {
        guard let text = try option(name) else { return nil }
        guard let value = Double(text), value.isFinite else {
            throw UsageError("\(name) expects a number, got '\(text)'")
        }
        guard range.contains(value) else {
            throw UsageError("\(name) must be between \(range.lowerBound) and \(range.upperBound), got \(value)")
        }
        return value
    }

    /// Removes `--name N` and parses it as a non-negative 64-bit integer (seeds).
    public mutating func unsigned(_ name: String) throws -> UInt64? {
        guard let text = try option(name) else { return nil }
        guard let value = UInt64(text) else { throw UsageError("\(name) expects a non-negative integer, got '\(text)'") }
        return value
    }

    /// Removes `--name value` where value must be one of `choices`; the error lists them.
    public mutating func choice(_ name: String, among choices: [String]) throws -> String? {
        guard let text = try option(name) else { return nil }
        guard choices.contains(text) else {
            throw UsageError("\(name) must be one of \(choices.joined(separator: ", ")), got '\(text)'")
        }
        return text
    }

    /// Removes the next positional (non-flag) argument, if any.
    public mutating func positional() -> String? {
        guard let index = remaining.firstIndex(where: { !$0.hasPrefix("-") }) else { return nil }
        return remaining.remove(at: index)
    }

    /// Fails on the first argument that looks like a flag (`-x`, `--name`, `--name=value`) but names none of
    /// `options`; the error suggests the nearest known name. Values of options that take one are skipped, so
    /// `--prompt --weird` is a prompt, as the option readers see it.
    public func refuseUnknownOptions(_ options: [(name: String, takesValue: Bool)]) throws {
        var index = 0
        while index < remaining.count {
            let argument = remaining[index]
            index += 1
            guard argument.hasPrefix("-"), argument.count > 1 else { continue }
            let name = argument.split(separator: "=", maxSplits: 1).first.map(String.init) ?? argument
            guard let known = options.first(where: { $0.name == name }) else {
                let suggestion = NearestName.closest(to: name, among: options.map(\.name))
                throw UsageError("unknown option '\(name)'" + (suggestion.map { "; did you mean '\($0)'?" } ?? ""))
            }
            if known.takesValue && name == argument { index += 1 }
        }
    }

    /// Fails when arguments remain that no option consumed.
    public func finish() throws {
        if let first = remaining.first {
            throw UsageError("unexpected argument '\(first)'")
        }
    }
}
