/// The protocol stage a message or a check belongs to (Bonawitz et al., CCS 2017, Figure 4: rounds 0
/// to 4, with the consistency check of the actively secure variant).
public enum SecureAggregationStage: String, Sendable, Equatable, CustomStringConvertible {
    /// Round 0: each client advertises two fresh X25519 public keys, signed.
    case advertiseKeys = "advertise keys"
    /// Round 1: each client Shamir-shares its masking key and self-mask seed among its neighbours.
    case shareKeys = "share keys"
    /// Round 2: each client uploads its masked, fixed-point encoded input.
    case maskedInput = "masked input"
    /// Round 3: survivors sign the survivor set U3; shares are revealed only against t signatures on it.
    case consistencyCheck = "consistency check"
    /// Round 4: survivors reveal shares so the coordinator can remove the remaining masks.
    case unmask = "unmask"

    public var description: String { rawValue }
}

/// Every failure of the secure-aggregation protocol and its encoding. Each case names the stage,
/// participant, field or value concerned, so a log line says exactly what went wrong and who sent it.
public enum SecureAggregationError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The round's parameters are unusable (e.g. a threshold outside its allowed range).
    case invalidParameters(String)
    /// A fixed-point encoding cannot be built or applied as asked.
    case invalidEncoding(String)
    /// A message carries a session id other than this round's (a replay from another session,
    /// or a peer configured for another round, plan or adapter).
    case sessionMismatch(stage: SecureAggregationStage, sender: ParticipantID)
    /// The coordinator's round was announced for a global adapter other than the one this client holds.
    case adapterHashMismatch(expected: String, announced: String)
    /// A participant that is not in this round's cohort (or not a neighbour where one is required).
    case unknownParticipant(stage: SecureAggregationStage, participant: ParticipantID, reason: String)
    /// A second message from the same participant in one stage.
    case duplicateMessage(stage: SecureAggregationStage, sender: ParticipantID)
    /// A key advertisement whose Ed25519 signature does not verify under the participant's enrolled key.
    case invalidSignature(participant: ParticipantID)
    /// A malformed field in a message: wrong length, wrong recipient set, out-of-range index.
    case malformedMessage(stage: SecureAggregationStage, sender: ParticipantID, reason: String)
    /// An encrypted share that fails authentication (wrong key, wrong session or ids, or tampering).
    case shareDecryptionFailed(sender: ParticipantID, recipient: ParticipantID)
    /// A client refuses a request that would break the protocol's privacy (e.g. revealing both the
    /// self-mask share and the masking-key share of one peer).
    case refused(stage: SecureAggregationStage, reason: String)
    /// The round cannot complete: too few participants left, or secrets that do not reconstruct.
    case roundAborted(stage: SecureAggregationStage, reason: String)
    /// A client refuses to reveal shares: the coordinator forwarded fewer than t valid consistency
    /// signatures on the survivor set this client signed from members of `owner`'s closed
    /// neighbourhood (the holders of `owner`'s shares), so other holders may have been told another
    /// story about who dropped (Bonawitz et al., ConsistencyCheck).
    case consistencyCheckFailed(recipient: ParticipantID, owner: ParticipantID, validSignatures: Int, threshold: Int)
    /// A revealed share that does not reconstruct what its owner committed to in its signed
    /// advertisement (the seed commitment, or the masking public key); `holder` is the member whose
    /// share was wrong when the coordinator could single it out (it needs more than t shares).
    case invalidRevealedShare(owner: ParticipantID, kind: ShareKind, holder: ParticipantID?)
    /// A graph and threshold that withstand too few colluders against a coordinator that lies about
    /// dropouts (see `CollusionResistance`); refused when a round is planned.
    case collusionResistanceTooLow(withstood: Int, minimum: Int, detail: String)
    /// A call that is not valid in the state machine's current state (a bug in the driver).
    case invalidState(expected: String, actual: String)

    public var description: String {
        switch self {
        case let .invalidParameters(reason):
            return "invalid secure-aggregation parameters: \(reason)"
        case let .invalidEncoding(reason):
            return "fixed-point encoding: \(reason)"
        case let .sessionMismatch(stage, sender):
            return "\(stage): message from participant \(sender) carries another session id (replayed or misconfigured)"
        case let .adapterHashMismatch(expected, announced):
            return "round announced for global adapter \(announced), but this client holds \(expected)"
        case let .unknownParticipant(stage, participant, reason):
            return "\(stage): participant \(participant) \(reason)"
        case let .duplicateMessage(stage, sender):
            return "\(stage): second message from participant \(sender)"
        case let .invalidSignature(participant):
            return "signature of participant \(participant) (key advertisement or consistency signature) does not verify under its enrolled key"
        case let .malformedMessage(stage, sender, reason):
            return "\(stage): malformed message from participant \(sender): \(reason)"
        case let .shareDecryptionFailed(sender, recipient):
            return "share keys: encrypted shares from participant \(sender) to \(recipient) fail authentication"
        case let .refused(stage, reason):
            return "\(stage): refused: \(reason)"
        case let .roundAborted(stage, reason):
            return "round aborted at \(stage): \(reason)"
        case let .consistencyCheckFailed(recipient, owner, valid, threshold):
            return "consistency check: participant \(recipient) holds \(valid) valid signatures on its survivor set from "
                + "participant \(owner)'s neighbourhood, threshold \(threshold); it reveals no share (the coordinator may be "
                + "telling different clients different survivor sets)"
        case let .invalidRevealedShare(owner, kind, holder):
            return "unmask: the revealed \(kind.rawValue) shares of participant \(owner) do not reconstruct what it committed to"
                + (holder.map { "; the share revealed by participant \($0) is wrong" } ?? "")
        case let .collusionResistanceTooLow(withstood, minimum, detail):
            return "secure aggregation withstands \(withstood) colluding clients per neighbourhood against a lying coordinator, "
                + "below the minimum \(minimum): \(detail)"
        case let .invalidState(expected, actual):
            return "secure-aggregation state machine: expected state \(expected), but it is \(actual)"
        }
    }
}
