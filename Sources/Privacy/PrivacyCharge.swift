import Foundation

/// What a charge before training left in the ledger: the entry written (nil for a run without
/// DP-SGD, which spends nothing), the ε spent with it included, and the budget it was checked against.
public struct PrivacyReceipt: Sendable, Equatable {
    public var entry: PrivacyLedgerEntry?
    /// Cumulative ε after the charge, at `budget.delta`.
    public var epsilon: Double
    public var budget: PrivacyBudget

    public init(entry: PrivacyLedgerEntry?, epsilon: Double, budget: PrivacyBudget) {
        self.entry = entry
        self.epsilon = epsilon
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
    /// The one promise every trainer keeps: a DP-SGD run is charged, durably, before its first noisy
    /// gradient (a crash can overcount spent privacy, never undercount it), and it is refused, with
    /// nothing written, when it would take ε past the ledger's budget or past `ceiling`.
    /// `conclave-client train --state` and a client's rounds in `join` both charge through here.
    /// - Parameters:
    ///   - mechanism: what the run spends; nil for a run without DP-SGD, which is answered with the ε
    ///     spent so far and writes nothing.
    ///   - ceiling: a limit of the caller's own below the budget (a client's policy), if any.
    ///   - unit: whom the run's ε protects (its sampling unit); it must be the ledger's.
    ///   - releases: what the run releases besides its model (a round's held-out metrics), each a
    ///     mechanism of sensitivity-normalised noise; charged in the same durable write as `mechanism`,
    ///     so no release ever goes out uncharged. Their entries' purpose is `purpose` + ": release".
    /// - Throws: `PrivacyParameterError` for an invalid mechanism or clip norm, `PrivacyLedgerError`
    ///   when the ledger cannot be read or written or counts another unit.
    public mutating func chargeBeforeTraining(_ mechanism: MechanismSteps?, clipNorm: Double, purpose: String,
                                              ceiling: Double? = nil, unit: PrivacyUnit = .record,
                                              releases: [MechanismSteps] = []) throws -> PrivacyCharge {
        try reload()
        var charges: [(purpose: String, mechanism: MechanismSteps, clipNorm: Double)] = []
        if let mechanism { charges.append((purpose, mechanism, clipNorm)) }
        // A release's noise is calibrated to its sensitivity, normalised to 1.
        charges += releases.map { ("\(purpose): release", $0, 1.0) }
        guard !charges.isEmpty else { return .charged(PrivacyReceipt(entry: nil, epsilon: spentEpsilon, budget: budget)) }
        try checkUnit(unit)
        if let ceiling {
            for charge in charges { try charge.mechanism.validate() }
            let projected = try PrivacyAccounting.epsilon(steps: entries.map(\.mechanism) + charges.map(\.mechanism),
                                                          delta: budget.delta, accountant: budget.accountant)
            if projected > ceiling {
                return .refused(.overCeiling(projectedEpsilon: projected, ceiling: ceiling, spentEpsilon: spentEpsilon))
            }
        }
        do {
            let written = try charge(charges, unit: unit)
            return .charged(PrivacyReceipt(entry: written.first, epsilon: written.last!.cumulativeEpsilon, budget: budget))
        } catch let refusal as PrivacyBudgetExceededError {
            return .refused(.overBudget(refusal))
        }
    }
}
