import Foundation
import Wire

/// What a client agrees to, whatever a coordinator's plan asks (the ledger's budget is enforced
/// separately, when the round is charged).
public struct ClientPolicy: Codable, Sendable, Equatable {
    /// The client's privacy budget: the most ε it will ever spend, at `delta`.
    public var maxEpsilon: Double
    public var delta: Double
    /// The most DP-SGD steps it trains in one round.
    public var maxStepsPerRound: Int
    /// Whether it refuses plans without differential privacy.
    public var requirePrivacy: Bool

    public init(maxEpsilon: Double, delta: Double, maxStepsPerRound: Int, requirePrivacy: Bool = true) {
        self.maxEpsilon = maxEpsilon
        self.delta = delta
        self.maxStepsPerRound = maxStepsPerRound
        self.requirePrivacy = requirePrivacy
    }

    enum CodingKeys: String, CodingKey {
        case delta
        case maxEpsilon = "max_epsilon"
        case maxStepsPerRound = "max_steps_per_round"
        case requirePrivacy = "require_privacy"
    }

    /// `require_privacy` may be left out; it defaults to true.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        maxEpsilon = try container.decode(Double.self, forKey: .maxEpsilon)
        delta = try container.decode(Double.self, forKey: .delta)
        maxStepsPerRound = try container.decode(Int.self, forKey: .maxStepsPerRound)
        requirePrivacy = try container.decodeIfPresent(Bool.self, forKey: .requirePrivacy) ?? true
    }

    /// Nil when the plan is acceptable, else the reason to decline it.
    public func objection(to plan: TrainingPlan) -> String? {
        if requirePrivacy && !plan.isPrivate { return "policy: the plan has no differential privacy (noise multiplier 0)" }
        if plan.delta > delta {
            return "policy: the plan's δ \(plan.delta) is larger than this client's δ \(delta)"
        }
        if plan.steps > maxStepsPerRound {
            return "policy: the plan asks \(plan.steps) steps, this client trains at most \(maxStepsPerRound) per round"
        }
        return nil
    }
}
