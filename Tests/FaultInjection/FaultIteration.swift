import Audit
import CoordinatorService
import FederationDemo
import Foundation
import SystemIO

/// Running one iteration: arm, start a round, kill, restart, check, then a clean round, check again.
extension FaultFederation {
    /// The checks over this federation's state directories.
    public var checks: InvariantChecks {
        InvariantChecks(coordinator: federation.paths,
                        clients: Dictionary(uniqueKeysWithValues: clients.map { ($0, federation.directory(of: $0)) }),
                        events: eventsFile, executables: federation.executables)
    }

    /// Runs `plan`'s round with its kills, restarts what died, checks every promise, runs one clean
    /// round with every process restarted, and checks again.
    public func runIteration(_ plan: IterationPlan) -> IterationOutcome {
        let started = Date()
        var outcome = IterationOutcome(plan: plan, round: 0, status: "none", hits: [], missed: [], violations: [],
                                       cleanRoundSeconds: nil, seconds: 0)
        do {
            try arm(plan)
            outcome.round = try requestRound()
            try kill(plan, round: outcome.round, requested: Date(), into: &outcome)
            try restartTheDead()
        } catch {
            outcome.violations.append(InvariantViolation("liveness", "\(error)" + serveLogTail()))
        }
        outcome.violations += checks.run()
        if outcome.violations.isEmpty {
            do {
                outcome.cleanRoundSeconds = try cleanRound()
            } catch {
                outcome.violations.append(InvariantViolation("liveness", "the clean round after the faults: \(error)" + serveLogTail()))
            }
            outcome.violations += checks.run()
        }
        outcome.seconds = Date().timeIntervalSince(started)
        return outcome
    }

    /// Starts every process the plan arms (and restarts unarmed any armed before, in the plan's mode),
    /// then waits until every client is connected.
    func arm(_ plan: IterationPlan) throws {
        let points = Dictionary(plan.kills.compactMap { kill in kill.point.map { (kill.victim, $0) } }) { first, _ in first }
        if points[Self.coordinator] != nil || armed[Self.coordinator] != nil || secure != plan.secure
            || !(federation.server?.isRunning ?? false) {
            stop(Self.coordinator)
            try startCoordinator(secure: plan.secure, faultPoint: points[Self.coordinator])
        }
        for client in clients where points[client] != nil || armed[client] != nil || !(federation.clients[client]?.isRunning ?? false) {
            stop(client)
            try awaitGone(client)
            try startClient(client, faultPoint: points[client])
        }
        armed = points
        try federation.waitForConnections(clients.count, timeout: 60)
    }

    /// Asks for one round and returns its number. A coordinator armed at its in-flight mark dies before
    /// it answers (the mark is written as the request is carried out): then the round is the one that
    /// was next.
    func requestRound() throws -> UInt64 {
        let next = try federation.control.status().rounds.nextRound
        do {
            return try federation.control.startRounds(1).firstRound
        } catch {
            guard armed[Self.coordinator] != nil, let server = federation.server else { throw error }
            let deadline = Date().addingTimeInterval(10)
            while server.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
            guard !server.isRunning, server.terminationReason == .uncaughtSignal, server.terminationStatus == SIGKILL else {
                throw error
            }
            return next
        }
    }

    /// Fires the timed kills, restarts a coordinator that died (armed for its recovery when the plan
    /// says so), and waits until the round has ended and every armed process died or had its chance.
    func kill(_ plan: IterationPlan, round: UInt64, requested: Date, into outcome: inout IterationOutcome) throws {
        var timed = plan.kills.filter { $0.point == nil }.sorted { $0.delay < $1.delay }
        var fired: [(victim: String, at: Date)] = []
        var coordinatorRestarted = false, recoveryArmed = false, ended: Date?
        let deadline = Date().addingTimeInterval(240)
        while Date() < deadline {
            while let next = timed.first, Date().timeIntervalSince(requested) >= next.delay {
                timed.removeFirst()
                if let process = process(next.victim), process.isRunning {
                    federation.kill9(process)
                    fired.append((next.victim, Date()))
                }
            }
            collectHits(into: &outcome)
            if !(federation.server?.isRunning ?? false) {
                let again = plan.killRecovery && !recoveryArmed && InFlightMarkProbe.exists(federation.paths)
                recoveryArmed = recoveryArmed || again
                armed[Self.coordinator] = again ? "coordinator-recovery-after-abort-append" : nil
                coordinatorRestarted = true
                do {
                    try startCoordinator(secure: plan.secure, faultPoint: armed[Self.coordinator])
                } catch where again {
                    continue  // it died in its recovery, as armed: the next pass counts the hit and starts it again
                }
                continue
            }
            if ended == nil, roundEnded(round, afterRestart: coordinatorRestarted) { ended = Date() }
            // Points after the commit (a client keeping the global adapter) come a moment after the record.
            if let ended, timed.isEmpty, armed.isEmpty || Date().timeIntervalSince(ended) > 5 { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        guard ended != nil else { throw InvariantViolation("liveness", "round \(round) did not end within 240 s") }
        outcome.missed = armed.values.sorted()
        // An armed process that had no chance must not die in the clean round: restarted unarmed.
        for victim in armed.keys { stop(victim) }
        armed = [:]
        outcome.status = roundStatus(round)
        outcome.hits += fired.map { classify(victim: $0.victim, at: $0.at, round: round) }
    }

    /// Armed processes that have died by their own SIGKILL: their points were hit.
    private func collectHits(into outcome: inout IterationOutcome) {
        for (victim, point) in armed {
            guard let process = process(victim), !process.isRunning else { continue }
            if process.terminationReason == .uncaughtSignal && process.terminationStatus == SIGKILL {
                outcome.hits.append("point:\(point)")
            } else {
                outcome.violations.append(InvariantViolation("liveness", "\(victim), armed at \(point), exited with status "
                                                             + "\(process.terminationStatus) instead" + serveLogTail()))
            }
            armed[victim] = nil
        }
    }

    /// The round has its audit record, or (the coordinator having restarted) the coordinator is idle
    /// with nothing queued: a round killed before its mark was written never began.
    private func roundEnded(_ round: UInt64, afterRestart: Bool) -> Bool {
        if roundStatus(round) != "none" { return true }
        guard afterRestart, let status = try? federation.control.status(timeout: 2) else { return false }
        return status.rounds.inFlight == nil && status.rounds.queuedRounds == 0
    }

    /// How the audit log ended `round`: its record's status, or "none".
    func roundStatus(_ round: UInt64) -> String {
        let key = try? AuditLog.verifyingKey(in: federation.paths)
        let records = key.flatMap { try? AuditLog.verify(url: federation.paths.auditLog, publicKey: $0).records } ?? []
        return records.first { $0.round == round }?.status ?? "none"
    }

    /// A timed kill's place in the round: the last of the round's coordinator events before it (for a
    /// client, the last that names it, or the round's end).
    func classify(victim: String, at time: Date, round: UInt64) -> String {
        let events = CoordinatorEvents.read(eventsFile).filter { $0.round == round && $0.time <= time }
        let role = victim == Self.coordinator ? "coordinator" : "client"
        let relevant = victim == Self.coordinator ? events
            : events.filter { $0.client == victim || ["committed", "aborted"].contains($0.event) }
        return "random:\(role):" + (relevant.last.map { "after-\($0.event)" } ?? "before-round")
    }

    /// One round with every process up and unarmed: it must commit. Returns its seconds (request to record).
    func cleanRound() throws -> Double {
        try restartTheDead()
        let started = Date()
        let queued = try federation.control.startRounds(1)
        let records = try federation.control.waitForRounds(first: queued.firstRound, count: 1, timeout: 180)
        guard let record = records.first, record.status == "committed" else {
            throw InvariantViolation("liveness", "round \(queued.firstRound) ended \(records.first?.status ?? "unrecorded"): "
                                     + (records.first?.abortReason ?? ""))
        }
        return Date().timeIntervalSince(started)
    }

    /// The last lines of serve's standard error, for a violation's detail.
    func serveLogTail() -> String {
        let lines = federation.log("serve.stderr.log").split(separator: "\n").suffix(6)
        return lines.isEmpty ? "" : "\n  serve.stderr.log ends:\n    " + lines.joined(separator: "\n    ")
    }
}

/// Whether the coordinator's state directory holds the mark of a round in flight (a restart recovers it).
enum InFlightMarkProbe {
    static func exists(_ paths: CoordinatorPaths) -> Bool {
        FileManager.default.fileExists(atPath: paths.roundInFlight.path)
    }
}
