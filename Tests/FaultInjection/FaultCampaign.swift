import Audit
import CoordinatorService
import FederationDemo
import Foundation
import SystemIO

/// One kill of an iteration: a process, and where it dies: at a named `FaultPoint` (armed in its
/// environment when it is started), or `delay` seconds after the round is requested (SIGKILL from here).
public struct PlannedKill: Sendable, CustomStringConvertible {
    /// "coordinator" or a client's name.
    public var victim: String
    /// The armed fault point; nil for a kill after `delay`.
    public var point: String?
    public var delay: Double

    public init(victim: String, point: String?, delay: Double) {
        self.victim = victim
        self.point = point
        self.delay = delay
    }

    public var description: String {
        point.map { "\(victim) at \($0)" } ?? String(format: "\(victim) after %.2f s", delay)
    }
}

/// One iteration's plan: the round's mode and its kills.
public struct IterationPlan: Sendable, CustomStringConvertible {
    public var secure: Bool
    public var kills: [PlannedKill]
    /// Whether a coordinator that dies in the round is restarted armed to die again in its recovery.
    public var killRecovery: Bool

    public init(secure: Bool, kills: [PlannedKill], killRecovery: Bool) {
        self.secure = secure
        self.kills = kills
        self.killRecovery = killRecovery
    }

    public var description: String {
        "\(secure ? "secure" : "plain") round, " + kills.map(\.description).joined(separator: ", ")
            + (killRecovery ? ", and the coordinator again in its recovery" : "")
    }

    static let coordinatorPoints = FaultPoint.names.filter { $0.hasPrefix("coordinator-") && !$0.contains("recovery") }
    static let clientPoints = FaultPoint.names.filter { $0.hasPrefix("client-") }

    /// A random plan (the system's generator: no seed; each plan is printed with its outcome): the
    /// coordinator with probability ½, up to two clients, at least one victim; each at a named point
    /// with probability ½, otherwise after a delay uniform in [0, `roundSeconds` × 1.2].
    public static func random(clients: [String], roundSeconds: (Bool) -> Double) -> IterationPlan {
        var generator = SystemRandomNumberGenerator()
        let secure = Bool.random(using: &generator)
        var victims = Array(clients.shuffled(using: &generator).prefix(Int.random(in: 0...2, using: &generator)))
        if Bool.random(using: &generator) || victims.isEmpty { victims.insert(FaultFederation.coordinator, at: 0) }
        let kills = victims.map { victim -> PlannedKill in
            let points = victim == FaultFederation.coordinator ? coordinatorPoints : clientPoints
            if Bool.random(using: &generator) {
                return PlannedKill(victim: victim, point: points.randomElement(using: &generator), delay: 0)
            }
            return PlannedKill(victim: victim, point: nil,
                               delay: Double.random(in: 0...(roundSeconds(secure) * 1.2), using: &generator))
        }
        return IterationPlan(secure: secure, kills: kills, killRecovery: Bool.random(using: &generator))
    }
}

/// What one iteration did and found.
public struct IterationOutcome: Sendable {
    public var plan: IterationPlan
    /// The round the kills hit, and how the audit log ended it ("committed", "aborted", or "none" when
    /// the coordinator died before it began).
    public var round: UInt64
    public var status: String
    /// The kill points hit: `point:NAME` for a named point, `random:ROLE:after-EVENT` for a timed kill
    /// (EVENT: the last of the round's coordinator events before it, for that client when a client).
    public var hits: [String]
    /// Named points armed and not reached (the round ended another way).
    public var missed: [String]
    public var violations: [InvariantViolation]
    /// Seconds of the clean round after the restart (nil when it did not commit).
    public var cleanRoundSeconds: Double?
    public var seconds: Double
}

/// The figures of many iterations.
public struct CampaignSummary: Sendable {
    public var iterations = 0
    public var secureIterations = 0
    public var plainIterations = 0
    /// Kill points hit, by label (`point:NAME`, `random:ROLE:after-EVENT`).
    public var hits: [String: Int] = [:]
    /// Named points armed and not reached.
    public var missed: [String: Int] = [:]
    /// How the audit log ended the rounds the kills hit.
    public var killedRoundStatuses: [String: Int] = [:]
    /// Every violation, with its iteration (1-based) and plan.
    public var violations: [(iteration: Int, plan: String, violation: InvariantViolation)] = []
    /// Seconds of each clean round (request to record), secure and plain.
    public var cleanRoundSeconds: [Bool: [Double]] = [:]
    public var seconds = 0.0

    public init() {}

    public mutating func add(_ outcome: IterationOutcome) {
        iterations += 1
        if outcome.plan.secure { secureIterations += 1 } else { plainIterations += 1 }
        for hit in outcome.hits { hits[hit, default: 0] += 1 }
        for point in outcome.missed { missed[point, default: 0] += 1 }
        killedRoundStatuses[outcome.status, default: 0] += 1
        violations += outcome.violations.map { (iterations, outcome.plan.description, $0) }
        if let clean = outcome.cleanRoundSeconds { cleanRoundSeconds[outcome.plan.secure, default: []].append(clean) }
        seconds += outcome.seconds
    }

    /// The median clean round of a mode so far (`fallback` before any): the scale of the timed kills.
    public func roundSeconds(secure: Bool, fallback: Double = 4) -> Double {
        let sorted = (cleanRoundSeconds[secure] ?? []).suffix(9).sorted()
        return sorted.isEmpty ? fallback : sorted[sorted.count / 2]
    }

    /// Named points hit at least once, of all `FaultPoint.names`.
    public var namedPointsHit: [String] {
        FaultPoint.names.filter { hits["point:\($0)", default: 0] > 0 }
    }
}

/// Runs `iterations` random iterations, on a federation from `make` (its number, from 1) replaced by a
/// fresh one every `freshEvery` iterations (each charge composes the client's whole ledger, so a long
/// history slows every round; see RESULTS.md), telling `progress` after each. Each federation is
/// started here and stopped when it is replaced or the campaign ends.
public func runFaultCampaign(iterations: Int, freshEvery: Int, stopOnViolation: Bool = false,
                             make: (Int) throws -> FaultFederation,
                             progress: (Int, IterationOutcome, CampaignSummary) -> Void) throws -> CampaignSummary {
    var summary = CampaignSummary()
    var federation: FaultFederation?
    defer { federation?.stopAll() }
    for iteration in 1...iterations {
        if federation == nil || (iteration - 1) % freshEvery == 0 {
            federation?.stopAll()
            let next = try make((iteration - 1) / freshEvery + 1)
            federation = next
            try next.startCoordinator(secure: false)
            for client in next.clients { try next.startClient(client) }
            try next.federation.waitForConnections(next.clients.count, timeout: 60)
        }
        guard let current = federation else { break }
        let plan = IterationPlan.random(clients: current.clients) { summary.roundSeconds(secure: $0) }
        let outcome = current.runIteration(plan)
        summary.add(outcome)
        progress(iteration, outcome, summary)
        if stopOnViolation && !outcome.violations.isEmpty { break }
    }
    return summary
}
