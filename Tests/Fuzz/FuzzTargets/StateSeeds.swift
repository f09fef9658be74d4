import Foundation
import Wire
import Audit
import Privacy
import CoordinatorService

enum StateSeeds {
    static let client = """
        {"model": "../models/m.gguf", "data": "/var/lib/conclave/notes.jsonl", "eval_data": "notes.heldout.jsonl",
         "threads": 2, "policy": {"max_epsilon": 8.0, "delta": 1e-5, "max_steps_per_round": 100,
         "require_privacy": true, "privacy_unit": "record"},
         "canaries": {"count": 5, "digits": 3, "repetitions": 4, "phrase": "My account number is"}}
        """
    static let coordinator = """
        {"model": "../models/m.gguf", "listen": "0.0.0.0", "rounds": {"min_clients": 2, "max_clients": 10, "fraction": 1.0,
         "aggregation": "fedavg", "secure_aggregation": true, "invite_timeout": 60, "round_timeout": 1800,
         "wait_for_clients": 300, "plan": {"steps": 20, "learning_rate": 0.002, "sampling_rate": 0.02,
         "noise_multiplier": 1.0, "clip_norm": 1.0, "delta": 1e-5, "max_length": 512, "rank": 8, "alpha": 16,
         "targets": ["q_proj", "k_proj", "v_proj", "o_proj"], "privacy_unit": "record"}}, "server_learning_rate": 0.01}
        """

    /// Issue 17: a client-level (DP-FedAvg) coordinator, so that campaigns start inside its checks.
    static let clientLevelCoordinator = """
        {"model": "../models/m.gguf", "rounds": {"min_clients": 5, "max_clients": 200, "fraction": 1.0,
         "aggregation": "fedavg", "secure_aggregation": true, "invite_timeout": 60, "round_timeout": 900,
         "wait_for_clients": 300, "client_epsilon_budget": 8,
         "adaptive_clipping": {"target_quantile": 0.5, "learning_rate": 0.2, "count_noise_multiplier": 5},
         "plan": {"steps": 10, "learning_rate": 0.0005,
         "sampling_rate": 0.05, "noise_multiplier": 1.0, "clip_norm": 0.05, "delta": 1e-5, "max_length": 512, "rank": 8,
         "alpha": 16, "targets": ["q_proj", "v_proj"], "privacy_unit": "client", "noise_placement": "distributed",
         "client_sampling_rate": 0.1}}}
        """

    /// The first byte picks the file (`StateFileTargets.Kind`); the files are written by the product's
    /// own writers where it has them.
    static func configuration() throws -> [String: Data] {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("conclave-seeds-\(getpid())")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        func kind(_ kind: StateFileTargets.Kind, _ body: Data) -> Data { Data([kind.rawValue]) + body }
        let settingsFile = scratch.appendingPathComponent("settings.json")
        try CoordinatorSettings(name: "federation", host: "coordinator.example", nextSerial: 4,
                                created: Date(timeIntervalSince1970: 1_800_000_000)).save(to: settingsFile)
        let ledger = try PrivacyLedger(directory: scratch.appendingPathComponent("ledger"),
                                       creatingWith: PrivacyBudget(epsilon: 8, delta: 1e-5, accountant: .rdp))
        var registry = try ClientRegistry(file: scratch.appendingPathComponent("clients.json"))
        try registry.enroll(id: "clinic-1", fingerprint: String(repeating: "ab", count: 32), serial: 2,
                            notAfter: Date(timeIntervalSince1970: 1_900_000_000), now: Date(timeIntervalSince1970: 1_800_000_000))
        try registry.enroll(id: "clinic-2", fingerprint: String(repeating: "cd", count: 32), serial: 3,
                            notAfter: Date(timeIntervalSince1970: 1_900_000_000), now: Date(timeIntervalSince1970: 1_800_000_000))
        _ = try registry.revoke(id: "clinic-2", now: Date(timeIntervalSince1970: 1_800_000_100))
        try registry.save()
        return [
            "client.json": kind(.client, Data(client.utf8)),
            "coordinator.json": kind(.coordinator, Data(coordinator.utf8)),
            "coordinator-client-level.json": kind(.coordinator, Data(clientLevelCoordinator.utf8)),
            "settings.json": kind(.settings, try Data(contentsOf: settingsFile)),
            "ledger.json": kind(.ledger, try Data(contentsOf: ledger.fileURL)),
            "registry.json": kind(.registry, try Data(contentsOf: scratch.appendingPathComponent("clients.json"))),
            "control-start.json": kind(.control, try JSONEncoder().encode(ControlRequest.start(count: 3))),
            "control-status.json": kind(.control, try JSONEncoder().encode(ControlRequest.status)),
        ]
    }

    /// A log of two records (a committed round and an aborted one) signed by `SecureSeeds.identity(9)`.
    static func audit() throws -> [String: Data] {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("conclave-seeds-audit-\(getpid())")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let log = AuditLog(url: scratch.appendingPathComponent("audit.jsonl"))
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        for round in [UInt64(1), 2] {
            let committed = round == 1
            let record = AuditRecord(
                status: committed ? "committed" : "aborted", round: round, started: start, finished: start + 60,
                cohort: ["clinic-1", "clinic-2"], participants: committed ? ["clinic-1", "clinic-2"] : [],
                declines: committed ? [] : [ClientReason(client: "clinic-2", reason: "budget")],
                dropouts: committed ? [] : [ClientReason(client: "clinic-1", reason: "timeout")],
                aggregation: "fedavg", secureAggregation: true, plan: WireSeeds.plan, clients: [],
                maxEpsilon: committed ? 1.5 : nil, evalLossBefore: 2.5, evalLossAfter: committed ? 2.25 : nil,
                adapterSHA256: String(repeating: "ef", count: 32), abortReason: committed ? nil : "too few clients",
                previousHash: "")
            _ = try log.append(record, signer: SecureSeeds.identity(9))
        }
        return ["two-records.jsonl": try Data(contentsOf: log.url)]
    }
}
