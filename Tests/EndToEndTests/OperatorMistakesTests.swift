import ClientService
import FederationProtocol
import Foundation
import TestSupport
import XCTest

/// Mistakes an operator makes that must cost nothing and say what to fix (issue 15): a bad `--out`
/// never spends privacy budget, and `join` with a wrong CA or key stops at once, naming both sides,
/// instead of retrying forever like a network blip.
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

    /// A certificate from another federation's CA, a key that is not the certificate's, and a
    /// coordinator whose certificate another CA issued: `join` exits 1 within seconds with a sentence
    /// naming both sides, before (or at) its first handshake.
    func testJoinStopsAtOnceOnAWrongCAOrKey() throws {
        let alpha = try OperatorFederation(name: "alpha")
        let beta = try OperatorFederation(name: "beta", root: alpha.root)
        defer { alpha.stopAll() }
        let client = try beta.addClient("clinic-b")
        let certificate = client.appendingPathComponent("client.pem")
        let stranger = try beta.addClient("clinic-c", enrol: false)

        // Checked locally, no coordinator running: our certificate against --ca, our key against our certificate.
        let wrongCA = try join(alpha, alpha.joinArguments(client, certificate: certificate), label: "wrong-ca")
        XCTAssertTrue(wrongCA.contains("your certificate \(certificate.path) is issued by 'beta'; your --ca "
                                       + "\(alpha.caFile.path) is 'alpha'"), wrongCA)
        let wrongKey = try join(beta, beta.joinArguments(stranger, certificate: certificate), label: "wrong-key")
        XCTAssertTrue(wrongKey.contains("\(stranger.path)/client.key does not match \(certificate.path)"), wrongKey)

        // At the handshake: beta's client pointed at alpha's coordinator, trusting beta's CA.
        let serveLog = try FileHandle(forWritingTo: logFile(in: alpha.root, "serve-alpha"))
        _ = try alpha.start(Executables.coordinator, alpha.serveArguments(), error: serveLog)
        try OperatorFederation.waitUntil("alpha answers", timeout: 30) { alpha.status() != nil }
        let wrongCoordinator = try join(alpha, alpha.joinArguments(client, ca: beta.caFile, certificate: certificate),
                                        label: "wrong-coordinator")
        XCTAssertTrue(wrongCoordinator.contains("the coordinator's certificate ('127.0.0.1' at 127.0.0.1:\(alpha.port)) is "
                                                + "issued by 'alpha'; your --ca \(beta.caFile.path) is 'beta'"), wrongCoordinator)
    }

    /// A policy whose privacy unit is not the unit of the ledger already in the state directory stops `join`
    /// at start, naming both and the fix, instead of declining every round.
    func testJoinStopsAtOnceWhenThePolicysUnitIsNotTheLedgers() throws {
        let federation = try OperatorFederation(name: "units")
        defer { federation.stopAll() }
        let client = try federation.addClient("clinic-u")
        let created = try Executables.run(Executables.client, ["budget", "--state", client.path, "--set-epsilon", "50",
                                                                 "--delta", "1e-5"])
        XCTAssertEqual(created.status, 0, created.stderr)
        try federation.federation.write(ClientConfiguration(model: Fixtures.url("tiny-llama").path, data: "train.jsonl",
                                                            evalData: "eval.jsonl", threads: 1,
                                                            policy: ClientPolicy(maxEpsilon: 50, delta: 1e-5, maxStepsPerRound: 50,
                                                                                 privacyUnit: .user)),
                                        for: "clinic-u")
        let stderr = try join(federation, federation.joinArguments(client), label: "unit")
        XCTAssertTrue(stderr.contains("it counts ε per record, the policy's privacy_unit is user; set policy.privacy_unit to record"),
                      stderr)
    }

    /// Runs `join`; it must exit 1 within 60 s (a retry loop is killed and fails the test). Returns its standard error.
    private func join(_ federation: OperatorFederation, _ arguments: [String], label: String,
                      file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let log = try logFile(in: federation.root, label)
        let process = try federation.start(Executables.client, arguments, error: try FileHandle(forWritingTo: log))
        let ended = process.waitForExit(timeout: 60)
        if !ended {
            process.terminate()
            process.waitUntilExit()
        }
        let stderr = try String(contentsOf: log, encoding: .utf8)
        XCTAssertTrue(ended, "join kept retrying a configuration error: \(stderr)", file: file, line: line)
        if ended { XCTAssertEqual(process.ending, "exit 1", stderr, file: file, line: line) }
        XCTAssertFalse(stderr.contains("retrying"), stderr, file: file, line: line)
        return stderr
    }

    private func logFile(in root: URL, _ label: String) throws -> URL {
        let url = root.appendingPathComponent("\(label).log")
        XCTAssertTrue(FileManager.default.createFile(atPath: url.path, contents: nil))
        return url
    }
}
