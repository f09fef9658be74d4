import Audit
import Foundation

/// A round in one line, as `rounds start --wait` and the demo print it as its audit record lands.
/// JSON `{"round", "status", "participants" (a count), "eval_loss_before", "eval_loss_after",
/// "eval_loss_standard_error", "max_epsilon" (each null when absent), "eval_loss_released", "seconds",
/// "abort_reason"?, "max_epsilon_trusting_no_one"? (distributed rounds: the largest cumulative ε a participant
/// would have trusting no one), "condition_accuracy_before"?, "condition_accuracy_after"?,
/// "condition_accuracy_standard_error"? (present when participants released a condition accuracy)}`. The held-out losses are the participants' DP releases (post-processed, with the
/// standard error of their noise); `eval_loss_released` is false only for records written before
/// releases existed, whose figures clients sent in clear.
public struct RoundSummary: Encodable, Sendable, Equatable {
    public var round: UInt64
    public var status: String
    public var participants: Int
    public var evalLossBefore: Double?
    public var evalLossAfter: Double?
    public var evalLossStandardError: Double?
    /// Whether the losses are DP releases (false: an old record's figures sent in clear).
    public var evalLossReleased: Bool
    public var maxEpsilon: Double?
    /// A distributed round's largest cumulative ε trusting no one among its participants (nil otherwise, and for
    /// records from before protocol 5).
    public var maxEpsilonTrustingNoOne: Double?
    public var seconds: Double
    public var abortReason: String?
    /// The pooled condition accuracy before and after and its standard error, from the participants' DP releases
    /// (nil when none released one).
    public var conditionAccuracyBefore: Double?
    public var conditionAccuracyAfter: Double?
    public var conditionAccuracyStandardError: Double?

    public init(_ record: AuditRecord) {
        round = record.round
        status = record.status
        participants = record.participants.count
        evalLossBefore = record.evalLossBefore
        evalLossAfter = record.evalLossAfter
        evalLossStandardError = record.evalLossStandardError
        evalLossReleased = record.metricsReleased
        maxEpsilon = record.maxEpsilon
        maxEpsilonTrustingNoOne = record.clients.compactMap { $0.trust?.epsilonTrustingNoOne }.max()
        seconds = record.finished.timeIntervalSince(record.started)
        abortReason = record.abortReason
        conditionAccuracyBefore = record.conditionAccuracyBefore
        conditionAccuracyAfter = record.conditionAccuracyAfter
        conditionAccuracyStandardError = record.conditionAccuracyStandardError
    }

    /// `condition accuracy (DP-released, ± 0.120) 0.250 → 0.600`, or nil when the round has none.
    public var accuracyText: String? {
        guard conditionAccuracyBefore != nil || conditionAccuracyAfter != nil else { return nil }
        let label = conditionAccuracyStandardError.map { String(format: "DP-released, ± %.3f", $0) } ?? "DP-released"
        return "condition accuracy (\(label)) \(Self.format(conditionAccuracyBefore, "%.3f")) → "
            + Self.format(conditionAccuracyAfter, "%.3f")
    }

    /// A figure with `pattern`, or "-" when there is none.
    public static func format(_ value: Double?, _ pattern: String = "%.4f") -> String {
        value.map { String(format: pattern, $0) } ?? "-"
    }

    /// How the losses were obtained, for a label: "DP-released, ± 0.0310", "DP-released", or "sent in clear".
    public var lossLabel: String {
        guard evalLossReleased else { return "sent in clear" }
        return evalLossStandardError.map { String(format: "DP-released, ± %.4f", $0) } ?? "DP-released"
    }

    /// `round 3: committed, 2 participants, held-out loss (DP-released, ± 0.0310) 2.5000 → 2.4000, condition accuracy
    /// (DP-released, ± 0.120) 0.250 → 0.600, max ε 1.20, 12.5 s (reason)` (the accuracy only when released).
    public var line: String {
        let label = evalLossBefore == nil && evalLossAfter == nil ? "" : " (\(lossLabel))"
        let base = String(format: "round %llu: %@, %d participants, held-out loss%@ %@ → %@%@, max ε %@, %.1f s",
                          round, status, participants, label, Self.format(evalLossBefore), Self.format(evalLossAfter),
                          accuracyText.map { ", " + $0 } ?? "", Self.format(maxEpsilon, "%.2f"), seconds)
            + (maxEpsilonTrustingNoOne.map { String(format: " (max ε trusting no one %.2f)", $0) } ?? "")
        return abortReason.map { base + " (\($0))" } ?? base
    }

    enum CodingKeys: String, CodingKey {
        case round, status, participants, seconds
        case evalLossBefore = "eval_loss_before"
        case evalLossAfter = "eval_loss_after"
        case evalLossStandardError = "eval_loss_standard_error"
        case evalLossReleased = "eval_loss_released"
        case maxEpsilon = "max_epsilon"
        case maxEpsilonTrustingNoOne = "max_epsilon_trusting_no_one"
        case abortReason = "abort_reason"
        case conditionAccuracyBefore = "condition_accuracy_before"
        case conditionAccuracyAfter = "condition_accuracy_after"
        case conditionAccuracyStandardError = "condition_accuracy_standard_error"
    }

    /// Absent or non-finite figures are null; the abort reason appears only for an aborted round.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        func figure(_ value: Double?) -> Double? { value.flatMap { $0.isFinite ? $0 : nil } }
        try c.encode(round, forKey: .round)
        try c.encode(status, forKey: .status)
        try c.encode(participants, forKey: .participants)
        try c.encode(figure(seconds), forKey: .seconds)
        try c.encode(figure(evalLossBefore), forKey: .evalLossBefore)
        try c.encode(figure(evalLossAfter), forKey: .evalLossAfter)
        try c.encode(figure(evalLossStandardError), forKey: .evalLossStandardError)
        try c.encode(evalLossReleased, forKey: .evalLossReleased)
        try c.encode(figure(maxEpsilon), forKey: .maxEpsilon)
        try c.encodeIfPresent(figure(maxEpsilonTrustingNoOne), forKey: .maxEpsilonTrustingNoOne)
        try c.encodeIfPresent(abortReason, forKey: .abortReason)
        try c.encodeIfPresent(figure(conditionAccuracyBefore), forKey: .conditionAccuracyBefore)
        try c.encodeIfPresent(figure(conditionAccuracyAfter), forKey: .conditionAccuracyAfter)
        try c.encodeIfPresent(figure(conditionAccuracyStandardError), forKey: .conditionAccuracyStandardError)
    }
}
