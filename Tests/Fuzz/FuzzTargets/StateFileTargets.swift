import Foundation
import Tokenizer
import FineTuning
import Audit
import Privacy
import ClientService
import CoordinatorService
import SecureCrypto
import Wire

/// The JSON files an operator writes or a state directory holds, and the audit log.
enum StateFileTargets {
    /// Which file the input is: its first byte (mod 6) picks one, the rest is the file.
    enum Kind: UInt8, CaseIterable {
        case client, coordinator, settings, ledger, registry, control
    }

    static func configuration(_ data: Data) throws {
        guard let first = data.first, let kind = Kind(rawValue: first % UInt8(Kind.allCases.count)) else { return }
        let body = Data(data.dropFirst())
        switch kind {
        case .client: _ = try ClientConfiguration.load(Scratch.shared.write(body, as: "client.json"))
        case .coordinator: _ = try CoordinatorConfiguration.load(Scratch.shared.write(body, as: "coordinator.json"))
        case .settings: _ = try CoordinatorSettings.load(from: Scratch.shared.write(body, as: "settings.json"))
        case .ledger:
            let file = try Scratch.shared.write(body, as: PrivacyLedger.fileName, in: "ledger")
            let ledger = try PrivacyLedger(directory: file.deletingLastPathComponent())
            _ = ledger.entries.count
        case .registry: _ = try ClientRegistry(file: Scratch.shared.write(body, as: "clients.json"))
        case .control:
            _ = try JSONEncoder().encode(try ControlRequest.read([UInt8](body)).get())
        }
    }

    /// The audit log, verified under the corpus's key (`SecureSeeds.identity(9)`): every line is
    /// parsed, split, hashed and decoded whether or not its signature verifies. Then one record is
    /// appended as `serve` appends after a round, which reads the last line back (and cuts a torn tail).
    static func audit(_ data: Data) throws {
        let url = try Scratch.shared.write(data, as: "audit.jsonl")
        let verification = try AuditLog.verify(url: url, publicKey: auditSigner.publicKey)
        _ = try AuditLog(url: url).append(appendedRecord, signer: auditSigner)
        if let failure = verification.failure { throw AuditRefusal(line: failure.record, reason: failure.reason) }
    }

    struct AuditRefusal: Error {
        let line: Int
        let reason: String
    }

    static let auditSigner = SecureSeeds.identity(9)
    static let appendedRecord = AuditRecord(
        status: "committed", round: 1 << 40, started: Date(timeIntervalSince1970: 1_800_000_000),
        finished: Date(timeIntervalSince1970: 1_800_000_060), cohort: ["c"], participants: ["c"], declines: [], dropouts: [],
        aggregation: "fedavg", secureAggregation: false, plan: WireSeeds.plan, clients: [], maxEpsilon: 1, evalLossBefore: nil,
        evalLossAfter: nil, adapterSHA256: String(repeating: "0", count: 64), abortReason: nil, previousHash: "")
}

/// JSONL datasets, read as `train` and `join` read them. The input's first byte sets the reading:
/// 1 a small byte-level tokenizer for text records (else pre-tokenized only), 2 a maximum length of 256
/// tokens, 4 a `user` on every record; the rest is the file.
enum DatasetTarget {
    static func run(_ data: Data) throws {
        guard let first = data.first else { return }
        let url = try Scratch.shared.write(Data(data.dropFirst()), as: "data.jsonl")
        let tokenizer = first & 1 == 1 ? tokenizerForText : nil
        _ = try Dataset.load(url, tokenizer: tokenizer, maxLength: first & 2 == 2 ? 256 : nil,
                             vocabularySize: tokenizer?.vocabularySize ?? 512, requireUser: first & 4 == 4)
    }

    /// 256 byte tokens, a few merges and the chat-template markers: enough to tokenize any text.
    static let tokenizerForText: BPETokenizer? = {
        var tokens: [String] = (0..<256).map { byteLevelText(UInt8($0)) }
        tokens += ["Ġt", "Ġa", "he", "Ġthe", "<|im_start|>", "<|im_end|>"]
        let types = [Int](repeating: 1, count: tokens.count - 2) + [3, 3]
        return try? BPETokenizer(tokens: tokens, merges: ["Ġ t", "Ġ a", "h e", "Ġt he"], tokenTypes: types,
                                 preTokenizer: .gpt2, bosTokenId: nil, eosTokenId: tokens.count - 1, addBOS: false,
                                 chatTemplate: chatML)
    }()

    /// A ChatML template with a default system prompt (the family `messages` records are rendered in).
    static let chatML = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        + "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
        + "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"

    /// GPT-2's byte-to-character mapping (printable Latin-1 stands for itself, the rest from U+0100 on).
    static func byteLevelText(_ byte: UInt8) -> String {
        let printable = (33...126).contains(byte) || (161...172).contains(byte) || (174...255).contains(byte)
        if printable { return String(Character(Unicode.Scalar(byte))) }
        let rank = (0..<byte).filter { !((33...126).contains($0) || (161...172).contains($0) || (174...255).contains($0)) }.count
        return String(Character(Unicode.Scalar(UInt32(256 + rank))!))
    }
}
