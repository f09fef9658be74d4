import CommandLineParsing
import Foundation

let coordinator = CommandGroup(
    name: "conclave-coordinator",
    abstract: "Conclave coordinator: run a federation that fine-tunes a shared adapter with differential privacy.",
    commands: [IdentityCommands.initialize, IdentityCommands.enroll, IdentityCommands.revoke, IdentityCommands.clients,
               ServeCommands.serve, ServeCommands.status, AuditCommand.command, ReportCommand.command, DemoCommand.command],
    groups: [ServeCommands.rounds])
exit(coordinator.main(Array(CommandLine.arguments.dropFirst())))
