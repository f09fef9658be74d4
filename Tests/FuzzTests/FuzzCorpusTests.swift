import Foundation
import XCTest
import TestSupport
import FuzzTargets

/// Replays every committed fuzz input (the seed corpora in `Tests/Fuzz/Corpus/<target>/`, the corpora
/// libFuzzer grew from them over the 10-million-run campaigns, minimised with `-merge=1`, in
/// `Tests/Fuzz/Grown/<target>/`, and the inputs that once crashed a parser, `Tests/Fuzz/Regressions/
/// <target>/`) through the same targets libFuzzer runs. A crash here is a crash of the test process: the regressions fail on the code
/// before their fixes. Running them under libFuzzer and the address sanitizer is `make fuzz`.
final class FuzzCorpusTests: XCTestCase {
    static let fuzzFolder = Fixtures.repositoryRoot.appendingPathComponent("Tests/Fuzz")

    override func tearDown() {
        FuzzTarget.removeScratchFiles()
        super.tearDown()
    }

    /// The seeds and the grown corpus of a target, read (what `FuzzMutationTests` mutates).
    static func committedInputs(of target: FuzzTarget) throws -> [Data] {
        try (inputs("Corpus", target) + inputs("Grown", target)).map { try Data(contentsOf: $0) }
    }

    static func inputs(_ folder: String, _ target: FuzzTarget) throws -> [URL] {
        let directory = Self.fuzzFolder.appendingPathComponent(folder).appendingPathComponent(target.rawValue)
        guard FileManager.default.fileExists(atPath: directory.path) else { return [] }
        return try FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: nil)
            .filter { !$0.lastPathComponent.hasPrefix(".") }
            .sorted { $0.path < $1.path }
    }

    /// Every target has a seed corpus, and every seed runs through its target.
    func testEverySeedCorpusReplays() throws {
        for target in FuzzTarget.allCases {
            let seeds = try Self.inputs("Corpus", target)
            XCTAssertFalse(seeds.isEmpty, "no seed corpus for \(target.rawValue) in Tests/Fuzz/Corpus/\(target.rawValue)")
            for seed in seeds { target.run(try Data(contentsOf: seed)) }
        }
    }

    /// Each target reaches its parser: every seed is accepted (no error), and the same seed cut to
    /// half its length is refused (an error), so a target that parsed nothing would fail here.
    func testSeedsAreAcceptedAndHalfSeedsRefused() throws {
        for target in FuzzTarget.allCases {
            for seed in try Self.inputs("Corpus", target) {
                let data = try Data(contentsOf: seed)
                XCTAssertNoThrow(try target.parse(data), "\(target.rawValue): \(seed.lastPathComponent)")
                XCTAssertThrowsError(try target.parse(data.prefix(data.count / 2)),
                                     "\(target.rawValue): half of \(seed.lastPathComponent)")
            }
        }
    }

    /// Every target has a grown corpus, and every input of it runs through its target (most are refused:
    /// the corpus keeps whatever reached new code, errors included).
    func testEveryGrownCorpusReplays() throws {
        for target in FuzzTarget.allCases {
            let grown = try Self.inputs("Grown", target)
            XCTAssertGreaterThan(grown.count, 10, "no grown corpus for \(target.rawValue) in Tests/Fuzz/Grown/\(target.rawValue)")
            for input in grown { target.run(try Data(contentsOf: input)) }
        }
    }

    /// The inputs that crashed a parser before its fix.
    func testRegressionInputsReplay() throws {
        for target in FuzzTarget.allCases {
            for input in try Self.inputs("Regressions", target) { target.run(try Data(contentsOf: input)) }
        }
    }
}
