import Foundation
import TestSupport
import XCTest

/// `train`, `budget` and `privacy` as real processes on the tiny fixture model: the adapter, the
/// ledger charged before training, refusal past the budget, and a ledger that survives `kill -9`.
final class TrainCommandTests: XCTestCase {
    func run(_ arguments: [String]) throws -> Executables.Result {
        try Executables.run(Executables.client, arguments)
    }

    var tiny: String { Fixtures.url("tiny-llama").path }

    /// Sixteen pre-tokenized records from the fixture.
    func writeData(in directory: URL) throws -> URL {
        let reference = try Fixtures.json("tiny-llama/reference.json")
        let inputs = reference["input_ids"] as! [[Int]]
        let lines = try (0..<16).map { i in
            String(decoding: try JSONSerialization.data(withJSONObject: ["input_ids": inputs[i % inputs.count]]), as: UTF8.self)
        }
        let url = directory.appendingPathComponent("train.jsonl")
        try (lines.joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    func testDPTrainingChargesTheLedgerAndWritesAnAdapter() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let data = try writeData(in: directory)
        let state = directory.appendingPathComponent("state").path
        let adapter = directory.appendingPathComponent("adapter").path
        let result = try run(["train", "--model", tiny, "--data", data.path, "--eval-data", data.path, "--out", adapter,
                              "--state", state, "--budget-epsilon", "20", "--dp", "--noise-multiplier", "1.0", "--clip", "1",
                              "--steps", "20", "--batch-size", "4", "--lr", "0.01", "--json", "--threads", "2"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let json = try result.json()
        for key in ["steps", "tokens", "train_loss", "eval_loss", "eval_loss_before", "epsilon", "delta", "noise_multiplier",
                    "sampling_rate", "tokens_per_second", "peak_rss_bytes", "adapter"] {
            XCTAssertNotNil(json[key], key)
        }
        XCTAssertEqual(json["sampling_rate"] as? Double, 0.25)
        // With --json the progress still goes to standard error (the JSON alone to standard output): a scripted run of
        // an hour is not silent. Seen failing when --json silenced it.
        let progress = result.stderr.split(separator: "\n")
        XCTAssertTrue(progress.contains { $0.hasPrefix("train: 20/20") }, result.stderr)
        XCTAssertTrue(progress.contains { $0.hasPrefix("held-out after: 16/16") }, result.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: adapter + "/adapter_model.safetensors"))
        XCTAssertTrue(FileManager.default.fileExists(atPath: adapter + "/adapter_config.json"))

        // ε reported equals the accountant's, through the `privacy epsilon` command.
        let epsilon = try run(["privacy", "epsilon", "--sampling-rate", "0.25", "--noise-multiplier", "1", "--steps", "20",
                               "--delta", "1e-5", "--json"]).json()
        XCTAssertEqual(json["epsilon"] as! Double, epsilon["epsilon"] as! Double, accuracy: 1e-9)

        // `eval --adapter` gives the held-out loss `train` reported.
        let evaluation = try run(["eval", "--model", tiny, "--adapter", adapter, "--data", data.path, "--json"]).json()
        XCTAssertEqual(evaluation["loss"] as! Double, json["eval_loss"] as! Double, accuracy: 1e-6)

        // The ledger holds the run, with the cumulative ε.
        let budget = try run(["budget", "--state", state, "--json"]).json()
        let entries = budget["entries"] as! [[String: Any]]
        XCTAssertEqual(entries.count, 1)
        XCTAssertEqual(entries[0]["steps"] as? Int, 20)
        XCTAssertEqual(budget["epsilon_spent"] as! Double, json["epsilon"] as! Double, accuracy: 1e-9)
        XCTAssertEqual(budget["epsilon_budget"] as? Double, 20)
        let mode = try FileManager.default.attributesOfItem(atPath: state + "/privacy-ledger.json")[.posixPermissions] as! Int
        XCTAssertEqual(mode & 0o077, 0, "the ledger is private to its owner")

        // A run that would cross the budget is refused before it starts, saying what is left.
        let refused = try run(["train", "--model", tiny, "--data", data.path, "--out", directory.appendingPathComponent("x").path,
                               "--state", state, "--dp", "--noise-multiplier", "0.3", "--steps", "5000", "--batch-size", "4"])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("left"), refused.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory.appendingPathComponent("x").path))
        let after = try run(["budget", "--state", state, "--json"]).json()
        XCTAssertEqual((after["entries"] as! [Any]).count, 1, "a refused run is not charged")
    }

    /// `--out DIR`: an adapter directory is replaced by the next run; a directory holding other files is
    /// refused before training (and before any charge), naming the file, and left as it was.
    func testOutReplacesAnAdapterAndRefusesADirectoryOfOtherFiles() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let data = try writeData(in: directory)
        let adapter = directory.appendingPathComponent("adapter")
        let common = ["train", "--model", tiny, "--data", data.path, "--steps", "2", "--batch-size", "2", "--threads", "1"]
        for rank in ["2", "4"] {
            let result = try run(common + ["--out", adapter.path, "--rank", rank])
            XCTAssertEqual(result.status, 0, result.stderr)
        }
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: adapter.appendingPathComponent("adapter_config.json")))
        XCTAssertEqual((config as? [String: Any])?["r"] as? Int, 4)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted(), ["adapter", "train.jsonl"])

        let mixed = directory.appendingPathComponent("mixed")
        try FileManager.default.createDirectory(at: mixed, withIntermediateDirectories: true)
        try Data("mine".utf8).write(to: mixed.appendingPathComponent("notes.txt"))
        let state = directory.appendingPathComponent("state")
        let refused = try run(common + ["--out", mixed.path, "--state", state.path, "--budget-epsilon", "10", "--dp",
                                        "--noise-multiplier", "1"])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("notes.txt") && refused.stderr.contains("Give --out a new directory"), refused.stderr)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: mixed.path), ["notes.txt"])
        XCTAssertFalse(FileManager.default.fileExists(atPath: state.appendingPathComponent("privacy-ledger.json").path),
                       "refused before any charge")
    }

    /// `--privacy-unit user` on the binary: q counts users, the ledger is created and charged per user and
    /// `budget` says so, a record-level run is refused by that ledger, and a line without a user is named.
    func testUserLevelRunChargesAUserLedger() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let inputs = try Fixtures.json("tiny-llama/reference.json")["input_ids"] as! [[Int]]
        // Sixteen records of four people.
        let lines = try (0..<16).map { i in
            String(decoding: try JSONSerialization.data(withJSONObject: ["input_ids": inputs[i % inputs.count], "user": "p\(i % 4)"]),
                   as: UTF8.self)
        }
        let data = directory.appendingPathComponent("people.jsonl")
        try (lines.joined(separator: "\n") + "\n").write(to: data, atomically: true, encoding: .utf8)
        let state = directory.appendingPathComponent("state").path
        let common = ["--model", tiny, "--data", data.path, "--state", state, "--dp", "--noise-multiplier", "1.0",
                      "--steps", "4", "--batch-size", "1", "--threads", "2"]
        let result = try run(["train", "--out", directory.appendingPathComponent("a").path, "--budget-epsilon", "50",
                              "--privacy-unit", "user", "--json"] + common)
        XCTAssertEqual(result.status, 0, result.stderr)
        let json = try result.json()
        XCTAssertEqual(json["sampling_rate"] as? Double, 0.25, "1 expected user of 4, not 1 record of 16")
        XCTAssertEqual(json["privacy_unit"] as? String, "user")
        XCTAssertEqual(json["sampling_units"] as? Int, 4)
        let budget = try run(["budget", "--state", state, "--json"]).json()
        XCTAssertEqual(budget["unit"] as? String, "user")
        XCTAssertEqual((budget["entries"] as? [[String: Any]])?.map { $0["unit"] as? String }, ["user"])
        XCTAssertTrue(try run(["budget", "--state", state]).stdout.contains("per user"))

        let records = try run(["train", "--out", directory.appendingPathComponent("b").path] + common)
        XCTAssertNotEqual(records.status, 0)
        XCTAssertTrue(records.stderr.contains("--privacy-unit record differs from the ledger's unit"), records.stderr)
        XCTAssertEqual((try run(["budget", "--state", state, "--json"]).json()["entries"] as? [Any])?.count, 1)

        try (lines[0] + "\n" + #"{"input_ids": [1, 2, 3]}"# + "\n").write(to: data, atomically: true, encoding: .utf8)
        let missing = try run(["train", "--out", directory.appendingPathComponent("c").path, "--privacy-unit", "user"] + common)
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.contains("\(data.path):2: record has no \"user\" field"), missing.stderr)
    }

    /// Runs that record nothing say so loudly, and a run without --dp is recorded as ε = ∞ (issue 13).
    /// Seen failing on the old code: `train --state` without --dp wrote no entry, and `train` without
    /// --state printed a note only with --dp and never with --json.
    func testRunsWithoutPrivacyOrWithoutAStateAreNeverSilent() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let data = try writeData(in: directory)
        let common = ["--model", tiny, "--data", data.path, "--steps", "2", "--batch-size", "4"]
        for arguments in [["--dp", "--noise-multiplier", "1"], [], ["--json"]] {
            let result = try run(["train"] + common + ["--out", directory.appendingPathComponent("a").path] + arguments)
            XCTAssertEqual(result.status, 0, result.stderr)
            XCTAssertTrue(result.stderr.contains("WARNING: no --state:"), "\(arguments): \(result.stderr)")
            XCTAssertTrue(result.stderr.contains("is NOT RECORDED in any privacy ledger"), "\(arguments): \(result.stderr)")
        }
        // With a state: a DP run first (finite ε), then one without --dp, recorded as ε = ∞.
        let state = directory.appendingPathComponent("state").path
        let first = try run(["train"] + common + ["--out", directory.appendingPathComponent("b").path, "--state", state,
                                                  "--budget-epsilon", "20", "--dp", "--noise-multiplier", "1"])
        XCTAssertEqual(first.status, 0, first.stderr)
        XCTAssertFalse(first.stderr.contains("WARNING"), first.stderr)
        let plain = try run(["train"] + common + ["--out", directory.appendingPathComponent("c").path, "--state", state])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        XCTAssertTrue(plain.stderr.contains("WARNING: this run trains WITHOUT differential privacy"), plain.stderr)
        let budget = try run(["budget", "--state", state, "--json"]).json()
        let entries = budget["entries"] as! [[String: Any]]
        XCTAssertEqual(entries.map { $0["noise"] as? String }, ["discrete_gaussian", "none"])
        XCTAssertTrue(entries[1]["cumulative_epsilon"] is NSNull, "\(entries[1])")
        XCTAssertTrue(budget["epsilon_spent"] is NSNull, "\(budget)")
        XCTAssertEqual(budget["non_private_runs"] as? Int, 1)
        XCTAssertEqual(budget["refuses_every_charge"] as? Bool, true)
        let text = try run(["budget", "--state", state])
        XCTAssertTrue(text.stdout.contains("WARNING: 1 run without differential privacy recorded: ε is unbounded (∞)"), text.stdout)
        // The budget now refuses every DP run, however small, and no new budget undoes it.
        let refused = try run(["train"] + common + ["--out", directory.appendingPathComponent("d").path, "--state", state,
                                                    "--dp", "--noise-multiplier", "100"])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("a run without differential privacy is recorded"), refused.stderr)
        let reset = try run(["budget", "--state", state, "--set-epsilon", "1000000", "--delta", "1e-5"])
        XCTAssertNotEqual(reset.status, 0, reset.stdout)
        // A run without --dp into a state with no ledger names the way out.
        let fresh = try run(["train"] + common + ["--out", directory.appendingPathComponent("e").path,
                                                  "--state", directory.appendingPathComponent("fresh").path])
        XCTAssertNotEqual(fresh.status, 0)
        XCTAssertTrue(fresh.stderr.contains("give --budget-epsilon to create one, or leave out --state"), fresh.stderr)
    }

    /// Without --json, every progress line of a DP run shows the ε spent so far (the last one the run's ε), the
    /// held-out evaluations report their progress, and the summary gives the run's ε and the ledger's.
    func testProgressShowsEpsilonAndHeldOutEvaluations() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let data = try writeData(in: directory)
        let state = directory.appendingPathComponent("state").path
        let result = try run(["train", "--model", tiny, "--data", data.path, "--eval-data", data.path,
                              "--out", directory.appendingPathComponent("adapter").path, "--state", state,
                              "--budget-epsilon", "20", "--dp", "--noise-multiplier", "1.0", "--steps", "20", "--batch-size", "4"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let epsilon = try run(["privacy", "epsilon", "--sampling-rate", "0.25", "--noise-multiplier", "1", "--steps", "20",
                               "--delta", "1e-5", "--json"]).json()["epsilon"] as! Double
        let lines = result.stderr.split(separator: "\n").map(String.init)
        let trainLines = lines.filter { $0.hasPrefix("train: ") }
        XCTAssertFalse(trainLines.isEmpty, result.stderr)
        XCTAssertTrue(trainLines.allSatisfy { $0.contains("  ε ") }, result.stderr)
        let last = try XCTUnwrap(trainLines.last)
        XCTAssertTrue(last.hasPrefix("train: 20/20") && last.contains(String(format: "  ε %.3f", epsilon)), last)
        for when in ["before", "after"] {
            XCTAssertTrue(lines.contains { $0.hasPrefix("held-out \(when): 16/16  loss ") }, result.stderr)
        }
        XCTAssertTrue(result.stdout.contains(String(format: "; ε %.3f at δ 1e-05 per record; ledger ε spent %.3f of 20", epsilon, epsilon)),
                      result.stdout)
    }

    /// `privacy noise` returns the smallest σ on the 0.001 grid: the fixture's inverse case.
    func testPrivacyNoiseMatchesTheFixture() throws {
        let reference = try Fixtures.json("privacy/reference.json")
        let inverse = (reference["inverse"] as! [[String: Any]])[0]
        let rdp = try run(["privacy", "noise", "--target-epsilon", "\(inverse["target_eps"]!)", "--sampling-rate",
                           "\(inverse["q"]!)", "--steps", "\(inverse["steps"]!)", "--delta", "\(inverse["delta"]!)", "--noise", "gaussian",
                           "--json"]).json()
        XCTAssertEqual(rdp["noise_multiplier"] as! Double, inverse["sigma_rdp_opacus_style"] as! Double, accuracy: 1e-9)
        let record = (reference["records"] as! [[String: Any]])[1]
        let pld = try run(["privacy", "epsilon", "--sampling-rate", "\(record["q"]!)", "--noise-multiplier", "\(record["sigma"]!)",
                           "--steps", "\(record["steps"]!)", "--delta", "\(record["delta"]!)", "--accountant", "pld",
                           "--noise", "gaussian", "--json"]).json()
        let value = pld["epsilon"] as! Double, upper = record["eps_pld_upper"] as! Double
        XCTAssertLessThanOrEqual(value, upper * 1.01)
        XCTAssertGreaterThanOrEqual(value, record["eps_lower_bound"] as! Double)
        let bad = try run(["privacy", "epsilon", "--sampling-rate", "1.5", "--noise-multiplier", "1", "--steps", "1", "--delta", "1e-5"])
        XCTAssertEqual(bad.status, 64)
        XCTAssertTrue(bad.stderr.contains("--sampling-rate"), bad.stderr)
    }

    /// `kill -9` at several moments: whenever training had begun, the ledger counts the run, and the
    /// ledger always reads back.
    func testKilledTrainingIsAlwaysCounted() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let data = try writeData(in: directory)
        let state = directory.appendingPathComponent("state").path
        for (attempt, delay) in [0.05, 0.2, 0.5, -1].enumerated() {
            let log = directory.appendingPathComponent("stderr-\(attempt).txt")
            XCTAssertTrue(FileManager.default.createFile(atPath: log.path, contents: nil))
            let process = Process()
            process.executableURL = Executables.client
            process.arguments = ["train", "--model", tiny, "--data", data.path, "--out", directory.appendingPathComponent("a\(attempt)").path,
                                 "--state", state, "--budget-epsilon", "100000", "--dp", "--noise-multiplier", "1",
                                 "--steps", "100000", "--batch-size", "4", "--threads", "1"]
            process.standardError = try FileHandle(forWritingTo: log)
            process.standardOutput = FileHandle.nullDevice
            let before = (try? run(["budget", "--state", state, "--json"]).json()["entries"] as? [Any])??.count ?? 0
            try process.run()
            if delay >= 0 {
                Thread.sleep(forTimeInterval: delay)
            } else {
                // Wait for the first training step's progress line, then kill.
                let deadline = Date().addingTimeInterval(60)
                while Date() < deadline, !(try String(contentsOf: log, encoding: .utf8)).contains("/100000  loss") {
                    Thread.sleep(forTimeInterval: 0.02)
                }
            }
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            let stderr = try String(contentsOf: log, encoding: .utf8)
            let budget = try run(["budget", "--state", state, "--json"])
            if stderr.contains("/100000  loss") {
                XCTAssertEqual(budget.status, 0, budget.stderr)
                let entries = (try budget.json()["entries"] as! [Any]).count
                XCTAssertEqual(entries, before + 1, "attempt \(attempt): training had begun, the run must be counted\n\(stderr)")
            } else if FileManager.default.fileExists(atPath: state + "/privacy-ledger.json") {
                XCTAssertEqual(budget.status, 0, "attempt \(attempt): the ledger must always read back: \(budget.stderr)")
            }
            if delay < 0 { XCTAssertTrue(stderr.contains("/100000  loss"), "the last attempt kills mid-training: \(stderr)") }
        }
    }
}
