import Audit
import ClientService
import CoordinatorService
import Foundation
import Transport

/// Where the two executables are.
public struct FederationExecutables: Sendable {
    /// `conclave-coordinator`.
    public var coordinator: URL
    /// `conclave-client`.
    public var client: URL

    public init(coordinator: URL, client: URL) {
        self.coordinator = coordinator
        self.client = client
    }

    /// The coordinator at `coordinator` (symbolic links resolved) and `conclave-client` beside it.
    /// - Throws: `LocalFederationError.setup` when the client is not there.
    public static func beside(coordinator: URL) throws -> FederationExecutables {
        let coordinator = coordinator.resolvingSymlinksInPath()
        let client = coordinator.deletingLastPathComponent().appendingPathComponent("conclave-client")
        guard FileManager.default.isExecutableFile(atPath: client.path) else {
            throw LocalFederationError.setup("conclave-client is not beside this executable (\(client.path))")
        }
        return FederationExecutables(coordinator: coordinator, client: client)
    }
}

/// Why a federation on this machine could not be built or run.
public enum LocalFederationError: Error, CustomStringConvertible, Equatable {
    /// A folder or file could not be made, or an executable is missing.
    case setup(String)
    /// A command exited with a failure status.
    case commandFailed(command: String, status: Int32, stderr: String)
    /// Something did not happen in time; the logs are in `root`.
    case timedOut(waitingUntil: String, root: String)

    public var description: String {
        switch self {
        case let .setup(reason): return reason
        case let .commandFailed(command, status, stderr): return "\(command) failed (exit \(status)): \(stderr)"
        case let .timedOut(what, root): return "timed out waiting until \(what); logs in \(root)"
        }
    }
}

/// A federation of real processes on this machine, over real TLS on loopback, built with the
/// commands an operator uses: `conclave-coordinator init` and `enroll`, `conclave-client init`, then
/// `serve` and one `join` per client, each a process of its own. Configurations are written as the
/// typed files the processes read; the running coordinator is reached through its control socket.
///
/// Layout under `root`: `coordinator/` (the state directory), `coordinator.json` (its
/// configuration), `serve.stderr.log`, and per client a folder with its state, `config.json` and
/// `join.log`. The processes are stopped by `stopAll()`, never by this object's end.
public final class LocalFederation {
    public let root: URL
    public let port: UInt16
    public let executables: FederationExecutables
    /// The coordinator's state directory.
    public var coordinator: URL { root.appendingPathComponent("coordinator") }
    public var paths: CoordinatorPaths { CoordinatorPaths(root: coordinator) }
    public var control: CoordinatorControl { CoordinatorControl(paths: paths) }
    /// The coordinator's configuration file.
    public var coordinatorConfiguration: URL { root.appendingPathComponent("coordinator.json") }
    /// Where `serve` writes its standard error (appended to across restarts).
    public var serverLog: URL { root.appendingPathComponent("serve.stderr.log") }
    /// The running `serve`, if started.
    public private(set) var server: Process?
    /// The running `join` of each started client, by client name.
    public private(set) var clients: [String: Process] = [:]
    /// Each enrolled client's folder, by client name.
    public private(set) var clientDirectories: [String: URL] = [:]

    /// Initialises the coordinator in `root/coordinator` (`init`: its CA, server certificate for
    /// 127.0.0.1 and a free loopback port, and audit signing key). `root` must exist.
    public init(root: URL, name: String, executables: FederationExecutables) throws {
        self.root = root
        self.executables = executables
        port = try freeLoopbackPort()
        try run(executables.coordinator, ["init", "--state", coordinator.path, "--name", name,
                                          "--host", "127.0.0.1", "--port", "\(port)"])
    }

    /// Makes a client in `root/directory` (default: its name) as an operator would: its own key and
    /// certificate request (`conclave-client init`), signed by the coordinator (`enroll`). Returns the folder.
    @discardableResult
    public func enrol(client name: String, directory: String? = nil) throws -> URL {
        let folder = root.appendingPathComponent(directory ?? name)
        try run(executables.client, ["init", "--state", folder.path, "--name", name])
        try run(executables.coordinator, ["enroll", "--state", coordinator.path,
                                          "--csr", folder.appendingPathComponent("client.csr").path,
                                          "--out", folder.appendingPathComponent("client.pem").path])
        clientDirectories[name] = folder
        return folder
    }

    /// An enrolled client's folder.
    public func directory(of client: String) -> URL {
        clientDirectories[client] ?? root.appendingPathComponent(client)
    }

    /// Writes the coordinator's configuration, the file `serve --config` reads.
    public func write(_ configuration: CoordinatorConfiguration) throws {
        try Self.file(configuration).write(to: coordinatorConfiguration)
    }

    /// Writes `client`'s configuration, the file its `join --config` reads (`config.json` in its folder).
    public func write(_ configuration: ClientConfiguration, for client: String) throws {
        try Self.file(configuration).write(to: configurationFile(of: client))
    }

    /// A configuration as its file holds it: JSON, keys sorted, one field a line.
    public static func file(_ configuration: some Encodable) throws -> Data {
        try encoder.encode(configuration)
    }

    public func configurationFile(of client: String) -> URL {
        directory(of: client).appendingPathComponent("config.json")
    }

    private static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()

    // MARK: Processes

    /// Starts `serve` (with `arguments` after its own, and `environment` added to this process's) and
    /// waits until its control socket answers.
    /// - Throws: `LocalFederationError.setup` at once when `serve` exits instead; `timedOut` after `timeout` s.
    public func startCoordinator(timeout: Double = 60, arguments: [String] = [], environment: [String: String] = [:]) throws {
        server = try spawn(executables.coordinator, ["serve", "--state", coordinator.path,
                                                     "--config", coordinatorConfiguration.path] + arguments, log: serverLog,
                           environment: environment)
        try waitUntil("the coordinator answers", timeout: timeout) {
            if let server = self.server, !server.isRunning {
                throw LocalFederationError.setup("serve exited (status \(server.terminationStatus)) before answering; "
                                                 + "see \(self.serverLog.path)")
            }
            return (try? self.control.status(timeout: 2)) != nil
        }
    }

    /// Starts `client`'s `join` (standard error to `join.log` in its folder; `environment` added to this process's).
    public func startClient(_ client: String, environment: [String: String] = [:]) throws {
        let folder = directory(of: client)
        clients[client] = try spawn(executables.client,
                                    ["join", "--state", folder.path, "--coordinator", "127.0.0.1:\(port)",
                                     "--ca", paths.caCertificate.path,
                                     "--cert", folder.appendingPathComponent("client.pem").path,
                                     "--config", configurationFile(of: client).path],
                                    log: folder.appendingPathComponent("join.log"), environment: environment)
    }

    /// The running coordinator's status.
    public func status() throws -> CoordinatorStatus { try control.status() }

    /// The clients connected now (none when the coordinator does not answer).
    public func connected() -> [String] { (try? status())?.rounds.connected ?? [] }

    /// Waits until `count` clients are connected.
    public func waitForConnections(_ count: Int, timeout: Double) throws {
        try waitUntil("\(count) client\(count == 1 ? "" : "s") connect", timeout: timeout) { self.connected().count >= count }
    }

    /// Polls `condition` every 0.1 s until it holds.
    /// - Throws: `LocalFederationError.timedOut` after `timeout` seconds; what `condition` throws.
    public func waitUntil(_ what: String, timeout: Double, _ condition: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try condition() { return }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw LocalFederationError.timedOut(waitingUntil: what, root: root.path)
    }

    /// Kills `process` with SIGKILL (no chance to clean up) and waits for it.
    public func kill9(_ process: Process?) {
        guard let process, process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// Stops every process started here: the clients, then the coordinator (SIGTERM), and waits for them.
    public func stopAll() {
        for process in clients.values where process.isRunning { process.terminate() }
        if let server, server.isRunning { server.terminate() }
        for process in clients.values { process.waitUntilExit() }
        server?.waitUntilExit()
    }

    /// A log under `root` (for example `serve.stderr.log` or `client-a/join.log`); empty when absent.
    public func log(_ relativePath: String) -> String {
        (try? String(contentsOf: root.appendingPathComponent(relativePath), encoding: .utf8)) ?? ""
    }

    /// Runs a command to completion and returns its standard output.
    /// - Throws: `LocalFederationError.commandFailed` with its standard error when it fails.
    @discardableResult
    public func run(_ executable: URL, _ arguments: [String]) throws -> String {
        let result = try CommandRun.run(executable, arguments)
        guard result.status == 0 else {
            throw LocalFederationError.commandFailed(command: "\(executable.lastPathComponent) \(arguments.joined(separator: " "))",
                                                     status: result.status, stderr: result.stderr)
        }
        return result.stdout
    }

    /// Starts a long-running command with its standard error appended to `log`.
    private func spawn(_ executable: URL, _ arguments: [String], log: URL, environment: [String: String]) throws -> Process {
        if !FileManager.default.fileExists(atPath: log.path) {
            guard FileManager.default.createFile(atPath: log.path, contents: nil) else {
                throw LocalFederationError.setup("cannot create the log file \(log.path)")
            }
        }
        let handle = try FileHandle(forWritingTo: log)
        try handle.seekToEnd()
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, added in added }
        }
        process.standardOutput = FileHandle.nullDevice
        process.standardError = handle
        try process.run()
        return process
    }
}

/// One command run to completion with both standard streams captured: the federation's operator
/// commands, and the end-to-end tests' invocations of the executables.
public struct CommandRun: Sendable {
    public let status: Int32
    public let stdout: String
    public let stderr: String

    /// Runs `executable` with `arguments`, writing `standardInput` (then closing it) when given.
    public static func run(_ executable: URL, _ arguments: [String], standardInput: Data? = nil) throws -> CommandRun {
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        let out = Pipe(), err = Pipe(), input = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = input
        try process.run()
        if let standardInput { input.fileHandleForWriting.write(standardInput) }
        try input.fileHandleForWriting.close()
        // Both pipes are read at once, so a chatty process cannot block on a full one.
        nonisolated(unsafe) var errData = Data()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async {
            errData = err.fileHandleForReading.readDataToEndOfFile()
            group.leave()
        }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        return CommandRun(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                          stderr: String(decoding: errData, as: UTF8.self))
    }
}
