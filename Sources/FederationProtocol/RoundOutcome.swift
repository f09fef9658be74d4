import Foundation
import Privacy
import Wire

/// One client's update as the coordinator received it: the change it made to the global adapter
/// (local − global) and its figures.
public struct ReceivedUpdate: Sendable {
    public var delta: AdapterTensors
    public var metrics: ClientRoundMetrics
    public init(delta: AdapterTensors, metrics: ClientRoundMetrics) {
        self.delta = delta
        self.metrics = metrics
    }
}

/// How a round ended, for the driver to aggregate (when committed), persist and audit.
public struct RoundOutcome: Sendable {
    public var round: UInt64
    public var started: Date
    public var finished: Date
    public var cohort: [String]
    /// Participants' updates, in client-id order.
    public var updates: [(client: String, update: ReceivedUpdate)]
    public var declines: [ClientReason]
    public var dropouts: [ClientReason]
    /// Nil when the round commits.
    public var abortReason: String?
    /// With secure aggregation: the unmasked sum instead of `updates` (which is then empty).
    public var secure: SecureRoundResult? = nil
    /// A client-level round's sampling and the federation's ε after it (charged, committed or not).
    public var clientLevel: ClientLevelRoundFacts? = nil
    public var isCommitted: Bool { abortReason == nil }

    /// The participants' figures, as the audit record lists them: the survivors' of a secure round,
    /// the uploaders' of a plain one (none when the round aborted).
    public var participantMetrics: [ClientRoundMetrics] { secure?.metrics ?? updates.map(\.update.metrics) }
}

/// A client-level round as the coordinator sampled and charged it, before anyone was invited: public values
/// and the federation's accountant's figures, for the fixed denominator and the audit record.
public struct ClientLevelRoundFacts: Sendable, Equatable {
    /// N: the registered clients the sample was drawn from (every one counts, connected or not).
    public var population: Int
    /// How many the Poisson sample drew, and how many of those were connected and invited (the cohort).
    public var sampled: Int
    /// q and z of the plan, and this round's S (the plan's, or adaptive clipping's current one).
    public var samplingRate: Double
    public var noiseMultiplier: Double
    public var clipNorm: Double
    /// Adaptive clipping's parameters when the policy has it (the round's vectors then carry the count coordinate).
    public var adaptiveClipping: ClientLevelDP.AdaptiveClipping?
    /// The federation's client-level ε after this round's charge, at δ, and its budget.
    public var epsilon: Double
    public var delta: Double
    public var epsilonBudget: Double
    /// The rounds the accountant has charged, this one included.
    public var roundsCharged: Int

    public init(population: Int, sampled: Int, samplingRate: Double, noiseMultiplier: Double, clipNorm: Double, epsilon: Double,
                delta: Double, epsilonBudget: Double, roundsCharged: Int, adaptiveClipping: ClientLevelDP.AdaptiveClipping? = nil) {
        self.adaptiveClipping = adaptiveClipping
        self.population = population
        self.sampled = sampled
        self.samplingRate = samplingRate
        self.noiseMultiplier = noiseMultiplier
        self.clipNorm = clipNorm
        self.epsilon = epsilon
        self.delta = delta
        self.epsilonBudget = epsilonBudget
        self.roundsCharged = roundsCharged
    }

    /// q·N: the fixed denominator, the expected cohort (public and data-independent).
    public var expectedCohort: Double { samplingRate * Double(population) }
    /// σ_b of adaptive clipping, which the invitation's plan carries (nil without it).
    public var countNoiseMultiplier: Double? { adaptiveClipping?.countNoiseMultiplier }
}

/// How the driver's work on a finished round ended: committed (aggregated, adapter written, audit
/// record appended), or aborted, by the engine or because that work failed.
public enum RoundVerdict: Sendable, Equatable {
    case committed
    case aborted(reason: String)

    public var isCommitted: Bool { self == .committed }

    /// What `RoundResult.reason` and the audit log say: "committed", or why the round aborted.
    public var reason: String {
        switch self {
        case .committed: return "committed"
        case let .aborted(reason): return reason
        }
    }
}

/// The summary figures of a round's audit record: the held-out losses over the participants'
/// DP releases (`ReleasedLoss`, post-processing; nil without participants or a positive released
/// count) with their standard error, and the largest ε a participant has spent (nil without participants).
public struct RoundFigures: Sendable, Equatable {
    public var evalLossBefore: Double?
    public var evalLossAfter: Double?
    public var evalLossStandardError: Double?
    public var maxEpsilon: Double?
    /// The condition accuracy before and after over the participants that released one (`ReleasedAccuracy`,
    /// post-processing; nil when none did or the released count is not positive), with its standard error.
    public var conditionAccuracy: ReleasedAccuracy?

    public init(participants metrics: [ClientRoundMetrics]) {
        conditionAccuracy = ReleasedAccuracy(metrics.compactMap(\.conditionAccuracy))
        let released = ReleasedLoss(metrics.compactMap(\.heldOut))
        evalLossBefore = released?.before
        evalLossAfter = released?.after
        evalLossStandardError = released?.standardError
        maxEpsilon = metrics.map(\.epsilon).max()
    }
}
