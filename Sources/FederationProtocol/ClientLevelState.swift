import Foundation
import Privacy

/// The federation's client-level accountant as the coordinator's state file keeps it (`client-level-accountant.json`),
/// (snake_case keys, as `StateFile` writes them) written durably by the driver before a charged round's invitations leave, read back at start so that a restarted
/// coordinator goes on from every round it charged (a crash can overcount, never undercount).
public struct ClientLevelAccountantState: Codable, Sendable, Equatable {
    /// The rounds charged, in order: each round's client sampling rate q and noise multiplier z.
    public var rounds: [ClientLevelDP.Round]
    /// The budget and δ when the file was written (the configuration's apply on reading: ε is recomputed).
    public var epsilonBudget: Double
    public var delta: Double

    public init(_ accountant: ClientLevelDP.FederationAccountant) {
        rounds = accountant.rounds
        epsilonBudget = accountant.epsilonBudget
        delta = accountant.delta
    }

    /// The accountant for `policy` (its budget and δ) with these rounds charged.
    /// - Throws: `PrivacyParameterError` when the charged rounds already pass the budget (lowered since).
    public func accountant(policy: RoundPolicy) throws -> ClientLevelDP.FederationAccountant? {
        try RoundEngine.federationAccountant(policy: policy, rounds: rounds)
    }
}
