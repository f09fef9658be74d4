import Audit
import ClientService
import CoordinatorService
import FederationProtocol
import Foundation
import SecureCrypto
import SystemIO
import TestSupport
import Wire
import XCTest

/// `conclave-coordinator audit` as a real process over a state directory built here: the JSON
/// contract, the table, and a tampered log failing `--verify` with the record named.
final class AuditCommandTests: XCTestCase {
    var directory: URL!
    var paths: CoordinatorPaths!
    let signer = SigningKeyPair()

    override func setUpWithError() throws {
        directory = try Fixtures.temporaryDirectory("conclave-audit-command")
        paths = CoordinatorPaths(root: directory)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    func run(_ arguments: [String]) throws -> Executables.Result {
        try Executables.run(Executables.coordinator, ["audit"] + arguments)
    }

    /// A state directory with the signing key, signing.pub and two rounds (one committed, one aborted).
    func makeState() throws {
        try signer.writeSecretKeyFile(path: paths.signingKey.path)
        try AuditLog.writePublicKey(signer.publicKey, to: paths.signingPublicKey)
        let plan = TrainingPlan(steps: 30, learningRate: 0.002, samplingRate: 0.04, noiseMultiplier: 1.2, clipNorm: 1,
                                delta: 1e-5, maxLength: 128, rank: 8, alpha: 16, targets: ["q_proj", "v_proj"])
        let started = Date(timeIntervalSince1970: 1_750_000_000.5)
        let log = AuditLog(paths: paths)
        try log.append(AuditRecord(
            status: "committed", round: 1, started: started, finished: started + 185, cohort: ["alpha", "beta", "gamma"],
            participants: ["alpha", "beta"], declines: [ClientReason(client: "gamma", reason: "budget exhausted")],
            dropouts: [], aggregation: "fedavg", secureAggregation: true, plan: plan,
            clients: [ClientRoundMetrics(client: "alpha", epsilon: 1.234, delta: 1e-5, epsilonBudget: 10,
                                         heldOut: HeldOutRelease(lossBefore: 128_000, lossAfter: 102_400, count: 307_200,
                                                                 lossClip: 6, noiseMultiplier: 5)),
                      ClientRoundMetrics(client: "beta", epsilon: 0.5, delta: 1e-5, epsilonBudget: 10,
                                         heldOut: HeldOutRelease(lossBefore: 51_200, lossAfter: 42_667, count: 102_400,
                                                                 lossClip: 6, noiseMultiplier: 5))],
            maxEpsilon: 1.234, evalLossBefore: 2.6, evalLossAfter: 2.1, evalLossStandardError: 0.047,
            adapterSHA256: "0123456789abcdef" + String(repeating: "0", count: 48), abortReason: nil,
            previousHash: ""), signer: signer)
        try log.append(AuditRecord(
            status: "aborted", round: 2, started: started + 600, finished: started + 612.25, cohort: ["alpha", "beta"],
            participants: [], declines: [], dropouts: [ClientReason(client: "beta", reason: "connection lost")],
            aggregation: "fedavg", secureAggregation: true, plan: plan, clients: [], maxEpsilon: nil,
            evalLossBefore: nil, evalLossAfter: nil, adapterSHA256: "0123456789abcdef" + String(repeating: "0", count: 48),
            abortReason: "too few participants: 1 < 2", previousHash: ""), signer: signer)
    }

    func testJSONOfAVerifiedLog() throws {
        try makeState()
        let result = try run(["--state", directory.path, "--json", "--verify"])
        XCTAssertEqual(result.status, 0, result.stderr)
        let json = try result.json()
        XCTAssertEqual(json["verified"] as? Bool, true)
        XCTAssertTrue(json["failure"] is NSNull)
        XCTAssertEqual(json["public_key"] as? String, Hex.encode(signer.publicKey.bytes))
        let records = try XCTUnwrap(json["records"] as? [[String: Any]])
        XCTAssertEqual(records.count, 2)
        let first = records[0], second = records[1]
        XCTAssertEqual(first["round"] as? Int, 1)
        XCTAssertEqual(first["status"] as? String, "committed")
        XCTAssertEqual(first["participants"] as? [String], ["alpha", "beta"])
        XCTAssertEqual(first["aggregation"] as? String, "fedavg")
        XCTAssertEqual(first["secure_aggregation"] as? Bool, true)
        XCTAssertEqual(first["max_epsilon"] as? Double, 1.234)
        XCTAssertEqual(first["eval_loss_before"] as? Double, 2.6)
        XCTAssertEqual(first["eval_loss_after"] as? Double, 2.1)
        XCTAssertEqual(first["eval_loss_standard_error"] as? Double, 0.047)
        XCTAssertEqual(first["eval_loss_released"] as? Bool, true)
        XCTAssertEqual(first["adapter_sha256"] as? String, "0123456789abcdef" + String(repeating: "0", count: 48))
        XCTAssertEqual(first["started"] as? String, "2025-06-15T15:06:40.500Z")
        XCTAssertEqual(first["finished"] as? String, "2025-06-15T15:09:45.500Z")
        XCTAssertTrue(first["abort_reason"] is NSNull)
        let declines = try XCTUnwrap(first["declines"] as? [[String: Any]])
        XCTAssertEqual(declines.first?["client"] as? String, "gamma")
        XCTAssertEqual(declines.first?["reason"] as? String, "budget exhausted")
        let plan = try XCTUnwrap(first["plan"] as? [String: Any])
        XCTAssertEqual(plan["noise_multiplier"] as? Double, 1.2)
        XCTAssertEqual(plan["steps"] as? Int, 30)
        XCTAssertEqual(plan["targets"] as? [String], ["q_proj", "v_proj"])
        let clients = try XCTUnwrap(first["clients"] as? [[String: Any]])
        XCTAssertEqual(clients.map { $0["client"] as? String }, ["alpha", "beta"])
        XCTAssertEqual(clients.first?["epsilon"] as? Double, 1.234)
        XCTAssertEqual((clients.first?["held_out"] as? [String: Any])?["count"] as? Int, 307_200)
        XCTAssertNil(clients.first?["examples"], "no exact count in a record since issue 13")

        XCTAssertEqual(second["status"] as? String, "aborted")
        XCTAssertEqual(second["abort_reason"] as? String, "too few participants: 1 < 2")
        XCTAssertTrue(second["max_epsilon"] is NSNull)
        XCTAssertTrue(second["eval_loss_before"] is NSNull)
        let dropouts = try XCTUnwrap(second["dropouts"] as? [[String: Any]])
        XCTAssertEqual(dropouts.first?["client"] as? String, "beta")
    }

    func testTableOfAVerifiedLog() throws {
        try makeState()
        let result = try run(["--state", directory.path])
        XCTAssertEqual(result.status, 0, result.stderr)
        let lines = result.stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 4, result.stdout)
        for column in ["round", "status", "participants", "declined", "dropped", "aggregation", "secure-agg", "max ε",
                       "unit", "eval loss", "adapter", "duration"] {
            XCTAssertTrue(lines[0].contains(column), "header lacks \(column): \(lines[0])")
        }
        let first = lines[1].split(separator: " ").map(String.init)
        XCTAssertEqual(first, ["1", "committed", "2", "1", "0", "fedavg", "yes", "1.23", "record", "2.6000", "→", "2.1000",
                               "±", "0.0470", "(DP)", "0123456789ab", "3m05s"])
        let second = lines[2].split(separator: " ").map(String.init)
        XCTAssertEqual(second, ["2", "aborted", "0", "0", "1", "fedavg", "yes", "-", "record", "-", "0123456789ab", "12.2s"])
        XCTAssertEqual(lines[3], "audit chain: verified (2 records)")
    }

    func testTamperedLogFailsVerifyNamingTheRecord() throws {
        try makeState()
        var bytes = Array(try Data(contentsOf: paths.auditLog))
        let secondLine = try XCTUnwrap(bytes.firstIndex(of: 10)) + 1
        // Round 2's "aborted" becomes "abortee": a one-byte change inside the second record.
        let text = String(decoding: bytes, as: UTF8.self)
        let range = try XCTUnwrap(text.range(of: #""status":"aborted""#))
        let offset = text.utf8.distance(from: text.utf8.startIndex, to: range.upperBound) - 2
        XCTAssertGreaterThan(offset, secondLine)
        bytes[offset] ^= 0x01
        try Data(bytes).write(to: paths.auditLog)

        let result = try run(["--state", directory.path, "--json", "--verify"])
        XCTAssertEqual(result.status, 1)
        let json = try result.json()
        XCTAssertEqual(json["verified"] as? Bool, false)
        let failure = try XCTUnwrap(json["failure"] as? [String: Any])
        XCTAssertEqual(failure["record"] as? Int, 2)
        XCTAssertTrue((failure["reason"] as? String)?.contains("signature does not verify") ?? false, "\(failure)")
        XCTAssertTrue(result.stderr.contains("audit chain: FAILED at record 2"), result.stderr)

        // Without --verify the failure is reported but the exit status stays 0.
        let table = try run(["--state", directory.path])
        XCTAssertEqual(table.status, 0, table.stderr)
        XCTAssertTrue(table.stdout.contains("audit chain: FAILED at record 2: signature does not verify"), table.stdout)
    }

    /// Deleting the last record passes `audit --verify` (the chain is intact: the positive control);
    /// `--head` with the head a client kept fails, naming the head's count and the log's.
    func testVerifyWithHeadFindsATruncatedLogAndRefusesAForgedHead() throws {
        try makeState()
        let headFile = directory.appendingPathComponent("audit-head.json")
        let head = try AuditLog(paths: paths).signedHead(signer: signer)
        try JSONEncoder().encode(head).write(to: headFile)
        let matching = try run(["--state", directory.path, "--verify", "--head", headFile.path])
        XCTAssertEqual(matching.status, 0, matching.stderr)
        XCTAssertTrue(matching.stdout.hasSuffix("audit head: matches (2 records)\n"), matching.stdout)

        let bytes = Array(try Data(contentsOf: paths.auditLog))
        let secondLine = try XCTUnwrap(bytes.firstIndex(of: 10)) + 1
        try Data(bytes[..<secondLine]).write(to: paths.auditLog)
        XCTAssertEqual(try run(["--state", directory.path, "--verify"]).status, 0, "the chain alone cannot show the cut")
        let cut = try run(["--state", directory.path, "--verify", "--json", "--head", headFile.path])
        XCTAssertEqual(cut.status, 1, cut.stderr)
        let json = try cut.json()
        XCTAssertEqual(json["verified"] as? Bool, true)
        let check = try XCTUnwrap(json["head"] as? [String: Any])
        XCTAssertEqual(check["verified"] as? Bool, false)
        XCTAssertEqual(check["records"] as? Int, 2)
        let problem = check["problem"] as? String ?? ""
        XCTAssertTrue(problem.contains("held 2 records") && problem.contains("has 1"), problem)
        XCTAssertTrue(cut.stderr.contains("audit head: FAILED"), cut.stderr)

        var signature = head.signature
        signature[3] ^= 0x10
        let forged = AuditHead(records: 1, lastHash: head.lastHash, publicKey: head.publicKey, signature: signature)
        try JSONEncoder().encode(forged).write(to: headFile)
        let refused = try run(["--state", directory.path, "--verify", "--head", headFile.path])
        XCTAssertEqual(refused.status, 1)
        XCTAssertTrue(refused.stdout.contains("audit head: FAILED: the head's signature does not verify"), refused.stdout)
    }

    /// A torn last line fails `--verify`; `--repair` removes it with a copy kept, and the chain verifies.
    /// A last record whose signature fails is refused by `--repair` and left as it is.
    func testRepairRemovesATornLineButNotATamperedRecord() throws {
        try makeState()
        let whole = try Data(contentsOf: paths.auditLog)
        try (whole + Data(#"{"record":{"abort"#.utf8)).write(to: paths.auditLog)
        XCTAssertEqual(try run(["--state", directory.path, "--verify"]).status, 1)
        let repaired = try run(["--state", directory.path, "--verify", "--repair", "--json"])
        XCTAssertEqual(repaired.status, 0, repaired.stderr)
        let json = try repaired.json()
        XCTAssertEqual(json["verified"] as? Bool, true)
        let repair = try XCTUnwrap(json["repair"] as? [String: Any])
        XCTAssertEqual(repair["action"] as? String, "removed_torn_tail")
        XCTAssertEqual(repair["line"] as? Int, 3)
        let copy = try XCTUnwrap(repair["saved_to"] as? String)
        XCTAssertEqual(try String(contentsOfFile: copy, encoding: .utf8), #"{"record":{"abort"#)
        XCTAssertEqual(try Data(contentsOf: paths.auditLog), whole)

        var bytes = Array(whole)
        // One digit of the last line's signature changed to another hex digit: whole, but no longer valid.
        bytes[bytes.count - 40] = bytes[bytes.count - 40] == UInt8(ascii: "0") ? UInt8(ascii: "1") : UInt8(ascii: "0")
        try Data(bytes).write(to: paths.auditLog)
        let refused = try run(["--state", directory.path, "--repair"])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("not a torn write"), refused.stderr)
        XCTAssertEqual(Array(try Data(contentsOf: paths.auditLog)), bytes)
    }

    func testMissingLogIsZeroRecordsAndMissingStateIsAnError() throws {
        try signer.writeSecretKeyFile(path: paths.signingKey.path)
        let empty = try run(["--state", directory.path, "--verify"])
        XCTAssertEqual(empty.status, 0, empty.stderr)
        XCTAssertTrue(empty.stdout.hasSuffix("audit chain: verified (0 records)\n"), empty.stdout)

        let missing = directory.appendingPathComponent("no-such-state").path
        let result = try run(["--state", missing, "--json"])
        XCTAssertEqual(result.status, 64)
        XCTAssertEqual(result.stdout, "")
        XCTAssertTrue(result.stderr.contains("--state '\(missing)' does not exist; expected the coordinator's state directory"),
                      result.stderr)

        let usage = try run(["--json"])
        XCTAssertEqual(usage.status, 64)
        XCTAssertTrue(usage.stderr.contains("missing --state"), usage.stderr)
    }
}
