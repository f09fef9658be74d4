import Foundation
import SecureCrypto
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Wire
import SystemIO

/// The coordinator's append-only, hash-chained, signed audit log: one round per line.
///
/// Each line is exactly `{"record":<R>,"signature":"<128 lower-case hex>"}` followed by `\n`, where
/// `<R>` is the `AuditRecord` as JSON (sorted keys, unescaped slashes, ISO 8601 dates with fractional
/// seconds) and the signature is Ed25519 over exactly the bytes of `<R>`. The verifier never
/// re-encodes: it cuts `<R>` out between the fixed prefix and the fixed suffix, checks the signature
/// over those bytes, then decodes them. Each record's `previousHash` is the BLAKE2b-256 of the previous
/// line's bytes (without its newline), 64 zeros for the first, so deleting, inserting, duplicating or
/// reordering a line breaks the chain. Truncating the tail (or deleting the whole file) cannot be seen
/// from the log alone: every round result carries the log's signed head (`signedHead`), clients keep
/// the latest, and `checkHead` compares one with the log.
///
/// A line is committed once its newline is on disk and the file is synced. Bytes after the last
/// newline are a write torn by a crash, never acknowledged: `append` removes them first, `verify`
/// reports them as a failure (the log as it stands is not a clean chain), and `repairTornTail` removes
/// them (keeping a copy) so that a coordinator refusing to start on them can start again.
public struct AuditLog: Sendable {
    /// The largest log `verify` reads and `append` grows to (256 MiB).
    public static let maximumFileSize = 256 << 20
    /// The longest line, newline excluded, that is written or read (4 MiB).
    public static let maximumLineLength = 4 << 20
    /// `previousHash` of the first record: 64 zeros.
    public static let firstPreviousHash = String(repeating: "0", count: 64)

    static let linePrefix = Array(#"{"record":"#.utf8)
    static let signatureOpening = Array(#","signature":""#.utf8)
    static let lineClosing = Array(#""}"#.utf8)
    static let signatureHexLength = 2 * SigningKeyPair.signatureByteCount
    static let lineSuffixLength = signatureOpening.count + signatureHexLength + lineClosing.count
    static let newline = UInt8(ascii: "\n")

    /// The log file (`audit.jsonl` in the coordinator's state directory).
    public let url: URL

    public init(url: URL) { self.url = url }

    /// The log of a coordinator's state directory.
    public init(paths: CoordinatorPaths) { self.url = paths.auditLog }

    // MARK: Appending

    /// Appends `record`, chained to the last line and signed by `signer`, durably (`AppendOnlyFile`):
    /// one `O_APPEND` write of the whole line under an exclusive `flock`, then `fsync` of the file (a
    /// file this call creates is mode 0644, its directory synced). A torn tail is removed first.
    ///
    /// `record.previousHash` is ignored and replaced. The returned record is decoded from the bytes
    /// written, so it equals what `verify` will read (dates keep millisecond precision).
    /// - Throws: `FederationError.state` naming the file for I/O failures, a last line that is
    ///   malformed, too long or not signed by `signer`, or a line or file over the size limits;
    ///   `FederationError.round` when `record.round` does not exceed the last record's round.
    @discardableResult
    public func append(_ record: AuditRecord, signer: SigningKeyPair) throws -> AuditAppend {
        try Self.stateErrors { try append(record, signer: signer, to: AppendOnlyFile(appendingTo: url.path, permissions: 0o644)) }
    }

    private func append(_ record: AuditRecord, signer: SigningKeyPair, to file: AppendOnlyFile) throws -> AuditAppend {
        try file.lock(exclusive: true)
        var size = try file.size()
        guard size <= Self.maximumFileSize else {
            throw FederationError.state(path: url.path, "is \(size) bytes, over the \(Self.maximumFileSize)-byte limit")
        }

        // A tail without its newline was never committed: cut it away before chaining to the last line.
        var discarded = 0
        if size > 0, try file.read(offset: size - 1, count: 1) != [Self.newline] {
            let start = try startOfLine(file, endingAt: size, what: "unterminated last line")
            discarded = size - start
            try file.truncateDurably(to: start, operation: "truncate the torn last line")
            size = start
        }

        var previousHash = Self.firstPreviousHash
        var previousRound: UInt64?
        if size > 0 {
            let start = try startOfLine(file, endingAt: size - 1, what: "last line")
            let line = try file.read(offset: start, count: size - 1 - start)
            previousHash = Self.hashHex(line[...])
            let last: AuditRecord
            do {
                let (recordBytes, signature) = try Self.split(line[...])
                guard signer.publicKey.isValidSignature(signature, for: recordBytes) else {
                    throw LineProblem("signature does not verify under this coordinator's signing key")
                }
                last = try Self.decode(recordBytes)
            } catch let problem as LineProblem {
                throw FederationError.state(path: url.path,
                                            "last record cannot be chained to: \(problem.reason) (run `conclave-coordinator audit --verify`)")
            }
            previousRound = last.round
        }
        if let previousRound, record.round <= previousRound {
            throw FederationError.round(record.round, "audit log \(url.path) already holds round \(previousRound); rounds must increase")
        }

        var chained = record
        chained.previousHash = previousHash
        let recordBytes = try Self.encode(chained, path: url.path)
        let line = Self.linePrefix + recordBytes + Self.signatureOpening
            + Array(Hex.encode(signer.signature(for: recordBytes)).utf8) + Self.lineClosing
        guard line.count <= Self.maximumLineLength else {
            throw FederationError.state(path: url.path, "round \(record.round)'s record is \(line.count) bytes as a line, "
                                        + "over the \(Self.maximumLineLength)-byte line limit")
        }
        guard size + line.count + 1 <= Self.maximumFileSize else {
            throw FederationError.state(path: url.path, "appending round \(record.round) would take the log past "
                                        + "its \(Self.maximumFileSize)-byte limit (now \(size) bytes)")
        }
        try file.appendDurably(line + [Self.newline], sizeBefore: size)
        let written: AuditRecord
        do { written = try Self.decode(recordBytes[...]) } catch let problem as LineProblem {
            preconditionFailure("an encoded audit record does not decode: \(problem.reason)")
        }
        return AuditAppend(record: written, repairedTornTail: discarded > 0, discardedBytes: discarded)
    }

    // MARK: Verifying

    /// Verifies the log at this `url` under `publicKey`; see `verify(url:publicKey:)`.
    public func verify(publicKey: SigningPublicKey) throws -> AuditVerification {
        try Self.verify(url: url, publicKey: publicKey)
    }

    /// Reads the whole log (under a shared `flock`) and checks every line: the fixed prefix and
    /// suffix, a lower-case hex signature, the Ed25519 signature over the record's bytes, that the
    /// record decodes, that its `previousHash` is the previous line's hash, and that rounds strictly
    /// increase. The first failure is reported with its 1-based line number; since every byte of a
    /// line is covered by that line's own checks, a changed byte is reported at the line that holds
    /// it (a newline belongs to the line it ends). A missing file is a log with no rounds yet: zero
    /// records, verified.
    /// - Returns: the outcome; `records` holds every committed line that parses, failed or not.
    /// - Throws: `FederationError.state` naming the file when it cannot be read or exceeds
    ///   `maximumFileSize` (a content problem is a failed verification, not an error).
    public static func verify(url: URL, publicKey: SigningPublicKey) throws -> AuditVerification {
        guard let bytes = try readLog(url) else {
            return AuditVerification(records: [], failure: nil)
        }
        var records: [AuditRecord] = []
        var failure: (record: Int, reason: String)?
        func fail(_ line: Int, _ reason: String) {
            if failure == nil { failure = (line, reason) }
        }
        var expectedPreviousHash = firstPreviousHash
        var previousRound: UInt64?
        var start = 0
        var lineNumber = 0
        while start < bytes.count {
            lineNumber += 1
            let terminator = bytes[start...].firstIndex(of: newline)
            let end = terminator ?? bytes.count
            let line = bytes[start..<end]
            start = end + 1
            let hash = hashHex(line)
            defer { expectedPreviousHash = hash }
            guard terminator != nil else {
                fail(lineNumber, "the last \(line.count) bytes have no terminating newline (a write torn by a crash, "
                     + "never committed; `conclave-coordinator audit --repair` removes them)")
                break
            }
            guard line.count <= maximumLineLength else {
                fail(lineNumber, "line is \(line.count) bytes, over the \(maximumLineLength)-byte limit")
                continue
            }
            let record: AuditRecord
            do {
                let (recordBytes, signature) = try split(line)
                if !publicKey.isValidSignature(signature, for: recordBytes) {
                    fail(lineNumber, "signature does not verify under key \(Hex.encode(publicKey.bytes))")
                }
                record = try decode(recordBytes)
            } catch let problem as LineProblem {
                fail(lineNumber, problem.reason)
                continue
            }
            records.append(record)
            if record.previousHash != expectedPreviousHash {
                fail(lineNumber, lineNumber == 1
                     ? "previous_hash is \(record.previousHash), expected \(firstPreviousHash) for the first record"
                     : "previous_hash \(record.previousHash) is not the hash of line \(lineNumber - 1) (\(expectedPreviousHash))")
            }
            if let previousRound, record.round <= previousRound {
                fail(lineNumber, "round \(record.round) does not follow round \(previousRound) (rounds must increase)")
            }
            previousRound = record.round
        }
        return AuditVerification(records: records, failure: failure)
    }

    // MARK: Keys

    /// Writes `key` as hex (and a newline) to `url`, atomically, mode 0644: what auditors verify with.
    /// - Throws: `FederationError.state` naming the file.
    public static func writePublicKey(_ key: SigningPublicKey, to url: URL) throws {
        do {
            try writeFileAtomically(Data((Hex.encode(key.bytes) + "\n").utf8), to: url, permissions: 0o644)
        } catch {
            throw FederationError.state(path: url.path, "cannot write the audit public key: \(error)")
        }
    }

    /// Reads a public key file written by `writePublicKey`: 64 lower-case hex digits, optionally
    /// followed by a newline.
    /// - Throws: `FederationError.state` naming the file and what is wrong with it.
    public static func readPublicKey(from url: URL) throws -> SigningPublicKey {
        let path = url.path
        var status = stat()
        guard stat(path, &status) == 0 else {
            throw FederationError.state(path: path, "cannot read: \(String(cString: strerror(errno)))")
        }
        let expected = 2 * SigningPublicKey.byteCount
        guard status.st_size <= expected + 1 else {
            throw FederationError.state(path: path, "is \(status.st_size) bytes; a public key file is \(expected) hex digits and a newline")
        }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw FederationError.state(path: path, "cannot read: \(error.localizedDescription)")
        }
        var digits = Array(data)
        if digits.last == newline { digits.removeLast() }
        guard digits.count == expected, digits.allSatisfy(isLowerHexDigit) else {
            throw FederationError.state(path: path, "expected \(expected) lower-case hex digits (an Ed25519 public key)")
        }
        do {
            return try SigningPublicKey(bytes: Hex.decode(String(decoding: digits, as: UTF8.self)))
        } catch {
            throw FederationError.state(path: path, "not a public key: \(error)")
        }
    }

    /// The key that verifies a coordinator's log: `signing.pub`, or when that is absent the public half
    /// of `signing.key` (which only the coordinator's operator can read).
    /// - Throws: `FederationError.state` when neither file exists or the one found is unreadable.
    public static func verifyingKey(in paths: CoordinatorPaths) throws -> SigningPublicKey {
        let manager = FileManager.default
        if manager.fileExists(atPath: paths.signingPublicKey.path) {
            return try readPublicKey(from: paths.signingPublicKey)
        }
        if manager.fileExists(atPath: paths.signingKey.path) {
            do {
                return try SigningKeyPair.readSecretKeyFile(path: paths.signingKey.path).publicKey
            } catch {
                throw FederationError.state(path: paths.signingKey.path, "cannot read the signing key: \(error)")
            }
        }
        throw FederationError.state(path: paths.root.path, "has neither \(paths.signingPublicKey.lastPathComponent) "
                                    + "nor \(paths.signingKey.lastPathComponent): no key to verify the audit log with")
    }

    // MARK: Encoding

    /// Dates as ISO 8601 in UTC with milliseconds, e.g. `2025-03-01T09:30:00.125Z`.
    static let dateStyle = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    /// The record's bytes as signed: sorted keys, unescaped slashes, fractional-second dates.
    static func encode(_ record: AuditRecord, path: String) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // A client that ran a round without privacy reports ε = +∞ (issue 13); JSON has no number for it.
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity",
                                                                      nan: "NaN")
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(date.formatted(AuditLog.dateStyle))
        }
        let bytes: [UInt8]
        do { bytes = Array(try encoder.encode(record)) } catch {
            throw FederationError.state(path: path, "cannot encode round \(record.round)'s audit record: \(error)")
        }
        // Compact JSON escapes control characters inside strings, so a record never spans two lines.
        precondition(!bytes.contains(newline), "compact JSON contains a newline")
        return bytes
    }

    /// Decodes a record's bytes as written by `encode`.
    static func decode(_ bytes: ArraySlice<UInt8>) throws -> AuditRecord {
        let dates = JSONDecoder.DateDecodingStrategy.custom { decoder in
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            guard let date = try? AuditLog.dateStyle.parse(text) else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription:
                    "'\(text)' is not an ISO 8601 date with fractional seconds")
            }
            return date
        }
        do {
            return try JSONFile.decode(AuditRecord.self, from: Data(bytes), keys: .declared, dates: dates,
                                       floats: .convertFromString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN"))
        } catch {
            throw LineProblem("record does not decode: \(error)")
        }
    }

    /// Cuts a line into the record's bytes and the signature, checking the fixed prefix and suffix.
    static func split(_ line: ArraySlice<UInt8>) throws -> (record: ArraySlice<UInt8>, signature: [UInt8]) {
        guard line.count > linePrefix.count + lineSuffixLength else {
            throw LineProblem("line is \(line.count) bytes, too short to hold a signed record")
        }
        guard line.starts(with: linePrefix) else {
            throw LineProblem("line does not start with {\"record\":")
        }
        let suffixStart = line.endIndex - lineSuffixLength
        let hexStart = suffixStart + signatureOpening.count
        let hexEnd = hexStart + signatureHexLength
        guard line[suffixStart..<hexStart].elementsEqual(signatureOpening),
              line[hexEnd...].elementsEqual(lineClosing) else {
            throw LineProblem("line does not end with ,\"signature\":\"<\(signatureHexLength) hex digits>\"}")
        }
        let hex = line[hexStart..<hexEnd]
        if let bad = hex.firstIndex(where: { !isLowerHexDigit($0) }) {
            throw LineProblem("signature has a character that is not a lower-case hex digit at offset \(bad - hexStart)")
        }
        // All lower-case hex of even length: decoding cannot fail.
        let signature = try Hex.decode(String(decoding: hex, as: UTF8.self))
        return (line[(line.startIndex + linePrefix.count)..<suffixStart], signature)
    }

    static func hashHex(_ line: ArraySlice<UInt8>) -> String { Hex.encode(Hash.blake2b(line)) }

    static func isLowerHexDigit(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
    }

    // MARK: File system

    /// The offset where the line ending just before `end` starts: one past the previous newline, or 0.
    /// Reads backwards at most `maximumLineLength` bytes.
    private func startOfLine(_ file: AppendOnlyFile, endingAt end: Int, what: String) throws -> Int {
        let chunk = 1 << 16
        var upper = end
        while upper > 0 {
            guard end - upper <= Self.maximumLineLength else {
                throw FederationError.state(path: url.path, "\(what) is longer than the \(Self.maximumLineLength)-byte line limit")
            }
            let lower = max(0, upper - chunk)
            let bytes = try file.read(offset: lower, count: upper - lower)
            if let index = bytes.lastIndex(of: Self.newline) {
                let start = lower + index + 1
                guard end - start <= Self.maximumLineLength else {
                    throw FederationError.state(path: url.path, "\(what) is \(end - start) bytes, over the \(Self.maximumLineLength)-byte line limit")
                }
                return start
            }
            upper = lower
        }
        guard end <= Self.maximumLineLength else {
            throw FederationError.state(path: url.path, "\(what) is \(end) bytes, over the \(Self.maximumLineLength)-byte line limit")
        }
        return 0
    }

    /// The whole log, or nil when it does not exist; read under a shared lock so an append in
    /// progress is not seen half-written.
    static func readLog(_ url: URL) throws -> [UInt8]? {
        try stateErrors {
            guard let file = try AppendOnlyFile(readingAt: url.path) else { return nil }
            try file.lock(exclusive: false)
            let size = try file.size()
            guard size <= maximumFileSize else {
                throw FederationError.state(path: url.path, "is \(size) bytes, over the \(maximumFileSize)-byte limit of an audit log")
            }
            return try file.read(offset: 0, count: size)
        }
    }

    /// Runs `body`, turning a `SystemIOError` into this module's `FederationError.state` naming the same
    /// file, with the system call and the C library's words for its error.
    static func stateErrors<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as SystemIOError {
            throw FederationError.state(path: error.path, error.systemCall.map { "\($0.operation): \($0.message)" } ?? error.reason)
        }
    }
}

/// What `AuditLog.append` did.
public struct AuditAppend: Sendable, Equatable {
    /// The record as written (chained to the previous line) and as `verify` reads it back.
    public let record: AuditRecord
    /// True when bytes after the last newline (a write torn by a crash) were removed first.
    public let repairedTornTail: Bool
    /// How many torn bytes were removed.
    public let discardedBytes: Int
}

/// The outcome of `AuditLog.verify`.
public struct AuditVerification: Sendable {
    /// The records of every committed line that parses, in file order (including any after a failure).
    public let records: [AuditRecord]
    /// The first line (1-based) that fails, and why; nil when the whole chain verifies.
    public let failure: (record: Int, reason: String)?

    /// True when every line verified.
    public var verified: Bool { failure == nil }

    public init(records: [AuditRecord], failure: (record: Int, reason: String)?) {
        self.records = records
        self.failure = failure
    }
}

/// Why one line of the log is not a valid signed record.
struct LineProblem: Error {
    let reason: String
    init(_ reason: String) { self.reason = reason }
}
