import CommandLineParsing

/// The client's commands; each lives in its own file.
enum ClientCommands {
    static let all: [Command] = []
    static let groups: [CommandGroup] = []
}
