import Audit
import FederationDemo
import Foundation
import Privacy
import Wire

/// One broken promise found after a fault: which check, and what it saw.
public struct InvariantViolation: Error, CustomStringConvertible, Equatable, Sendable {
    /// `audit`, `head`, `adapter`, `ledger` or `liveness`.
    public let check: String
    public let detail: String

    public init(_ check: String, _ detail: String) {
        self.check = check
        self.detail = detail
    }

    public var description: String { "[\(check)] \(detail)" }
}

/// The promises fault injection checks after every kill and restart (DESIGN.md, "Promises"; issue 14),
/// read from the state directories and the operator's commands, never from the processes' memory:
/// - `audit`: `conclave-coordinator audit --verify` passes;
/// - `head`: it passes with `--head` each client's kept head (no record a client saw was lost);
/// - `adapter`: every committed round's adapter file hashes to its record's `adapter_sha256`, and no
///   round recorded as aborted left an adapter behind;
/// - `ledger`: every round the coordinator saw a client accept or upload in is charged in that
///   client's ledger, and no ledger's ε is below the ε its client reported in a committed record.
public struct InvariantChecks {
    public let coordinator: CoordinatorPaths
    /// Each client's state directory, by name.
    public let clients: [String: URL]
    /// The coordinator's `--events` file.
    public let events: URL
    public let executables: FederationExecutables

    public init(coordinator: CoordinatorPaths, clients: [String: URL], events: URL, executables: FederationExecutables) {
        self.coordinator = coordinator
        self.clients = clients
        self.events = events
        self.executables = executables
    }

    /// Runs every check; returns what broke (empty: all held).
    public func run() -> [InvariantViolation] {
        var found = auditVerifies() + headsVerify()
        do {
            let records = try AuditLog.verify(url: coordinator.auditLog, publicKey: try AuditLog.verifyingKey(in: coordinator)).records
            found += adaptersMatch(records) + ledgersCoverUploads(records)
        } catch {
            found.append(InvariantViolation("audit", "the log cannot be read: \(error)"))
        }
        return found
    }

    /// `audit --verify --json` exits 0 and says verified.
    public func auditVerifies() -> [InvariantViolation] {
        let arguments = ["audit", "--state", coordinator.root.path, "--verify", "--json"]
        guard let result = try? CommandRun.run(executables.coordinator, arguments) else {
            return [InvariantViolation("audit", "cannot run conclave-coordinator audit")]
        }
        let verified = (try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])?["verified"] as? Bool
        guard result.status == 0, verified == true else {
            return [InvariantViolation("audit", "audit --verify exited \(result.status): \(result.stderr.prefix(400))")]
        }
        return []
    }

    /// `audit --verify --head FILE` passes for every client that keeps a head.
    public func headsVerify() -> [InvariantViolation] {
        var found: [InvariantViolation] = []
        for (name, directory) in clients.sorted(by: { $0.key < $1.key }) {
            let head = directory.appendingPathComponent("audit-head.json")
            guard FileManager.default.fileExists(atPath: head.path) else { continue }
            let arguments = ["audit", "--state", coordinator.root.path, "--verify", "--head", head.path]
            guard let result = try? CommandRun.run(executables.coordinator, arguments) else {
                found.append(InvariantViolation("head", "cannot run conclave-coordinator audit --head"))
                continue
            }
            if result.status != 0 {
                found.append(InvariantViolation("head", "\(name)'s kept head: audit --verify --head exited \(result.status): "
                                                + "\(result.stderr.prefix(400))"))
            }
        }
        return found
    }

    /// Every committed record's adapter is there and hashes to the record's `adapter_sha256`; no
    /// aborted round's adapter directory remains.
    public func adaptersMatch(_ records: [AuditRecord]) -> [InvariantViolation] {
        var found: [InvariantViolation] = []
        for record in records {
            let directory = coordinator.adapter(round: record.round)
            if record.status == "committed" {
                let file = directory.appendingPathComponent("adapter_model.safetensors")
                guard let hash = try? AdapterMath.fileSHA256(file) else {
                    found.append(InvariantViolation("adapter", "round \(record.round) is committed but \(file.path) cannot be read"))
                    continue
                }
                if hash != record.adapterSHA256 {
                    found.append(InvariantViolation("adapter", "round \(record.round): \(file.path) hashes to \(hash), its "
                                                    + "record says \(record.adapterSHA256)"))
                }
            } else if FileManager.default.fileExists(atPath: directory.path) {
                found.append(InvariantViolation("adapter", "round \(record.round) is recorded \(record.status) but its adapter "
                                                + "\(directory.path) remains"))
            }
        }
        return found
    }

    /// Each (client, round) the coordinator's events show accepted or uploaded has a ledger entry
    /// charged for that round; each client's ε in a committed record is at most its ledger's.
    public func ledgersCoverUploads(_ records: [AuditRecord]) -> [InvariantViolation] {
        var found: [InvariantViolation] = []
        let seen = CoordinatorEvents.read(events).filter { ["accepted", "uploaded"].contains($0.event) }
        for (name, directory) in clients.sorted(by: { $0.key < $1.key }) {
            let ledger: PrivacyLedger
            do { ledger = try PrivacyLedger(directory: directory) } catch {
                found.append(InvariantViolation("ledger", "\(name): the ledger cannot be read: \(error)"))
                continue
            }
            let charged = Set(ledger.entries.compactMap { Self.round(ofPurpose: $0.purpose) })
            let sent = Set(seen.filter { $0.client == name }.compactMap(\.round))
            for round in sent.subtracting(charged).sorted() {
                found.append(InvariantViolation("ledger", "\(name) took part in round \(round) (the coordinator's events) but "
                                                + "its ledger has no charge for it (\(ledger.entries.count) entries)"))
            }
            let reported = records.filter { $0.status == "committed" }.flatMap(\.clients).filter { $0.client == name }
            if let most = reported.map(\.epsilon).max(), ledger.spentEpsilon < most * (1 - 1e-9) {
                found.append(InvariantViolation("ledger", "\(name)'s ledger spent ε \(ledger.spentEpsilon) is below the ε \(most) "
                                                + "it reported in a committed round"))
            }
        }
        return found
    }

    /// The round a ledger entry was charged for: its purpose reads "round N at HOST:PORT".
    static func round(ofPurpose purpose: String) -> UInt64? {
        let words = purpose.split(separator: " ")
        guard words.count >= 2, words[0] == "round" else { return nil }
        return UInt64(words[1])
    }
}

/// The coordinator's `--events` lines, as far as the checks and the classification of kills need them.
public struct CoordinatorEvents {
    public let time: Date
    public let event: String
    public let round: UInt64?
    public let client: String?

    /// Every whole line of `url` (none when absent); lines that do not parse are skipped.
    public static func read(_ url: URL) -> [CoordinatorEvents] {
        guard let text = try? String(contentsOf: url, encoding: .utf8) else { return [] }
        let dates = ISO8601DateFormatter()
        dates.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return text.split(separator: "\n").compactMap { line in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let event = object["event"] as? String, let time = (object["time"] as? String).flatMap(dates.date) else { return nil }
            return CoordinatorEvents(time: time, event: event, round: (object["round"] as? NSNumber)?.uint64Value,
                                     client: object["client"] as? String)
        }
    }
}
