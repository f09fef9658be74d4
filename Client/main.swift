import CommandLineParsing
import Foundation

let client = CommandGroup(
    name: "conclave-client",
    abstract: "Conclave client: fine-tune and run a language model on private data that never leaves this machine.",
    commands: ClientCommands.all,
    groups: ClientCommands.groups, version: ConclaveVersion.number)
exit(client.main(Array(CommandLine.arguments.dropFirst())))
