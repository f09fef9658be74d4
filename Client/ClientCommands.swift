import CommandLineParsing

/// The client's commands; each lives in its own file.
enum ClientCommands {
    static let all: [Command] = [
        Command(InitCommand.self), Command(TokenizeCommand.self), Command(GenerateCommand.self), Command(EvalCommand.self),
        Command(QuantizeCommand.self), Command(SynthCommand.self), Command(TrainCommand.self), Command(BudgetCommand.self),
        Command(JoinCommand.self), Command(DoctorCommand.self), Command(ChatCommand.self), Command(ServeModelCommand.self),
    ]
    static let groups: [CommandGroup] = [PrivacyCommands.group]
}
