import FederationProtocol
import Foundation
import SystemIO
import Wire

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
        configuration.model = resolveConfigurationPath(configuration.model, relativeTo: url)
        configuration.data = resolveConfigurationPath(configuration.data, relativeTo: url)
        configuration.evalData = resolveConfigurationPath(configuration.evalData, relativeTo: url)
        return configuration
    }
}
