import Audit
import FederationProtocol
import Foundation
import ModelFormats
import SecureCrypto
import SystemIO
import Wire

/// What the state directory says about past rounds when the coordinator starts: the audit log's
/// rounds, and the round a crash left marked in flight.
struct RoundHistory {
    /// The highest round number used (0: none), in the audit log or by a round cut short.
    var lastRound: UInt64 = 0
    /// The last committed round (0: none): its adapter is the global one.
    var lastCommitted: UInt64 = 0
    /// How each recorded round ended.
    var verdicts: [UInt64: RoundVerdict] = [:]
    /// Adaptive clipping: the S the last committed round that moved it set for the next (nil: none did).
    var adaptiveClipNorm: Double?

    /// Reads the audit log, refusing to extend a chain that does not verify.
    init(paths: CoordinatorPaths, signer: SigningKeyPair) throws {
        let verification = try AuditLog.verify(url: paths.auditLog, publicKey: signer.publicKey)
        if let failure = verification.failure {
            if try AuditLog.endsInTornWrite(url: paths.auditLog, publicKey: signer.publicKey, failingLine: failure.record) {
                throw FederationError.audit(record: failure.record, "\(failure.reason); the log ends in a write torn by a crash: "
                                            + "run 'conclave-coordinator audit --state \(paths.root.path) --repair' (it keeps a "
                                            + "copy of what it removes), then start serve again")
            }
            throw FederationError.audit(record: failure.record, "\(failure.reason); refusing to extend a broken chain "
                                        + "(inspect with 'conclave-coordinator audit --state \(paths.root.path)')")
        }
        for record in verification.records {
            lastRound = max(lastRound, record.round)
            // Only a committed round's record carries the next S (its aggregation computed it).
            if let next = record.clientLevel?.adaptiveClipping?.nextClipNorm { adaptiveClipNorm = next }
            if record.status == "committed" {
                lastCommitted = max(lastCommitted, record.round)
                verdicts[record.round] = .committed
            } else {
                verdicts[record.round] = .aborted(reason: record.abortReason ?? record.status)
            }
        }
    }

    /// The plan a round cut short was invited with: a client-level round's S and σ_b from its marked record.
    static func plan(policy: RoundPolicy, round: UInt64, clientLevel: ClientLevelRecord?) -> TrainingPlan {
        let scheduled = policy.plan(round: round)
        guard let clientLevel else { return scheduled }
        return scheduled.clientLevelRound(clipNorm: clientLevel.clipNorm,
                                          countNoiseMultiplier: clientLevel.adaptiveClipping?.countNoiseMultiplier)
    }

    /// Ends the round a crash left marked in flight: unless it committed, its uncommitted adapter is
    /// removed; unless the audit log already has it, it is recorded as aborted; then the mark is
    /// removed. Its number is not used again.
    mutating func recoverRoundInFlight(paths: CoordinatorPaths, configuration: CoordinatorConfiguration,
                                       signer: SigningKeyPair, adapterSHA256: String, log: OperatorLog) throws {
        guard let inFlight = try InFlightMark.read(paths) else { return }
        // An adapter written for the round but never committed is not the global adapter. Removed first and
        // whenever the mark is still there: a recovery killed between its record and this removal used to
        // leave it for good (fault injection, issue 14).
        if verdicts[inFlight.round]?.isCommitted != true {
            try? FileManager.default.removeItem(at: paths.adapter(round: inFlight.round))
        }
        if verdicts[inFlight.round] == nil {
            let reason = "the coordinator stopped while the round was in flight"
            let policy = configuration.rounds
            var record = AuditRecord(status: "aborted", round: inFlight.round, started: inFlight.started, finished: Date(),
                                     cohort: inFlight.cohort, participants: [], declines: [], dropouts: [],
                                     aggregation: policy.aggregation.rawValue, secureAggregation: policy.secureAggregation,
                                     plan: Self.plan(policy: policy, round: inFlight.round, clientLevel: inFlight.clientLevel),
                                     clients: [], maxEpsilon: nil, evalLossBefore: nil,
                                     evalLossAfter: nil, adapterSHA256: adapterSHA256, abortReason: reason, previousHash: "",
                                     aggregator: policy.aggregator.rawValue,
                                     trimFraction: policy.aggregator == .trimmedMean
                                         ? policy.trimFraction ?? RoundPolicy.defaultTrimFraction : nil)
            record.clientLevel = inFlight.clientLevel  // charged before its sample: recorded as every client-level round
            try AuditLog(paths: paths).append(record, signer: signer)
            FaultPoint.reach("coordinator-recovery-after-abort-append")
            verdicts[inFlight.round] = .aborted(reason: reason)
            log.write("round \(inFlight.round): aborted on restart (\(reason)); recorded in the audit log")
        }
        lastRound = max(lastRound, inFlight.round)
        try? FileManager.default.removeItem(at: paths.roundInFlight)
    }
}

/// The mark of the round in flight, written before its invitations leave and removed once it is
/// audited: found at start, it names a round a crash cut short.
struct InFlightMark: Codable {
    var round: UInt64
    var started: Date
    var cohort: [String]
    /// A client-level round's sampling and charge, for the record a restart writes (nil otherwise, and in older marks).
    var clientLevel: ClientLevelRecord?

    func write(_ paths: CoordinatorPaths) throws {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        try writeFileAtomically(try encoder.encode(self), to: paths.roundInFlight, permissions: 0o600)
    }

    static func read(_ paths: CoordinatorPaths) throws -> InFlightMark? {
        guard let data = FileManager.default.contents(atPath: paths.roundInFlight.path) else { return nil }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do {
            return try decoder.decode(InFlightMark.self, from: data)
        } catch {
            throw FederationError.state(path: paths.roundInFlight.path, "malformed: \(error)")
        }
    }
}

extension CoordinatorServer {
    /// The global adapter: the last committed round's, or the initial one (made once, then kept).
    static func loadGlobalAdapter(round lastCommitted: UInt64, paths: CoordinatorPaths, layout: AdapterLayout,
                                  baseModel: String) throws -> GlobalAdapter {
        let directory = paths.adapter(round: lastCommitted)
        let file = directory.appendingPathComponent("adapter_model.safetensors")
        let tensors: AdapterTensors
        if FileManager.default.fileExists(atPath: file.path) {
            tensors = try PEFTAdapter(directory: directory).tensors.mapValues(\.values)
        } else if lastCommitted == 0 {
            tensors = initialAdapter(layout: layout)
            try layout.write(tensors, to: directory, baseModel: baseModel)
        } else {
            throw FederationError.state(path: directory.path, "the adapter of committed round \(lastCommitted) is missing")
        }
        try layout.check(tensors, from: directory.path)
        return GlobalAdapter(round: lastCommitted, tensors: tensors, digest: AdapterMath.digest(tensors),
                             fileSHA256: try AdapterMath.fileSHA256(file))
    }

    /// PEFT's initialisation (A Kaiming-uniform, B zero), from a fresh random seed: the starting
    /// point is public and carries no data.
    static func initialAdapter(layout: AdapterLayout) -> AdapterTensors {
        var tensors: AdapterTensors = [:]
        for (name, shape) in layout.shapes {
            let count = shape.reduce(1, *)
            if name.hasSuffix(".lora_A.weight") {
                let bound = 1 / Float(shape[1]).squareRoot()
                tensors[name] = SecureRandom.unitDoubles(count: count).map { Float($0 * 2 - 1) * bound }
            } else {
                tensors[name] = [Float](repeating: 0, count: count)
            }
        }
        return tensors
    }
}
