import ClientService
import CoordinatorService
import FederationDemo
import FederationProtocol
import Foundation
import Privacy
import TestSupport
import Wire
import XCTest

/// A federation of real processes on loopback with the tiny fixture model (`LocalFederation`, as the
/// demo builds it): enrolled clients with synthetic token-id data (arithmetic sequences, learnable)
/// and their typed configurations, in a temporary directory.
enum TinyFederation {
    /// One client: its name, its training records, and its privacy budget ε.
    typealias Client = (name: String, records: Int, maxEpsilon: Double)

    static var executables: FederationExecutables {
        FederationExecutables(coordinator: Executables.coordinator, client: Executables.client)
    }

    /// Builds the federation (nothing runs yet): the coordinator, each client enrolled with its data and
    /// configuration (those named in `canaries` plant them), and the coordinator's configuration.
    static func make(clients: [Client], minClients: Int, steps: Int = 4, roundTimeout: Double = 60,
                     secureAggregation: Bool = false, canaries: [String: CanaryConfiguration] = [:],
                     aggregator: UpdateAggregator = .mean, updateNormClip: Double? = nil, plan distributedPlan: TrainingPlan? = nil,
                     assumeHonest: Int = 1, clientEpsilonBudget: Double? = nil,
                     adaptiveClipping: ClientLevelDP.AdaptiveClipping? = nil) throws -> LocalFederation {
        let federation = try LocalFederation(root: try Fixtures.temporaryDirectory("federation"), name: "e2e",
                                             executables: executables)
        let model = Fixtures.url("tiny-llama").path
        for (index, client) in clients.enumerated() {
            let directory = try federation.enrol(client: client.name)
            try records(count: client.records, stride: index + 1).write(to: directory.appendingPathComponent("train.jsonl"))
            try records(count: 6, stride: index + 1).write(to: directory.appendingPathComponent("eval.jsonl"))
            try federation.write(ClientConfiguration(model: model, data: "train.jsonl", evalData: "eval.jsonl", threads: 1,
                                                     policy: ClientPolicy(maxEpsilon: client.maxEpsilon, delta: 1e-5,
                                                                          maxStepsPerRound: 50, assumeHonest: assumeHonest),
                                                     canaries: canaries[client.name]),
                                 for: client.name)
        }
        let plan = distributedPlan ?? TrainingPlan(steps: steps, learningRate: 0.01, samplingRate: 0.25, noiseMultiplier: 1.0, clipNorm: 1.0,
                                delta: 1e-5, maxLength: 64, rank: 2, alpha: 4, targets: ["q_proj", "v_proj"])
        try federation.write(CoordinatorConfiguration(model: model, listen: "127.0.0.1", rounds: RoundPolicy(
            minClients: minClients, maxClients: clients.count, fraction: 1.0, aggregation: .fedavg,
            secureAggregation: secureAggregation, inviteTimeout: 20, roundTimeout: roundTimeout, waitForClients: 30,
            plan: plan, aggregator: aggregator, updateNormClip: updateNormClip, clientEpsilonBudget: clientEpsilonBudget,
            adaptiveClipping: adaptiveClipping)))
        return federation
    }

    /// JSONL of token-id records: arithmetic sequences mod 512 with a per-client stride.
    static func records(count: Int, stride: Int) -> Data {
        var generator = SystemRandomNumberGenerator()
        var lines = ""
        for _ in 0..<count {
            let start = Int.random(in: 0..<512, using: &generator)
            let length = Int.random(in: 12...24, using: &generator)
            let ids = (0..<length).map { (start + stride * $0) % 512 }
            lines += "{\"input_ids\": \(ids)}\n"
        }
        return Data(lines.utf8)
    }

    /// Fails the test, with the command's standard error, when it did not succeed.
    static func check(_ result: Executables.Result, file: StaticString = #filePath, line: UInt = #line) throws {
        if result.status != 0 {
            XCTFail("command failed (\(result.status)): \(result.stderr)", file: file, line: line)
            throw NSError(domain: "federation", code: Int(result.status))
        }
    }
}

/// What the end-to-end tests do to a running federation through the operator's commands.
extension LocalFederation {
    /// The coordinator's standard error so far.
    var serveLog: String { log("serve.stderr.log") }

    /// Starts the coordinator and the named clients, and waits until they are all connected.
    func start(_ names: [String]) throws {
        try startCoordinator(timeout: 30)
        for name in names { try startClient(name) }
        try waitForConnections(names.count, timeout: 30)
    }

    /// The clients that have accepted the round in flight.
    func accepted() -> [String] { (try? status())?.rounds.inFlight?.accepted ?? [] }

    /// `rounds start --count N --wait --json`: starts `count` rounds and returns the JSON rounds.
    func runRounds(_ count: Int) throws -> [[String: Any]] {
        let result = try Executables.run(Executables.coordinator, ["rounds", "start", "--state", coordinator.path,
                                                                    "--count", "\(count)", "--wait", "--timeout", "120",
                                                                    "--json"])
        try TinyFederation.check(result)
        return try result.json()["rounds"] as? [[String: Any]] ?? []
    }

    /// Starts a round (`rounds start`) and kills `victim` with SIGKILL as soon as the coordinator has its acceptance.
    func startRoundAndKill(_ victim: String) throws {
        try TinyFederation.check(Executables.run(Executables.coordinator, ["rounds", "start", "--state", coordinator.path]))
        try waitUntil("\(victim) accepts", timeout: 30) { accepted().contains(victim) }
        kill9(clients[victim])
    }

    /// `audit --json --verify`: its exit status and document.
    func audit() throws -> (status: Int32, json: [String: Any]) {
        let result = try Executables.run(Executables.coordinator, ["audit", "--state", coordinator.path, "--json", "--verify"])
        return (result.status, try result.json())
    }

    /// Waits until the audit log holds `count` records; returns `audit --json`.
    func waitForRecords(_ count: Int) throws -> [String: Any] {
        var audit: [String: Any] = [:]
        try waitUntil("\(count) audit records", timeout: 90) {
            audit = try self.audit().json
            return (audit["records"] as? [Any])?.count ?? 0 >= count
        }
        return audit
    }

    /// `budget --json` of a client: its ledger.
    func budget(_ client: String) throws -> [String: Any] {
        try Executables.run(Executables.client, ["budget", "--state", directory(of: client).path, "--json"]).json()
    }
}
