import Foundation
import TestSupport
import Transport
import Wire
import XCTest

/// A federation of real processes over real TLS on loopback, with the tiny fixture model: the
/// coordinator (`serve`) and clients (`join`), driven through the commands an operator uses.
final class FederationEndToEndTests: XCTestCase {
    /// A federation in a temporary directory: coordinator state, enrolled clients with synthetic
    /// token-id data (arithmetic sequences, learnable), configurations.
    final class TinyFederation {
        let root: URL
        let port: UInt16
        var coordinator: URL { root.appendingPathComponent("coordinator") }
        var server: Process?
        var clients: [String: Process] = [:]
        var serveRuns = 0

        init(clients: [(name: String, records: Int, maxEpsilon: Double)], minClients: Int, steps: Int = 4,
             roundTimeout: Int = 60, secureAggregation: Bool = false) throws {
            root = try Fixtures.temporaryDirectory("federation")
            port = try freeLoopbackPort()
            try Self.check(Executables.run(Executables.coordinator, ["init", "--state", coordinator.path, "--name", "e2e",
                                                                     "--host", "127.0.0.1", "--port", "\(port)"]))
            for (index, client) in clients.enumerated() {
                let directory = root.appendingPathComponent(client.name)
                try Self.check(Executables.run(Executables.client, ["init", "--state", directory.path, "--name", client.name]))
                try Self.check(Executables.run(Executables.coordinator, ["enroll", "--state", coordinator.path, "--csr",
                                                                         directory.appendingPathComponent("client.csr").path,
                                                                         "--out", directory.appendingPathComponent("client.pem").path]))
                try Self.records(count: client.records, stride: index + 1, seed: index)
                    .write(to: directory.appendingPathComponent("train.jsonl"))
                try Self.records(count: 6, stride: index + 1, seed: 100 + index)
                    .write(to: directory.appendingPathComponent("eval.jsonl"))
                let config: [String: Any] = [
                    "model": Fixtures.url("tiny-llama").path, "data": "train.jsonl", "eval_data": "eval.jsonl", "threads": 1,
                    "policy": ["max_epsilon": client.maxEpsilon, "delta": 1e-5, "max_steps_per_round": 50],
                ]
                try JSONSerialization.data(withJSONObject: config).write(to: directory.appendingPathComponent("config.json"))
            }
            let configuration: [String: Any] = [
                "model": Fixtures.url("tiny-llama").path, "listen": "127.0.0.1",
                "rounds": ["min_clients": minClients, "max_clients": clients.count, "fraction": 1.0, "aggregation": "fedavg",
                           "secure_aggregation": secureAggregation, "invite_timeout": 20, "round_timeout": roundTimeout,
                           "wait_for_clients": 30,
                           "plan": ["steps": steps, "learning_rate": 0.01, "sampling_rate": 0.25, "noise_multiplier": 1.0,
                                    "clip_norm": 1.0, "delta": 1e-5, "max_length": 64, "rank": 2, "alpha": 4,
                                    "targets": ["q_proj", "v_proj"]]],
            ]
            try JSONSerialization.data(withJSONObject: configuration).write(to: root.appendingPathComponent("coordinator.json"))
        }

        /// JSONL of token-id records: arithmetic sequences mod 512 with a per-client stride.
        static func records(count: Int, stride: Int, seed: Int) -> Data {
            var generator = SystemRandomNumberGenerator()
            _ = seed
            var lines = ""
            for _ in 0..<count {
                let start = Int.random(in: 0..<512, using: &generator)
                let length = Int.random(in: 12...24, using: &generator)
                let ids = (0..<length).map { (start + stride * $0) % 512 }
                lines += "{\"input_ids\": \(ids)}\n"
            }
            return Data(lines.utf8)
        }

        static func check(_ result: Executables.Result, file: StaticString = #filePath, line: UInt = #line) throws {
            if result.status != 0 {
                XCTFail("command failed (\(result.status)): \(result.stderr)", file: file, line: line)
                throw NSError(domain: "federation", code: Int(result.status))
            }
        }


        func spawn(_ executable: URL, _ arguments: [String], log: URL) throws -> Process {
            if !FileManager.default.fileExists(atPath: log.path) {
                FileManager.default.createFile(atPath: log.path, contents: nil)
            }
            let handle = try FileHandle(forWritingTo: log)
            try handle.seekToEnd()
            let process = Process()
            process.executableURL = executable
            process.arguments = arguments
            process.standardOutput = FileHandle.nullDevice
            process.standardError = handle
            try process.run()
            return process
        }

        func startServer() throws {
            serveRuns += 1
            server = try spawn(Executables.coordinator,
                               ["serve", "--state", coordinator.path, "--config", root.appendingPathComponent("coordinator.json").path],
                               log: root.appendingPathComponent("serve.stderr"))
            try waitUntil("the coordinator answers", timeout: 30) { (try? self.status()) != nil }
        }

        func startClient(_ name: String) throws {
            let directory = root.appendingPathComponent(name)
            clients[name] = try spawn(Executables.client,
                                      ["join", "--state", directory.path, "--coordinator", "127.0.0.1:\(port)",
                                       "--ca", coordinator.appendingPathComponent("ca.pem").path,
                                       "--cert", directory.appendingPathComponent("client.pem").path,
                                       "--config", directory.appendingPathComponent("config.json").path],
                                      log: directory.appendingPathComponent("join.log"))
        }

        func status() throws -> [String: Any] {
            let result = try Executables.run(Executables.coordinator, ["status", "--state", coordinator.path, "--json"])
            guard result.status == 0 else { throw NSError(domain: "status", code: Int(result.status)) }
            return try result.json()
        }

        func connected() -> [String] { ((try? status())?["connected"] as? [String]) ?? [] }

        func waitUntil(_ what: String, timeout: Double, _ condition: () throws -> Bool) throws {
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                if try condition() { return }
                Thread.sleep(forTimeInterval: 0.1)
            }
            XCTFail("timed out waiting until \(what); logs in \(root.path)")
            throw NSError(domain: "timeout", code: 1)
        }

        /// Starts a round and kills `victim` with SIGKILL as soon as the coordinator has its acceptance.
        func startRoundAndKill(_ victim: String) throws {
            try TinyFederation.check(Executables.run(Executables.coordinator, ["rounds", "start", "--state", coordinator.path]))
            try waitUntil("\(victim) accepts", timeout: 30) {
                ((try? status())?["accepted"] as? [String] ?? []).contains(victim)
            }
            kill9(clients[victim])
        }

        /// Starts `count` rounds and waits for their audit records; returns the JSON rounds.
        func runRounds(_ count: Int) throws -> [[String: Any]] {
            let result = try Executables.run(Executables.coordinator, ["rounds", "start", "--state", coordinator.path,
                                                                        "--count", "\(count)", "--wait", "--timeout", "120",
                                                                        "--json"])
            try Self.check(result)
            return try result.json()["rounds"] as? [[String: Any]] ?? []
        }

        func audit() throws -> (status: Int32, json: [String: Any]) {
            let result = try Executables.run(Executables.coordinator, ["audit", "--state", coordinator.path, "--json", "--verify"])
            return (result.status, try result.json())
        }

        func log(_ name: String) -> String {
            (try? String(contentsOf: root.appendingPathComponent(name), encoding: .utf8)) ?? ""
        }

        func kill9(_ process: Process?) {
            guard let process, process.isRunning else { return }
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }

        func stopAll() {
            for process in clients.values where process.isRunning { process.terminate() }
            if let server, server.isRunning { server.terminate() }
            for process in clients.values { process.waitUntilExit() }
            server?.waitUntilExit()
        }
    }

    /// Rounds commit; a client whose budget is spent declines with that reason; a revoked client is
    /// refused at the handshake; garbage, oversized and truncated frames close only their own
    /// connection (the log names the peer) while the coordinator goes on serving the others.
    func testRoundsBudgetRevocationAndBadFrames() throws {
        // client-c's budget fits one round of this plan (ε ≈ 4.9 after 4 steps at q 0.25, σ 1), not two.
        let federation = try TinyFederation(clients: [("client-a", 40, 50), ("client-b", 40, 50), ("client-c", 40, 5.5),
                                                      ("prober", 4, 50)], minClients: 1)
        defer { federation.stopAll() }
        try federation.startServer()
        for name in ["client-a", "client-b", "client-c"] { try federation.startClient(name) }
        try federation.waitUntil("three clients connect", timeout: 30) { federation.connected().count == 3 }

        let rounds = try federation.runRounds(2)
        XCTAssertEqual(rounds.map { $0["status"] as? String }, ["committed", "committed"], federation.log("serve.stderr"))
        XCTAssertEqual(rounds.map { $0["participants"] as? Int }, [3, 2])
        var audit = try federation.audit()
        XCTAssertEqual(audit.status, 0)
        XCTAssertEqual(audit.json["verified"] as? Bool, true)
        let records = audit.json["records"] as? [[String: Any]] ?? []
        let declines = records.last?["declines"] as? [[String: Any]] ?? []
        XCTAssertEqual(declines.first?["client"] as? String, "client-c")
        XCTAssertTrue((declines.first?["reason"] as? String ?? "").contains("privacy budget"), "\(declines)")
        for record in records {
            XCTAssertNotNil(record["max_epsilon"] as? Double)
            XCTAssertNotNil(record["eval_loss_before"] as? Double)
            XCTAssertEqual((record["adapter_sha256"] as? String)?.count, 64)
        }
        // Each client keeps the latest global adapter, and its ledger counts every round it took part in.
        for name in ["client-a", "client-b", "client-c"] {
            // The result reaches each client after the coordinator commits (and `rounds start` returns).
            let adapter = federation.root.appendingPathComponent("\(name)/global-adapter/adapter_model.safetensors")
            try federation.waitUntil("\(name) stores the global adapter", timeout: 20) {
                FileManager.default.fileExists(atPath: adapter.path)
            }
            let budget = try Executables.run(Executables.client, ["budget", "--state", federation.root.appendingPathComponent(name).path,
                                                                  "--json"]).json()
            XCTAssertEqual((budget["entries"] as? [Any])?.count, name == "client-c" ? 1 : 2, name)
        }

        // Revoke client-b: its next handshake is refused, and it stays out.
        try TinyFederation.check(Executables.run(Executables.coordinator, ["revoke", "--state", federation.coordinator.path,
                                                                            "--client", "client-b"]))
        federation.kill9(federation.clients["client-b"])
        try federation.startClient("client-b")
        try federation.waitUntil("the revoked client is refused", timeout: 20) {
            federation.log("serve.stderr").contains("client-b") && federation.log("serve.stderr").contains("not authorized")
        }
        XCTAssertFalse(federation.connected().contains("client-b"))

        // Bad frames from an enrolled peer: each closes that connection only.
        let prober = federation.root.appendingPathComponent("prober")
        let context = try TLSClientContext(caPEM: try PEMFile.readCertificate(at: federation.coordinator.appendingPathComponent("ca.pem").path),
                                           certificatePEM: try PEMFile.readCertificate(at: prober.appendingPathComponent("client.pem").path),
                                           keyPEM: try PEMFile.readPrivateKey(at: prober.appendingPathComponent("client.key").path),
                                           expectedHost: "127.0.0.1")
        let hello = try Frame(type: .hello, payload: helloPayload("prober")).encoded()
        let garbage: [[UInt8]] = [
            Array("GET / HTTP/1.1\r\n\r\n".utf8),                                 // not our magic
            Array("CNCL".utf8) + [0, 1, 0, 5, 0x7f, 0xff, 0xff, 0xff],            // a 2 GiB payload announced
            hello + Array(hello.prefix(7)),                                       // a frame cut short, then EOF
        ]
        for bytes in garbage {
            let connection = try TLSConnection.connect(host: "127.0.0.1", port: federation.port, context: context)
            try? connection.write(bytes)
            connection.close()
        }
        try federation.waitUntil("the coordinator logs each bad peer", timeout: 10) {
            federation.log("serve.stderr").components(separatedBy: "prober").count >= 4
        }
        let serveLog = federation.log("serve.stderr")
        XCTAssertTrue(serveLog.contains("bad magic") || serveLog.contains("magic"), serveLog)
        XCTAssertTrue(serveLog.contains("exceeds") || serveLog.contains("limit"), serveLog)
        XCTAssertEqual(Set(federation.connected()), ["client-a", "client-c"])
        // `clients` asks the running coordinator: enrolment state and live connections together.
        let clients = try Executables.run(Executables.coordinator, ["clients", "--state", federation.coordinator.path, "--json"]).json()
        XCTAssertEqual(clients["running"] as? Bool, true)
        let rows = clients["clients"] as? [[String: Any]] ?? []
        let byID = Dictionary(rows.compactMap { row in (row["id"] as? String).map { ($0, row) } }, uniquingKeysWith: { $1 })
        XCTAssertEqual(byID["client-a"]?["connected"] as? Bool, true)
        XCTAssertEqual(byID["client-b"]?["status"] as? String, "revoked")
        XCTAssertEqual(byID["client-b"]?["connected"] as? Bool, false)

        // And it goes on: client-a takes part, client-c declines (budget).
        let third = try federation.runRounds(1)
        XCTAssertEqual(third.first?["status"] as? String, "committed")
        XCTAssertEqual(third.first?["participants"] as? Int, 1)
        audit = try federation.audit()
        XCTAssertEqual(audit.json["verified"] as? Bool, true)
    }

    /// A client killed with SIGKILL in the middle of a round is dropped; the round commits with the
    /// others.
    func testClientKilledMidRound() throws {
        // client-c has much more data, so it is still training when it is killed.
        let federation = try TinyFederation(clients: [("client-a", 20, 50), ("client-b", 20, 50), ("client-c", 4000, 50)],
                                            minClients: 2, steps: 3)
        defer { federation.stopAll() }
        try federation.startServer()
        for name in ["client-a", "client-b", "client-c"] { try federation.startClient(name) }
        try federation.waitUntil("three clients connect", timeout: 30) { federation.connected().count == 3 }
        try federation.startRoundAndKill("client-c")
        let audit = try waitForRecords(federation, count: 1)
        let record = (audit["records"] as? [[String: Any]])?.first ?? [:]
        XCTAssertEqual(record["status"] as? String, "committed", federation.log("serve.stderr"))
        XCTAssertEqual(record["participants"] as? [String], ["client-a", "client-b"])
        let dropouts = record["dropouts"] as? [[String: Any]] ?? []
        XCTAssertEqual(dropouts.first?["client"] as? String, "client-c")
        XCTAssertEqual(dropouts.first?["reason"] as? String, "disconnected")
        // Its ledger still counts the round it was killed in (charged before training).
        let budget = try Executables.run(Executables.client, ["budget", "--state", federation.root.appendingPathComponent("client-c").path,
                                                              "--json"]).json()
        XCTAssertEqual((budget["entries"] as? [Any])?.count, 1)
    }

    /// With secure aggregation on, a client killed with SIGKILL while it trains drops out of the
    /// protocol; the round commits with the others (t = 3 of 4) and records the dropout.
    func testSecureRoundWithAClientKilledMidRound() throws {
        let federation = try TinyFederation(clients: [("client-a", 20, 50), ("client-b", 20, 50), ("client-c", 20, 50),
                                                      ("client-d", 4000, 50)],
                                            minClients: 3, steps: 3, secureAggregation: true)
        defer { federation.stopAll() }
        try federation.startServer()
        for name in ["client-a", "client-b", "client-c", "client-d"] { try federation.startClient(name) }
        try federation.waitUntil("four clients connect", timeout: 30) { federation.connected().count == 4 }
        try federation.startRoundAndKill("client-d")
        let audit = try waitForRecords(federation, count: 1)
        XCTAssertEqual(audit["verified"] as? Bool, true)
        let record = (audit["records"] as? [[String: Any]])?.first ?? [:]
        XCTAssertEqual(record["status"] as? String, "committed", federation.log("serve.stderr"))
        XCTAssertEqual(record["secure_aggregation"] as? Bool, true)
        XCTAssertEqual(record["participants"] as? [String], ["client-a", "client-b", "client-c"])
        XCTAssertEqual((record["dropouts"] as? [[String: Any]])?.compactMap { $0["client"] as? String }, ["client-d"])
    }

    /// The coordinator killed with SIGKILL mid-round, then restarted: the round is aborted in the
    /// audit log, its clients are told when they reconnect, committed rounds are kept, and the next
    /// round commits.
    func testCoordinatorKilledMidRoundAndRestarted() throws {
        let federation = try TinyFederation(clients: [("client-a", 3000, 50), ("client-b", 3000, 50)], minClients: 2, steps: 3)
        defer { federation.stopAll() }
        try federation.startServer()
        for name in ["client-a", "client-b"] { try federation.startClient(name) }
        try federation.waitUntil("two clients connect", timeout: 30) { federation.connected().count == 2 }

        // Kill while idle, before any round: nothing to recover.
        federation.kill9(federation.server)
        try federation.startServer()
        try federation.waitUntil("clients reconnect", timeout: 30) { federation.connected().count == 2 }
        let first = try federation.runRounds(1)
        XCTAssertEqual(first.first?["status"] as? String, "committed", federation.log("serve.stderr"))
        let committedAdapter = federation.coordinator.appendingPathComponent("adapters/round-000001/adapter_model.safetensors")
        let committedBytes = try Data(contentsOf: committedAdapter)

        // Kill mid-round, while the clients train.
        try TinyFederation.check(Executables.run(Executables.coordinator, ["rounds", "start", "--state",
                                                                            federation.coordinator.path]))
        try federation.waitUntil("both clients accept round 2", timeout: 30) {
            ((try? federation.status())?["accepted"] as? [String] ?? []).count == 2
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: federation.coordinator.appendingPathComponent("round-in-flight.json").path))
        federation.kill9(federation.server)
        try federation.startServer()
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
        XCTAssertEqual(third.first?["status"] as? String, "committed", "\(third)\n" + federation.log("serve.stderr"))
        XCTAssertEqual(third.first?["round"] as? Int, 3)
        audit = try federation.audit()
        records = audit.json["records"] as? [[String: Any]] ?? []
        XCTAssertEqual(records.map { $0["round"] as? Int }, [1, 2, 3])
        XCTAssertEqual(audit.status, 0)
    }

    private func waitForRecords(_ federation: TinyFederation, count: Int) throws -> [String: Any] {
        var audit: [String: Any] = [:]
        try federation.waitUntil("\(count) audit records", timeout: 90) {
            audit = try federation.audit().json
            return (audit["records"] as? [Any])?.count ?? 0 >= count
        }
        return audit
    }

    private func helloPayload(_ client: String) -> [UInt8] {
        var encoder = WireEncoder()
        try? encoder.string(client, field: "client")
        try? encoder.string("probe", field: "software")
        encoder.uint64(0)
        return encoder.bytes
    }
}
