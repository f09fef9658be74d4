import Foundation
import FuzzTargets

// The fuzzing executable of issue 14. Built for fuzzing (`make fuzz-build`: `-sanitize=fuzzer,address`
// and `-D CONCLAVE_FUZZ`) it is a libFuzzer binary whose target `CONCLAVE_FUZZ_TARGET` names; built
// as part of the package it replays files through a target, so the same code runs without libFuzzer.

/// The target named by the environment, or a message and exit status 2.
func selectedTarget() -> FuzzTarget {
    let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
    guard let name = ProcessInfo.processInfo.environment["CONCLAVE_FUZZ_TARGET"] else {
        FileHandle.standardError.write(Data("conclave-fuzz: set CONCLAVE_FUZZ_TARGET to one of: \(names)\n".utf8))
        exit(2)
    }
    guard let target = FuzzTarget(rawValue: name) else {
        FileHandle.standardError.write(Data("conclave-fuzz: unknown target '\(name)'; the targets are: \(names)\n".utf8))
        exit(2)
    }
    return target
}

#if CONCLAVE_FUZZ
nonisolated(unsafe) var fuzzTarget = FuzzTarget.gguf

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<CInt>,
                           _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    if let seeds = ProcessInfo.processInfo.environment["CONCLAVE_FUZZ_WRITE_SEEDS"] {
        do { try SeedCorpus.write(to: URL(fileURLWithPath: seeds)) } catch {
            FileHandle.standardError.write(Data("conclave-fuzz: cannot write the seeds: \(error)\n".utf8))
            exit(1)
        }
        FuzzTarget.removeScratchFiles()
        _exit(0)  // not exit: its leak check would count the environment's strings still in scope
    }
    fuzzTarget = selectedTarget()
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzTarget.run(data.map { Data(bytes: $0, count: size) } ?? Data())
    return 0
}

/// libFuzzer's driver, which its own `main` would call.
@_silgen_name("LLVMFuzzerRunDriver")
func runFuzzerDriver(_ argc: UnsafeMutablePointer<CInt>,
                     _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                     _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

/// SwiftPM links every executable with `main` defined as `<module>_main` (so that tests can import
/// executables), which keeps libFuzzer's `main` out: this is that entry point, handing over to libFuzzer
/// (which calls `LLVMFuzzerInitialize` first).
@_cdecl("conclave_fuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var count = argc
    var arguments = argv
    return runFuzzerDriver(&count, &arguments) { data, size in fuzz(data, size) }
}
#else
/// `conclave-fuzz FILE...` (with CONCLAVE_FUZZ_TARGET set) runs each file through the target once;
/// `conclave-fuzz --write-seeds DIR` writes the seed corpus (`Tests/Fuzz/Corpus`), one folder a target.
@main
struct FuzzReplay {
    static func main() throws {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "--write-seeds", arguments.count == 2 {
            try SeedCorpus.write(to: URL(fileURLWithPath: arguments[1]))
            FuzzTarget.removeScratchFiles()
            return
        }
        let target = selectedTarget()
        for path in arguments {
            target.run(try Data(contentsOf: URL(fileURLWithPath: path)))
            print("\(target.rawValue): \(path): ok")
        }
        FuzzTarget.removeScratchFiles()
    }
}
#endif
