import Foundation
import SecureCrypto
import SystemIO
import Wire

extension AuditLog {
    // MARK: Signed head

    /// The log's head as it stands (committed lines, and the hash of the last), signed by `signer`:
    /// what every round result carries to the clients. A torn tail is not counted (it was never
    /// committed). A missing log is a head of zero records whose hash is 32 zero bytes.
    /// - Throws: `FederationError.state` naming the file when it cannot be read or is too large.
    public func signedHead(signer: SigningKeyPair) throws -> AuditHead {
        let lines = Self.committedLines(try Self.readLog(url) ?? [])
        let lastHash = lines.last.map { Hash.blake2b($0) } ?? [UInt8](repeating: 0, count: 32)
        return AuditHead.sign(records: UInt64(lines.count), lastHash: lastHash, signer: signer)
    }

    /// Compares a head a client kept with the log at `url`: the head must be signed by `publicKey`
    /// (the coordinator's audit key), the log must still hold at least `head.records` committed lines,
    /// and line `head.records` must hash to `head.lastHash`. Returns nil when all holds, otherwise what
    /// is wrong, naming the head's figures and the log's.
    ///
    /// A head shows what the log held when it was signed: records removed from the end since, or any
    /// line up to its count rewritten, are found; records appended since are not its concern.
    /// - Throws: `FederationError.state` naming the log when it cannot be read.
    public static func checkHead(_ head: AuditHead, url: URL, publicKey: SigningPublicKey) throws -> String? {
        guard head.isSigned(by: publicKey) else {
            let named = head.publicKey == publicKey.bytes ? "" : " (it names key \(Hex.encode(head.publicKey)))"
            return "the head's signature does not verify under this coordinator's audit key \(Hex.encode(publicKey.bytes))"
                + "\(named): it is forged, damaged or from another federation; nothing is compared"
        }
        let lines = committedLines(try readLog(url) ?? [])
        if head.records > UInt64(lines.count) {
            return "the head says the log held \(head.records) records (last hash \(head.lastHashHex)); \(url.lastPathComponent) "
                + "has \(lines.count): \(head.records - UInt64(lines.count)) record(s) removed from its end, or the log replaced"
        }
        guard head.records > 0 else { return nil }
        let index = Int(head.records) - 1
        let hash = Hex.encode(Hash.blake2b(lines[index]))
        guard hash == head.lastHashHex else {
            return "the head says record \(head.records) hashes to \(head.lastHashHex); line \(head.records) of "
                + "\(url.lastPathComponent) hashes to \(hash): the log was rewritten at or before record \(head.records)"
        }
        return nil
    }

    /// Reads a head a client kept (`audit-head.json` in its state directory).
    /// - Throws: `FederationError.state` naming the file and the field that is wrong.
    public static func readHead(from url: URL) throws -> AuditHead {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw FederationError.state(path: url.path, "cannot read the audit head: \(error.localizedDescription)")
        }
        guard data.count <= 4096 else {
            throw FederationError.state(path: url.path, "is \(data.count) bytes; an audit head is a JSON object of under 400")
        }
        do {
            return try JSONFile.decode(AuditHead.self, from: data, keys: .declared)
        } catch {
            throw FederationError.state(path: url.path, "not an audit head (audit-head.json from a client's state directory): \(error)")
        }
    }

    /// Every line of `bytes` that ends in a newline, without it (a torn tail is left out).
    static func committedLines(_ bytes: [UInt8]) -> [ArraySlice<UInt8>] {
        var lines: [ArraySlice<UInt8>] = []
        var start = 0
        while let end = bytes[start...].firstIndex(of: newline) {
            lines.append(bytes[start..<end])
            start = end + 1
        }
        return lines
    }
}
