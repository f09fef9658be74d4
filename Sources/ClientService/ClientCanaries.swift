import FederationProtocol
import FineTuning
import Foundation
import LanguageModel
import ModelFormats
import SystemIO
import Tokenizer
import Wire

/// The `canaries` object of a client's configuration: secret canaries (Carlini et al. 2019) to plant
/// in this client's training data, so that their exposure on the global adapter can be measured each
/// round. JSON `{"count": N, "digits": D, "repetitions": K, "phrase": "…"?}`.
///
/// For the ledger: each repetition of each canary is one more training record (the client's record
/// count, and so DP-SGD's sampling, includes `count × repetitions` of them). A canary repeated k times
/// is protected by group privacy of size k, not by the per-record ε.
public struct CanaryConfiguration: Codable, Sendable, Equatable {
    /// Canaries to plant (distinct secrets).
    public var count: Int
    /// Digits per secret: the candidate space holds 10^digits secrets.
    public var digits: Int
    /// Times each canary is planted.
    public var repetitions: Int
    /// The fixed text before the secret (default `CanarySet.defaultPhrase`).
    public var phrase: String?

    /// Largest count and repetitions a configuration may ask for.
    public static let maximumCount = 10_000
    public static let maximumRepetitions = 10_000

    public init(count: Int, digits: Int, repetitions: Int, phrase: String? = nil) {
        self.count = count
        self.digits = digits
        self.repetitions = repetitions
        self.phrase = phrase
    }

    /// The phrase in use.
    public var resolvedPhrase: String { phrase ?? CanarySet.defaultPhrase }

    /// Checks the ranges, naming the configuration file and field at fault.
    public func validate(path: String) throws {
        guard (1...Self.maximumCount).contains(count) else {
            throw FederationError.configuration(path: path, field: "canaries.count", "must be 1...\(Self.maximumCount), got \(count)")
        }
        guard (1...CanarySet.maximumDigits).contains(digits) else {
            throw FederationError.configuration(path: path, field: "canaries.digits",
                                                "must be 1...\(CanarySet.maximumDigits), got \(digits)")
        }
        guard count <= CanarySet.spaceSize(digits: digits) / 2 else {
            throw FederationError.configuration(path: path, field: "canaries.count",
                                                "\(count) canaries would fill more than half of the \(CanarySet.spaceSize(digits: digits)) "
                                                + "secrets of \(digits) digits")
        }
        guard (1...Self.maximumRepetitions).contains(repetitions) else {
            throw FederationError.configuration(path: path, field: "canaries.repetitions",
                                                "must be 1...\(Self.maximumRepetitions), got \(repetitions)")
        }
        if let phrase, phrase.isEmpty || phrase.utf8.count > 256 {
            throw FederationError.configuration(path: path, field: "canaries.phrase", "must be 1...256 bytes, got \(phrase.utf8.count)")
        }
    }
}

/// A client's planted canaries: made once from its configuration and kept secret in its state
/// directory (`canaries.json`, mode 0600, like a key); never logged and never sent. Only the summary
/// of their exposure leaves the client.
public struct ClientCanaries: Sendable {
    /// The file name in the client's state directory.
    public static let fileName = "canaries.json"
    /// Largest canaries file read back (10^4 canaries of 18 digits fit well within it).
    static let maximumFileBytes = 4 << 20

    /// Exposure is computed exactly up to this many candidates, otherwise estimated.
    public static let defaultExactUpTo = 1_000
    /// Candidates sampled when the space is larger than `defaultExactUpTo`.
    public static let defaultSamples = 500

    public let set: CanarySet
    public let tokenization: CanaryTokenization

    /// Reads the client's canaries, or makes them (secrets from libsodium's generator) and stores them
    /// with mode 0600 on first use. A stored set that no longer matches the configuration is refused
    /// rather than replaced, so that the exposure of one set is followed across rounds.
    /// - Parameters:
    ///   - vocabularySize: the model's vocabulary, which every canary token must fit.
    ///   - tokenizer: the model's tokenizer; nil for a model without one, whose canaries are written
    ///     one token per UTF-8 byte ("phrase 1 2 3" as its bytes; the vocabulary must cover 0...255).
    /// - Throws: `FederationError.state` naming the file, or `.configuration` when the model cannot
    ///   hold the canaries.
    public static func loadOrCreate(_ configuration: CanaryConfiguration, directory: URL, tokenizer: BPETokenizer?,
                                    vocabularySize: Int) throws -> ClientCanaries {
        let url = directory.appendingPathComponent(fileName)
        let set: CanarySet
        if let (data, _) = try StateFile.read(url, maximumBytes: maximumFileBytes) {
            var status = stat()
            guard stat(url.path, &status) == 0 else { throw FederationError.state(path: url.path, "stat failed") }
            guard status.st_mode & 0o077 == 0 else {
                throw FederationError.state(path: url.path, String(format: "holds secrets but has mode %o; it must be 0600", status.st_mode & 0o777))
            }
            do {
                set = try StateFile.decode(CanarySet.self, from: data, path: url.path)
            } catch {
                // The decoder's message can quote the digits it read: say what is wrong, not the secret.
                throw FederationError.state(path: url.path, "is not a valid canary set (details withheld: the file holds "
                                            + "secrets); move it away to plant a new set")
            }
            guard set.canaries.count == configuration.count, set.digits == configuration.digits,
                  set.repetitions == configuration.repetitions, set.phrase == configuration.resolvedPhrase else {
                throw FederationError.state(path: url.path, "holds \(set.canaries.count) canaries of \(set.digits) digits × "
                                            + "\(set.repetitions) after '\(set.phrase)', but the configuration asks for "
                                            + "\(configuration.count) of \(configuration.digits) × \(configuration.repetitions) after "
                                            + "'\(configuration.resolvedPhrase)'; move the file away to plant a new set")
            }
        } else {
            do {
                set = try CanarySet.generate(count: configuration.count, digits: configuration.digits,
                                             repetitions: configuration.repetitions, phrase: configuration.resolvedPhrase)
            } catch {
                throw FederationError.configuration(path: url.path, field: "canaries", "\(error)")
            }
            try StateFile.write(set, to: url, permissions: 0o600)
        }
        let tokenization: CanaryTokenization
        do {
            if let tokenizer {
                tokenization = try CanaryTokenization.text(phrase: set.phrase, tokenizer: tokenizer)
            } else {
                tokenization = try byteTokenization(phrase: set.phrase)
            }
        } catch {
            throw FederationError.configuration(path: url.path, field: "canaries.phrase", "\(error)")
        }
        if let bad = (tokenization.prefix + tokenization.digitPieces.joined()).first(where: { $0 < 0 || $0 >= vocabularySize }) {
            throw FederationError.configuration(path: url.path, field: "canaries",
                                                "canary token \(bad) is outside the model's vocabulary of \(vocabularySize)")
        }
        return ClientCanaries(set: set, tokenization: tokenization)
    }

    /// For a model without a tokenizer: the canary's text as UTF-8 bytes, one token per byte.
    public static func byteTokenization(phrase: String) throws -> CanaryTokenization {
        try CanaryTokenization(prefix: Array(phrase.utf8).map(Int.init),
                               digitPieces: (0...9).map { digit in Array(" \(digit)".utf8).map(Int.init) })
    }

    /// `examples` with every canary appended `repetitions` times.
    public func planted(into examples: [TokenizedExample]) -> [TokenizedExample] {
        set.planted(into: examples, tokenization: tokenization)
    }

    /// Measures every canary's exposure on `model` with the adapter it holds now: exact for
    /// |R| ≤ `exactUpTo`, otherwise from `samples` sampled candidates.
    ///
    /// The client calls it on the global adapter as received, so the summary it sends is post-processing
    /// of the federation's DP output: a function of that adapter, of the canaries' secrets (libsodium
    /// randomness, no private record) and of the configuration, and of no private record except through
    /// the adapter. No ε is charged for it; measuring it on the client's own local adapter would break this.
    public func measure(model: LlamaModel, exactUpTo: Int = defaultExactUpTo,
                        samples: Int = defaultSamples) throws -> CanaryExposureSummary {
        let start = Date()
        let space = set.spaceSize
        // A sample must leave candidates unsampled (at most half the space); otherwise score them all.
        let exposures = try Exposure.measure(model: model, tokenization: tokenization, set: set,
                                             exactUpTo: space / 2 < samples ? max(exactUpTo, space) : exactUpTo,
                                             samples: samples)
        return CanaryExposureSummary(exposures, repetitions: set.repetitions, seconds: Date().timeIntervalSince(start))
    }
}

extension CanaryExposureSummary {
    /// The summary of one measurement of every canary of a set.
    /// - Precondition: `exposures` is non-empty and all share one candidate space and method.
    public init(_ exposures: [Exposure], repetitions: Int, seconds: Double) {
        precondition(!exposures.isEmpty, "a canary exposure summary needs at least one canary")
        let bits = exposures.map(\.bits)
        self.init(canaries: exposures.count, repetitions: repetitions, meanBits: bits.reduce(0, +) / Double(bits.count),
                  maxBits: bits.max() ?? 0, spaceSize: exposures[0].spaceSize, exact: exposures.allSatisfy(\.isExact),
                  candidatesScored: exposures.map(\.candidatesScored).min() ?? 0, seconds: seconds)
    }
}
