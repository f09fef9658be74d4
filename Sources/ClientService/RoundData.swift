import FederationProtocol
import FineTuning
import Foundation
import Tokenizer

/// A client's training and held-out records for a round, read the same way whatever the plan.
///
/// The records are read and checked without the plan (a file that cannot be read, a malformed record,
/// no token to learn: the `data` decline, the same for every plan), and only then cut to the plan's
/// `max_length` (`Dataset.truncated`). So no plan the coordinator chooses can make a client's answer
/// depend on its records' lengths (issue 13), and N is the number of records in the file.
public enum RoundData {
    /// The records as last read, kept between rounds so that a client does not tokenize its files again each round
    /// (a second of CPU per round for 400 notes): reused only while both files are the same (device, inode, size
    /// and modification time) and the same `requireUser` is asked. Only records that were read without error are kept.
    public final class Cache: @unchecked Sendable {
        struct Key: Equatable {
            var train: FileIdentity
            var eval: FileIdentity
            var requireUser: Bool
        }
        var key: Key?
        var train: [TokenizedExample] = []
        var eval: [TokenizedExample] = []
        /// Rounds served from the kept records.
        public private(set) var hits = 0

        public init() {}

        func lookup(_ wanted: Key) -> (train: [TokenizedExample], eval: [TokenizedExample])? {
            guard key == wanted else { return nil }
            hits += 1
            return (train, eval)
        }

        func keep(_ wanted: Key, train: [TokenizedExample], eval: [TokenizedExample]) {
            key = wanted
            self.train = train
            self.eval = eval
        }
    }

    /// What tells one version of a file from another without reading it.
    struct FileIdentity: Equatable {
        var device: UInt64
        var inode: UInt64
        var size: UInt64
        var modified: Date

        /// Nil when the file cannot be examined (reading it then reports the error).
        init?(path: String) {
            guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
                  let size = (attributes[.size] as? NSNumber)?.uint64Value,
                  let inode = (attributes[.systemFileNumber] as? NSNumber)?.uint64Value,
                  let device = (attributes[.systemNumber] as? NSNumber)?.uint64Value,
                  let modified = attributes[.modificationDate] as? Date else { return nil }
            (self.device, self.inode, self.size, self.modified) = (device, inode, size, modified)
        }
    }

    /// - Parameters:
    ///   - requireUser: every training and held-out record must have a `user` field (privacy unit user).
    ///   - cache: the records of an earlier round, reused while the files are unchanged (nil: always read).
    public static func load(_ configuration: ClientConfiguration, maxLength: Int, tokenizer: BPETokenizer?,
                            vocabularySize: Int, requireUser: Bool = false, cache: Cache? = nil)
        -> Result<(train: [TokenizedExample], eval: [TokenizedExample]), PreparationFailure> {
        let key = FileIdentity(path: configuration.data).flatMap { train in
            FileIdentity(path: configuration.evalData).map { Cache.Key(train: train, eval: $0, requireUser: requireUser) }
        }
        if let key, let kept = cache?.lookup(key) {
            return .success((Dataset.truncated(kept.train, to: maxLength), Dataset.truncated(kept.eval, to: maxLength)))
        }
        do {
            let train = try Dataset.load(URL(fileURLWithPath: configuration.data), tokenizer: tokenizer, maxLength: nil,
                                         vocabularySize: vocabularySize, requireUser: requireUser)
            try Dataset.requireLearnableTokens(train, file: configuration.data)
            // At privacy unit user the held-out release counts people too, so every held-out record names one.
            let eval = try Dataset.load(URL(fileURLWithPath: configuration.evalData), tokenizer: tokenizer, maxLength: nil,
                                        vocabularySize: vocabularySize, requireUser: requireUser)
            try requireConditionsOnAllOrNone(eval, file: configuration.evalData)
            if let key { cache?.keep(key, train: train, eval: eval) }
            return .success((Dataset.truncated(train, to: maxLength), Dataset.truncated(eval, to: maxLength)))
        } catch {
            return .failure(.data("\(error)"))
        }
    }

    /// Throws, naming the first record that differs, when some held-out records carry a `condition` and others do not.
    /// A client releases a condition accuracy when its held-out records carry conditions; were a file allowed to mix
    /// them, whether it releases at all could turn on one record, which the release's ε does not cover.
    static func requireConditionsOnAllOrNone(_ examples: [TokenizedExample], file: String) throws {
        guard let first = examples.first, let odd = examples.first(where: { ($0.condition == nil) != (first.condition == nil) })
        else { return }
        throw DatasetError(file: file, line: odd.line, "this held-out record \(odd.condition == nil ? "has no" : "has a") "
                           + "\"condition\" and the first (line \(first.line)) \(first.condition == nil ? "has none" : "has one"): "
                           + "give every held-out record a condition, or none (condition accuracy is released only when all have one)")
    }

    /// The held-out loss a client reports: the mean over its counted tokens, or 0 over 0 tokens when
    /// the plan's `max_length` cut away every scored token (the coordinator's mean is token-weighted, so
    /// it counts for nothing). The mean itself would be NaN, which the coordinator refuses, and whether
    /// the client stayed in the round would then depend on `max_length` and its records' lengths.
    public static func reportedLoss(_ evaluation: Evaluation) -> Double {
        evaluation.tokens > 0 ? evaluation.loss : 0
    }
}
