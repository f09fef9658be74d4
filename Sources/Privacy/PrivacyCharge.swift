import Foundation

/// What a charge before training left in the ledger: the entry written, the ε spent with it included
/// (+∞ once a run without privacy is recorded), and the budget it was checked against.
public struct PrivacyReceipt: Sendable, Equatable {
    /// The entry written (nil only in receipts a test makes up).
    public var entry: PrivacyLedgerEntry?
    /// Cumulative ε after the charge, at `budget.delta`.
    public var epsilon: Double
    /// The same if the client had trusted no one (`PrivacyLedger.epsilonTrustingNoOne`); `epsilon` when every
    /// charge was local DP.
    public var epsilonTrustingNoOne: Double
    public var budget: PrivacyBudget

    public init(entry: PrivacyLedgerEntry?, epsilon: Double, epsilonTrustingNoOne: Double? = nil, budget: PrivacyBudget) {
        self.entry = entry
        self.epsilon = epsilon
        self.epsilonTrustingNoOne = epsilonTrustingNoOne ?? epsilon
        self.budget = budget
    }
}

/// Why a charge before training was refused; nothing was written.
public enum PrivacyChargeRefusal: Error, CustomStringConvertible, Sendable {
    /// The charge would take ε past the caller's own ceiling (e.g. a client's policy, which may be
    /// stricter than the ledger's budget): `projectedEpsilon` > `ceiling`, with `spentEpsilon` already spent.
    case overCeiling(projectedEpsilon: Double, ceiling: Double, spentEpsilon: Double)
    /// The ledger's own budget refused the charge.
    case overBudget(PrivacyBudgetExceededError)

    public var description: String {
        switch self {
        case let .overCeiling(projected, ceiling, spent):
            return String(format: "this run would bring ε to %.3f, over the ceiling %.3f (%.3f spent)", projected, ceiling, spent)
        case let .overBudget(error):
            return error.description
        }
    }
}

/// The outcome of `PrivacyLedger.chargeBeforeTraining`.
public enum PrivacyCharge: Sendable {
    /// Written durably (or nothing to write): training may start.
    case charged(PrivacyReceipt)
    /// Refused: do not train.
    case refused(PrivacyChargeRefusal)

    /// The receipt of a charge made; a refusal is thrown (for callers that stop on one).
    public func receipt() throws -> PrivacyReceipt {
        switch self {
        case let .charged(receipt): return receipt
        case let .refused(refusal): throw refusal
        }
    }
}

extension PrivacyLedger {
    /// The one promise every trainer keeps: a run is charged, durably, before its first gradient (a
    /// crash can overcount spent privacy, never undercount it). A DP-SGD run is refused, with nothing
    /// written, when it would take ε past the ledger's budget or past `ceiling`. A run without privacy
    /// (`MechanismSteps.nonPrivate`, clip norm 0), which its caller has already allowed (a client's
    /// `require_privacy: false`, `train` without `--dp`), is recorded as ε = +∞ whatever the budget,
    /// after which every charge with noise is refused (issue 13: such runs were not recorded at all).
    /// `conclave-client train --state` and a client's rounds in `join` both charge through here.
    /// - Parameters:
    ///   - mechanism: what the run spends.
    ///   - ceiling: a limit of the caller's own below the budget (a client's policy), if any.
    ///   - unit: whom the run's ε protects (its sampling unit); it must be the ledger's.
    ///   - releases: what the run releases besides its model (a round's held-out metrics), each a
    ///     mechanism of sensitivity-normalised noise; charged in the same durable write as `mechanism`,
    ///     so no release ever goes out uncharged. Their entries' purpose is `purpose` + ": release".
    /// - Throws: `PrivacyParameterError` for an invalid mechanism or clip norm, `PrivacyLedgerError`
    ///   when the ledger cannot be read or written or counts another unit.
    ///   - trustingNoOne: for a distributed-DP round, `mechanism` with the client's own noise share only; kept in
    ///     the entry for `epsilonTrustingNoOne` (never charged against the budget or the ceiling).
    public mutating func chargeBeforeTraining(_ mechanism: MechanismSteps, clipNorm: Double, purpose: String,
                                              ceiling: Double? = nil, unit: PrivacyUnit = .record,
                                              releases: [MechanismSteps] = [],
                                              trustingNoOne: MechanismSteps? = nil) throws -> PrivacyCharge {
        try reload()
        try checkUnit(unit)
        // A release's noise is calibrated to its sensitivity, normalised to 1.
        let charges = [(purpose: purpose, mechanism: mechanism, clipNorm: clipNorm)]
            + releases.map { (purpose: "\(purpose): release", mechanism: $0, clipNorm: 1.0) }
        if let ceiling, mechanism.noise != .none {
            for charge in charges { try charge.mechanism.validate() }
            let projected = try PrivacyAccounting.epsilon(steps: entries.map(\.mechanism) + charges.map(\.mechanism),
                                                          delta: budget.delta, accountant: budget.accountant)
            if projected > ceiling {
                return .refused(.overCeiling(projectedEpsilon: projected, ceiling: ceiling, spentEpsilon: spentEpsilon))
            }
        }
        do {
            let written = try charge(charges, unit: unit, trustingNoOne: trustingNoOne)
            return .charged(PrivacyReceipt(entry: written.first, epsilon: written[written.count - 1].cumulativeEpsilon,
                                           epsilonTrustingNoOne: try epsilonTrustingNoOne, budget: budget))
        } catch let refusal as PrivacyBudgetExceededError {
            return .refused(.overBudget(refusal))
        }
    }
}
