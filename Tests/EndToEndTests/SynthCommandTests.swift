import Foundation
import TestSupport
import XCTest

/// `conclave-client synth` as a real process: the JSON contract, the files, reproducibility, bad flags.
final class SynthCommandTests: XCTestCase {
    func run(_ arguments: [String]) throws -> Executables.Result {
        try Executables.run(Executables.client, ["synth"] + arguments)
    }

    func lines(_ path: String) throws -> [[String: Any]] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map {
            try XCTUnwrap(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }

    func testWritesTrainingAndHeldOutFilesReproducibly() throws {
        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let out = directory.appendingPathComponent("cardio.jsonl").path
        let arguments = ["--kind", "clinic-notes", "--specialty", "cardiology", "--records", "50", "--seed", "7", "--out", out, "--json"]
        let result = try run(arguments)
        XCTAssertEqual(result.status, 0, result.stderr)
        let json = try result.json()
        XCTAssertEqual(json["records"] as? Int, 50)
        XCTAssertEqual(json["held_out"] as? Int, 10, "the default held-out fraction is 0.2")
        XCTAssertEqual(json["training"] as? Int, 40)
        XCTAssertEqual(json["out"] as? String, out)
        XCTAssertEqual(json["held_out_out"] as? String, directory.appendingPathComponent("cardio.heldout.jsonl").path)
        XCTAssertEqual(json["specialty"] as? String, "cardiology")
        XCTAssertEqual(json["form"] as? String, "text")
        let training = try lines(out), heldOut = try lines(try XCTUnwrap(json["held_out_out"] as? String))
        XCTAssertEqual(training.count, 40)
        XCTAssertEqual(heldOut.count, 10)
        XCTAssertTrue(training.allSatisfy { $0.keys.sorted() == ["text"] })
        let first = try Data(contentsOf: URL(fileURLWithPath: out))

        // Same arguments, same bytes; another seed, other notes.
        XCTAssertEqual(try run(arguments).status, 0)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out)), first)
        var reseeded = arguments
        reseeded[7] = "8"
        XCTAssertEqual(try run(reseeded).status, 0)
        XCTAssertNotEqual(try Data(contentsOf: URL(fileURLWithPath: out)), first)

        // Task form, no held-out file.
        let task = directory.appendingPathComponent("derm-task.jsonl").path
        let taskResult = try run(["--kind", "clinic-notes", "--specialty", "dermatology", "--records", "12", "--seed", "1",
                                  "--out", task, "--form", "task", "--held-out", "0", "--json"])
        XCTAssertEqual(taskResult.status, 0, taskResult.stderr)
        let taskJSON = try taskResult.json()
        XCTAssertTrue(taskJSON["held_out_out"] is NSNull)
        XCTAssertEqual(taskJSON["held_out"] as? Int, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory.appendingPathComponent("derm-task.heldout.jsonl").path))
        for record in try lines(task) {
            XCTAssertEqual(record.keys.sorted(), ["completion", "condition", "condition_names", "prompt"])
            XCTAssertFalse((record["condition"] as? String ?? "").isEmpty)
            XCTAssertTrue((record["prompt"] as? String)?.hasSuffix("\nAssessment:") ?? false)
            XCTAssertTrue((record["completion"] as? String)?.hasPrefix(" ") ?? false)
        }

        // Without --json: one line saying what was written.
        let plain = try run(["--kind", "clinic-notes", "--specialty", "pediatrics", "--records", "5", "--seed", "3", "--out", out])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        XCTAssertTrue(plain.stdout.contains("pediatrics") && plain.stdout.contains(out), plain.stdout)
    }

    func testHelpAndBadFlagsNameTheFlag() throws {
        let help = try run(["--help"])
        XCTAssertEqual(help.status, 0)
        XCTAssertTrue(help.stdout.contains("usage: conclave-client synth") && help.stdout.contains("--held-out"), help.stdout)

        let directory = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let out = directory.appendingPathComponent("x.jsonl").path
        let good = ["--kind", "clinic-notes", "--specialty", "psychiatry", "--records", "10", "--seed", "1", "--out", out]
        func replacing(_ flag: String, with value: String) -> [String] {
            var arguments = good
            let index = arguments.firstIndex(of: flag)! + 1
            arguments[index] = value
            return arguments
        }
        func dropping(_ flag: String) -> [String] {
            var arguments = good
            let index = arguments.firstIndex(of: flag)!
            arguments.removeSubrange(index...(index + 1))
            return arguments
        }
        let cases: [([String], [String])] = [
            (replacing("--specialty", with: "astrology"), ["--specialty", "cardiology", "endocrinology", "astrology"]),
            (replacing("--kind", with: "lab-reports"), ["--kind", "clinic-notes"]),
            (replacing("--records", with: "0"), ["--records", "1...1000000"]),
            (replacing("--records", with: "1000001"), ["--records"]),
            (replacing("--records", with: "ten"), ["--records"]),
            (replacing("--seed", with: "-1"), ["--seed"]),
            (replacing("--out", with: directory.appendingPathComponent("no/such/dir/x.jsonl").path), ["--out", "does not exist"]),
            (replacing("--out", with: directory.path), ["--out", "directory"]),
            (good + ["--held-out", "1.5"], ["--held-out"]),
            (good + ["--form", "xml"], ["--form", "text", "task"]),
            (dropping("--seed"), ["missing --seed"]),
            (dropping("--specialty"), ["missing --specialty"]),
            (replacing("--records", with: "1"), ["--held-out", "at least 2 records"]),
            (good + ["--colour"], ["--colour"]),
        ]
        for (arguments, fragments) in cases {
            let result = try run(arguments)
            XCTAssertEqual(result.status, 64, "\(arguments): \(result.stderr)")
            for fragment in fragments {
                XCTAssertTrue(result.stderr.contains(fragment), "'\(fragment)' missing from: \(result.stderr)")
            }
            XCTAssertTrue(result.stdout.isEmpty, result.stdout)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), "no file is written when the flags are wrong")
    }
}
