import Foundation
import Wire

extension RoundEngine {
    /// What the engine is doing, for the coordinator's `status`: its phase, the queue, the connected
    /// clients and, while a round is in flight, who was invited and who has answered. JSON (one flat
    /// object): `{"phase", "queued_rounds", "next_round", "connected"}`, plus the fields of
    /// `RoundInFlight` while a round is in flight.
    public struct Status: Codable, Sendable, Equatable {
        public var phase: Phase
        /// Rounds requested and not yet started.
        public var queuedRounds: Int
        /// The number the next round takes.
        public var nextRound: UInt64
        /// Connected clients, sorted.
        public var connected: [String]
        /// The round in flight; nil when none is.
        public var inFlight: RoundInFlight?

        public init(phase: Phase, queuedRounds: Int, nextRound: UInt64, connected: [String], inFlight: RoundInFlight? = nil) {
            self.phase = phase
            self.queuedRounds = queuedRounds
            self.nextRound = nextRound
            self.connected = connected
            self.inFlight = inFlight
        }

        enum CodingKeys: String, CodingKey {
            case phase, connected
            case queuedRounds = "queued_rounds"
            case nextRound = "next_round"
        }

        /// The round's fields sit beside the engine's in the same object.
        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(phase, forKey: .phase)
            try c.encode(queuedRounds, forKey: .queuedRounds)
            try c.encode(nextRound, forKey: .nextRound)
            try c.encode(connected, forKey: .connected)
            try inFlight?.encode(to: encoder)
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            phase = try c.decode(Phase.self, forKey: .phase)
            queuedRounds = try c.decode(Int.self, forKey: .queuedRounds)
            nextRound = try c.decode(UInt64.self, forKey: .nextRound)
            connected = try c.decode([String].self, forKey: .connected)
            inFlight = try RoundInFlight.isPresent(in: decoder) ? RoundInFlight(from: decoder) : nil
        }
    }

    /// The round in flight as `status` shows it. JSON: `{"round", "cohort", "accepted", "uploaded",
    /// "declined": [{"client", "reason"}], "dropped": [{"client", "reason"}], "started" (seconds since
    /// 1970), "secure_stage"?}`.
    public struct RoundInFlight: Codable, Sendable, Equatable {
        public var round: UInt64
        public var cohort: [String]
        /// Cohort members that accepted the invitation, sorted.
        public var accepted: [String]
        /// Members whose update has arrived, sorted.
        public var uploaded: [String]
        public var declined: [ClientReason]
        public var dropped: [ClientReason]
        public var started: Date
        /// The secure-aggregation stage (`SecureRound.Stage`'s name), when the round masks its updates.
        public var secureStage: String?

        public init(round: UInt64, cohort: [String], accepted: [String], uploaded: [String], declined: [ClientReason],
                    dropped: [ClientReason], started: Date, secureStage: String?) {
            self.round = round
            self.cohort = cohort
            self.accepted = accepted
            self.uploaded = uploaded
            self.declined = declined
            self.dropped = dropped
            self.started = started
            self.secureStage = secureStage
        }

        enum CodingKeys: String, CodingKey {
            case round, cohort, accepted, uploaded, declined, dropped, started
            case secureStage = "secure_stage"
        }

        static func isPresent(in decoder: any Decoder) throws -> Bool {
            try decoder.container(keyedBy: CodingKeys.self).contains(.round)
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(round, forKey: .round)
            try c.encode(cohort, forKey: .cohort)
            try c.encode(accepted, forKey: .accepted)
            try c.encode(uploaded, forKey: .uploaded)
            try c.encode(declined, forKey: .declined)
            try c.encode(dropped, forKey: .dropped)
            try c.encode(started.timeIntervalSince1970, forKey: .started)
            try c.encodeIfPresent(secureStage, forKey: .secureStage)
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            round = try c.decode(UInt64.self, forKey: .round)
            cohort = try c.decode([String].self, forKey: .cohort)
            accepted = try c.decode([String].self, forKey: .accepted)
            uploaded = try c.decode([String].self, forKey: .uploaded)
            declined = try c.decode([ClientReason].self, forKey: .declined)
            dropped = try c.decode([ClientReason].self, forKey: .dropped)
            started = Date(timeIntervalSince1970: try c.decode(Double.self, forKey: .started))
            secureStage = try c.decodeIfPresent(String.self, forKey: .secureStage)
        }
    }
}
