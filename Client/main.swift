import CommandLineParsing
import Foundation

// A reader that goes away (`| head -1`, a restarted log collector) must give EPIPE, which each
// writer handles (logs drop the line, output ends the command), not a SIGPIPE that kills the
// process before it can: training, a round or a charge in flight (issue 15).
_ = signal(SIGPIPE, SIG_IGN)

let client = CommandGroup(
    name: "conclave-client",
    abstract: "Conclave client: fine-tune and run a language model on private data that never leaves this machine.",
    commands: ClientCommands.all,
    groups: ClientCommands.groups, version: ConclaveVersion.number)
exit(client.main(Array(CommandLine.arguments.dropFirst())))
