import Foundation

extension ClientLevelDP {
    /// The coordinator's accountant over client participations: every round that sampled clients from the
    /// population is charged (to every client, sampled or not: see `ClientLevelDP`), and a round that would
    /// take the federation's client-level ε past its budget at δ is refused before anyone is sampled.
    /// Its ε is that of the Poisson-subsampled Gaussian composed over the rounds (`ClientLevelDP.epsilon`),
    /// with the client as the unit of privacy.
    public struct FederationAccountant: Codable, Sendable, Equatable {
        /// The most client-level ε the federation may ever spend, at `delta`.
        public let epsilonBudget: Double
        public let delta: Double
        public let accountant: AccountantKind
        /// The rounds charged so far, in order.
        public private(set) var rounds: [Round]

        /// - Throws: `PrivacyParameterError` for a budget not finite and positive, a δ out of (0, 1), or
        ///   charged rounds whose ε already passes the budget.
        public init(epsilonBudget: Double, delta: Double, accountant: AccountantKind = .rdp, rounds: [Round] = []) throws {
            guard epsilonBudget.isFinite, epsilonBudget > 0 else {
                throw PrivacyParameterError(name: "client-level epsilon budget", value: epsilonBudget, expected: "finite and > 0")
            }
            try validateDelta(delta)
            self.epsilonBudget = epsilonBudget
            self.delta = delta
            self.accountant = accountant
            self.rounds = rounds
            let spent = try epsilon()
            guard spent <= epsilonBudget else {
                throw PrivacyParameterError(name: "client-level epsilon of the charged rounds", value: spent,
                                            expected: "at most the budget \(epsilonBudget)")
            }
        }

        /// ε at δ of the charged rounds followed by `more` (0 with no rounds).
        public func epsilon(after more: [Round] = []) throws -> Double {
            let all = rounds + more
            guard !all.isEmpty else { return 0 }
            return try ClientLevelDP.epsilon(rounds: all, delta: delta, accountant: accountant).epsilon
        }

        /// Charges one round before its clients are sampled.
        /// - Returns: the federation's client-level ε after it, for the round's audit record.
        /// - Throws: `BudgetError` when that ε would pass the budget (nothing is charged);
        ///   `PrivacyParameterError` for q or z out of range.
        @discardableResult
        public mutating func charge(_ round: Round) throws -> Double {
            let after = try epsilon(after: [round])
            guard after <= epsilonBudget else {
                throw BudgetError(round: rounds.count + 1, epsilon: after, budget: epsilonBudget, delta: delta)
            }
            rounds.append(round)
            return after
        }

        /// Refuses, before the first round, a plan of `count` rounds at (q, z) that would pass the budget.
        /// - Throws: `BudgetError` naming the round whose ε would first pass it (found by bisection: ε grows
        ///   with the rounds).
        public func admit(_ round: Round, count: Int) throws {
            guard count > 0 else { return }
            let all = try epsilon(after: [Round](repeating: round, count: count))
            guard all > epsilonBudget else { return }
            var low = 0, high = count  // ε(low rounds) ≤ budget < ε(high rounds)
            while high - low > 1 {
                let middle = (low + high) / 2
                if try epsilon(after: [Round](repeating: round, count: middle)) > epsilonBudget { high = middle } else { low = middle }
            }
            let first = try epsilon(after: [Round](repeating: round, count: high))
            throw BudgetError(round: rounds.count + high, epsilon: first, budget: epsilonBudget, delta: delta)
        }
    }

    /// A round refused because the federation's client-level ε would pass its budget.
    public struct BudgetError: Error, CustomStringConvertible, Equatable, Sendable {
        /// The round (1-based, over the federation's life) that would pass the budget.
        public let round: Int
        public let epsilon: Double
        public let budget: Double
        public let delta: Double
        public var description: String {
            "round \(round) would take the federation's client-level ε to \(epsilon) at δ \(delta), over its budget "
                + "\(budget): lower the client sampling rate q or the rounds, or raise the noise multiplier z"
        }
    }
}
