import Foundation
import SystemIO

/// One subcommand: its name, help text, and how it runs on parsed arguments.
public struct Command: Sendable {
    public let name: String
    /// One line shown in the parent's command list.
    public let abstract: String
    /// The full help: usage line, options and what the command prints.
    public let help: String
    /// Parses its arguments (call `finish()` before doing work) and returns the exit code.
    public let run: @Sendable (inout Arguments) throws -> Int32

    public init(name: String, abstract: String, help: String,
                run: @escaping @Sendable (inout Arguments) throws -> Int32) {
        self.name = name
        self.abstract = abstract
        self.help = help
        self.run = run
    }
}

/// A program made of subcommands (possibly nested, as in `privacy epsilon`).
public struct CommandGroup: Sendable {
    public let name: String
    public let abstract: String
    public let commands: [Command]
    public let groups: [CommandGroup]

    public init(name: String, abstract: String, commands: [Command], groups: [CommandGroup] = []) {
        self.name = name
        self.abstract = abstract
        self.commands = commands
        self.groups = groups
    }

    /// The group's help: its abstract and a list of subcommands.
    public func help(prefix: String) -> String {
        var lines = ["\(abstract)", "", "usage: \(prefix) <command> [options]", "", "commands:"]
        let width = (commands.map(\.name) + groups.map(\.name)).map(\.count).max() ?? 0
        for command in commands {
            lines.append("  " + command.name.padding(toLength: width + 2, withPad: " ", startingAt: 0) + command.abstract)
        }
        for group in groups {
            lines.append("  " + group.name.padding(toLength: width + 2, withPad: " ", startingAt: 0) + group.abstract)
        }
        lines.append("")
        lines.append("Run '\(prefix) <command> --help' for a command's options.")
        return lines.joined(separator: "\n")
    }

    /// Dispatches `arguments` to a subcommand, printing help or a usage error; returns the exit code.
    public func main(_ arguments: [String], prefix: String? = nil) -> Int32 {
        let prefix = prefix ?? name
        guard let first = arguments.first, !first.hasPrefix("-") else {
            if arguments.contains("--help") || arguments.contains("-h") || arguments.isEmpty {
                print(help(prefix: prefix))
                return arguments.isEmpty ? 64 : 0
            }
            StandardError.write("\(prefix): unexpected argument '\(arguments[0])'\n\n\(help(prefix: prefix))\n")
            return 64
        }
        let rest = Array(arguments.dropFirst())
        if let group = groups.first(where: { $0.name == first }) {
            return group.main(rest, prefix: "\(prefix) \(first)")
        }
        guard let command = commands.first(where: { $0.name == first }) else {
            StandardError.write("\(prefix): unknown command '\(first)'\n\n\(help(prefix: prefix))\n")
            return 64
        }
        var parsed = Arguments(rest)
        if parsed.helpRequested {
            print(command.help)
            return 0
        }
        do {
            return try command.run(&parsed)
        } catch let error as UsageError {
            StandardError.write("\(prefix) \(first): \(error)\nRun '\(prefix) \(first) --help' for usage.\n")
            return 64
        } catch {
            StandardError.write("\(prefix) \(first): error: \(error)\n")
            return 1
        }
    }
}
