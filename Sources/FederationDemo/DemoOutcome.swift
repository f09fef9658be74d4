import Foundation
import Reports
import Wire

/// The canary client's exposure in one round, as its audit record carries it.
public struct CanaryExposure: Sendable, Equatable {
    public var client: String
    public var summary: CanaryExposureSummary

    public init(client: String, summary: CanaryExposureSummary) {
        self.client = client
        self.summary = summary
    }
}

/// How the demo went: each round, the audit chain, where the adapter and the state are. Printed as a
/// table (`text`) or, for `demo --json`, as JSON: `{"rounds": [{"round", "status", "participants",
/// "eval_loss_before", "eval_loss_after", "eval_loss_standard_error", "eval_loss_released", "max_epsilon",
/// "seconds", "abort_reason"?, "condition_accuracy_before"?, "condition_accuracy_after"?,
/// "condition_accuracy_standard_error"?, "canary_exposure"?:
/// {"client", "mean_bits", "max_bits", "space_size"}}], "audit_verified", "adapter", "state", "seconds"}`.
public struct DemoOutcome: Encodable, Sendable, Equatable {
    public struct Round: Encodable, Sendable, Equatable {
        public var summary: RoundSummary
        public var canaryExposure: CanaryExposure?

        public init(summary: RoundSummary, canaryExposure: CanaryExposure?) {
            self.summary = summary
            self.canaryExposure = canaryExposure
        }

        enum CodingKeys: String, CodingKey {
            case canaryExposure = "canary_exposure"
        }

        enum ExposureKeys: String, CodingKey {
            case client
            case meanBits = "mean_bits"
            case maxBits = "max_bits"
            case spaceSize = "space_size"
        }

        /// The summary's fields, and the exposure beside them.
        public func encode(to encoder: any Encoder) throws {
            try summary.encode(to: encoder)
            guard let exposure = canaryExposure else { return }
            var c = encoder.container(keyedBy: CodingKeys.self)
            var e = c.nestedContainer(keyedBy: ExposureKeys.self, forKey: .canaryExposure)
            try e.encode(exposure.client, forKey: .client)
            try e.encode(exposure.summary.meanBits, forKey: .meanBits)
            try e.encode(exposure.summary.maxBits, forKey: .maxBits)
            try e.encode(exposure.summary.spaceSize, forKey: .spaceSize)
        }
    }

    /// The first line of the audit log that does not verify, and why.
    public struct AuditFailure: Sendable, Equatable {
        public var record: Int
        public var reason: String

        public init(record: Int, reason: String) {
            self.record = record
            self.reason = reason
        }
    }

    public var rounds: [Round]
    /// One participant's held-out release of the last round that has one (its parameters label the table).
    public var release: HeldOutRelease?
    /// Records in the audit log.
    public var auditRecords: Int
    /// Nil when the whole chain verifies.
    public var auditFailure: AuditFailure?
    /// The final global adapter's folder (PEFT).
    public var adapter: String
    /// The coordinator's state directory.
    public var state: String
    /// How long the demo took.
    public var seconds: Double
    /// The public probe's assessments before and after (nil: no probe).
    public var probe: PublicProbe?

    public init(rounds: [Round], auditRecords: Int, auditFailure: AuditFailure?, adapter: String, state: String,
                seconds: Double, release: HeldOutRelease? = nil, probe: PublicProbe? = nil) {
        self.probe = probe
        self.rounds = rounds
        self.release = release
        self.auditRecords = auditRecords
        self.auditFailure = auditFailure
        self.adapter = adapter
        self.state = state
        self.seconds = seconds
    }

    public var auditVerified: Bool { auditFailure == nil }

    /// Whether the chain verifies and every round committed (the demo's exit status).
    public var succeeded: Bool { auditVerified && rounds.allSatisfy { $0.summary.status == "committed" } }

    enum CodingKeys: String, CodingKey {
        case rounds, adapter, state, seconds, probe
        case auditVerified = "audit_verified"
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(rounds, forKey: .rounds)
        try c.encodeIfPresent(probe, forKey: .probe)
        try c.encode(auditVerified, forKey: .auditVerified)
        try c.encode(adapter, forKey: .adapter)
        try c.encode(state, forKey: .state)
        try c.encode(seconds, forKey: .seconds)
    }

    /// The rounds table, the canary exposure per round (when a client planted canaries), the audit
    /// chain's verdict and where to look next. The held-out losses are the clients' DP releases
    /// (post-processed; ± the standard error of their noise), not exact figures.
    public var text: String {
        var lines = ["round  status     clients  held-out loss (DP-released) before → after   ± s.e.   max ε   seconds"]
        for s in rounds.map(\.summary) {
            lines.append(String(format: "%5llu  %@  %7d  %@ → %@  %@   %@  %7.1f", s.round,
                                s.status.padding(toLength: 9, withPad: " ", startingAt: 0), s.participants,
                                leftPadded(RoundSummary.format(s.evalLossBefore), 34),
                                leftPadded(RoundSummary.format(s.evalLossAfter), 7),
                                leftPadded(s.evalLossReleased ? RoundSummary.format(s.evalLossStandardError) : "clear", 7),
                                leftPadded(RoundSummary.format(s.maxEpsilon, "%.2f"), 6), s.seconds))
        }
        lines.append(releaseLine)
        lines += learningLines
        lines += accuracyLines
        lines += trustLines
        lines += probeLines
        lines += exposureLines
        lines.append("")
        lines.append("audit chain: " + (auditFailure.map { "FAILED at record \($0.record): \($0.reason)" }
                                        ?? "verified (\(auditRecords) records, Ed25519-signed, BLAKE2b-chained)"))
        lines.append("final global adapter (PEFT): \(adapter)")
        lines.append("coordinator state: \(state)")
        lines.append("  conclave-coordinator audit --state \(state)")
        lines.append(String(format: "demo took %.0f s", seconds))
        return lines.joined(separator: "\n")
    }

    private var exposureLines: [String] {
        let exposed = rounds.compactMap { round in round.canaryExposure.map { (round.summary.round, $0) } }
        guard let first = exposed.first else { return [] }
        return ["", "canary exposure on the global adapter each round received (bits; chance ≈ 1.44, at most "
                + String(format: "%.2f", log2(Double(first.1.summary.spaceSize))) + ")"]
            + exposed.sorted { $0.0 < $1.0 }.map { round, exposure in
                let s = exposure.summary
                return String(format: "%5llu  %@  mean %.2f  max %.2f  (%d canaries × %d, %@)", round, exposure.client,
                              s.meanBits, s.maxBits, s.canaries, s.repetitions, s.exact ? "exact" : "estimated")
            }
    }

    /// The DP-released held-out loss of the first committed round against the last one's: in a distributed round
    /// the clients score the global adapter they received, so the first is the base model and the last the adapter
    /// after every step but the last. No change in percent: with a few held-out notes per client the releases are
    /// mostly noise (a whole demo run printed "+inf%" from a release clipped to 0, and "+217.3%" while the exact public
    /// held-out loss fell 10.2%); the public held-out line is the precise figure.
    var learningLines: [String] {
        let released = rounds.map(\.summary).filter { $0.status == "committed" && $0.evalLossBefore != nil }
        guard let first = released.first, let last = released.last, last.round > first.round,
              let a = first.evalLossBefore, let b = last.evalLossBefore else { return [] }
        return ["", String(format: "held-out loss (DP-released, pooled over the clients): %.4f at round %llu → %.4f at round %llu "
                           + "(each ± its s.e. above)", a, first.round, b, last.round)]
    }

    /// The DP-released condition accuracy per round (the share of the clients' scored held-out notes whose greedy
    /// assessment named the note's condition, pooled over the clients, ± the noise's standard error), and the first
    /// committed round's "before" against the last one's "after" (in a distributed round both are the global adapter
    /// the clients received). Nothing when no client released one.
    var accuracyLines: [String] {
        let released = rounds.map(\.summary).filter { $0.status == "committed" && $0.accuracyText != nil }
        guard let first = released.first, let last = released.last else { return [] }
        var lines = ["", "condition accuracy (DP-released, pooled over the clients: the share of scored held-out notes whose "
                     + "greedy assessment names the note's condition)"]
        lines += released.map { String(format: "%5llu  ", $0.round) + ($0.accuracyText ?? "") }
        if let a = first.conditionAccuracyBefore, let b = last.conditionAccuracyAfter {
            lines.append(String(format: "condition accuracy: %.3f before round %llu → %.3f after round %llu (each ± its s.e. "
                                + "above)", a, first.round, b, last.round))
        }
        return lines
    }

    /// Distributed DP: the max ε column is each client's ledger under its trust assumption; beside it, the largest
    /// cumulative ε a client would have had it trusted no one (each round's own noise share alone).
    var trustLines: [String] {
        guard let last = rounds.map(\.summary).last(where: { $0.maxEpsilonTrustingNoOne != nil }),
              let alone = last.maxEpsilonTrustingNoOne else { return [] }
        return [String(format: "ε above is each client's under its own trust assumption (assume_honest); trusting no one, the "
                       + "largest would be %.2f after round %llu", alone, last.round)]
    }

    /// The public probe: each note's reference assessment, then the base model's and the global adapter's.
    var probeLines: [String] {
        guard let probe, !probe.notes.isEmpty else { return [] }
        var lines = ["", "public probe (fictional notes held by the coordinator; greedy assessment, base model → global "
                     + "adapter of round \(probe.adapterRound)):"]
        for note in probe.notes {
            lines += ["  " + note.title, "    author's:  " + note.reference, "    before:    " + note.before,
                      "    after:     " + note.after]
            if let condition = note.condition, let before = note.namedBefore, let after = note.namedAfter {
                lines.append("    names \(condition): \(before ? "yes" : "no") before, \(after ? "yes" : "no") after")
            }
        }
        let named = probe.notes.compactMap { note in note.namedBefore.flatMap { b in note.namedAfter.map { (b, $0) } } }
        if !named.isEmpty {
            lines.append("public probe: the assessment names the note's condition in \(named.filter(\.0).count) of \(named.count) "
                         + "notes before → \(named.filter(\.1).count) after (exact: public notes)")
        }
        if let held = probe.heldOut {
            lines.append(String(format: "public held-out loss (%d fictional notes no client holds, %d assessment tokens; exact): "
                                + "%.4f base model → %.4f global adapter of round %llu (%+.1f%%)", held.notes, held.tokens,
                                held.lossBefore, held.lossAfter, probe.adapterRound, held.changePercent))
        }
        return lines
    }

    /// What the held-out figures are: each client's per-record losses clipped to [0, L], summed with its
    /// record count, noised with the discrete Gaussian at noise multiplier z and charged to its ledger.
    private var releaseLine: String {
        guard let release = release else { return "held-out losses: no release in these rounds" }
        let sigma = release.sigma / Double(HeldOutRelease.gridScale)
        return String(format: "held-out losses: each client's per-record losses clipped to [0, %g] nats, summed with its record "
                      + "count and released with discrete Gaussian noise (z %g: σ %.2f records on the count, %.2f nats on each "
                      + "sum), charged to its ledger with the round", release.lossClip, release.noiseMultiplier, sigma,
                      sigma * release.lossClip)
    }

    private func leftPadded(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
    }
}
