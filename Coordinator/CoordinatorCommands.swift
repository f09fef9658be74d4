import CommandLineParsing

/// The coordinator's commands; each lives in its own file.
enum CoordinatorCommands {
    static let all: [Command] = [
        Command(InitCommand.self), Command(EnrollCommand.self), Command(RevokeCommand.self), Command(ClientsCommand.self),
        Command(ServeCommand.self), Command(StatusCommand.self), Command(AuditCommand.self), Command(ReportCommand.self),
        Command(DemoCommand.self), Command(DoctorCommand.self),
    ]
    static let groups: [CommandGroup] = [
        CommandGroup(name: "rounds", abstract: "Start rounds on a running coordinator, or preview a plan's privacy.",
                     commands: [Command(StartRoundsCommand.self), Command(RoundsPlanCommand.self)]),
    ]

    /// `--state` of every command but `init`: the directory `init` made.
    static func checkState(_ path: String) throws {
        try PathCheck.inputDirectory("--state", path, expected: "the coordinator's state directory",
                                     fix: "Give the directory 'conclave-coordinator init --state DIR' made.")
    }
}
