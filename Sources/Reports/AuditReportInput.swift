import Audit
import Foundation
import ModelFormats
import SecureCrypto
import Wire

/// What the report states about the audit log's signed hash chain.
public enum AuditChainStatus: Sendable, Equatable {
    /// Every line verified under `publicKey` (hex).
    case verified(records: Int, publicKey: String)
    /// Line `record` (1-based) is the first that fails, for `reason`.
    case failed(record: Int, reason: String)
    /// The chain could not be checked at all (no key, unreadable log), for `reason`.
    case unchecked(reason: String)

    /// The status `AuditLog.verify` found under `publicKey`.
    public init(_ verification: AuditVerification, publicKey: SigningPublicKey) {
        if let failure = verification.failure {
            self = .failed(record: failure.record, reason: failure.reason)
        } else {
            self = .verified(records: verification.records.count, publicKey: Hex.encode(publicKey.bytes))
        }
    }

    /// True only for `.verified`.
    public var isVerified: Bool {
        if case .verified = self { return true }
        return false
    }
}

/// The adapter's shape and the base model it adapts, as read from a committed global adapter.
public struct AdapterShape: Sendable, Equatable {
    /// `base_model_name_or_path` of `adapter_config.json`, when recorded.
    public var baseModel: String?
    /// LoRA rank r.
    public var rank: Int
    /// LoRA alpha (scaling alpha / r).
    public var alpha: Double
    /// The adapted projections.
    public var targets: [String]
    /// Tensors in `adapter_model.safetensors` and their total number of values (trainable parameters).
    public var tensorCount: Int
    public var parameterCount: Int
    /// The round whose adapter this is.
    public var round: UInt64

    public init(baseModel: String?, rank: Int, alpha: Double, targets: [String], tensorCount: Int, parameterCount: Int,
                round: UInt64) {
        self.baseModel = baseModel
        self.rank = rank
        self.alpha = alpha
        self.targets = targets
        self.tensorCount = tensorCount
        self.parameterCount = parameterCount
        self.round = round
    }
}

/// Everything the auditor's report is drawn from. `AuditReport.html` is a pure function of it;
/// `AuditReport.load(stateDirectory:)` gathers it from a coordinator's state directory.
public struct AuditReportInput: Sendable {
    /// The records as read from the log, in file order (including any after a failed line).
    public var records: [AuditRecord]
    /// The chain's verification result.
    public var chain: AuditChainStatus
    /// The federation's settings, when `coordinator.json` could be read.
    public var settings: CoordinatorSettings?
    /// The latest committed adapter's shape, when it could be read.
    public var adapter: AdapterShape?
    /// What could not be read or does not add up while gathering, one sentence each; shown at the top.
    /// `AuditReport.problems(_:)` adds the problems found in the records themselves.
    public var loadProblems: [String]
    /// The state directory the input came from, for the page's heading.
    public var source: String?
    /// When the report was made (UTC), shown in the footer; nil leaves it out.
    public var generated: Date?
    /// The demo's public probe, when the state directory keeps one (`PublicProbe.fileName`).
    public var probe: PublicProbe?

    public init(records: [AuditRecord], chain: AuditChainStatus, settings: CoordinatorSettings? = nil,
                adapter: AdapterShape? = nil, loadProblems: [String] = [], source: String? = nil, generated: Date? = nil,
                probe: PublicProbe? = nil) {
        self.probe = probe
        self.records = records
        self.chain = chain
        self.settings = settings
        self.adapter = adapter
        self.loadProblems = loadProblems
        self.source = source
        self.generated = generated
    }
}

extension AuditReport {
    /// The largest adapter file whose sha256 is checked against its audit record (1 GiB).
    static let maximumAdapterFileBytes = 1 << 30
    /// The largest `adapter_config.json` read.
    static let maximumAdapterConfigBytes = 1 << 20

    /// Gathers the report's input from a coordinator state directory without ever throwing: whatever
    /// cannot be read (settings, signing key, log, adapter) becomes a sentence in `loadProblems` and
    /// the rest is still gathered.
    ///
    /// Without a verifying key the records are still read (signatures checked under a throwaway key
    /// and their failures ignored) and the chain is reported as unchecked.
    public static func load(stateDirectory: URL, now: Date? = Date()) -> AuditReportInput {
        let paths = CoordinatorPaths(root: stateDirectory)
        var problems: [String] = []
        var settings: CoordinatorSettings?
        do { settings = try CoordinatorSettings.load(paths: paths) } catch {
            problems.append("Settings unavailable: \(error)")
        }

        var records: [AuditRecord] = []
        var chain = AuditChainStatus.unchecked(reason: "not read")
        let logExists = FileManager.default.fileExists(atPath: paths.auditLog.path)
        if !logExists {
            problems.append("No audit log: \(paths.auditLog.path) does not exist, so no round can be shown "
                            + "(a federation with no rounds yet, or a deleted log).")
        }
        var key: SigningPublicKey?
        do { key = try AuditLog.verifyingKey(in: paths) } catch {
            chain = .unchecked(reason: "no usable signing key: \(error)")
        }
        do {
            if let key {
                let verification = try AuditLog.verify(url: paths.auditLog, publicKey: key)
                records = verification.records
                chain = AuditChainStatus(verification, publicKey: key)
            } else {
                // Under a throwaway key every signature fails; verify still returns every line that decodes.
                records = try AuditLog.verify(url: paths.auditLog, publicKey: SigningKeyPair().publicKey).records
                if logExists { problems += try unsignedChainProblems(log: paths.auditLog, records: records) }
            }
        } catch {
            chain = .unchecked(reason: "the audit log cannot be read: \(error)")
        }

        if logExists && records.isEmpty {
            problems.append("The audit log \(paths.auditLog.path) exists but holds no readable record.")
        }

        var adapter: AdapterShape?
        if let latest = records.last(where: { $0.status == "committed" }) {
            do {
                adapter = try readAdapterShape(paths: paths, record: latest)
            } catch {
                problems.append("Adapter of round \(latest.round) unavailable: \(error)")
            }
        }
        var probe: PublicProbe?
        do { probe = try PublicProbe.load(stateDirectory: stateDirectory) } catch {
            problems.append("Public probe unavailable: \(error)")
        }
        return AuditReportInput(records: records, chain: chain, settings: settings, adapter: adapter,
                                loadProblems: problems, source: stateDirectory.path, generated: now, probe: probe)
    }

    /// Without a key, what can still be checked: that every line decoded to a record, and that each
    /// record's `previous_hash` is the BLAKE2b-256 of the line before it.
    static func unsignedChainProblems(log: URL, records: [AuditRecord]) throws -> [String] {
        let bytes = try readBounded(log, maximumBytes: AuditLog.maximumFileSize)
        var lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        if lines.last?.isEmpty == true { lines.removeLast() }
        guard lines.count == records.count else {
            return ["\(lines.count - records.count) of the log's \(lines.count) lines could not be read as records."]
        }
        var previous = AuditLog.firstPreviousHash
        for (line, record) in zip(lines, records) {
            if record.previousHash != previous {
                return ["Round \(record.round)'s previous_hash is not the hash of the line before it: the chain is broken there."]
            }
            previous = Hex.encode(Hash.blake2b(Array(line)))
        }
        return []
    }

    /// Reads the shape of round `record.round`'s global adapter and checks its file against the
    /// record's `adapter_sha256`.
    /// - Throws: `ReportError` naming the file and what is wrong with it.
    static func readAdapterShape(paths: CoordinatorPaths, record: AuditRecord) throws -> AdapterShape {
        let directory = paths.adapter(round: record.round)
        let configURL = directory.appendingPathComponent("adapter_config.json")
        let weightsURL = directory.appendingPathComponent("adapter_model.safetensors")
        let configData = try readBounded(configURL, maximumBytes: maximumAdapterConfigBytes)
        guard let json = (try? JSONSerialization.jsonObject(with: configData)) as? [String: Any] else {
            throw ReportError(path: configURL.path, "is not a JSON object")
        }
        guard let rank = (json["r"] as? NSNumber)?.intValue, rank >= 1 else {
            throw ReportError(path: configURL.path, "field r is missing or not a positive integer")
        }
        guard let alpha = (json["lora_alpha"] as? NSNumber)?.doubleValue, alpha.isFinite, alpha > 0 else {
            throw ReportError(path: configURL.path, "field lora_alpha is missing or not a positive number")
        }
        guard let targets = json["target_modules"] as? [String] else {
            throw ReportError(path: configURL.path, "field target_modules is missing or not a list of names")
        }
        let weightsData = try readBounded(weightsURL, maximumBytes: maximumAdapterFileBytes)
        let digest = Hex.encode(Hash.sha256(Array(weightsData)))
        guard digest == record.adapterSHA256 else {
            throw ReportError(path: weightsURL.path, "has sha256 \(digest), but round \(record.round)'s audit record says "
                              + "\(record.adapterSHA256)")
        }
        let file: SafetensorsFile
        do { file = try SafetensorsFile(url: weightsURL) } catch {
            throw ReportError(path: weightsURL.path, "is not a safetensors file: \(error)")
        }
        let parameters = file.tensors.values.reduce(0) { total, info in total + info.shape.reduce(1, *) }
        return AdapterShape(baseModel: json["base_model_name_or_path"] as? String, rank: rank, alpha: alpha,
                            targets: targets.sorted(), tensorCount: file.tensors.count, parameterCount: parameters,
                            round: record.round)
    }

    /// The file's bytes, refusing a missing file or one larger than `maximumBytes` before reading it.
    static func readBounded(_ url: URL, maximumBytes: Int) throws -> Data {
        let attributes: [FileAttributeKey: Any]
        do { attributes = try FileManager.default.attributesOfItem(atPath: url.path) } catch {
            throw ReportError(path: url.path, "cannot be read (missing?)")
        }
        let size = (attributes[.size] as? NSNumber)?.intValue ?? 0
        guard size <= maximumBytes else {
            throw ReportError(path: url.path, "is \(size) bytes, over the \(maximumBytes)-byte limit")
        }
        do { return try Data(contentsOf: url) } catch {
            throw ReportError(path: url.path, "cannot be read: \(error.localizedDescription)")
        }
    }
}

/// A file the report needed and could not use: which one, and why.
public struct ReportError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let reason: String
    public init(path: String, _ reason: String) {
        self.path = path
        self.reason = reason
    }
    public var description: String { "\(path): \(reason)" }
}
