import Foundation
import SecureCrypto
import SystemIO
import Wire

/// The client's copy of the coordinator's audit-log head (`audit-head.json`): the latest signed head
/// that came with a round result, kept durably so that an auditor can check the coordinator's log
/// against it (`conclave-coordinator audit --verify --head FILE`).
///
/// The audit key is pinned at first sight: the first head kept names it, and a later head must be
/// signed by the same key. A head is refused when its signature does not verify, when it is signed by
/// another key, or when it shows the log shorter than a head already kept, or as long but with
/// another last hash (the log lost or rewrote records this client saw). A refused head is not kept;
/// the kept one stays as evidence.
public enum ClientAuditHead {
    /// What to do with a head received.
    public enum Verdict: Equatable, Sendable {
        /// Newer than the kept one (or the first): keep it.
        case keep
        /// The same head as the kept one: nothing to write.
        case unchanged
        /// Not kept, and why.
        case refuse(String)
    }

    /// Decides what to do with `received` given the head kept so far (pure; `keep` carries it out).
    public static func judge(_ received: AuditHead, kept: AuditHead?) -> Verdict {
        guard received.isSelfConsistent else {
            return .refuse("its signature does not verify under the key it names (\(Hex.encode(received.publicKey)))")
        }
        guard let kept else { return .keep }
        guard received.publicKey == kept.publicKey else {
            return .refuse("it is signed by key \(Hex.encode(received.publicKey)), not by the coordinator's audit key pinned "
                           + "at first sight (\(Hex.encode(kept.publicKey)))")
        }
        if received.records < kept.records {
            return .refuse("it says the log holds \(received.records) records; a head kept earlier says \(kept.records): "
                           + "records were removed from the coordinator's audit log")
        }
        if received.records == kept.records {
            return received.lastHash == kept.lastHash ? .unchanged
                : .refuse("it says record \(received.records) hashes to \(received.lastHashHex); a head kept earlier says "
                          + "\(kept.lastHashHex): the coordinator's audit log was rewritten")
        }
        return .keep
    }

    /// The head kept in `paths`, or nil when none has been.
    /// - Throws: `FederationError.state` naming the file when it exists but cannot be read as a head.
    public static func read(paths: ClientPaths) throws -> AuditHead? {
        let url = paths.auditHead
        guard let data = FileManager.default.contents(atPath: url.path) else { return nil }
        do {
            return try JSONFile.decode(AuditHead.self, from: data, keys: .declared)
        } catch {
            throw FederationError.state(path: url.path, "not an audit head: \(error); move it aside to start afresh")
        }
    }

    /// Judges `received` against the kept head and writes it durably when it is to be kept
    /// (`writeFileAtomically`). Returns the verdict, for the caller's log.
    /// - Throws: `FederationError.state` naming the file when the kept head cannot be read or the new one written.
    @discardableResult
    public static func keep(_ received: AuditHead, paths: ClientPaths) throws -> Verdict {
        let verdict = judge(received, kept: try read(paths: paths))
        guard verdict == .keep else { return verdict }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        do {
            try writeFileAtomically(try encoder.encode(received) + Data("\n".utf8), to: paths.auditHead, permissions: 0o644)
        } catch {
            throw FederationError.state(path: paths.auditHead.path, "cannot write the audit head: \(error)")
        }
        return verdict
    }
}
