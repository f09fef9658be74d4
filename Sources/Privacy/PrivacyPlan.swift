import Foundation

/// What a plan of identical rounds would do to a ledger, before any of them runs: the composed ε after
/// each round and the first round a charge would refuse. Computed by the same rule as
/// `PrivacyLedger.chargeBeforeTraining` (refused when ε after the charge exceeds the caller's ceiling or
/// the ledger's budget), so a preview and the real charges agree. Nothing is written.
public struct PrivacyPlanProjection: Sendable, Equatable {
    /// One planned round.
    public struct Round: Sendable, Equatable {
        /// 1-based round number within the plan.
        public var round: Int
        /// Composed ε (ledger entries and the plan's rounds charged so far, this one included) at the
        /// budget's δ. For a refused round: the ε its charge would have brought, which is refused.
        public var epsilon: Double
        /// Whether the charge for this round is refused (the client declines it; nothing is spent).
        public var refused: Bool
    }

    /// ε already spent in the ledger before the plan.
    public var spentEpsilon: Double
    /// The budget the charges are checked against.
    public var budget: PrivacyBudget
    /// The caller's ceiling below the budget (a client's policy), if any.
    public var ceiling: Double?
    /// One mechanism per round.
    public var mechanism: MechanismSteps
    /// Rounds 1...N.
    public var rounds: [Round]

    /// The first round whose charge is refused, nil when all N rounds fit.
    public var firstRefusedRound: Int? { rounds.first(where: \.refused)?.round }

    /// Projects `rounds` rounds of `mechanism` after `spent`, checked against `budget` and `ceiling`.
    /// Once a round is refused nothing more is charged, so every later round is refused at the same ε.
    /// - Throws: `PrivacyParameterError` for an invalid mechanism or budget.
    public static func project(_ mechanism: MechanismSteps, releases: [MechanismSteps] = [], rounds: Int,
                               after spent: [MechanismSteps], budget: PrivacyBudget,
                               ceiling: Double? = nil) throws -> PrivacyPlanProjection {
        try project(mechanism, releasesInRound: { _ in releases }, rounds: rounds, after: spent, budget: budget, ceiling: ceiling)
    }

    /// As above, with what each round releases besides its training given by round (1-based): the metrics releases a
    /// coordinator asks for in scheduled rounds only (`accuracy_interval`, `heldout_interval`).
    public static func project(_ mechanism: MechanismSteps, releasesInRound: (Int) -> [MechanismSteps], rounds: Int,
                               after spent: [MechanismSteps], budget: PrivacyBudget,
                               ceiling: Double? = nil) throws -> PrivacyPlanProjection {
        try mechanism.validate()
        try budget.validate()
        guard rounds >= 1 else { throw PrivacyParameterError(name: "rounds", value: Double(rounds), expected: "at least 1") }
        let spentEpsilon = spent.isEmpty ? 0
            : try PrivacyAccounting.epsilon(steps: spent, delta: budget.delta, accountant: budget.accountant)
        var charged = spent
        var planned: [Round] = []
        var refusedAt: Double?
        for round in 1...rounds {
            if let refusedAt {
                planned.append(Round(round: round, epsilon: refusedAt, refused: true))
                continue
            }
            // A round charges its training and what it releases besides (its metrics) in one write.
            let releases = releasesInRound(round)
            for release in releases { try release.validate() }
            let epsilon = try PrivacyAccounting.epsilon(steps: charged + [mechanism] + releases, delta: budget.delta,
                                                        accountant: budget.accountant)
            if epsilon > budget.epsilon || (ceiling.map { epsilon > $0 } ?? false) {
                refusedAt = epsilon
                planned.append(Round(round: round, epsilon: epsilon, refused: true))
            } else {
                charged += [mechanism] + releases
                planned.append(Round(round: round, epsilon: epsilon, refused: false))
            }
        }
        return PrivacyPlanProjection(spentEpsilon: spentEpsilon, budget: budget, ceiling: ceiling, mechanism: mechanism,
                                     rounds: planned)
    }
}

extension PrivacyLedger {
    /// `rounds` rounds of `mechanism` projected onto this ledger as it is now (see `PrivacyPlanProjection`).
    public func projection(of mechanism: MechanismSteps, releases: [MechanismSteps] = [], rounds: Int,
                           ceiling: Double? = nil) throws -> PrivacyPlanProjection {
        try PrivacyPlanProjection.project(mechanism, releases: releases, rounds: rounds, after: entries.map(\.mechanism),
                                          budget: budget, ceiling: ceiling)
    }
}
