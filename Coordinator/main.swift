import CommandLineParsing
import Foundation

let coordinator = CommandGroup(
    name: "conclave-coordinator",
    abstract: "Conclave coordinator: run a federation that fine-tunes a shared adapter with differential privacy.",
    commands: CoordinatorCommands.all,
    groups: CoordinatorCommands.groups, version: ConclaveVersion.number)
exit(coordinator.main(Array(CommandLine.arguments.dropFirst())))
