/// Whom ε protects, the unit of the neighbouring relation (add or remove one unit): one `record` (a
/// line of the JSONL dataset) or one `user` (every record that carries the same `user` field). Under
/// `user`, DP-SGD samples users (rate q = expected users per step / users), sums each sampled user's
/// per-record gradients and clips the sum to C, so one user's whole contribution to a step is bounded
/// by C, whatever their number of records; the accountant is unchanged, its sampling unit is the user.
public enum PrivacyUnit: String, Codable, Sendable, CaseIterable {
    case record
    case user

    /// Whether a guarantee at this unit meets a requirement of `required`: a user is one or more
    /// records, so `user` meets `record` and `user`; `record` meets only `record`.
    public func meets(_ required: PrivacyUnit) -> Bool { self == required || self == .user }
}
