import Foundation
import TestSupport
import XCTest

/// Mistakes an operator makes that must cost nothing and say what to fix (issue 15): a bad `--out`
/// never spends privacy budget.
final class OperatorMistakesTests: XCTestCase {
    /// `train --out EXISTING_FILE --dp --state S` (and a path under a file) is refused before the
    /// charge: the ledger's bytes are unchanged and the file is untouched.
    func testTrainRefusesABadOutputBeforeChargingTheLedger() throws {
        let federation = try OperatorFederation()
        let directory = try federation.addClient("trainer", enrol: false)
        let state = directory.appendingPathComponent("state").path
        let created = try Executables.run(Executables.client, ["budget", "--state", state, "--set-epsilon", "50",
                                                               "--delta", "1e-5"])
        XCTAssertEqual(created.status, 0, created.stderr)
        let ledger = URL(fileURLWithPath: state).appendingPathComponent("privacy-ledger.json")
        let before = try Data(contentsOf: ledger)
        let existing = directory.appendingPathComponent("notes.txt")
        try Data("keep".utf8).write(to: existing)
        for out in [existing.path, existing.path + "/adapter"] {
            let result = try Executables.run(Executables.client, [
                "train", "--model", Fixtures.url("tiny-llama").path, "--data", directory.appendingPathComponent("train.jsonl").path,
                "--out", out, "--state", state, "--dp", "--noise-multiplier", "1", "--steps", "5", "--batch-size", "4",
                "--threads", "1",
            ])
            XCTAssertEqual(result.status, 64, result.stderr)
            XCTAssertTrue(result.stderr.contains("--out '\(out)'"), result.stderr)
            XCTAssertEqual(try Data(contentsOf: ledger), before, "a refused --out \(out) must charge nothing")
        }
        XCTAssertEqual(try String(contentsOf: existing, encoding: .utf8), "keep")
    }
}
