/// Why a client declines or leaves a round, as the coordinator hears it: one of a fixed set of codes,
/// never the client's own text. A free-text reason can carry private data (issue 13: a record longer
/// than the plan's `max_length` declined with "file:line: record has N tokens", and the coordinator,
/// which picks `max_length`, could binary-search private token counts at no ε cost). The details stay
/// in the client's own log. Every value is listed here: a peer sending any other is refused, and new
/// codes take new raw values, never reusing one.
public enum DeclineCode: UInt16, Sendable, CaseIterable, Equatable, CustomStringConvertible {
    /// The plan breaks the client's policy (no differential privacy where it requires it, a larger δ,
    /// more steps than it trains in a round): a function of the plan and the policy only.
    case policy = 1
    /// The charge for the round would pass the client's ε budget (its ledger's, or its policy's).
    case privacyBudget = 2
    /// The client's data cannot be read (a missing file, a malformed record): the same whatever the
    /// plan, since records are read without the plan and over-length ones are truncated, not refused.
    case data = 3
    /// The trainer refuses the plan on this client's model (a rank or target it cannot build).
    case cannotTrainOnThisPlan = 4
    /// The secure-aggregation session was refused: not in the announced cohort, a bad setup, a peer's
    /// message that fails its checks.
    case secureAggregation = 5
    /// Coordinator → client only: the coordinator dropped the client from the round (a deadline, a
    /// lost connection); the abort's detail says which.
    case dropped = 6
    /// A distributed-DP round's charge under the trust the client assumes (`assume_honest`: the honest
    /// shares it counts on) would pass its ε budget: a function of the plan, the cohort and the policy only.
    case distributedTrust = 7

    /// The code's name in logs, monitoring events, the audit record and reports.
    public var name: String {
        switch self {
        case .policy: return "policy"
        case .privacyBudget: return "privacy_budget"
        case .data: return "data"
        case .cannotTrainOnThisPlan: return "cannot_train_on_this_plan"
        case .secureAggregation: return "secure_aggregation"
        case .dropped: return "dropped"
        case .distributedTrust: return "distributed_trust"
        }
    }

    public var description: String { name }

    /// The code named `name`, or nil.
    public init?(name: String) {
        guard let code = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = code
    }
}

extension WireEncoder {
    mutating func declineCode(_ code: DeclineCode) {
        uint16(code.rawValue)
    }
}

extension WireDecoder {
    /// A decline code, refusing any value this build does not know.
    mutating func declineCode(_ field: String) throws -> DeclineCode {
        let raw = try uint16(field)
        guard let code = DeclineCode(rawValue: raw) else {
            throw WireError.invalidValue(field: "\(message).\(field)", reason: "unknown decline code \(raw)")
        }
        return code
    }
}
