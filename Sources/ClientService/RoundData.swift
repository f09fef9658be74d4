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
    /// - Parameter requireUser: every training and held-out record must have a `user` field (privacy unit user).
    public static func load(_ configuration: ClientConfiguration, maxLength: Int, tokenizer: BPETokenizer?,
                            vocabularySize: Int, requireUser: Bool = false)
        -> Result<(train: [TokenizedExample], eval: [TokenizedExample]), PreparationFailure> {
        do {
            let train = try Dataset.load(URL(fileURLWithPath: configuration.data), tokenizer: tokenizer, maxLength: nil,
                                         vocabularySize: vocabularySize, requireUser: requireUser)
            try Dataset.requireLearnableTokens(train, file: configuration.data)
            // At privacy unit user the held-out release counts people too, so every held-out record names one.
            let eval = try Dataset.load(URL(fileURLWithPath: configuration.evalData), tokenizer: tokenizer, maxLength: nil,
                                        vocabularySize: vocabularySize, requireUser: requireUser)
            return .success((Dataset.truncated(train, to: maxLength), Dataset.truncated(eval, to: maxLength)))
        } catch {
            return .failure(.data("\(error)"))
        }
    }

    /// The held-out loss a client reports: the mean over its counted tokens, or 0 over 0 tokens when
    /// the plan's `max_length` cut away every scored token (the coordinator's mean is token-weighted, so
    /// it counts for nothing). The mean itself would be NaN, which the coordinator refuses, and whether
    /// the client stayed in the round would then depend on `max_length` and its records' lengths.
    public static func reportedLoss(_ evaluation: Evaluation) -> Double {
        evaluation.tokens > 0 ? evaluation.loss : 0
    }
}
