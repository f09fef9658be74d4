import Foundation
import Privacy
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
    /// Whom its ε protects (JSON `privacy_unit`, default `record`): the unit its ledger counts and the
    /// one a private plan must train at.
    public var privacyUnit: PrivacyUnit
    /// Distributed DP: how many of a round's cohort the client assumes honest, itself included (JSON
    /// `assume_honest`, default 1: trusting no one, so it is charged the local DP of its own noise share).
    /// It is charged the ε that holds with the fewest honest shares this allows (`NoiseTrust`).
    public var assumeHonest: Int

    public init(maxEpsilon: Double, delta: Double, maxStepsPerRound: Int, requirePrivacy: Bool = true,
                privacyUnit: PrivacyUnit = .record, assumeHonest: Int = 1) {
        self.maxEpsilon = maxEpsilon
        self.delta = delta
        self.maxStepsPerRound = maxStepsPerRound
        self.requirePrivacy = requirePrivacy
        self.privacyUnit = privacyUnit
        self.assumeHonest = assumeHonest
    }

    enum CodingKeys: String, CodingKey {
        case delta
        case maxEpsilon = "max_epsilon"
        case maxStepsPerRound = "max_steps_per_round"
        case requirePrivacy = "require_privacy"
        case privacyUnit = "privacy_unit"
        case assumeHonest = "assume_honest"
    }

    /// `require_privacy` may be left out (it defaults to true), and `privacy_unit` (`record`).
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        maxEpsilon = try container.decode(Double.self, forKey: .maxEpsilon)
        delta = try container.decode(Double.self, forKey: .delta)
        maxStepsPerRound = try container.decode(Int.self, forKey: .maxStepsPerRound)
        requirePrivacy = try container.decodeIfPresent(Bool.self, forKey: .requirePrivacy) ?? true
        privacyUnit = try container.decodeIfPresent(PrivacyUnit.self, forKey: .privacyUnit) ?? .record
        guard privacyUnit != .client else {
            throw DecodingError.dataCorruptedError(forKey: .privacyUnit, in: container, debugDescription: "must be record or user: "
                + "the unit this client's ledger counts ε in; it takes part in client-level plans at either")
        }
        assumeHonest = try container.decodeIfPresent(Int.self, forKey: .assumeHonest) ?? 1
        guard (1...SecureRoundSetup.maximumCohort).contains(assumeHonest) else {
            throw DecodingError.dataCorruptedError(forKey: .assumeHonest, in: container, debugDescription: "must be 1..."
                + "\(SecureRoundSetup.maximumCohort): at least the client itself, got \(assumeHonest)")
        }
    }

    /// Nil when the plan is acceptable, else the reason to decline it. A private plan must train at the
    /// policy's unit: a weaker one (records, where users are required) protects less than promised, and
    /// a stronger one cannot be charged to this client's ledger, which counts ε at the policy's unit.
    public func objection(to plan: TrainingPlan, secureAggregation: Bool = true) -> String? {
        if requirePrivacy && !plan.isPrivate { return "policy: the plan has no differential privacy (noise multiplier 0)" }
        if plan.isPrivate && !plan.privacyUnit.meets(privacyUnit) {
            return "policy: the plan's privacy unit is \(plan.privacyUnit.rawValue), weaker than the \(privacyUnit.rawValue) "
                + "this client requires"
        }
        // A client-level plan protects every record and user of this client: charged at the ledger's own unit.
        if plan.isPrivate && plan.privacyUnit != privacyUnit && plan.privacyUnit != .client {
            return "policy: the plan's privacy unit is \(plan.privacyUnit.rawValue), this client's ledger counts ε per "
                + "\(privacyUnit.rawValue) (its policy's privacy_unit)"
        }
        if plan.delta > delta {
            return "policy: the plan's δ \(plan.delta) is larger than this client's δ \(delta)"
        }
        if plan.isDistributed && !secureAggregation {
            return "policy: the plan shares its noise out over the cohort (noise_placement distributed), which needs secure "
                + "aggregation; this round has none, so the coordinator would see each client's barely-noised sum"
        }
        if plan.steps > maxStepsPerRound {
            return "policy: the plan asks \(plan.steps) steps, this client trains at most \(maxStepsPerRound) per round"
        }
        return nil
    }
}
