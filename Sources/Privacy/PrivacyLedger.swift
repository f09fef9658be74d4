import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SystemIO

/// The privacy budget a client agrees to spend: at most `epsilon` at `delta`, as `accountant` counts.
public struct PrivacyBudget: Codable, Sendable, Equatable {
    /// ε_max, the most this client will ever spend.
    public var epsilon: Double
    /// δ at which ε is reported.
    public var delta: Double
    /// How the entries are composed.
    public var accountant: AccountantKind
    /// Whom ε protects; every entry of the ledger is charged at this unit (ledgers written before the
    /// field existed read as `record`).
    public var unit: PrivacyUnit

    public init(epsilon: Double, delta: Double, accountant: AccountantKind, unit: PrivacyUnit = .record) {
        self.epsilon = epsilon
        self.delta = delta
        self.accountant = accountant
        self.unit = unit
    }

    enum CodingKeys: String, CodingKey {
        case epsilon, delta, accountant, unit
    }

    /// `unit` may be absent (a ledger from before it existed): `record`, the only unit there was.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        epsilon = try container.decode(Double.self, forKey: .epsilon)
        delta = try container.decode(Double.self, forKey: .delta)
        accountant = try container.decode(AccountantKind.self, forKey: .accountant)
        unit = try container.decodeIfPresent(PrivacyUnit.self, forKey: .unit) ?? .record
    }

    /// Throws `PrivacyParameterError` for ε ≤ 0 or δ outside (0, 1).
    public func validate() throws {
        guard epsilon.isFinite, epsilon > 0 else {
            throw PrivacyParameterError(name: "budget epsilon", value: epsilon, expected: "finite and > 0")
        }
        try validateDelta(delta)
        guard unit != .client else {
            throw PrivacyParameterError(name: "budget unit (client)", value: .nan, expected: "record or user: a client's ledger "
                                        + "counts ε per record or per user; client-level ε is the federation's accountant's")
        }
    }
}

/// One charge: a training run or round, its DP-SGD parameters, and ε spent by all entries up to it.
public struct PrivacyLedgerEntry: Codable, Sendable, Equatable {
    /// Unique id of the charge.
    public var id: UUID
    /// What the privacy paid for, e.g. "run:<uuid>" or "round:<n>".
    public var purpose: String
    /// When the charge was written.
    public var date: Date
    /// Poisson sampling rate q.
    public var samplingRate: Double
    /// Noise multiplier σ.
    public var noiseMultiplier: Double
    /// Per-example clip norm C (noise std is σ·C); recorded for audit, ε does not depend on it. 0 for a
    /// run without privacy, which clips nothing.
    public var clipNorm: Double
    /// Number of DP-SGD steps.
    public var steps: Int
    /// δ at which `cumulativeEpsilon` is stated.
    public var delta: Double
    /// Accountant used for `cumulativeEpsilon`.
    public var accountant: AccountantKind
    /// ε of all entries up to and including this one, composed: +∞ from a run without privacy on
    /// (stored as the string "infinity", since JSON has no number for it).
    public var cumulativeEpsilon: Double
    /// Whom the charge's ε protects (the budget's unit); `record` for entries written before the field.
    public var unit: PrivacyUnit = .record
    /// The noise the run added; `.none` for a run without differential privacy (`.gaussian` when an
    /// older file does not say).
    public var noise: MechanismNoise
    /// A distributed-DP round's noise multiplier if the client trusted no one but itself (its own share
    /// only: local DP, issue 17); nil when the charge already assumes no one else (local DP-SGD, releases,
    /// entries written before the field). Never above `noiseMultiplier`.
    public var noiseMultiplierTrustingNoOne: Double?

    /// The mechanism this entry charged for.
    public var mechanism: MechanismSteps {
        MechanismSteps(samplingRate: samplingRate, noiseMultiplier: noiseMultiplier, steps: steps, noise: noise)
    }

    /// The same charge if the client had trusted no one: the mechanism with only its own noise share.
    public var mechanismTrustingNoOne: MechanismSteps {
        var alone = mechanism
        if let noiseMultiplierTrustingNoOne { alone.noiseMultiplier = noiseMultiplierTrustingNoOne }
        return alone
    }

    enum CodingKeys: String, CodingKey {
        case id, purpose, date, samplingRate, noiseMultiplier, clipNorm, steps, delta, accountant, cumulativeEpsilon, unit, noise
        case noiseMultiplierTrustingNoOne
    }

    init(id: UUID, purpose: String, date: Date, mechanism: MechanismSteps, clipNorm: Double, delta: Double,
         accountant: AccountantKind, cumulativeEpsilon: Double, unit: PrivacyUnit, trustingNoOne: MechanismSteps? = nil) {
        self.id = id
        self.purpose = purpose
        self.date = date
        self.samplingRate = mechanism.samplingRate
        self.noiseMultiplier = mechanism.noiseMultiplier
        self.clipNorm = clipNorm
        self.steps = mechanism.steps
        self.delta = delta
        self.accountant = accountant
        self.cumulativeEpsilon = cumulativeEpsilon
        self.unit = unit
        self.noise = mechanism.noise
        self.noiseMultiplierTrustingNoOne = trustingNoOne?.noiseMultiplier
    }

    /// Every field as written; `unit` may be absent (an entry from before it existed): `record`; `noise`
    /// likewise: `gaussian`.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(UUID.self, forKey: .id)
        purpose = try c.decode(String.self, forKey: .purpose)
        date = try c.decode(Date.self, forKey: .date)
        samplingRate = try c.decode(Double.self, forKey: .samplingRate)
        noiseMultiplier = try c.decode(Double.self, forKey: .noiseMultiplier)
        clipNorm = try c.decode(Double.self, forKey: .clipNorm)
        steps = try c.decode(Int.self, forKey: .steps)
        delta = try c.decode(Double.self, forKey: .delta)
        accountant = try c.decode(AccountantKind.self, forKey: .accountant)
        if let text = try? c.decode(String.self, forKey: .cumulativeEpsilon) {
            guard text == "infinity" else {
                throw DecodingError.dataCorruptedError(forKey: .cumulativeEpsilon, in: c,
                                                       debugDescription: "expected a number or \"infinity\", got \"\(text)\"")
            }
            cumulativeEpsilon = .infinity
        } else {
            cumulativeEpsilon = try c.decode(Double.self, forKey: .cumulativeEpsilon)
        }
        unit = try c.decodeIfPresent(PrivacyUnit.self, forKey: .unit) ?? .record
        noise = try c.decodeIfPresent(MechanismNoise.self, forKey: .noise) ?? .gaussian
        noiseMultiplierTrustingNoOne = try c.decodeIfPresent(Double.self, forKey: .noiseMultiplierTrustingNoOne)
        if let alone = noiseMultiplierTrustingNoOne {
            // Trusting no one leaves the client its own share: some noise, never more than the assumption's.
            guard noise == .discreteGaussian, alone.isFinite, alone > 0, alone <= noiseMultiplier else {
                throw DecodingError.dataCorruptedError(forKey: .noiseMultiplierTrustingNoOne, in: c, debugDescription:
                    "\(alone): expected a discrete-Gaussian entry's multiplier in (0, noiseMultiplier \(noiseMultiplier)]")
            }
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(purpose, forKey: .purpose)
        try c.encode(date, forKey: .date)
        try c.encode(samplingRate, forKey: .samplingRate)
        try c.encode(noiseMultiplier, forKey: .noiseMultiplier)
        try c.encode(clipNorm, forKey: .clipNorm)
        try c.encode(steps, forKey: .steps)
        try c.encode(delta, forKey: .delta)
        try c.encode(accountant, forKey: .accountant)
        if cumulativeEpsilon == .infinity {
            try c.encode("infinity", forKey: .cumulativeEpsilon)
        } else {
            try c.encode(cumulativeEpsilon, forKey: .cumulativeEpsilon)
        }
        try c.encode(unit, forKey: .unit)
        try c.encode(noise, forKey: .noise)
        try c.encodeIfPresent(noiseMultiplierTrustingNoOne, forKey: .noiseMultiplierTrustingNoOne)
    }
}

/// A client's persistent record of privacy spent, in `DIR/privacy-ledger.json` (mode 0600, in a
/// directory created 0700).
///
/// `charge` refuses any charge that would take the composed ε of all entries past the budget, and
/// otherwise writes the new entry durably (temporary file, fsync, rename, fsync of the directory)
/// before it returns, so a crash can overcount spent privacy but never undercount it. Charges from
/// concurrent processes are serialised by `flock` on `DIR/privacy-ledger.lock`, and each charge
/// re-reads the file under the lock. A corrupt, truncated or invalid file is an error naming the
/// file and the fault; it is never reset.
public struct PrivacyLedger: Sendable {
    /// The ledger file's name inside the state directory.
    public static let fileName = "privacy-ledger.json"
    /// The lock file's name inside the state directory.
    public static let lockFileName = "privacy-ledger.lock"
    /// Largest ledger file accepted (about 100,000 entries).
    public static let maximumFileSize = 64 << 20
    static let formatVersion = 1

    /// The state directory.
    public let directory: URL
    /// The budget stored in the ledger.
    public private(set) var budget: PrivacyBudget
    /// All charges, oldest first.
    public private(set) var entries: [PrivacyLedgerEntry]

    /// The ledger file.
    public var fileURL: URL { directory.appendingPathComponent(Self.fileName) }
    /// ε spent so far under the current budget's δ and accountant, 0 when nothing is charged. The last
    /// entry's cumulative ε is that figure only while the budget keeps the δ and accountant it was
    /// charged under; after `budget --set-epsilon E --delta D` changed them, every read recomputes it
    /// from all entries (issue 15: ε at the old δ was shown until the next charge). An accountant that
    /// cannot compose the stored entries gives +∞: nothing more can be charged, never less counted.
    public var spentEpsilon: Double {
        guard let last = entries.last else { return 0 }
        if last.delta == budget.delta && last.accountant == budget.accountant { return last.cumulativeEpsilon }
        return (try? PrivacyAccounting.epsilon(steps: entries.map(\.mechanism), delta: budget.delta,
                                               accountant: budget.accountant)) ?? .infinity
    }
    /// ε still available under the budget (never negative).
    public var remainingEpsilon: Double { max(0, budget.epsilon - spentEpsilon) }

    /// Opens the ledger in `directory`. When the file is absent and `budget` is given, creates the
    /// directory (0700) and an empty ledger (0600) with that budget; when it is absent and no budget
    /// is given, throws `PrivacyLedgerError.missing`. When it exists, a given budget must equal the
    /// stored one (change it with `updateBudget`).
    public init(directory: URL, creatingWith budget: PrivacyBudget? = nil) throws {
        self.directory = directory
        let file = directory.appendingPathComponent(Self.fileName)
        if let budget {
            try budget.validate()
            try Self.createDirectory(directory)
            let lock = try LedgerLock(directory.appendingPathComponent(Self.lockFileName))
            defer { lock.release() }
            if let stored = try Self.read(file) {
                guard stored.budget == budget else {
                    throw PrivacyLedgerError.budgetMismatch(path: file.path, stored: stored.budget, given: budget)
                }
                self.budget = stored.budget
                self.entries = stored.entries
            } else {
                try Self.write(LedgerFile(version: Self.formatVersion, budget: budget, entries: []), to: file)
                self.budget = budget
                self.entries = []
            }
        } else {
            guard let stored = try Self.read(file) else { throw PrivacyLedgerError.missing(path: file.path) }
            self.budget = stored.budget
            self.entries = stored.entries
        }
    }

    /// Re-reads the file (another process may have charged since).
    public mutating func reload() throws {
        guard let stored = try Self.read(fileURL) else { throw PrivacyLedgerError.missing(path: fileURL.path) }
        budget = stored.budget
        entries = stored.entries
    }

    /// The cumulative ε if `mechanism` were charged now (nothing is written).
    public func epsilon(afterCharging mechanism: MechanismSteps) throws -> Double {
        try mechanism.validate()
        return try PrivacyAccounting.epsilon(steps: entries.map(\.mechanism) + [mechanism], delta: budget.delta,
                                             accountant: budget.accountant)
    }

    /// Charges `steps` DP-SGD steps at `samplingRate` and `noiseMultiplier` for `purpose`, writing the
    /// entry durably before returning it. Throws `PrivacyBudgetExceededError` (nothing written) when the
    /// composed ε of all entries and this one would exceed the budget.
    @discardableResult
    public mutating func charge(purpose: String, samplingRate: Double, noiseMultiplier: Double, clipNorm: Double,
                                steps: Int, unit: PrivacyUnit = .record, date: Date = Date()) throws -> PrivacyLedgerEntry {
        try charge(MechanismSteps(samplingRate: samplingRate, noiseMultiplier: noiseMultiplier, steps: steps),
                   clipNorm: clipNorm, purpose: purpose, unit: unit, date: date)
    }

    /// Charges `mechanism` for `purpose` at `unit` (the ledger's), writing the entry durably before
    /// returning it. Throws `PrivacyBudgetExceededError` (nothing written) when the composed ε of all
    /// entries and this one would exceed the budget. A run without noise (`.none`, clip norm 0) is the
    /// exception: its caller has already allowed a run without privacy, so it is recorded whatever the
    /// budget, with ε = +∞, and every later charge with noise is refused (issue 13: such runs left no trace).
    @discardableResult
    public mutating func charge(_ mechanism: MechanismSteps, clipNorm: Double, purpose: String, unit: PrivacyUnit = .record,
                                date: Date = Date()) throws -> PrivacyLedgerEntry {
        try charge([(purpose, mechanism, clipNorm)], unit: unit, date: date)[0]
    }

    /// Throws unless `mechanism` with `clipNorm` can be charged for `purpose`: a run without noise has
    /// clip norm 0 and noise multiplier 0, a run with noise a finite positive clip norm.
    private func validateCharge(_ mechanism: MechanismSteps, clipNorm: Double, purpose: String) throws {
        try mechanism.validate()
        if mechanism.noise == .none {
            guard clipNorm == 0 else {
                throw PrivacyParameterError(name: "clip norm", value: clipNorm, expected: "0 for a run without noise")
            }
            guard mechanism.noiseMultiplier == 0 else {
                throw PrivacyParameterError(name: "noise multiplier", value: mechanism.noiseMultiplier,
                                            expected: "0 for a run without noise")
            }
        } else {
            guard clipNorm.isFinite, clipNorm > 0 else {
                throw PrivacyParameterError(name: "clip norm", value: clipNorm, expected: "finite and > 0")
            }
        }
        guard !purpose.isEmpty else { throw PrivacyLedgerError.invalid(path: fileURL.path, reason: "empty purpose") }
    }

    /// Charges several mechanisms as one charge: all their entries are written in one durable write,
    /// or none (`PrivacyBudgetExceededError` when their composition with the entries before them
    /// would exceed the budget). A round's training and its metrics release are charged this way.
    /// - Returns: the entries, in order; the last one's cumulative ε includes them all.
    @discardableResult
    /// - Parameter trustingNoOne: the first charge's mechanism if the client trusted no one (a distributed-DP
    ///   round's own noise share, `PrivacyLedgerEntry.noiseMultiplierTrustingNoOne`); the same sampling rate,
    ///   steps and kind, at most its noise.
    public mutating func charge(_ charges: [(purpose: String, mechanism: MechanismSteps, clipNorm: Double)],
                                unit: PrivacyUnit = .record, trustingNoOne: MechanismSteps? = nil,
                                date: Date = Date()) throws -> [PrivacyLedgerEntry] {
        guard !charges.isEmpty else { throw PrivacyLedgerError.invalid(path: fileURL.path, reason: "nothing to charge") }
        for charge in charges { try validateCharge(charge.mechanism, clipNorm: charge.clipNorm, purpose: charge.purpose) }
        if let trustingNoOne { try Self.validate(trustingNoOne: trustingNoOne, of: charges[0].mechanism) }
        let lock = try LedgerLock(directory.appendingPathComponent(Self.lockFileName))
        defer { lock.release() }
        try reload()
        try checkUnit(unit)
        let previous = entries.map(\.mechanism)
        // The file stores ISO 8601 dates to the second; truncate so the returned entries equal the stored ones.
        let storedDate = Date(timeIntervalSince1970: date.timeIntervalSince1970.rounded(.down))
        var composed = previous
        var added: [PrivacyLedgerEntry] = []
        for (index, charge) in charges.enumerated() {
            composed.append(charge.mechanism)
            let cumulative = try PrivacyAccounting.epsilon(steps: composed, delta: budget.delta, accountant: budget.accountant)
            added.append(PrivacyLedgerEntry(id: UUID(), purpose: charge.purpose, date: storedDate, mechanism: charge.mechanism,
                                            clipNorm: charge.clipNorm, delta: budget.delta, accountant: budget.accountant,
                                            cumulativeEpsilon: cumulative, unit: unit, trustingNoOne: index == 0 ? trustingNoOne : nil))
        }
        let cumulative = added[added.count - 1].cumulativeEpsilon
        // A run without noise is recorded whatever the budget (its caller allowed it); see `charge(_:clipNorm:...)`.
        guard cumulative <= budget.epsilon || charges.contains(where: { $0.mechanism.noise == .none }) else {
            throw try refusal(mechanism: charges[0].mechanism, previous: previous, cumulative: cumulative)
        }
        try Self.write(LedgerFile(version: Self.formatVersion, budget: budget, entries: entries + added), to: fileURL)
        entries += added
        return added
    }

    /// The ε of every entry composed as if the client had trusted no one (each distributed round at its own
    /// noise share alone, `PrivacyLedgerEntry.mechanismTrustingNoOne`), at the budget's δ and accountant: at least
    /// `spentEpsilon`, equal to it for a ledger of local DP only. Nothing is charged against it; it is what the
    /// audit and report show beside the ε the client's trust assumption gives (issue 17).
    public var epsilonTrustingNoOne: Double {
        get throws {
            guard !entries.isEmpty else { return 0 }
            guard entries.contains(where: { $0.noiseMultiplierTrustingNoOne != nil }) else { return spentEpsilon }
            return try PrivacyAccounting.epsilon(steps: entries.map(\.mechanismTrustingNoOne), delta: budget.delta,
                                                 accountant: budget.accountant)
        }
    }

    /// Throws unless `alone` is `mechanism` with its own noise share only: the same q, steps and discrete kind,
    /// a multiplier in (0, the mechanism's].
    static func validate(trustingNoOne alone: MechanismSteps, of mechanism: MechanismSteps) throws {
        try alone.validate()
        guard alone.noise == .discreteGaussian, mechanism.noise == .discreteGaussian, alone.samplingRate == mechanism.samplingRate,
              alone.steps == mechanism.steps else {
            throw PrivacyParameterError(name: "mechanism trusting no one", value: alone.noiseMultiplier,
                                        expected: "a discrete-Gaussian charge's own share, at its sampling rate and steps")
        }
        guard alone.noiseMultiplier <= mechanism.noiseMultiplier else {
            throw PrivacyParameterError(name: "noise multiplier trusting no one", value: alone.noiseMultiplier,
                                        expected: "at most the charge's \(mechanism.noiseMultiplier): one share is never more noise")
        }
    }

    /// Throws `PrivacyLedgerError.invalid` unless a charge at `unit` can join this ledger: ε per record
    /// and ε per user measure different neighbouring relations and are never composed in one ledger.
    public func checkUnit(_ unit: PrivacyUnit) throws {
        guard unit != budget.unit else { return }
        throw PrivacyLedgerError.invalid(path: fileURL.path, reason: "this ledger counts ε per \(budget.unit.rawValue), "
            + "a run at privacy unit \(unit.rawValue) cannot be charged to it (ε per record and ε per user do not "
            + "compose); train at --privacy-unit \(budget.unit.rawValue), or keep \(unit.rawValue)-level runs in "
            + "a ledger created for them")
    }

    /// Replaces the budget (an operator's decision), durably. Throws `PrivacyLedgerError.invalid` when
    /// the entries already spend more than the new ε_max under the new δ and accountant, or when the
    /// new budget changes the unit of a ledger that has entries.
    public mutating func updateBudget(_ newBudget: PrivacyBudget) throws {
        try newBudget.validate()
        let lock = try LedgerLock(directory.appendingPathComponent(Self.lockFileName))
        defer { lock.release() }
        try reload()
        if !entries.isEmpty && newBudget.unit != budget.unit {
            throw PrivacyLedgerError.invalid(path: fileURL.path, reason: "its \(entries.count) entries are charged per "
                + "\(budget.unit.rawValue); the unit of a ledger with entries cannot become \(newBudget.unit.rawValue)")
        }
        let spent = entries.isEmpty ? 0
            : try PrivacyAccounting.epsilon(steps: entries.map(\.mechanism), delta: newBudget.delta, accountant: newBudget.accountant)
        guard spent <= newBudget.epsilon else {
            throw PrivacyLedgerError.invalid(path: fileURL.path,
                                             reason: "new budget epsilon \(newBudget.epsilon) is below the \(spent) already spent")
        }
        try Self.write(LedgerFile(version: Self.formatVersion, budget: newBudget, entries: entries), to: fileURL)
        budget = newBudget
    }

    private func refusal(mechanism: MechanismSteps, previous: [MechanismSteps], cumulative: Double) throws -> PrivacyBudgetExceededError {
        let spent = previous.isEmpty ? 0 : try PrivacyAccounting.epsilon(steps: previous, delta: budget.delta, accountant: budget.accountant)
        if spent == .infinity {  // a run without privacy is recorded: nothing fits any more
            return PrivacyBudgetExceededError(ledgerPath: fileURL.path, budget: budget, spentEpsilon: spent, requestedEpsilon: cumulative,
                                              requested: mechanism, maximumSteps: 0, minimumNoiseMultiplier: nil)
        }
        let steps = try PrivacyAccounting.maximumSteps(targetEpsilon: budget.epsilon, samplingRate: mechanism.samplingRate,
                                                       noiseMultiplier: mechanism.noiseMultiplier, delta: budget.delta,
                                                       accountant: budget.accountant, alreadySpent: previous,
                                                       upTo: mechanism.steps - 1, noise: mechanism.noise)
        let sigma = try? PrivacyAccounting.noiseMultiplier(targetEpsilon: budget.epsilon, samplingRate: mechanism.samplingRate,
                                                           steps: mechanism.steps, delta: budget.delta,
                                                           accountant: budget.accountant, alreadySpent: previous,
                                                           noise: mechanism.noise)
        return PrivacyBudgetExceededError(ledgerPath: fileURL.path, budget: budget, spentEpsilon: spent,
                                          requestedEpsilon: cumulative, requested: mechanism,
                                          maximumSteps: steps, minimumNoiseMultiplier: sigma)
    }

    // MARK: File format and I/O

    struct LedgerFile: Codable {
        var version: Int
        var budget: PrivacyBudget
        var entries: [PrivacyLedgerEntry]
    }

    private static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return encoder
    }

    /// The parsed and validated file, or nil when it does not exist.
    static func read(_ file: URL) throws -> LedgerFile? {
        var status = stat()
        if stat(file.path, &status) != 0 {
            if errno == ENOENT { return nil }
            throw PrivacyLedgerError.io(path: file.path, operation: "stat", message: String(cString: strerror(errno)))
        }
        guard Int(status.st_size) <= maximumFileSize else {
            throw PrivacyLedgerError.corrupt(path: file.path, reason: "file is \(status.st_size) bytes, over the \(maximumFileSize)-byte limit")
        }
        let data: Data
        do { data = try fileData(contentsOf: file) } catch {
            throw PrivacyLedgerError.io(path: file.path, operation: "read", message: "\(error)")
        }
        guard !data.isEmpty else { throw PrivacyLedgerError.corrupt(path: file.path, reason: "file is empty") }
        let ledger: LedgerFile
        do {
            ledger = try JSONFile.decode(LedgerFile.self, from: data, keys: .snakeCase)
        } catch let error as JSONFieldError {
            let reason = error.problem == .missing ? "missing field \(error.field)" : error.description
            throw PrivacyLedgerError.corrupt(path: file.path, reason: reason)
        } catch {
            throw PrivacyLedgerError.corrupt(path: file.path, reason: "\(error)")
        }
        guard ledger.version == formatVersion else {
            throw PrivacyLedgerError.corrupt(path: file.path, reason: "unsupported version \(ledger.version) (expected \(formatVersion))")
        }
        do { try ledger.budget.validate() } catch {
            throw PrivacyLedgerError.corrupt(path: file.path, reason: "budget: \(error)")
        }
        var previous = 0.0
        for (index, entry) in ledger.entries.enumerated() {
            do { try entry.mechanism.validate() } catch {
                throw PrivacyLedgerError.corrupt(path: file.path, reason: "entries[\(index)]: \(error)")
            }
            // +∞ only from a run without privacy, on or before this entry.
            let infinityAllowed = ledger.entries[...index].contains { $0.mechanism.isUnbounded }
            guard entry.cumulativeEpsilon.isFinite || (entry.cumulativeEpsilon == .infinity && infinityAllowed),
                  entry.cumulativeEpsilon >= previous - 1e-9 else {
                throw PrivacyLedgerError.corrupt(path: file.path,
                                                 reason: "entries[\(index)].cumulative_epsilon \(entry.cumulativeEpsilon) is below the previous "
                                                    + "entry's \(previous), or infinite without a run without privacy")
            }
            previous = entry.cumulativeEpsilon
        }
        return ledger
    }

    private static func createDirectory(_ directory: URL) throws {
        if mkdir(directory.path, 0o700) != 0 && errno != EEXIST {
            // A missing parent: create the whole chain, each level 0700.
            do {
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o700])
            } catch {
                throw PrivacyLedgerError.io(path: directory.path, operation: "create directory", message: "\(error)")
            }
        }
    }

    /// Replaces the ledger through the one durable write (mode 0600).
    static func write(_ ledger: LedgerFile, to file: URL) throws {
        let data: Data
        do { data = try encoder().encode(ledger) } catch {
            throw PrivacyLedgerError.io(path: file.path, operation: "encode", message: "\(error)")
        }
        do {
            try writeFileAtomically(data, to: file, permissions: 0o600)
        } catch let error as SystemIOError {
            throw PrivacyLedgerError.io(path: error.path, operation: error.systemCall?.operation ?? "write",
                                        message: error.systemCall?.message ?? error.reason)
        }
    }
}

/// An exclusive `flock` on the ledger's lock file, held until `release()`.
private struct LedgerLock {
    let fd: Int32

    init(_ url: URL) throws {
        fd = open(url.path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw PrivacyLedgerError.io(path: url.path, operation: "open lock file", message: String(cString: strerror(errno)))
        }
        while flock(fd, LOCK_EX) != 0 {
            if errno == EINTR { continue }
            let message = String(cString: strerror(errno))
            close(fd)
            throw PrivacyLedgerError.io(path: url.path, operation: "flock", message: message)
        }
    }

    func release() {
        flock(fd, LOCK_UN)
        close(fd)
    }
}

/// The ledger file cannot be used as it is.
public enum PrivacyLedgerError: Error, CustomStringConvertible, Sendable {
    /// No ledger at `path`, and no budget was given to create one.
    case missing(path: String)
    /// The file is not a valid ledger (truncated, not JSON, a bad field); it is left untouched.
    case corrupt(path: String, reason: String)
    /// The file exists with a different budget than the one given.
    case budgetMismatch(path: String, stored: PrivacyBudget, given: PrivacyBudget)
    /// A request the ledger cannot accept.
    case invalid(path: String, reason: String)
    /// A system call failed.
    case io(path: String, operation: String, message: String)

    public var description: String {
        switch self {
        case .missing(let path):
            return "no privacy ledger at \(path); set a budget (epsilon, delta, accountant) to create one"
        case .corrupt(let path, let reason):
            return "privacy ledger \(path) is corrupt: \(reason); it was not modified (restore it or move it aside deliberately)"
        case .budgetMismatch(let path, let stored, let given):
            return "privacy ledger \(path) has budget epsilon \(stored.epsilon) at delta \(stored.delta) (\(stored.accountant.rawValue), "
                + "per \(stored.unit.rawValue)), not epsilon \(given.epsilon) at delta \(given.delta) (\(given.accountant.rawValue), "
                + "per \(given.unit.rawValue)); change it explicitly"
        case .invalid(let path, let reason):
            return "privacy ledger \(path): \(reason)"
        case .io(let path, let operation, let message):
            return "privacy ledger: \(operation) \(path) failed: \(message)"
        }
    }
}

/// A charge refused because it would exceed the budget; nothing was written.
public struct PrivacyBudgetExceededError: Error, CustomStringConvertible, Sendable {
    /// The ledger file.
    public let ledgerPath: String
    /// The budget in force.
    public let budget: PrivacyBudget
    /// ε spent by the existing entries.
    public let spentEpsilon: Double
    /// ε the entries and the refused charge would have reached together.
    public let requestedEpsilon: Double
    /// The refused charge.
    public let requested: MechanismSteps
    /// The most steps at the requested q and σ that would still fit (0 when none).
    public let maximumSteps: Int
    /// The smallest σ (0.001 grid) at which the requested steps would fit, nil when none does.
    public let minimumNoiseMultiplier: Double?

    /// ε left under the budget.
    public var remainingEpsilon: Double { max(0, budget.epsilon - spentEpsilon) }

    public var description: String {
        if spentEpsilon == .infinity {
            return "privacy budget exhausted (\(ledgerPath)): a run without differential privacy is recorded (epsilon infinite), "
                + "so no charge fits any more, whatever its parameters; a new budget cannot undo it"
        }
        let sigma = minimumNoiseMultiplier.map { "noise multiplier >= \($0) for \(requested.steps) steps" }
            ?? "no noise multiplier fits \(requested.steps) steps"
        return "privacy budget exceeded (\(ledgerPath)): \(requested.steps) steps at q=\(requested.samplingRate), "
            + "sigma=\(requested.noiseMultiplier) would bring epsilon to \(requestedEpsilon) > budget \(budget.epsilon) "
            + "at delta \(budget.delta) (\(budget.accountant.rawValue)); epsilon spent \(spentEpsilon), left \(remainingEpsilon); "
            + "would fit: at most \(maximumSteps) steps at these parameters, or \(sigma)"
    }
}
