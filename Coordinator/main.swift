import CommandLineParsing
import Foundation

// A reader that goes away (`| head -1`, a restarted log collector) must give EPIPE, which each
// writer handles (logs drop the line, output ends the command), not a SIGPIPE that kills the
// process before it can: training, a round or a charge in flight (issue 15).
_ = signal(SIGPIPE, SIG_IGN)

let coordinator = CommandGroup(
    name: "conclave-coordinator",
    abstract: "Conclave coordinator: run a federation that fine-tunes a shared adapter with differential privacy.",
    commands: CoordinatorCommands.all,
    groups: CoordinatorCommands.groups, version: ConclaveVersion.number)
exit(coordinator.main(Array(CommandLine.arguments.dropFirst())))
