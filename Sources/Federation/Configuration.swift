import Foundation

/// The coordinator's configuration file (`serve --config F`), JSON:
/// `{"model": PATH, "listen": ADDRESS?, "rounds": RoundPolicy, "server_learning_rate": η?}`.
public struct CoordinatorConfiguration: Codable, Sendable, Equatable {
    /// The base model (GGUF file or HF directory): the coordinator reads only its shape, to build and
    /// check adapters; its weights are never used.
    public var model: String
    /// The address to listen on (default: the host the server certificate names).
    public var listen: String?
    public var rounds: RoundPolicy
    /// FedAdam's server learning rate η (default 0.01); FedAvg ignores it.
    public var serverLearningRate: Double?

    public init(model: String, listen: String? = nil, rounds: RoundPolicy, serverLearningRate: Double? = nil) {
        self.model = model
        self.listen = listen
        self.rounds = rounds
        self.serverLearningRate = serverLearningRate
    }

    enum CodingKeys: String, CodingKey {
        case model, listen, rounds
        case serverLearningRate = "server_learning_rate"
    }

    /// Reads and checks a configuration file; relative model paths are taken from the file's folder.
    public static func load(_ url: URL) throws -> CoordinatorConfiguration {
        var configuration: CoordinatorConfiguration = try decodeConfiguration(url)
        try configuration.rounds.validate(path: url.path)
        if let eta = configuration.serverLearningRate, !(eta.isFinite && eta > 0) {
            throw FederationError.configuration(path: url.path, field: "server_learning_rate", "must be positive, got \(eta)")
        }
        configuration.model = resolve(configuration.model, relativeTo: url)
        return configuration
    }
}

/// A client's configuration file (`join --config F`), JSON:
/// `{"model": PATH, "data": JSONL, "eval_data": JSONL, "threads": N?, "policy": ClientPolicy,
/// "canaries": CanaryConfiguration?}`.
public struct ClientConfiguration: Codable, Sendable, Equatable {
    /// The base model, quantized for this device.
    public var model: String
    /// The private training records (JSONL; one line is one record for differential privacy).
    public var data: String
    /// The held-out records the client evaluates on before and after each round.
    public var evalData: String
    /// Threads for training and evaluation (default: all cores).
    public var threads: Int?
    /// What the client agrees to.
    public var policy: ClientPolicy
    /// Secret canaries to plant in the training data and whose exposure to report each round (an
    /// empirical privacy check); nil plants none.
    public var canaries: CanaryConfiguration?

    public init(model: String, data: String, evalData: String, threads: Int? = nil, policy: ClientPolicy,
                canaries: CanaryConfiguration? = nil) {
        self.model = model
        self.data = data
        self.evalData = evalData
        self.threads = threads
        self.policy = policy
        self.canaries = canaries
    }

    enum CodingKeys: String, CodingKey {
        case model, data, threads, policy, canaries
        case evalData = "eval_data"
    }

    public static func load(_ url: URL) throws -> ClientConfiguration {
        var configuration: ClientConfiguration = try decodeConfiguration(url)
        let p = configuration.policy
        if !(p.maxEpsilon.isFinite && p.maxEpsilon > 0) {
            throw FederationError.configuration(path: url.path, field: "policy.max_epsilon", "must be positive, got \(p.maxEpsilon)")
        }
        if !(p.delta > 0 && p.delta < 1) {
            throw FederationError.configuration(path: url.path, field: "policy.delta", "must be in (0, 1), got \(p.delta)")
        }
        if p.maxStepsPerRound < 1 {
            throw FederationError.configuration(path: url.path, field: "policy.max_steps_per_round",
                                                "must be at least 1, got \(p.maxStepsPerRound)")
        }
        if let threads = configuration.threads, !(1...1024).contains(threads) {
            throw FederationError.configuration(path: url.path, field: "threads", "must be 1...1024, got \(threads)")
        }
        try configuration.canaries?.validate(path: url.path)
        configuration.model = resolve(configuration.model, relativeTo: url)
        configuration.data = resolve(configuration.data, relativeTo: url)
        configuration.evalData = resolve(configuration.evalData, relativeTo: url)
        return configuration
    }
}

/// Decodes a JSON configuration file, turning decoding errors into errors that name the field.
func decodeConfiguration<T: Decodable>(_ url: URL) throws -> T {
    var status = stat()
    guard stat(url.path, &status) == 0 else { throw FederationError.state(path: url.path, "cannot read: no such file") }
    guard status.st_size <= 1 << 20 else {
        throw FederationError.state(path: url.path, "is \(status.st_size) bytes; a configuration file is at most 1 MiB")
    }
    guard let data = FileManager.default.contents(atPath: url.path) else {
        throw FederationError.state(path: url.path, "cannot read")
    }
    do {
        return try JSONDecoder().decode(T.self, from: data)
    } catch let DecodingError.keyNotFound(key, context) {
        throw FederationError.configuration(path: url.path, field: fieldPath(context.codingPath + [key]), "is missing")
    } catch let DecodingError.typeMismatch(type, context) {
        throw FederationError.configuration(path: url.path, field: fieldPath(context.codingPath), "expected \(type)")
    } catch let DecodingError.valueNotFound(type, context) {
        throw FederationError.configuration(path: url.path, field: fieldPath(context.codingPath), "expected \(type), found null")
    } catch let DecodingError.dataCorrupted(context) {
        let field = context.codingPath.isEmpty ? "(file)" : fieldPath(context.codingPath)
        throw FederationError.configuration(path: url.path, field: field, "not valid JSON: \(context.debugDescription)")
    }
}

private func fieldPath(_ path: [any CodingKey]) -> String {
    path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
}

private func resolve(_ path: String, relativeTo file: URL) -> String {
    if path.hasPrefix("/") { return path }
    return file.deletingLastPathComponent().appendingPathComponent(path).standardizedFileURL.path
}
