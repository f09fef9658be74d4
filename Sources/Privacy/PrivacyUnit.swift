/// Whom ε protects, the unit of the neighbouring relation (add or remove one unit): one `record` (a
/// line of the JSONL dataset) or one `user` (every record that carries the same `user` field). Under
/// `user`, DP-SGD samples users (rate q = expected users per step / users), sums each sampled user's
/// per-record gradients and clips the sum to C, so one user's whole contribution to a step is bounded
/// by C, whatever their number of records; the accountant is unchanged, its sampling unit is the user.
/// `client` (a federation's plan only, DP-FedAvg, `ClientLevelDP`): one client with all its data; the
/// coordinator samples clients and each clips its whole round update. A client's ledger never counts ε per
/// client (`PrivacyBudget.validate` refuses it): it counts per record or user, which a client-level
/// guarantee covers (SECURITY.md, "Client-level DP").
public enum PrivacyUnit: String, Codable, Sendable, CaseIterable {
    case record
    case user
    case client

    /// Whether a plan at this unit meets a requirement of `required`, in the order policies are written
    /// in (record < user < client): a record-level plan does not protect a person with several records, so it
    /// does not meet `user`; a client-level plan protects every record and user of a client, so it meets both.
    /// (The converse is not an equality of ε: changing one record of a user is, to the
    /// user-level mechanism, removing the user and adding them back changed, so a record gets at most
    /// (2ε, (1 + e^ε)δ) by group privacy; a client trains and is charged only at its ledger's own unit.)
    public func meets(_ required: PrivacyUnit) -> Bool {
        switch self {
        case .record: return required == .record
        case .user: return required != .client
        case .client: return true
        }
    }
}
