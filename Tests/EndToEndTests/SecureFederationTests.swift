import Foundation
import ModelFormats
import TestSupport
import Transport
import XCTest

/// Real processes: a coordinator and four clients on the tiny fixture model, over mutual TLS, with
/// secure aggregation on: the new global adapter must equal plain FedAvg of the updates the clients
/// really trained, up to the fixed-point rounding. What the protocol does with identical updates
/// secure and plain, and with a client that dies after sharing its keys, is tested in every build
/// without processes (`InMemoryFederationTests`); so is a client killed mid-round here, end to end
/// (`FederationEndToEndTests`).
final class SecureFederationTests: XCTestCase {
    let model = Fixtures.url("tiny-llama").path
    let names = ["client-1", "client-2", "client-3", "client-4"]
    let steps = 2, learningRate = 0.01, examples = 40

    private var processes: [Process] = []

    override func tearDown() {
        for process in processes where process.isRunning { process.terminate() }
        for process in processes { process.waitUntilExit() }
        processes = []
    }


    func spawn(_ executable: URL, _ arguments: [String], log: URL) throws -> Process {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        XCTAssertTrue(FileManager.default.createFile(atPath: log.path, contents: nil))
        let handle = try FileHandle(forWritingTo: log)
        process.standardError = handle
        process.standardOutput = handle
        try process.run()
        processes.append(process)
        return process
    }

    func check(_ result: Executables.Result, _ what: String) throws {
        guard result.status == 0 else {
            XCTFail("\(what) failed (\(result.status)): \(result.stderr)")
            throw NSError(domain: "SecureFederationTests", code: Int(result.status))
        }
    }

    /// Initialises a coordinator and the four clients in `root`, with the coordinator's round-0
    /// adapter written, and returns the coordinator's port.
    func makeFederation(_ root: URL) throws -> UInt16 {
        let port = try freeLoopbackPort()
        let coordinator = root.appendingPathComponent("coordinator").path
        try check(try Executables.run(Executables.coordinator, ["init", "--state", coordinator, "--name", "secure-test",
                                                                "--host", "127.0.0.1", "--port", "\(port)"]), "init")
        for (index, name) in names.enumerated() {
            let directory = root.appendingPathComponent(name)
            try check(try Executables.run(Executables.client, ["init", "--state", directory.path, "--name", name]), "client init")
            XCTAssertTrue(FileManager.default.fileExists(atPath: directory.appendingPathComponent("signing.key").path))
            let mode = try FileManager.default.attributesOfItem(atPath: directory.appendingPathComponent("signing.key").path)[.posixPermissions]
            XCTAssertEqual((mode as? NSNumber)?.intValue, 0o600, "signing.key must be 0600")
            try check(try Executables.run(Executables.coordinator, [
                "enroll", "--state", coordinator, "--csr", directory.appendingPathComponent("client.csr").path,
                "--out", directory.appendingPathComponent("client.pem").path]), "enroll")
            // A learnable pattern per client: arithmetic sequences with a stride of its own.
            for (file, count) in [("train.jsonl", examples), ("eval.jsonl", 8)] {
                let lines = (0..<count).map { i -> String in
                    let start = (i * 37 + index * 11) % 512
                    let ids = (0..<(12 + i % 8)).map { (start + (index + 1) * $0) % 512 }
                    return #"{"input_ids": \#(ids)}"#
                }
                try (lines.joined(separator: "\n") + "\n").write(to: directory.appendingPathComponent(file), atomically: true, encoding: .utf8)
            }
            let config: [String: Any] = ["model": model, "data": "train.jsonl", "eval_data": "eval.jsonl", "threads": 1,
                                         "policy": ["max_epsilon": 50, "delta": 1e-5, "max_steps_per_round": 10]]
            try JSONSerialization.data(withJSONObject: config).write(to: directory.appendingPathComponent("config.json"))
        }
        let plan: [String: Any] = ["steps": steps, "learning_rate": learningRate, "sampling_rate": 0.25, "noise_multiplier": 1.0,
                                   "clip_norm": 1.0, "delta": 1e-5, "max_length": 64, "rank": 4, "alpha": 8,
                                   "targets": ["q_proj", "v_proj"]]
        let configuration: [String: Any] = [
            "model": model, "listen": "127.0.0.1",
            "rounds": ["min_clients": 3, "max_clients": 4, "fraction": 1.0, "aggregation": "fedavg",
                       "secure_aggregation": false, "invite_timeout": 30, "round_timeout": 120, "wait_for_clients": 60,
                       "plan": plan]]
        try JSONSerialization.data(withJSONObject: configuration).write(to: root.appendingPathComponent("coordinator.json"))
        // The first start writes the initial (random) adapter; every run below starts from a copy.
        let server = try spawn(Executables.coordinator, ["serve", "--state", coordinator, "--config",
                                                         root.appendingPathComponent("coordinator.json").path],
                               log: root.appendingPathComponent("first-serve.log"))
        let initial = root.appendingPathComponent("coordinator/adapters/round-000000/adapter_model.safetensors")
        let deadline = Date().addingTimeInterval(30)
        while !FileManager.default.fileExists(atPath: root.appendingPathComponent("coordinator/control.sock").path) {
            guard Date() < deadline else {
                XCTFail("the coordinator did not start")
                throw NSError(domain: "SecureFederationTests", code: 1)
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: initial.path))
        server.terminate()
        server.waitUntilExit()
        return port
    }

    /// Runs one round on a copy of the federation's coordinator state, and returns the audit record.
    func runRound(_ root: URL, port: UInt16, label: String, secure: Bool) throws -> [String: Any] {
        let state = root.appendingPathComponent("coordinator-\(label)")
        try FileManager.default.copyItem(at: root.appendingPathComponent("coordinator"), to: state)
        try? FileManager.default.removeItem(at: state.appendingPathComponent("control.sock"))
        _ = try spawn(Executables.coordinator, ["serve", "--state", state.path, "--config",
                                                root.appendingPathComponent("coordinator.json").path,
                                                "--secure-aggregation", secure ? "on" : "off"],
                      log: root.appendingPathComponent("serve-\(label).log"))
        for name in names {
            let directory = root.appendingPathComponent(name)
            _ = try spawn(Executables.client, ["join", "--state", directory.path, "--coordinator", "127.0.0.1:\(port)",
                                               "--ca", state.appendingPathComponent("ca.pem").path,
                                               "--cert", directory.appendingPathComponent("client.pem").path,
                                               "--config", directory.appendingPathComponent("config.json").path,
                                               "--rounds", "1"],
                          log: root.appendingPathComponent("\(name)-\(label).log"))
        }
        // Wait for all four to connect, so the cohort is the same in every run.
        let deadline = Date().addingTimeInterval(60)
        while true {
            let status = try Executables.run(Executables.coordinator, ["status", "--state", state.path, "--json"])
            if status.status == 0, let connected = try? status.json()["connected"] as? [String], connected.count == 4 { break }
            guard Date() < deadline else {
                XCTFail("clients did not connect: \(status.stderr)")
                throw NSError(domain: "SecureFederationTests", code: 1)
            }
            Thread.sleep(forTimeInterval: 0.3)
        }
        let started = try Executables.run(Executables.coordinator, ["rounds", "start", "--state", state.path, "--count", "1",
                                                                    "--wait", "--timeout", "300", "--json"])
        XCTAssertEqual(started.status, 0, started.stderr)
        for process in processes where process.isRunning { process.terminate() }
        for process in processes { process.waitUntilExit() }
        processes = []
        let lines = try String(contentsOf: state.appendingPathComponent("audit.jsonl"), encoding: .utf8).split(separator: "\n")
        let last = try XCTUnwrap(lines.last)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(last.utf8)) as? [String: Any])
        return try XCTUnwrap(object["record"] as? [String: Any])
    }

    func adapter(_ root: URL, label: String, round: Int) throws -> [String: [Float]] {
        let directory = root.appendingPathComponent(label == "" ? "coordinator" : "coordinator-\(label)")
            .appendingPathComponent(String(format: "adapters/round-%06d", round))
        return try PEFTAdapter(directory: directory).tensors.mapValues(\.values)
    }

    /// A secure round's new global adapter equals plain FedAvg of the updates the clients really
    /// trained (each keeps its trained adapter in local-adapter/), up to the fixed-point rounding.
    func testSecureRoundEqualsFedAvgOfTheClientsOwnUpdates() throws {
        let root = try Fixtures.temporaryDirectory("secure-federation-real")
        let port = try makeFederation(root)
        let secure = try runRound(root, port: port, label: "real", secure: true)
        XCTAssertEqual(secure["status"] as? String, "committed", "\(secure)")
        XCTAssertEqual(secure["secure_aggregation"] as? Bool, true)
        XCTAssertEqual((secure["participants"] as? [String])?.sorted(), names)
        let start = try adapter(root, label: "", round: 0)
        let result = try adapter(root, label: "real", round: 1)
        let locals = try names.map { name in
            try PEFTAdapter(directory: root.appendingPathComponent("\(name)/local-adapter")).tensors.mapValues(\.values)
        }
        let clip = 8 * Double(steps) * learningRate
        var bits = 62
        while Double(4) * (clip * Double(sign: .plus, exponent: bits, significand: 1)).rounded(.up) > 2_147_483_647 { bits -= 1 }
        let bound = 4 / Double(sign: .plus, exponent: bits, significand: 1) / (4 * Double(examples) / 10_000)
        var worst = 0.0, moved = 0.0
        for (name, initial) in start {
            let got = try XCTUnwrap(result[name])
            for i in initial.indices {
                // Equal weights (40 records each): the plain mean of the four trained changes.
                let mean = locals.reduce(0.0) { $0 + Double($1[name]![i]) - Double(initial[i]) } / 4
                let expected = Double(initial[i]) + mean
                worst = max(worst, abs(expected - Double(got[i])))
                moved = max(moved, abs(mean))
                XCTAssertLessThanOrEqual(abs(expected - Double(got[i])), bound + 2 * Double(got[i].ulp), "\(name)[\(i)]")
            }
        }
        XCTAssertGreaterThan(moved, 100 * bound, "the round must move the adapter well beyond the tolerance")
        print("secure aggregate vs FedAvg of the clients' own updates: worst \(worst), bound \(bound); largest change \(moved)")
    }
}
