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

/// `conclave-coordinator report` and `conclave-client budget --html` as real processes: the JSON
/// contract, a page written for a good state directory and for a tampered copy, with the banner saying so.
final class ReportCommandTests: XCTestCase {
    var directory: URL!
    var paths: CoordinatorPaths!
    let signer = SigningKeyPair()

    override func setUpWithError() throws {
        directory = try Fixtures.temporaryDirectory("conclave-report-command")
        paths = CoordinatorPaths(root: directory.appendingPathComponent("state"))
        try FileManager.default.createDirectory(at: paths.root, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    /// Signing key, signing.pub and two committed rounds of two clients.
    func makeState() throws {
        try signer.writeSecretKeyFile(path: paths.signingKey.path)
        try AuditLog.writePublicKey(signer.publicKey, to: paths.signingPublicKey)
        let plan = TrainingPlan(steps: 30, learningRate: 0.002, samplingRate: 0.04, noiseMultiplier: 1.2, clipNorm: 1,
                                delta: 1e-5, maxLength: 128, rank: 8, alpha: 16, targets: ["q_proj", "v_proj"])
        let started = Date(timeIntervalSince1970: 1_750_000_000.5)
        let log = AuditLog(paths: paths)
        for (round, epsilons) in [(UInt64(1), [1.234, 0.5]), (2, [2.468, 1.01])] {
            let clients = zip(["alpha", "beta"], epsilons).map { client, epsilon in
                ClientRoundMetrics(client: client, epsilon: epsilon, delta: 1e-5, epsilonBudget: 10,
                                   heldOut: HeldOutRelease(lossBefore: 42_667, lossAfter: 38_400, count: 102_400, lossClip: 6,
                                                           noiseMultiplier: 5))
            }
            try log.append(AuditRecord(
                status: "committed", round: round, started: started + Double(round) * 600,
                finished: started + Double(round) * 600 + 185, cohort: ["alpha", "beta", "gamma"],
                participants: ["alpha", "beta"], declines: [ClientReason(client: "gamma", reason: "budget <exhausted>")],
                dropouts: [], aggregation: "fedavg", secureAggregation: true, plan: plan, clients: clients,
                maxEpsilon: epsilons.max(), evalLossBefore: 2.5, evalLossAfter: 2.25, evalLossStandardError: 0.2,
                adapterSHA256: String(repeating: "0", count: 64), abortReason: nil, previousHash: ""), signer: signer)
        }
    }

    func report(_ state: URL, out: URL) throws -> (json: [String: Any], html: String) {
        let result = try Executables.run(Executables.coordinator, ["report", "--state", state.path, "--out", out.path, "--json"])
        XCTAssertEqual(result.status, 0, result.stderr)
        return (try result.json(), try String(contentsOf: out, encoding: .utf8))
    }

    func testReportOfAGoodAndOfATamperedStateDirectory() throws {
        try makeState()
        let out = directory.appendingPathComponent("report.html")
        let (json, html) = try report(paths.root, out: out)
        XCTAssertEqual(json["out"] as? String, out.path)
        XCTAssertEqual(json["verified"] as? Bool, true)
        XCTAssertEqual(json["rounds"] as? Int, 2)
        XCTAssertEqual(json["clients"] as? Int, 3)
        // No coordinator.json and no adapter directory in this hand-built state: both named, nothing hidden.
        let problems = try XCTUnwrap(json["problems"] as? [String])
        XCTAssertEqual(problems.count, 2, "\(problems)")
        XCTAssertTrue(problems.contains { $0.hasPrefix("Settings unavailable") }, "\(problems)")
        XCTAssertTrue(problems.contains { $0.hasPrefix("Adapter of round 2 unavailable") }, "\(problems)")
        XCTAssertTrue(html.hasPrefix("<!DOCTYPE html>"))
        XCTAssertTrue(html.contains("Audit chain verified: 2 records"))
        XCTAssertTrue(html.contains("data-field=\"max-epsilon\">2.47</td>"))
        XCTAssertTrue(html.contains("budget &lt;exhausted&gt;"))
        XCTAssertFalse(html.contains("<script"))

        // A copy whose second record was edited after signing.
        let tampered = directory.appendingPathComponent("tampered")
        try FileManager.default.copyItem(at: paths.root, to: tampered)
        let log = CoordinatorPaths(root: tampered).auditLog
        var text = try String(contentsOf: log, encoding: .utf8)
        let range = try XCTUnwrap(text.range(of: "\"epsilon\":2.468"))
        text.replaceSubrange(range, with: "\"epsilon\":0.468")
        try text.write(to: log, atomically: true, encoding: .utf8)
        let tamperedOut = directory.appendingPathComponent("tampered.html")
        let (badJSON, badHTML) = try report(tampered, out: tamperedOut)
        XCTAssertEqual(badJSON["verified"] as? Bool, false)
        XCTAssertEqual(badJSON["rounds"] as? Int, 2)
        let badProblems = try XCTUnwrap(badJSON["problems"] as? [String])
        XCTAssertTrue(badProblems.contains { $0.hasPrefix("Audit chain FAILED at record 2: signature does not verify") }, "\(badProblems)")
        let bannerStart = try XCTUnwrap(badHTML.range(of: "<section class=\"banner bad\""))
        let firstHeading = try XCTUnwrap(badHTML.range(of: "<h2"))
        XCTAssertLessThan(bannerStart.lowerBound, firstHeading.lowerBound)
        XCTAssertTrue(badHTML.contains("Audit chain FAILED at record 2: signature does not verify"))
    }

    func testReportOfAMissingDirectoryIsAnErrorAndWritesNothing() throws {
        let out = directory.appendingPathComponent("none.html")
        let result = try Executables.run(Executables.coordinator,
                                         ["report", "--state", directory.appendingPathComponent("absent").path, "--out", out.path])
        XCTAssertEqual(result.status, 64)
        XCTAssertTrue(result.stderr.contains("--state '\(directory.appendingPathComponent("absent").path)' does not exist"),
                      result.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
    }

    func testClientBudgetWritesItsLedgerAsHTML() throws {
        let state = directory.appendingPathComponent("client")
        let page = directory.appendingPathComponent("ledger.html")
        let result = try Executables.run(Executables.client, ["budget", "--state", state.path, "--set-epsilon", "5",
                                                              "--delta", "1e-5", "--html", page.path])
        XCTAssertEqual(result.status, 0, result.stderr)
        let html = try String(contentsOf: page, encoding: .utf8)
        XCTAssertTrue(html.contains("ε spent <span data-field=\"spent\">0.00</span> of <span data-field=\"budget\">5.00</span>"), html)
        XCTAssertTrue(html.contains("No charge yet"))
    }
}
