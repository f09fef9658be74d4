import Foundation
import TestSupport
import XCTest

/// A log collector that restarts, or `| head -1`, must not take a long-running command with it
/// (issue 15): with standard error (and standard output) a pipe whose reader has gone, `serve`,
/// `join`, `train` and `generate` go on and end as they would have, never by a signal (132 was
/// Foundation's trap in FileHandle.write on EPIPE; 13 is SIGPIPE).
final class ClosedPipeEndToEndTests: XCTestCase {
    /// `serve ... 2>&1 | head -1` and `join ... 2>&1 | head -1`: both log every step of a round to a
    /// closed pipe; the round commits, the client keeps the adapter, both keep running and answering.
    func testServeAndJoinGoOnAfterTheirLogReaderLeaves() throws {
        let federation = try OperatorFederation()
        defer { federation.stopAll() }
        let client = try federation.addClient("clinic-a")
        let serveLog = ClosingPipe()
        let server = try federation.start(Executables.coordinator, federation.serveArguments(), error: serveLog.writer)
        try serveLog.processStarted()
        XCTAssertFalse(try serveLog.readLineThenClose().isEmpty, "serve logs a first line")
        try OperatorFederation.waitUntil("the coordinator answers", timeout: 30) { federation.status() != nil }

        let joinLog = ClosingPipe()
        let joiner = try federation.start(Executables.client, federation.joinArguments(client), error: joinLog.writer)
        try joinLog.processStarted()
        XCTAssertTrue(try joinLog.readLineThenClose().contains("connected"), "join's first line is its connection")
        try OperatorFederation.waitUntil("the client connects", timeout: 30) {
            guard server.isRunning, joiner.isRunning else {
                XCTFail("after their log reader left: serve \(server.state), join \(joiner.state)")
                throw NSError(domain: "ended", code: 1)
            }
            return (federation.status()?["connected"] as? [String]) == ["clinic-a"]
        }

        let result = try Executables.run(Executables.coordinator, ["rounds", "start", "--state", federation.coordinator.path,
                                                                    "--count", "1", "--wait", "--timeout", "120", "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let round = (try result.json()["rounds"] as? [[String: Any]])?.first
        XCTAssertEqual(round?["status"] as? String, "committed", "\(result.stdout)")
        XCTAssertEqual(round?["participants"] as? Int, 1)
        let adapter = client.appendingPathComponent("global-adapter/adapter_model.safetensors")
        try OperatorFederation.waitUntil("the client keeps the global adapter", timeout: 30) {
            FileManager.default.fileExists(atPath: adapter.path)
        }
        Thread.sleep(forTimeInterval: 0.5)  // the client logs the commit after saving the adapter
        XCTAssertTrue(server.isRunning, "serve ended (\(server.state)) after its log reader left")
        XCTAssertTrue(joiner.isRunning, "join ended (\(joiner.state)) after its log reader left")
        XCTAssertEqual(federation.status()?["connected"] as? [String], ["clinic-a"], "serve still answers `status`")

        // `rounds start --wait | head -1` with the reader gone: the round still runs, the command exits cleanly.
        let output = ClosingPipe(), error = ClosingPipe()
        try output.closeNow()
        let second = try federation.start(Executables.coordinator, ["rounds", "start", "--state", federation.coordinator.path,
                                                                     "--count", "1", "--wait", "--timeout", "120"],
                                          error: error.writer, output: output.writer)
        try output.processStarted()
        try error.processStarted()
        let message = String(decoding: error.pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertTrue(second.waitForExit(timeout: 150), "rounds start --wait did not finish")
        XCTAssertEqual(second.ending, "exit 0", message)
        XCTAssertTrue(server.isRunning && joiner.isRunning, "serve \(server.state), join \(joiner.state)")
    }

    /// `train` with its progress going nowhere (the reader gone before the first line) finishes,
    /// writes its adapter and keeps its ledger entry; with `--json` and standard output gone too, the
    /// product cannot be delivered: exit 1, not a signal, and the run is still counted.
    func testTrainFinishesWithItsOutputReaderGone() throws {
        let federation = try OperatorFederation()
        let directory = try federation.addClient("trainer", enrol: false)
        let state = directory.appendingPathComponent("state").path
        func train(_ out: String, json: Bool) throws -> (process: Process, adapter: String) {
            let adapter = directory.appendingPathComponent(out).path
            var arguments = ["train", "--model", Fixtures.url("tiny-llama").path,
                             "--data", directory.appendingPathComponent("train.jsonl").path, "--out", adapter,
                             "--state", state, "--budget-epsilon", "100", "--dp", "--noise-multiplier", "1",
                             "--steps", "12", "--batch-size", "4", "--threads", "1"]
            if json { arguments.append("--json") }
            let error = ClosingPipe(), output = ClosingPipe()
            try error.closeNow()
            try output.closeNow()
            let process = try federation.start(Executables.client, arguments, error: error.writer,
                                               output: json ? output.writer : nil)
            try error.processStarted()
            try output.processStarted()
            XCTAssertTrue(process.waitForExit(timeout: 120), "train did not finish")
            return (process, adapter)
        }
        let plain = try train("adapter", json: false)
        XCTAssertEqual(plain.process.ending, "exit 0")
        XCTAssertTrue(FileManager.default.fileExists(atPath: plain.adapter + "/adapter_model.safetensors"))

        let json = try train("adapter-json", json: true)
        XCTAssertEqual(json.process.ending, "exit 1", "the JSON was the product and could not be written")
        XCTAssertTrue(FileManager.default.fileExists(atPath: json.adapter + "/adapter_model.safetensors"))
        let budget = try Executables.run(Executables.client, ["budget", "--state", state, "--json"]).json()
        XCTAssertEqual((budget["entries"] as? [Any])?.count, 2, "both runs trained, both are counted")
    }

    /// `generate | head -1` with a reader already gone, standard error too: generation ends cleanly
    /// (exit 0: the reader took what it wanted), not by SIGPIPE or a trap; `--json` into a closed pipe
    /// is exit 1 saying why.
    func testGenerateEndsCleanlyWhenItsReaderLeaves() throws {
        let federation = try OperatorFederation()
        for json in [false, true] {
            let output = ClosingPipe(), error = ClosingPipe()
            try output.closeNow()
            if !json { try error.closeNow() }
            var arguments = ["generate", "--model", Fixtures.defaultModel.path, "--prompt", "Count: 1, 2, 3,",
                             "--max-tokens", "12", "--temperature", "0", "--threads", "2"]
            if json { arguments.append("--json") }
            let process = try federation.start(Executables.client, arguments, error: error.writer, output: output.writer)
            try output.processStarted()
            try error.processStarted()
            let message = json ? String(decoding: error.pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self) : ""
            XCTAssertTrue(process.waitForExit(timeout: 120), "generate did not finish")
            XCTAssertEqual(process.ending, json ? "exit 1" : "exit 0", message)
            if json { XCTAssertTrue(message.contains("cannot write the JSON to standard output"), message) }
        }
    }
}
