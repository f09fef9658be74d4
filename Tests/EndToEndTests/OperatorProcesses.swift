import ClientService
import CoordinatorService
import FederationDemo
import FederationProtocol
import Foundation
import TestSupport
import Transport
import Wire
import XCTest

/// Long-running commands as an operator runs them, on a `LocalFederation` (the demo's orchestration,
/// with typed configurations): a coordinator and enrolled clients in a temporary directory, processes
/// whose standard streams go to a pipe the test can close (`| head -1`), and waiting for a process with
/// a deadline. Used by the closed-pipe, events, doctor and `join` configuration tests.
final class OperatorFederation {
    let federation: LocalFederation
    private(set) var processes: [Process] = []

    var root: URL { federation.root }
    var port: UInt16 { federation.port }
    var coordinator: URL { federation.coordinator }
    var configurationFile: URL { federation.coordinatorConfiguration }
    var caFile: URL { federation.paths.caCertificate }

    /// `init` of a coordinator named `name` listening on a free loopback port, with its configuration
    /// (the tiny fixture model, one client and a two-step plan). Given a `root`, the federation lives in
    /// `root/NAME`, so two coordinators can share one test directory.
    init(name: String = "e2e", root: URL? = nil) throws {
        let folder: URL
        if let root {
            folder = root.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        } else {
            folder = try Fixtures.temporaryDirectory("operator")
        }
        federation = try LocalFederation(root: folder, name: name, executables: TinyFederation.executables)
        let plan = TrainingPlan(steps: 2, learningRate: 0.01, samplingRate: 0.25, noiseMultiplier: 1.0, clipNorm: 1.0,
                                delta: 1e-5, maxLength: 64, rank: 2, alpha: 4, targets: ["q_proj", "v_proj"])
        try federation.write(CoordinatorConfiguration(model: Fixtures.url("tiny-llama").path, listen: "127.0.0.1",
                                                      rounds: RoundPolicy(minClients: 1, maxClients: 1, fraction: 1.0,
                                                                          aggregation: .fedavg, secureAggregation: false,
                                                                          inviteTimeout: 20, roundTimeout: 60,
                                                                          waitForClients: 30, plan: plan)))
    }

    /// A client in `root/NAME` with token-id data and its configuration, made and enrolled as an
    /// operator does (`LocalFederation.enrol`); with `enrol: false` only `conclave-client init` runs.
    /// Returns its state directory.
    @discardableResult
    func addClient(_ name: String, enrol: Bool = true) throws -> URL {
        let directory: URL
        if enrol {
            directory = try federation.enrol(client: name)
        } else {
            directory = root.appendingPathComponent(name)
            try Self.check(Executables.run(Executables.client, ["init", "--state", directory.path, "--name", name]))
        }
        let lines = (0..<16).map { i in "{\"input_ids\": \((0..<16).map { (i * 7 + $0 * 3) % 512 })}" }
        for file in ["train.jsonl", "eval.jsonl"] {
            try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: directory.appendingPathComponent(file))
        }
        try federation.write(ClientConfiguration(model: Fixtures.url("tiny-llama").path, data: "train.jsonl",
                                                 evalData: "eval.jsonl", threads: 1,
                                                 policy: ClientPolicy(maxEpsilon: 50, delta: 1e-5, maxStepsPerRound: 50)),
                             for: name)
        return directory
    }

    /// `enroll` of the client in `directory` with this coordinator: its `client.pem`.
    func enrol(_ directory: URL) throws {
        try Self.check(Executables.run(Executables.coordinator, ["enroll", "--state", coordinator.path, "--csr",
                                                                 directory.appendingPathComponent("client.csr").path,
                                                                 "--out", directory.appendingPathComponent("client.pem").path]))
    }

    func serveArguments() -> [String] { ["serve", "--state", coordinator.path, "--config", configurationFile.path] }

    /// `join` of the client in `directory` to this coordinator, by default with its own CA and the client's certificate.
    func joinArguments(_ directory: URL, ca: URL? = nil, certificate: URL? = nil) -> [String] {
        ["join", "--state", directory.path, "--coordinator", "127.0.0.1:\(port)", "--ca", (ca ?? caFile).path,
         "--cert", (certificate ?? directory.appendingPathComponent("client.pem")).path,
         "--config", directory.appendingPathComponent("config.json").path]
    }

    /// Starts `executable`; what it writes to standard error (and standard output, when `output` is
    /// given) goes to those handles, anything else to /dev/null.
    func start(_ executable: URL, _ arguments: [String], error: FileHandle, output: FileHandle? = nil) throws -> Process {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = output ?? FileHandle.nullDevice
        process.standardError = error
        try process.run()
        processes.append(process)
        return process
    }

    /// `status --json` of the running coordinator, or nil when it does not answer.
    func status() -> [String: Any]? {
        guard let result = try? Executables.run(Executables.coordinator, ["status", "--state", coordinator.path, "--json"]),
              result.status == 0 else { return nil }
        return try? result.json()
    }

    func stopAll() {
        for process in processes where process.isRunning { process.terminate() }
        for process in processes { process.waitUntilExit() }
    }

    static func check(_ result: Executables.Result, file: StaticString = #filePath, line: UInt = #line) throws {
        if result.status != 0 {
            XCTFail("command failed (\(result.status)): \(result.stderr)", file: file, line: line)
            throw NSError(domain: "operator", code: Int(result.status))
        }
    }

    static func waitUntil(_ what: String, timeout: Double, file: StaticString = #filePath, line: UInt = #line,
                          _ condition: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try condition() { return }
            Thread.sleep(forTimeInterval: 0.1)
        }
        XCTFail("timed out waiting until \(what)", file: file, line: line)
        throw NSError(domain: "timeout", code: 1)
    }
}

/// A pipe standing for a log collector: `readLineThenClose` is `| head -1` (one line, then the reader
/// goes away), `closeNow` a collector that is already gone.
final class ClosingPipe {
    let pipe = Pipe()
    var writer: FileHandle { pipe.fileHandleForWriting }

    /// After the process has started: only the process keeps the write end.
    func processStarted() throws { try pipe.fileHandleForWriting.close() }

    /// Reads up to the first newline (at most `timeout` seconds), then closes the read end; returns the line.
    func readLineThenClose(timeout: Double = 60) throws -> String {
        let reader = pipe.fileHandleForReading
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var line = Data()
        DispatchQueue.global().async {
            var byte: UInt8 = 0
            while read(reader.fileDescriptor, &byte, 1) == 1 {
                line.append(byte)
                if byte == 0x0A { break }
            }
            done.signal()
        }
        let timedOut = done.wait(timeout: .now() + timeout) == .timedOut
        try reader.close()
        if timedOut { XCTFail("no line within \(timeout) s") }
        return String(decoding: line, as: UTF8.self)
    }

    func closeNow() throws { try pipe.fileHandleForReading.close() }
}

extension Process {
    /// Waits at most `timeout` seconds for the process to end; true when it did.
    func waitForExit(timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if isRunning { return false }
        waitUntilExit()
        return true
    }

    /// "exit N" or "signal N" (132 is SIGILL, Swift's trap; 13 is SIGPIPE).
    var ending: String {
        terminationReason == .exit ? "exit \(terminationStatus)" : "signal \(terminationStatus)"
    }

    /// "running", or how it ended.
    var state: String { isRunning ? "running" : ending }
}
