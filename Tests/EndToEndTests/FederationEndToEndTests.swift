import FederationDemo
import Foundation
import Transport
import Wire
import XCTest

/// A federation of real processes over real TLS on loopback, with the tiny fixture model: the
/// coordinator (`serve`) and clients (`join`), driven through the commands an operator uses.
final class FederationEndToEndTests: XCTestCase {
    /// Rounds commit; a client whose budget is spent declines with that reason; a revoked client is
    /// refused at the handshake; garbage, oversized and truncated frames close only their own
    /// connection (the log names the peer) while the coordinator goes on serving the others.
    func testRoundsBudgetRevocationAndBadFrames() throws {
        // client-c's budget fits one round of this plan (ε ≈ 8.84 after 4 steps at q 0.25, σ 1, discrete Gaussian;
        // 10.94 after two rounds), not two.
        let federation = try TinyFederation.make(clients: [("client-a", 40, 50), ("client-b", 40, 50), ("client-c", 40, 10),
                                                           ("prober", 4, 50)], minClients: 1)
        defer { federation.stopAll() }
        try federation.start(["client-a", "client-b", "client-c"])
        try checkStatusCommand(federation, connected: ["client-a", "client-b", "client-c"])
        try checkTwoRoundsAndABudgetDecline(federation)

        // Revoke client-b: its next handshake is refused, and it stays out.
        try TinyFederation.check(Executables.run(Executables.coordinator, ["revoke", "--state", federation.coordinator.path,
                                                                            "--client", "client-b"]))
        federation.kill9(federation.clients["client-b"])
        try federation.startClient("client-b")
        try federation.waitUntil("the revoked client is refused", timeout: 20) {
            federation.serveLog.contains("client-b") && federation.serveLog.contains("not authorized")
        }
        XCTAssertFalse(federation.connected().contains("client-b"))

        try checkBadFramesCloseOnlyTheirConnection(federation, from: "prober")
        XCTAssertEqual(Set(federation.connected()), ["client-a", "client-c"])
        try checkClientsCommand(federation, connected: "client-a", revoked: "client-b")

        // And it goes on: client-a takes part, client-c declines (budget).
        let third = try federation.runRounds(1)
        XCTAssertEqual(third.first?["status"] as? String, "committed")
        XCTAssertEqual(third.first?["participants"] as? Int, 1)
        XCTAssertEqual(try federation.audit().json["verified"] as? Bool, true)
    }

    /// `status --json` asks the running coordinator: no round yet, every client connected.
    private func checkStatusCommand(_ federation: LocalFederation, connected: [String]) throws {
        let status = try Executables.run(Executables.coordinator, ["status", "--state", federation.coordinator.path,
                                                                    "--json"]).json()
        XCTAssertEqual(status["phase"] as? String, "idle")
        XCTAssertEqual(status["connected"] as? [String], connected)
        XCTAssertEqual(status["name"] as? String, "e2e")
        XCTAssertEqual(status["port"] as? Int, Int(federation.port))
        XCTAssertEqual(status["next_round"] as? Int, 1)
        XCTAssertEqual(status["global_round"] as? Int, 0)
        XCTAssertNil(status["round"])
    }

    /// A plain round through real processes with the median of clipped updates: with a clip below every
    /// real update, `serve.log` names each clipped client and the round, the audit record keeps the
    /// aggregator and the clip, and `audit` shows them.
    func testAPlainRoundTakesTheMedianOfClippedUpdates() throws {
        let federation = try TinyFederation.make(clients: [("client-a", 40, 50), ("client-b", 40, 50), ("client-c", 40, 50)],
                                                 minClients: 3, aggregator: .median, updateNormClip: 1e-9)
        defer { federation.stopAll() }
        try federation.start(["client-a", "client-b", "client-c"])
        let rounds = try federation.runRounds(1)
        XCTAssertEqual(rounds.first?["status"] as? String, "committed", federation.serveLog)
        let log = federation.serveLog
        for client in ["client-a", "client-b", "client-c"] {
            XCTAssertTrue(log.contains("round 1: client '\(client)' sent an update of L2 norm "), log)
        }
        XCTAssertTrue(log.contains("round 1: median of 3 clipped updates"), log)
        XCTAssertTrue(log.contains("aggregation fedavg of the median of plain updates, each clipped to L2 norm 1e-09"), log)
        let record = (try federation.audit().json["records"] as? [[String: Any]])?.first ?? [:]
        XCTAssertEqual(record["aggregator"] as? String, "median")
        XCTAssertEqual(record["update_norm_clip"] as? Double, 1e-9)
        let table = try Executables.run(Executables.coordinator, ["audit", "--state", federation.coordinator.path])
        XCTAssertTrue(table.stdout.contains(" fedavg+median "), table.stdout)
    }

    /// Two rounds commit, client-c (budget for one) declines the second with that reason, the audit
    /// records carry the figures, and each ledger counts every round its client took part in.
    private func checkTwoRoundsAndABudgetDecline(_ federation: LocalFederation) throws {
        let rounds = try federation.runRounds(2)
        XCTAssertEqual(rounds.map { $0["status"] as? String }, ["committed", "committed"], federation.serveLog)
        XCTAssertEqual(rounds.map { $0["participants"] as? Int }, [3, 2])
        XCTAssertTrue(federation.serveLog.contains("round 1: update L2 norms (update_norm_clip "), federation.serveLog)
        XCTAssertTrue(federation.serveLog.contains("aggregation fedavg of the mean of plain updates, each clipped to L2 norm "),
                      federation.serveLog)
        let audit = try federation.audit()
        XCTAssertEqual(audit.status, 0)
        XCTAssertEqual(audit.json["verified"] as? Bool, true)
        let records = audit.json["records"] as? [[String: Any]] ?? []
        let declines = records.last?["declines"] as? [[String: Any]] ?? []
        XCTAssertEqual(declines.first?["client"] as? String, "client-c")
        // The audit keeps the code the client sent, never its words (issue 13).
        XCTAssertEqual(declines.first?["reason"] as? String, "privacy_budget", "\(declines)")
        for record in records {
            XCTAssertNotNil(record["max_epsilon"] as? Double)
            // Held-out figures are DP releases; a small split's noised count may be below zero, so the
            // pooled loss may be null, but every participant's release is there.
            XCTAssertEqual(record["eval_loss_released"] as? Bool, true)
            for client in record["clients"] as? [[String: Any]] ?? [] {
                XCTAssertNotNil(client["held_out"] as? [String: Any], "\(client)")
                XCTAssertNil(client["examples"], "no exact count travels")
            }
            XCTAssertEqual((record["adapter_sha256"] as? String)?.count, 64)
            // A plain round: the mean of updates the coordinator clipped, at the clip it recorded.
            XCTAssertEqual(record["aggregator"] as? String, "mean")
            XCTAssertGreaterThan(record["update_norm_clip"] as? Double ?? 0, 0, "\(record)")
            XCTAssertTrue(record["trim_fraction"] is NSNull)
        }
        for name in ["client-a", "client-b", "client-c"] {
            // The result reaches each client after the coordinator commits (and `rounds start` returns).
            let adapter = federation.directory(of: name).appendingPathComponent("global-adapter/adapter_model.safetensors")
            try federation.waitUntil("\(name) stores the global adapter", timeout: 20) {
                FileManager.default.fileExists(atPath: adapter.path)
            }
            // Each round charged: its DP-SGD steps and its metrics release, in one write.
            XCTAssertEqual((try federation.budget(name)["entries"] as? [Any])?.count, name == "client-c" ? 2 : 4, name)
        }
        // The log's signed head came with the round results; a participant's kept head matches the log.
        let head = federation.directory(of: "client-a").appendingPathComponent("audit-head.json")
        // The head is stored after the adapter: under load the second round's head can lag the file waited for.
        try federation.waitUntil("client-a keeps the second round's audit head", timeout: 20) {
            let json = (try? Data(contentsOf: head)).flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
            return (json?["records"] as? Int) == 2
        }
        let checked = try Executables.run(Executables.coordinator, ["audit", "--state", federation.coordinator.path, "--verify",
                                                                    "--json", "--head", head.path])
        XCTAssertEqual(checked.status, 0, checked.stderr)
        let check = try checked.json()["head"] as? [String: Any] ?? [:]
        XCTAssertEqual(check["verified"] as? Bool, true, "\(check)")
        XCTAssertEqual(check["records"] as? Int, 2, "\(check)")
    }

    /// Bad frames from an enrolled peer (not our magic, a 2 GiB payload announced, a frame cut short):
    /// each closes that connection only, and the log names the peer and the fault.
    private func checkBadFramesCloseOnlyTheirConnection(_ federation: LocalFederation, from peer: String) throws {
        let directory = federation.directory(of: peer)
        let context = try TLSClientContext(caPEM: try PEMFile.readCertificate(at: federation.paths.caCertificate.path),
                                           certificatePEM: try PEMFile.readCertificate(at: directory.appendingPathComponent("client.pem").path),
                                           keyPEM: try PEMFile.readPrivateKey(at: directory.appendingPathComponent("client.key").path),
                                           expectedHost: "127.0.0.1")
        let hello = try Frame(type: .hello, payload: helloPayload(peer)).encoded()
        let garbage: [[UInt8]] = [
            Array("GET / HTTP/1.1\r\n\r\n".utf8),                                 // not our magic
            Array("CNCL".utf8) + [UInt8(WireProtocol.version >> 8), UInt8(WireProtocol.version & 0xff),
                                  0, 5, 0x7f, 0xff, 0xff, 0xff],                  // a 2 GiB payload announced
            hello + Array(hello.prefix(7)),                                       // a frame cut short, then EOF
        ]
        for bytes in garbage {
            let connection = try TLSConnection.connect(host: "127.0.0.1", port: federation.port, context: context)
            try? connection.write(bytes)
            connection.close()
        }
        try federation.waitUntil("the coordinator logs each bad peer", timeout: 10) {
            federation.serveLog.components(separatedBy: peer).count >= 4
        }
        let serveLog = federation.serveLog
        XCTAssertTrue(serveLog.contains("bad magic") || serveLog.contains("magic"), serveLog)
        XCTAssertTrue(serveLog.contains("exceeds") || serveLog.contains("limit"), serveLog)
    }

    /// `clients` asks the running coordinator: enrolment state and live connections together.
    private func checkClientsCommand(_ federation: LocalFederation, connected: String, revoked: String) throws {
        let clients = try Executables.run(Executables.coordinator, ["clients", "--state", federation.coordinator.path, "--json"]).json()
        XCTAssertEqual(clients["running"] as? Bool, true)
        let rows = clients["clients"] as? [[String: Any]] ?? []
        let byID = Dictionary(rows.compactMap { row in (row["id"] as? String).map { ($0, row) } }, uniquingKeysWith: { $1 })
        XCTAssertEqual(byID[connected]?["connected"] as? Bool, true)
        XCTAssertNotNil(byID[connected]?["address"] as? String)
        XCTAssertEqual(byID[revoked]?["status"] as? String, "revoked")
        XCTAssertEqual(byID[revoked]?["connected"] as? Bool, false)
    }

    /// A client killed with SIGKILL in the middle of a round is dropped; the round commits with the
    /// others.
    func testClientKilledMidRound() throws {
        // client-c has much more data, so it is still training when it is killed.
        let federation = try TinyFederation.make(clients: [("client-a", 20, 50), ("client-b", 20, 50), ("client-c", 4000, 50)],
                                                 minClients: 2, steps: 3)
        defer { federation.stopAll() }
        try federation.start(["client-a", "client-b", "client-c"])
        try federation.startRoundAndKill("client-c")
        let audit = try federation.waitForRecords(1)
        let record = (audit["records"] as? [[String: Any]])?.first ?? [:]
        XCTAssertEqual(record["status"] as? String, "committed", federation.serveLog)
        XCTAssertEqual(record["participants"] as? [String], ["client-a", "client-b"])
        let dropouts = record["dropouts"] as? [[String: Any]] ?? []
        XCTAssertEqual(dropouts.first?["client"] as? String, "client-c")
        XCTAssertEqual(dropouts.first?["reason"] as? String, "disconnected")
        // Its ledger still counts the round it was killed in (charged before training, with its release).
        XCTAssertEqual((try federation.budget("client-c")["entries"] as? [Any])?.count, 2)
    }

    /// With secure aggregation on, a client killed with SIGKILL while it trains drops out of the
    /// protocol; the round commits with the others (t = 3 of 4) and records the dropout.
    func testSecureRoundWithAClientKilledMidRound() throws {
        let federation = try TinyFederation.make(clients: [("client-a", 20, 50), ("client-b", 20, 50), ("client-c", 20, 50),
                                                           ("client-d", 4000, 50)],
                                                 minClients: 3, steps: 3, secureAggregation: true)
        defer { federation.stopAll() }
        try federation.start(["client-a", "client-b", "client-c", "client-d"])
        try federation.startRoundAndKill("client-d")
        let audit = try federation.waitForRecords(1)
        XCTAssertEqual(audit["verified"] as? Bool, true)
        let record = (audit["records"] as? [[String: Any]])?.first ?? [:]
        XCTAssertEqual(record["status"] as? String, "committed", federation.serveLog)
        XCTAssertEqual(record["secure_aggregation"] as? Bool, true)
        XCTAssertEqual(record["aggregator"] as? String, "mean")
        XCTAssertTrue(record["update_norm_clip"] is NSNull, "the coordinator cannot clip masked updates")
        XCTAssertTrue(federation.serveLog.contains("aggregation fedavg of the mean of masked updates (each client clips every value to ±"),
                      federation.serveLog)
        XCTAssertEqual(record["participants"] as? [String], ["client-a", "client-b", "client-c"])
        XCTAssertEqual((record["dropouts"] as? [[String: Any]])?.compactMap { $0["client"] as? String }, ["client-d"])
    }

    /// The coordinator killed with SIGKILL mid-round, then restarted: the round is aborted in the
    /// audit log, its clients are told when they reconnect, committed rounds are kept, and the next
    /// round commits.
    func testCoordinatorKilledMidRoundAndRestarted() throws {
        let federation = try TinyFederation.make(clients: [("client-a", 3000, 50), ("client-b", 3000, 50)], minClients: 2, steps: 3)
        defer { federation.stopAll() }
        try federation.start(["client-a", "client-b"])

        // Kill while idle, before any round: nothing to recover.
        federation.kill9(federation.server)
        try federation.startCoordinator(timeout: 30)
        try federation.waitUntil("clients reconnect", timeout: 30) { federation.connected().count == 2 }
        let first = try federation.runRounds(1)
        XCTAssertEqual(first.first?["status"] as? String, "committed", federation.serveLog)
        let committedAdapter = federation.coordinator.appendingPathComponent("adapters/round-000001/adapter_model.safetensors")
        let committedBytes = try Data(contentsOf: committedAdapter)

        // Kill mid-round, while the clients train.
        try TinyFederation.check(Executables.run(Executables.coordinator, ["rounds", "start", "--state",
                                                                            federation.coordinator.path]))
        try federation.waitUntil("both clients accept round 2", timeout: 30) {
            federation.accepted().count == 2
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: federation.coordinator.appendingPathComponent("round-in-flight.json").path))
        federation.kill9(federation.server)
        try federation.startCoordinator(timeout: 30)
        XCTAssertFalse(FileManager.default.fileExists(atPath: federation.coordinator.appendingPathComponent("round-in-flight.json").path))
        var audit = try federation.audit()
        XCTAssertEqual(audit.json["verified"] as? Bool, true)
        var records = audit.json["records"] as? [[String: Any]] ?? []
        XCTAssertEqual(records.map { $0["status"] as? String }, ["committed", "aborted"])
        XCTAssertEqual(records.last?["abort_reason"] as? String, "the coordinator stopped while the round was in flight")
        XCTAssertEqual(try Data(contentsOf: committedAdapter), committedBytes, "a committed adapter is never lost or changed")

        // The clients reconnect and are told that round 2 ended.
        try federation.waitUntil("clients reconnect and hear about round 2", timeout: 40) {
            federation.connected().count == 2
                && ["client-a", "client-b"].allSatisfy { federation.log("\($0)/join.log").contains("round 2 is over for this client") }
        }
        let third = try federation.runRounds(1)
        XCTAssertEqual(third.first?["status"] as? String, "committed", "\(third)\n" + federation.serveLog)
        XCTAssertEqual(third.first?["round"] as? Int, 3)
        audit = try federation.audit()
        records = audit.json["records"] as? [[String: Any]] ?? []
        XCTAssertEqual(records.map { $0["round"] as? Int }, [1, 2, 3])
        XCTAssertEqual(audit.status, 0)
    }

    private func helloPayload(_ client: String) -> [UInt8] {
        var encoder = WireEncoder()
        try? encoder.string(client, field: "client")
        try? encoder.string("probe", field: "software")
        encoder.uint64(0)
        return encoder.bytes
    }
}
