import ClientService
import CoordinatorService
import FederationDemo
import FederationProtocol
import Foundation
import SystemIO
import Wire

/// The federation fault injection runs on: real `serve` and `join` processes over mutual TLS on
/// loopback (`LocalFederation`, as the demo and the end-to-end tests build it), the tiny fixture
/// model, four clients with learnable token-id data. The coordinator writes its round events to
/// `serve.events.jsonl` (what the checks read as the coordinator's view of each client's uploads).
public final class FaultFederation {
    public let federation: LocalFederation
    public let clients: [String]
    /// Whether the coordinator now runs with secure aggregation.
    public private(set) var secure = false
    /// The processes running armed, and at which fault point, by victim name.
    var armed: [String: String] = [:]
    /// The coordinator's `--events` file, appended to across restarts.
    public var eventsFile: URL { federation.root.appendingPathComponent("serve.events.jsonl") }

    /// Builds the federation in `root` (which must exist) with `clientCount` clients.
    /// - Parameters:
    ///   - model: the HF directory of the tiny model every process loads.
    ///   - roundTimeout: seconds after which the coordinator ends a round whose clients went silent.
    public init(root: URL, executables: FederationExecutables, model: String, clientCount: Int = 4,
                roundTimeout: Double = 30) throws {
        federation = try LocalFederation(root: root, name: "faults", executables: executables)
        clients = (1...clientCount).map { "client-\($0)" }
        for (index, name) in clients.enumerated() {
            let directory = try federation.enrol(client: name)
            try Self.records(count: 16, stride: index + 1).write(to: directory.appendingPathComponent("train.jsonl"))
            try Self.records(count: 6, stride: index + 1).write(to: directory.appendingPathComponent("eval.jsonl"))
            // A budget for thousands of rounds of the plan below: fault injection is about crashes, not refusals.
            try federation.write(ClientConfiguration(model: model, data: "train.jsonl", evalData: "eval.jsonl", threads: 1,
                                                     policy: ClientPolicy(maxEpsilon: 1e6, delta: 1e-5, maxStepsPerRound: 10)),
                                 for: name)
        }
        let plan = TrainingPlan(steps: 2, learningRate: 0.01, samplingRate: 0.25, noiseMultiplier: 2.0, clipNorm: 1.0,
                                delta: 1e-5, maxLength: 32, rank: 2, alpha: 4, targets: ["q_proj", "v_proj"])
        // Three of four commit a round (secure: t = 3 with the default tolerance), so one dead client does not stop it;
        // invitations wait 60 s for an answer, as Config/coordinator.json.
        try federation.write(CoordinatorConfiguration(model: model, listen: "127.0.0.1", rounds: RoundPolicy(
            minClients: 3, maxClients: clientCount, fraction: 1.0, aggregation: .fedavg, secureAggregation: false,
            inviteTimeout: 60, roundTimeout: roundTimeout, waitForClients: 20, plan: plan)))
    }

    // MARK: Processes

    /// Starts `serve` in the given mode, with `faultPoint` armed when given.
    public func startCoordinator(secure: Bool, faultPoint: String? = nil) throws {
        self.secure = secure
        try federation.startCoordinator(timeout: 60, arguments: ["--secure-aggregation", secure ? "on" : "off",
                                                                 "--events", eventsFile.path],
                                        environment: faultPoint.map { [FaultPoint.variable: $0] } ?? [:])
    }

    /// Starts `client`'s `join`, with `faultPoint` armed when given.
    public func startClient(_ client: String, faultPoint: String? = nil) throws {
        try federation.startClient(client, environment: faultPoint.map { [FaultPoint.variable: $0] } ?? [:])
    }

    /// The running process of `victim` ("coordinator" or a client's name), if any.
    public func process(_ victim: String) -> Process? {
        victim == Self.coordinator ? federation.server : federation.clients[victim]
    }

    /// The name the coordinator goes by among victims.
    public static let coordinator = "coordinator"

    /// Stops `victim` cleanly (SIGTERM) and waits, when it runs.
    public func stop(_ victim: String) {
        guard let process = process(victim), process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }

    /// Restarts whatever is not running (the coordinator in its mode, unarmed) and waits until every
    /// client is connected.
    public func restartTheDead(timeout: Double = 60) throws {
        if !(federation.server?.isRunning ?? false) { try startCoordinator(secure: secure) }
        for client in clients where !(federation.clients[client]?.isRunning ?? false) {
            try awaitGone(client)
            try startClient(client)
        }
        try federation.waitForConnections(clients.count, timeout: timeout)
    }

    /// Waits until the coordinator no longer lists `client` (whose process has ended) as connected, so
    /// that counting connections afterwards counts its new process, not the old connection.
    func awaitGone(_ client: String) throws {
        try federation.waitUntil("the coordinator sees \(client) gone", timeout: 30) {
            !federation.connected().contains(client)
        }
    }

    /// Stops every process.
    public func stopAll() { federation.stopAll() }

    /// JSONL of token-id records: arithmetic sequences mod 512 with a per-client stride (learnable).
    static func records(count: Int, stride: Int) -> Data {
        var generator = SystemRandomNumberGenerator()
        var lines = ""
        for _ in 0..<count {
            let start = Int.random(in: 0..<512, using: &generator)
            let length = Int.random(in: 10...20, using: &generator)
            lines += "{\"input_ids\": \((0..<length).map { (start + stride * $0) % 512 })}\n"
        }
        return Data(lines.utf8)
    }
}
