import Audit
import FederationProtocol
import Foundation
import SystemIO
import Wire

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
    /// - Parameter secureAggregation: overrides the file's `secure_aggregation` (`serve
    ///   --secure-aggregation`) before the checks, which depend on it.
    public static func load(_ url: URL, secureAggregation: Bool? = nil) throws -> CoordinatorConfiguration {
        var configuration: CoordinatorConfiguration = try decodeConfiguration(url)
        if let secureAggregation { configuration.rounds.secureAggregation = secureAggregation }
        try configuration.rounds.validate(path: url.path)
        if let eta = configuration.serverLearningRate, !(eta.isFinite && eta > 0) {
            throw FederationError.configuration(path: url.path, field: "server_learning_rate", "must be positive, got \(eta)")
        }
        configuration.model = resolveConfigurationPath(configuration.model, relativeTo: url)
        return configuration
    }
}

