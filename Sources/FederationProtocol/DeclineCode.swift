/// A decline's kind, for monitoring tools that count declines by cause: the reason's leading category
/// ("policy: ...", "privacy budget: ...", "data: ...", "secure aggregation: ...", "cannot train on this
/// plan: ...") as snake case: `policy`, `privacy_budget`, `data`, `secure_aggregation`,
/// `cannot_train_on_this_plan`; `other` for a reason without one (from another client's software).
public enum DeclineCode {
    public static func code(of reason: String) -> String {
        guard let colon = reason.firstIndex(of: ":") else { return "other" }
        let category = reason[..<colon]
        guard !category.isEmpty, category.count <= 40,
              category.allSatisfy({ $0 == " " || ($0.isASCII && $0.isLetter) }) else { return "other" }
        return category.lowercased().replacingOccurrences(of: " ", with: "_")
    }
}
