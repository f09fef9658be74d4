import XCTest
@testable import CommandLineParsing

/// A command shaped like the real ones: required, optional and defaulted options, a choice, a flag, and a
/// rule that `validate()` enforces.
private struct SampleCommand: ParsableCommand {
    enum Precision: String, CaseIterable { case float32, int8 }

    static let configuration = CommandConfiguration(
        name: "sample", abstract: "A command for the parser's tests.",
        help: """
        usage: test sample --model M [--steps N | --epochs E] [--precision int8|float32] [--seed S] [--json]

          --model M       the model
          --steps N       steps (default 10); or --epochs E
          --precision P   int8 (default) or float32
          --seed S        a seed
          --json          print JSON

        examples:
          test sample --model m.gguf --steps 20 --json   # JSON on standard output
        """)

    static var options: [Option<Self>] {
        [
            .required("--model", \.model), .option("--steps", .int(in: 1...100), \.steps),
            .option("--epochs", .double(in: 0.1...10), \.epochs), .option("--precision", .choice, \.precision),
            .option("--seed", .unsigned, \.seed), .flag("--json", \.json),
        ]
    }

    var model = ""
    var steps = 10
    var epochs: Double?
    var precision = Precision.int8
    var seed: UInt64?
    var json = false

    /// How many times `run()` was called, to show that a refused command never runs.
    nonisolated(unsafe) static var runs = 0

    func validate() throws {
        if steps != 10 && epochs != nil { throw UsageError("give either --steps or --epochs, not both") }
    }

    func run() throws -> Int32 {
        Self.runs += 1
        if model == "fail" { throw CocoaError(.fileNoSuchFile) }
        if model == "refuse" { throw UsageError("--model refused while running") }
        return json ? 7 : 0
    }
}

final class CommandTests: XCTestCase {
    private let group = CommandGroup(name: "test", abstract: "Tests.", commands: [Command(SampleCommand.self)])

    private func usageError(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) -> String? {
        do {
            _ = try SampleCommand.parse(arguments)
            XCTFail("\(arguments) parsed", file: file, line: line)
            return nil
        } catch let error as UsageError {
            return error.description
        } catch {
            XCTFail("\(arguments): not a usage error: \(error)", file: file, line: line)
            return nil
        }
    }

    func testOptionsFillTypedPropertiesAndDefaultsStay() throws {
        let parsed = try SampleCommand.parse(["--model", "m.gguf", "--precision=float32", "--seed", "42", "--json"])
        XCTAssertEqual(parsed.model, "m.gguf")
        XCTAssertEqual(parsed.precision, .float32)
        XCTAssertEqual(parsed.seed, 42)
        XCTAssertTrue(parsed.json)
        XCTAssertEqual(parsed.steps, 10)
        XCTAssertNil(parsed.epochs)
    }

    func testMisspeltRequiredFlagIsUnknownNotMissing() {
        XCTAssertEqual(usageError(["--modle", "m.gguf"]), "unknown option '--modle'; did you mean '--model'?")
        XCTAssertEqual(usageError(["--model", "m", "--step", "3"]), "unknown option '--step'; did you mean '--steps'?")
        XCTAssertEqual(usageError(["--model", "m", "--prec=int8"]), "unknown option '--prec'; did you mean '--precision'?")
        XCTAssertEqual(usageError(["--model", "m", "-json"]), "unknown option '-json'; did you mean '--json'?")
        XCTAssertEqual(usageError(["--model", "m", "--verbose"]), "unknown option '--verbose'")
    }

    func testAValueIsNeverTakenForAFlag() throws {
        XCTAssertEqual(try SampleCommand.parse(["--model", "--modle"]).model, "--modle")
        XCTAssertEqual(try SampleCommand.parse(["--model=-x"]).model, "-x")
    }

    func testParsingErrorsNameTheFlag() {
        XCTAssertEqual(usageError([]), "missing --model")
        XCTAssertEqual(usageError(["--model"]), "--model needs a value")
        XCTAssertEqual(usageError(["--model", "a", "--model", "b"]), "--model given 2 times")
        XCTAssertEqual(usageError(["--model", "m", "--steps", "ten"]), "--steps expects an integer, got 'ten'")
        XCTAssertEqual(usageError(["--model", "m", "--steps", "0"]), "--steps must be in 1...100, got 0")
        XCTAssertEqual(usageError(["--model", "m", "--precision", "fp8"]), "--precision must be one of float32, int8, got 'fp8'")
        XCTAssertEqual(usageError(["--model", "m", "--seed", "-1"]), "--seed expects a non-negative integer, got '-1'")
        XCTAssertEqual(usageError(["--model", "m", "stray"]), "unexpected argument 'stray'")
        XCTAssertEqual(usageError(["--model", "m", "--json=yes"]), "unexpected argument '--json=yes'")
    }

    func testValidateRunsAfterParsing() {
        XCTAssertEqual(usageError(["--model", "m", "--steps", "5", "--epochs", "1"]), "give either --steps or --epochs, not both")
        // A parsing error comes first: validate() only sees well-formed options.
        XCTAssertEqual(usageError(["--steps", "5", "--epochs", "1"]), "missing --model")
    }

    func testExitCodes() {
        SampleCommand.runs = 0
        XCTAssertEqual(group.main(["sample", "--model", "m", "--json"]), 7)
        XCTAssertEqual(group.main(["sample", "--model", "m"]), 0)
        XCTAssertEqual(SampleCommand.runs, 2)
        // Refused by validate(), by the parser, or for an unknown flag: 64, and the command never runs.
        XCTAssertEqual(group.main(["sample", "--model", "m", "--steps", "5", "--epochs", "1"]), 64)
        XCTAssertEqual(group.main(["sample", "--modle", "m"]), 64)
        XCTAssertEqual(group.main(["sample", "--model", "m", "--steps", "x"]), 64)
        XCTAssertEqual(SampleCommand.runs, 2)
        // A usage error found while running is still 64; any other error is 1.
        XCTAssertEqual(group.main(["sample", "--model", "refuse"]), 64)
        XCTAssertEqual(group.main(["sample", "--model", "fail"]), 1)
        XCTAssertEqual(SampleCommand.runs, 4)
        // --help anywhere prints the help and exits 0 without parsing; unknown commands and no command are 64.
        XCTAssertEqual(group.main(["sample", "--modle", "--help"]), 0)
        XCTAssertEqual(group.main(["--help"]), 0)
        XCTAssertEqual(group.main(["sampel"]), 64)
        XCTAssertEqual(group.main([]), 64)
        XCTAssertEqual(SampleCommand.runs, 4)
    }

    func testNearestName() {
        let names = ["--model", "--max-tokens", "--temperature", "--top-k", "--top-p", "--json"]
        XCTAssertEqual(NearestName.closest(to: "--modle", among: names), "--model")
        XCTAssertEqual(NearestName.closest(to: "--tempreature", among: names), "--temperature")
        XCTAssertEqual(NearestName.closest(to: "--max-token", among: names), "--max-tokens")
        XCTAssertEqual(NearestName.closest(to: "--temp", among: names), "--temperature", "an abbreviation of one name")
        XCTAssertNil(NearestName.closest(to: "--top", among: names), "an abbreviation of two names is no suggestion")
        XCTAssertEqual(NearestName.closest(to: "--top-q", among: names), "--top-k", "ties go to the first")
        XCTAssertEqual(NearestName.closest(to: "--js", among: names), "--json")
        XCTAssertNil(NearestName.closest(to: "--dp", among: names))
        XCTAssertNil(NearestName.closest(to: "--", among: names))
        XCTAssertEqual(NearestName.closest(to: "trian", among: ["train", "budget"]), "train")
        XCTAssertNil(NearestName.closest(to: "nope", among: ["epsilon", "noise"]))
        XCTAssertEqual(NearestName.editDistance(Array("modle"), Array("model")), 1)
        XCTAssertEqual(NearestName.editDistance(Array("kitten"), Array("sitting")), 3)
        XCTAssertEqual(NearestName.editDistance(Array(""), Array("abc")), 3)
    }

    /// `--version` on the top-level group prints the name and release, exit 0; a nested group has no version.
    func testVersion() {
        let versioned = CommandGroup(name: "test", abstract: "Tests.", commands: [Command(SampleCommand.self)], version: "1.2.3")
        XCTAssertEqual(versioned.main(["--version"]), 0)
        XCTAssertEqual(versioned.main(["--version", "extra"]), 64)
        XCTAssertTrue(versioned.help(prefix: "test").contains("'test --version' for the version"))
        XCTAssertEqual(group.main(["--version"]), 64, "a group without a version treats --version as unexpected")
    }

    func testHelpProblemsFindDrift() {
        XCTAssertEqual(Command(SampleCommand.self).helpProblems, [])
        XCTAssertEqual(Command(DriftingCommand.self).helpProblems, [
            "drift: accepts --quiet, which its help does not mention",
            "drift: its help documents --verbose, which it does not accept",
            "drift: its help documents --retired, which it does not accept",
            "drift: its help documents --colour, which it does not accept",
        ])
        XCTAssertEqual(Command.examples("usage: x\n\nexamples:\n  x --a 1   # the --b way\n  x --c\n\nmore"), ["  x --a 1   ", "  x --c"])
        XCTAssertEqual(Command.examples("usage: x --a\n"), [])
        XCTAssertTrue(Command.mentions("use --dp here", "--dp"))
        XCTAssertFalse(Command.mentions("use --dpi here", "--dp"))
        XCTAssertEqual(Command.documentedFlags("usage: x [--a N | --b M]\n          [--c]\n\n  --d X, --e Y   about --f\nSee --g."),
                       ["--a", "--b", "--c", "--d", "--e"])
    }
}

/// A command whose help has drifted from its options.
private struct DriftingCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        name: "drift", abstract: "Drifted.",
        help: """
        usage: test drift --state DIR [--verbose]

          --state DIR   the state
          --retired     an option that was removed

        examples:
          test drift --state s --colour red
        """)
    static var options: [Option<Self>] { [.required("--state", \.state), .flag("--quiet", \.quiet)] }
    var state = ""
    var quiet = false
    func run() throws -> Int32 { 0 }
}
