import CommandLineParsing

/// The client's commands; each lives in its own file.
enum ClientCommands {
    static let all: [Command] = [InitCommand.command, ModelCommands.tokenize, ModelCommands.generate, ModelCommands.eval, QuantizeCommand.command,
                                  SynthCommand.command, TrainCommands.train, TrainCommands.budget, JoinCommand.command]
    static let groups: [CommandGroup] = [PrivacyCommands.group]
}
