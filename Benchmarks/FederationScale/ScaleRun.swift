import Audit
import CommandLineParsing
import CoordinatorService
import FederationProtocol
import Foundation
import ModelFormats
import SystemIO
import Transport
import Wire

/// One round as the orchestrator saw it.
struct RoundMeasurement {
    var round: UInt64
    /// From the `start` request to the round's record in the audit log.
    var latency: Double
    /// From the `start` request to the moment every light client had the round's result.
    var resultLatency: Double
    /// CPU seconds of the coordinator process between the `start` request and the audit record.
    var coordinatorCPU: Double
    /// CPU seconds of the light clients' process over the same interval (TLS, framing, polling).
    var clientProcessCPU: Double
    /// CPU seconds the light clients spent making and sending updates (sum over their threads).
    var clientCompute: Double
    var status: String
    var participants: Int
}

/// Everything measured for one number of clients.
struct ScaleResult {
    var clients: Int
    var setupSeconds: Double
    var connectSeconds: Double
    var baselineRSS: Int
    var connectedRSS: Int
    var afterRoundsRSS: Int
    var baselineThreads: Int
    var connectedThreads: Int
    /// Coordinator CPU over an idle window, as a fraction of one core: with no clients, and with N connected.
    var idleCPUNone: Double
    var idleCPUConnected: Double
    var rounds: [RoundMeasurement]
    var clientFailures: [String]
    /// With `--flood N`: the same number of rounds again while N unauthenticated peers trickle bytes.
    var flood: FloodMeasurement?

    var bytesPerConnection: Double { Double(connectedRSS - baselineRSS) / Double(clients) }
    var bytesPerConnectionAfterRounds: Double { Double(afterRoundsRSS - baselineRSS) / Double(clients) }
    var medianLatency: Double { median(rounds.map(\.latency)) }
    var medianResultLatency: Double { median(rounds.map(\.resultLatency)) }
    /// Coordinator CPU over the rounds' wall time, all rounds together (ticks are 10 ms, so short
    /// rounds are summed rather than divided one by one).
    var coordinatorOverhead: Double { rounds.map(\.coordinatorCPU).reduce(0, +) / rounds.map(\.latency).reduce(0, +) }
}

/// Rounds run while a `TricklingFlood` held the coordinator's door.
struct FloodMeasurement {
    var peers: Int
    var addresses: Int
    var rounds: [RoundMeasurement]
    /// The coordinator's resident bytes and threads 12 s into the flood.
    var rss: Int
    var threads: Int
    /// Flood connections the coordinator closed (evicted, refused or past the login deadline) and the flood reopened.
    var closedByCoordinator: Int
    var seconds: Double

    var medianLatency: Double { median(rounds.map(\.latency)) }
}

/// Builds a federation of `clients` light clients around a coordinator child process, connects
/// them, runs `rounds` rounds one at a time and measures them.
struct ScaleRun {
    let clients: Int
    let rounds: Int
    /// Unauthenticated trickling peers for a second set of rounds (0: none).
    var flood = 0
    let modelPath: String
    let workDirectory: URL
    let log: (String) -> Void

    func run() throws -> ScaleResult {
        let setupStart = Date()
        let federation = try setUpFederation()
        let setupSeconds = Date().timeIntervalSince(setupStart)
        log("\(clients) clients: federation set up in \(String(format: "%.1f", setupSeconds)) s (CA, \(clients) enrolments)")

        let paths = federation.paths
        let coordinator = try startCoordinator(paths: paths, config: federation.configuration)
        let probe = ProcessProbe(pid: coordinator.processIdentifier)
        let control = ControlChannel(path: paths.controlSocket.path)
        defer { stopCoordinator(coordinator, control: control) }
        try control.waitUntilServing(timeout: 60)
        Thread.sleep(forTimeInterval: 1)
        let baseline = try probe.residentBytesAndThreads()
        let idleNone = try idleCPU(probe, seconds: 3)

        let model = try LlamaConfiguration(configJSON: URL(fileURLWithPath: modelPath).appendingPathComponent("config.json"))
        let fleet = LightClientFleet(host: federation.host, port: UInt16(federation.port),
                                     caPEM: try PEMFile.readCertificate(at: paths.caCertificate.path), model: model)
        let connectStart = Date()
        fleet.start(federation.identities)
        defer {
            stopCoordinator(coordinator, control: control)
            fleet.stop(expecting: clients, timeout: 30)
        }
        try waitForConnections(fleet, control: control, since: connectStart)
        let connectSeconds = Date().timeIntervalSince(connectStart)
        log("\(clients) clients: all connected in \(String(format: "%.2f", connectSeconds)) s")
        Thread.sleep(forTimeInterval: 2)
        let withClients = try probe.residentBytesAndThreads()
        let idleConnected = try idleCPU(probe, seconds: 3)

        var measurements: [RoundMeasurement] = []
        let audit = AuditWatcher(url: paths.auditLog)
        for _ in 0..<rounds {
            measurements.append(try measureRound(control: control, audit: audit, probe: probe, fleet: fleet))
        }
        Thread.sleep(forTimeInterval: 1)
        let afterRounds = try probe.residentBytesAndThreads()
        let floodMeasurement = flood > 0 ? try measureUnderFlood(port: UInt16(federation.port), control: control, audit: audit,
                                                                 probe: probe, fleet: fleet) : nil
        let failures = fleet.tally.withLock { $0.failures }
        return ScaleResult(clients: clients, setupSeconds: setupSeconds, connectSeconds: connectSeconds,
                           baselineRSS: baseline.bytes, connectedRSS: withClients.bytes, afterRoundsRSS: afterRounds.bytes,
                           baselineThreads: baseline.threads, connectedThreads: withClients.threads,
                           idleCPUNone: idleNone, idleCPUConnected: idleConnected, rounds: measurements,
                           clientFailures: failures, flood: floodMeasurement)
    }

    /// The same rounds again while `flood` peers from 64 addresses trickle bytes at the coordinator.
    private func measureUnderFlood(port: UInt16, control: ControlChannel, audit: AuditWatcher, probe: ProcessProbe,
                                   fleet: LightClientFleet) throws -> FloodMeasurement {
        let peers = TricklingFlood(count: flood, addresses: 64, port: port)
        let start = Date()
        peers.start()
        defer { peers.stop() }
        // Past the 10 s login deadline, so that the flood has met every bound before the rounds start.
        Thread.sleep(forTimeInterval: 12)
        let during = try probe.residentBytesAndThreads()
        log("\(clients) clients: flood of \(flood) trickling peers running; coordinator \(during.threads) threads, "
            + "\(during.bytes >> 20) MiB")
        var measurements: [RoundMeasurement] = []
        for _ in 0..<rounds {
            measurements.append(try measureRound(control: control, audit: audit, probe: probe, fleet: fleet))
        }
        return FloodMeasurement(peers: flood, addresses: peers.addresses, rounds: measurements, rss: during.bytes,
                                threads: during.threads, closedByCoordinator: peers.reopened,
                                seconds: Date().timeIntervalSince(start))
    }

    /// A coordinator's state directory, its configuration file and the light clients' identities.
    private struct Federation {
        let paths: CoordinatorPaths
        let host: String
        let port: Int
        let identities: [LightClientIdentity]
        let configuration: URL
    }

    /// Initialises the coordinator's state on a free loopback port, enrols every light client and writes
    /// a configuration whose rounds wait for all of them.
    private func setUpFederation() throws -> Federation {
        let paths = CoordinatorPaths(root: workDirectory.appendingPathComponent("coordinator"))
        let port = Int(try freeLoopbackPort())
        let host = "127.0.0.1"
        _ = try CoordinatorSetup.initialize(paths: paths, name: "scale-\(clients)", host: host, port: port)
        var identities: [LightClientIdentity] = []
        for index in 0..<clients {
            let id = String(format: "light-%04d", index)
            let (key, request) = try CertificateAuthority.makeKeyAndCSR(commonName: id)
            let enrolment = try CoordinatorSetup.enroll(paths: paths, csrPEM: request)
            identities.append(LightClientIdentity(id: id, keyPEM: key, certificatePEM: enrolment.certificatePEM))
        }
        // Rank 1 on q_proj of the tiny model: 2 layers × (1×64 + 64×1) = 256 values per update.
        let plan = TrainingPlan(steps: 1, learningRate: 0.01, samplingRate: 0.01, noiseMultiplier: 1.0, clipNorm: 1.0,
                                delta: 1e-5, maxLength: 64, rank: 1, alpha: 2, targets: ["q_proj"])
        let policy = RoundPolicy(minClients: clients, maxClients: clients, fraction: 1.0, aggregation: .fedavg,
                                 secureAggregation: false, inviteTimeout: 300, roundTimeout: 600, waitForClients: 600,
                                 plan: plan)
        let configuration = CoordinatorConfiguration(model: modelPath, rounds: policy)
        let configURL = workDirectory.appendingPathComponent("coordinator.json")
        try JSONEncoder().encode(configuration).write(to: configURL)
        return Federation(paths: paths, host: host, port: port, identities: identities, configuration: configURL)
    }

    /// Polls the coordinator until every light client is connected; throws as soon as one fails, or after 600 s.
    private func waitForConnections(_ fleet: LightClientFleet, control: ControlChannel, since connectStart: Date) throws {
        var connected = 0
        while connected < clients {
            if Date().timeIntervalSince(connectStart) > 600 {
                throw BenchmarkError("only \(connected) of \(clients) clients connected within 600 s; "
                                     + "failures: \(fleet.tally.withLock { $0.failures.prefix(5) })")
            }
            let failures = fleet.tally.withLock { $0.failures }
            if !failures.isEmpty {
                throw BenchmarkError("\(failures.count) light clients failed, e.g. \(failures.prefix(3))")
            }
            Thread.sleep(forTimeInterval: 0.1)
            connected = try control.connectedCount()
        }
    }

    /// Starts one round and measures it until its audit record, every client's result and an idle coordinator;
    /// throws if the round did not commit.
    private func measureRound(control: ControlChannel, audit: AuditWatcher, probe: ProcessProbe,
                              fleet: LightClientFleet) throws -> RoundMeasurement {
        let cpuStart = try probe.cpuSeconds()
        let ownStart = ownCPUSeconds()
        let start = ProcessStatistics.now()
        let round = try control.startRound()
        let record = try audit.waitForRecord(round: round, timeout: 900)
        let latency = ProcessStatistics.now() - start
        let coordinatorCPU = try probe.cpuSeconds() - cpuStart
        let clientProcessCPU = ownCPUSeconds() - ownStart
        let deadline = Date().addingTimeInterval(300)
        while Date() < deadline {
            let heard = fleet.tally.withLock { ($0.committed[round] ?? 0) + ($0.otherEndings[round]?.count ?? 0) }
            if heard >= clients { break }
            Thread.sleep(forTimeInterval: 0.002)
        }
        let resultLatency = ProcessStatistics.now() - start
        try control.waitUntilIdle(timeout: 60)
        let compute = fleet.tally.withLock { $0.computeSeconds[round] ?? 0 }
        let status = record["status"] as? String ?? "?"
        let participants = (record["participants"] as? [Any])?.count ?? 0
        let measurement = RoundMeasurement(round: round, latency: latency, resultLatency: resultLatency,
                                           coordinatorCPU: coordinatorCPU, clientProcessCPU: clientProcessCPU,
                                           clientCompute: compute, status: status, participants: participants)
        log(String(format: "%d clients: round %llu %@ with %d participants in %.3f s (all results at %.3f s); "
                   + "coordinator CPU %.2f s, client process CPU %.2f s", clients, round, status, participants,
                   latency, resultLatency, coordinatorCPU, clientProcessCPU))
        if status != "committed" {
            let reason = record["abort_reason"] as? String ?? "no reason recorded"
            throw BenchmarkError("round \(round) with \(clients) clients was \(status): \(reason)")
        }
        return measurement
    }

    /// The coordinator runs as a child process of this executable (`--serve-coordinator`), so that
    /// its memory and CPU are its own and not the light clients'.
    private func startCoordinator(paths: CoordinatorPaths, config: URL) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
        process.arguments = ["--serve-coordinator", "--state", paths.root.path, "--config", config.path]
        let errorLog = workDirectory.appendingPathComponent("coordinator.err")
        guard FileManager.default.createFile(atPath: errorLog.path, contents: nil) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: errorLog.path])
        }
        process.standardError = try FileHandle(forWritingTo: errorLog)
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        return process
    }

    /// Stops the coordinator through its control socket (as an operator's `stop` would): in this
    /// child, SIGTERM was observed not to reach `CoordinatorServer.stop()`. SIGKILL after 15 s.
    private func stopCoordinator(_ coordinator: Process, control: ControlChannel) {
        guard coordinator.isRunning else { return }
        try? control.stop()
        let deadline = Date().addingTimeInterval(15)
        while coordinator.isRunning, Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if coordinator.isRunning {
            log("the coordinator did not stop within 15 s of 'stop'; killing it")
            kill(coordinator.processIdentifier, SIGKILL)
        }
        coordinator.waitUntilExit()
    }

    private func idleCPU(_ probe: ProcessProbe, seconds: Double) throws -> Double {
        let start = try probe.cpuSeconds()
        Thread.sleep(forTimeInterval: seconds)
        return (try probe.cpuSeconds() - start) / seconds
    }
}

/// Requests to the coordinator's control socket, as `rounds start` and `status` make them.
struct ControlChannel {
    let control: CoordinatorControl

    /// The channel to the socket at `path`, in the coordinator's state directory.
    init(path: String) {
        control = CoordinatorControl(paths: CoordinatorPaths(root: URL(fileURLWithPath: path).deletingLastPathComponent()))
    }

    func stop() throws { try control.stop() }

    func waitUntilServing(timeout: TimeInterval) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            do {
                _ = try control.status()
                return
            } catch {
                if Date() > deadline {
                    throw BenchmarkError("the coordinator did not answer on \(control.paths.controlSocket.path) within \(timeout) s: \(error)")
                }
                Thread.sleep(forTimeInterval: 0.1)
            }
        }
    }

    func connectedCount() throws -> Int { try control.status().rounds.connected.count }

    func waitUntilIdle(timeout: TimeInterval) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while try control.status().rounds.phase != .idle {
            if Date() > deadline { throw BenchmarkError("the coordinator did not return to idle within \(timeout) s") }
            Thread.sleep(forTimeInterval: 0.01)
        }
    }

    /// Asks for one round; returns its number.
    func startRound() throws -> UInt64 { try control.startRounds(1).firstRound }
}

/// Follows the audit log as it grows (stat, then read only the new bytes) until a given round's record appears.
final class AuditWatcher {
    let url: URL
    private var offset: UInt64 = 0
    private var partial: [UInt8] = []

    init(url: URL) { self.url = url }

    func waitForRecord(round: UInt64, timeout: TimeInterval) throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            var status = stat()
            if stat(url.path, &status) == 0, UInt64(status.st_size) > offset {
                let handle = try FileHandle(forReadingFrom: url)
                try handle.seek(toOffset: offset)
                let data = handle.readDataToEndOfFile()
                try handle.close()
                offset += UInt64(data.count)
                partial += data
                while let newline = partial.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = Array(partial[..<newline])
                    partial.removeSubrange(...newline)
                    // Each line is {"record": {...}, "signature": ...} (AuditLog's signed envelope).
                    if let line = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any],
                       let record = line["record"] as? [String: Any],
                       (record["round"] as? NSNumber)?.uint64Value == round {
                        return record
                    }
                }
            }
            Thread.sleep(forTimeInterval: 0.002)
        }
        throw BenchmarkError("no audit record for round \(round) in \(url.path) within \(timeout) s")
    }
}
