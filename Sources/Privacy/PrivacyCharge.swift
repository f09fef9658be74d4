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
    /// - Throws: `PrivacyParameterError` for an invalid mechanism or clip norm, `PrivacyLedgerError`
    ///   when the ledger cannot be read or written or counts another unit.
    public mutating func chargeBeforeTraining(_ mechanism: MechanismSteps?, clipNorm: Double, purpose: String,
                                              ceiling: Double? = nil, unit: PrivacyUnit = .record) throws -> PrivacyCharge {
        try reload()
        guard let mechanism else { return .charged(PrivacyReceipt(entry: nil, epsilon: spentEpsilon, budget: budget)) }
        try checkUnit(unit)
        if let ceiling {
            let projected = try epsilon(afterCharging: mechanism)
            if projected > ceiling {
                return .refused(.overCeiling(projectedEpsilon: projected, ceiling: ceiling, spentEpsilon: spentEpsilon))
            }
        }
        do {
            let entry = try charge(purpose: purpose, samplingRate: mechanism.samplingRate,
                                   noiseMultiplier: mechanism.noiseMultiplier, clipNorm: clipNorm, steps: mechanism.steps,
                                   unit: unit)
            return .charged(PrivacyReceipt(entry: entry, epsilon: entry.cumulativeEpsilon, budget: budget))
        } catch let refusal as PrivacyBudgetExceededError {
            return .refused(.overBudget(refusal))
        }
    }
}
