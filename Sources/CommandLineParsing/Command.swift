import Foundation
import SystemIO

/// What a command says about itself: its name, its line in the parent's list, and its full help.
public struct CommandConfiguration: Sendable {
    public let name: String
    /// One line shown in the parent's command list.
    public let abstract: String
    /// The full help: usage line, options and what the command prints.
    public let help: String

    public init(name: String, abstract: String, help: String) {
        self.name = name
        self.abstract = abstract
        self.help = help
    }
}

/// A subcommand as a type, in the shape of swift-argument-parser: its options are stored properties
/// (their initial values are the defaults), listed in `options`; `validate()` checks what spans options
/// or needs the file system, before `run()` does any work.
public protocol ParsableCommand: SendableMetatype {
    static var configuration: CommandConfiguration { get }
    /// Every option the command accepts, in the order they are read: the first error found is reported.
    static var options: [Option<Self>] { get }
    /// The command with every option at its default.
    init()
    /// Refuses combinations and values that parsing alone cannot judge; throws `UsageError` (exit 64).
    mutating func validate() throws
    /// Does the work; returns the exit code. Errors other than `UsageError` exit with 1.
    func run() throws -> Int32
}

extension ParsableCommand {
    public mutating func validate() throws {}

    /// The command with its options read from `arguments` and validated. Unknown flags are refused
    /// first, so a misspelt required flag is named as unknown rather than reported missing.
    public static func parse(_ arguments: [String]) throws -> Self {
        var remaining = Arguments(arguments)
        let declared = options
        try remaining.refuseUnknownOptions(declared.map { ($0.name, $0.takesValue) })
        var command = Self()
        for option in declared { try option.read(&remaining, &command) }
        try remaining.finish()
        try command.validate()
        return command
    }
}

/// A command as its parent lists it: name, help, and how to parse, validate and run it.
public struct Command: Sendable {
    public let name: String
    public let abstract: String
    public let help: String
    /// Every flag the command accepts, in the order it reads them.
    public let optionNames: [String]
    /// Parses the arguments, validates, and runs; returns the exit code.
    let execute: @Sendable ([String]) throws -> Int32

    public init<C: ParsableCommand>(_ type: C.Type) {
        let configuration = C.configuration
        name = configuration.name
        abstract = configuration.abstract
        help = configuration.help
        optionNames = C.options.map(\.name)
        execute = { arguments in try C.parse(arguments).run() }
    }
}

/// A program made of subcommands (possibly nested, as in `privacy epsilon`).
public struct CommandGroup: Sendable {
    public let name: String
    public let abstract: String
    public let commands: [Command]
    public let groups: [CommandGroup]
    /// The release printed by `--version`; nil for a nested group, which has none of its own.
    public let version: String?

    public init(name: String, abstract: String, commands: [Command], groups: [CommandGroup] = [], version: String? = nil) {
        self.name = name
        self.abstract = abstract
        self.commands = commands
        self.groups = groups
        self.version = version
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
        lines.append("Run '\(prefix) <command> --help' for a command's options"
                     + (version == nil ? "." : ", '\(prefix) --version' for the version."))
        return lines.joined(separator: "\n")
    }

    /// Dispatches `arguments` to a subcommand, printing help or a usage error; returns the exit code.
    public func main(_ arguments: [String], prefix: String? = nil) -> Int32 {
        let prefix = prefix ?? name
        if let version, arguments.first == "--version" {
            guard arguments.count == 1 else {
                StandardError.write("\(prefix): --version takes no other arguments\n")
                return 64
            }
            print("\(name) \(version)")
            return 0
        }
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
            let suggestion = NearestName.closest(to: first, among: commands.map(\.name) + groups.map(\.name))
            StandardError.write("\(prefix): unknown command '\(first)'"
                                + (suggestion.map { "; did you mean '\($0)'?" } ?? "") + "\n\n\(help(prefix: prefix))\n")
            return 64
        }
        if Arguments(rest).helpRequested {
            print(command.help)
            return 0
        }
        do {
            return try command.execute(rest)
        } catch let error as UsageError {
            StandardError.write("\(prefix) \(first): \(error)\nRun '\(prefix) \(first) --help' for usage.\n")
            return 64
        } catch {
            StandardError.write("\(prefix) \(first): error: \(error)\n")
            return 1
        }
    }
}
