import Foundation
import SecureCrypto
import SystemIO
import Wire

/// What the end of an audit log needs after a crash, as `AuditLog.tailRepair` decides it.
public enum AuditTailRepair: Sendable, Equatable {
    /// The log ends in a complete line: nothing to repair.
    case none
    /// Bytes from `offset` to the end are a torn write (line `line`, 1-based): they go.
    case remove(offset: Int, line: Int, reason: String)
    /// Line `line` is a complete record signed by the log's key and chained to the line before,
    /// missing only its newline: the newline is restored, nothing is removed.
    case completeLastLine(line: Int)
    /// The end is wrong in a way a torn write cannot explain: `repair` touches nothing.
    case refuse(line: Int, reason: String)
}

/// What `AuditLog.repairTornTail` did.
public struct AuditRepair: Sendable, Equatable {
    public let action: AuditTailRepair
    /// Where the removed bytes were kept (nil when nothing was removed).
    public let savedTo: URL?

    public init(action: AuditTailRepair, savedTo: URL?) {
        self.action = action
        self.savedTo = savedTo
    }
}

extension AuditLog {
    // MARK: Repairing a torn tail

    /// Decides what the end of `bytes` needs. Only the last line is ever looked at, and a line that
    /// is a complete record correctly signed by `publicKey` is never removed:
    /// - no terminating newline: removed, unless it is such a record chained to the line before (then
    ///   only its newline is missing, and `completeLastLine` restores it);
    /// - terminated but not in the line format (`{"record":…,"signature":"<hex>"}`): removed;
    /// - terminated, in the format, but its signature does not verify: refused (not what a torn write
    ///   leaves: tampering, or another federation's key), and so is a signed record that breaks the chain.
    static func tailRepair(of bytes: [UInt8], publicKey: SigningPublicKey) -> AuditTailRepair {
        guard !bytes.isEmpty else { return .none }
        let terminated = bytes.last == newline
        let end = terminated ? bytes.count - 1 : bytes.count
        let start = bytes[..<end].lastIndex(of: newline).map { $0 + 1 } ?? 0
        let lineNumber = bytes[..<start].reduce(0) { $0 + ($1 == newline ? 1 : 0) } + 1
        let line = bytes[start..<end]
        guard let (recordBytes, signature) = try? split(line) else {
            let why = terminated ? "is not in the audit line format" : "has no terminating newline and is not a whole record"
            return .remove(offset: start, line: lineNumber, reason: "the last line (\(line.count) bytes) \(why): a write torn by a crash")
        }
        guard publicKey.isValidSignature(signature, for: recordBytes) else {
            if !terminated {
                return .remove(offset: start, line: lineNumber,
                               reason: "the last line (\(line.count) bytes) has no terminating newline and its signature does not verify")
            }
            return .refuse(line: lineNumber, reason: "line \(lineNumber) is a whole line whose signature does not verify under key "
                           + "\(Hex.encode(publicKey.bytes)): not a torn write (tampering, or another federation's key); "
                           + "repair removes only torn tails")
        }
        guard !terminated else { return .none }
        let previous = start == 0 ? firstPreviousHash : hashHex(bytes[(bytes[..<(start - 1)].lastIndex(of: newline).map { $0 + 1 } ?? 0)..<(start - 1)])
        guard let record = try? decode(recordBytes), record.previousHash == previous else {
            return .refuse(line: lineNumber, reason: "line \(lineNumber) lacks its newline but is signed by this coordinator's key "
                           + "and does not chain to line \(lineNumber - 1); a signed record is never removed: inspect it by hand")
        }
        return .completeLastLine(line: lineNumber)
    }

    /// Repairs the end of the log under an exclusive lock (no append runs meanwhile): removes a torn
    /// tail after keeping a copy of it beside the log (`audit.jsonl.torn-<time>`, written durably
    /// first), or restores the newline of a whole signed record; see `tailRepair(of:publicKey:)`.
    /// A missing log needs nothing.
    /// - Throws: `FederationError.audit` naming the line when the end is refused, and
    ///   `FederationError.state` naming the file for I/O failures.
    public func repairTornTail(publicKey: SigningPublicKey, now: Date = Date()) throws -> AuditRepair {
        try Self.stateErrors {
            guard FileManager.default.fileExists(atPath: url.path) else { return AuditRepair(action: .none, savedTo: nil) }
            let file = try AppendOnlyFile(appendingTo: url.path, permissions: 0o644)
            try file.lock(exclusive: true)
            let size = try file.size()
            guard size <= Self.maximumFileSize else {
                throw FederationError.state(path: url.path, "is \(size) bytes, over the \(Self.maximumFileSize)-byte limit of an audit log")
            }
            let bytes = try file.read(offset: 0, count: size)
            let action = Self.tailRepair(of: bytes, publicKey: publicKey)
            switch action {
            case .none:
                return AuditRepair(action: action, savedTo: nil)
            case let .refuse(line, reason):
                throw FederationError.audit(record: line, reason)
            case .completeLastLine:
                try file.appendDurably([Self.newline], sizeBefore: size)
                return AuditRepair(action: action, savedTo: nil)
            case let .remove(offset, _, _):
                let copy = url.deletingLastPathComponent()
                    .appendingPathComponent(url.lastPathComponent + ".torn-" + Self.copyStamp(now))
                // The copy is durable before a byte of the log goes; an existing copy is never replaced.
                try writeFileAtomically(Data(bytes[offset...]), to: copy, permissions: 0o644, replacingExisting: false)
                try file.truncateDurably(to: offset, operation: "truncate the torn last line")
                return AuditRepair(action: action, savedTo: copy)
            }
        }
    }

    /// A compact UTC time with milliseconds, for the name of a removed tail's copy.
    static func copyStamp(_ date: Date) -> String {
        date.formatted(dateStyle).replacingOccurrences(of: ":", with: "").replacingOccurrences(of: "-", with: "")
    }
}

extension AuditLog {
    /// True when the first failure `verify` found, at line `failingLine`, is the log's last line and
    /// `repairTornTail` would mend it: what `serve` checks to tell the operator to run `audit --repair`.
    public static func endsInTornWrite(url: URL, publicKey: SigningPublicKey, failingLine: Int) throws -> Bool {
        let bytes = try readLog(url) ?? []
        switch tailRepair(of: bytes, publicKey: publicKey) {
        case let .remove(_, line, _): return line == failingLine
        case let .completeLastLine(line): return line == failingLine
        case .none, .refuse: return false
        }
    }
}
