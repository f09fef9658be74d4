import Foundation
import Wire

/// How a plain round's updates combine, coordinate by coordinate, into the one Δ that the strategy
/// (`aggregation`: FedAvg, FedAdam) applies. JSON `aggregator`, default `mean`.
///
/// Each is taken over updates clipped to the policy's L2 bound (`PlainUpdateCombiner`). With n updates:
/// - `mean`: Σ Δᵢ / n. One client moves it by at most C/n (C the clip), however large its update.
/// - `trimmed_mean`: per coordinate, the k = ⌊β·n⌋ largest and k smallest values are dropped and the rest
///   averaged (the coordinate-wise trimmed mean of Yin et al. 2018, "Byzantine-Robust Distributed
///   Learning", ICML): up to k clients, whatever they send, leave every coordinate within the range of
///   the honest values.
/// - `median`: per coordinate, the middle value (the mean of the two middle ones for even n; Yin et al.
///   2018's coordinate-wise median): fewer than n/2 clients leave every coordinate within the honest range.
/// None of them needs a client's record count, which never travels (issue 13). Secure rounds hide the
/// individual updates from the coordinator, so they take the `mean` only (`RoundPolicy.validate`).
public enum UpdateAggregator: String, Codable, Sendable, CaseIterable {
    case mean
    case trimmedMean = "trimmed_mean"
    case median
}

/// The coordinator's bound on each client in a plain round: every update is clipped to L2 norm
/// `normClip` (scaled by C/‖Δ‖ when longer: the direction is kept), then the updates are combined by
/// `aggregator`. A pure function of the updates: the driver logs what it reports.
public struct PlainUpdateCombiner: Sendable, Equatable {
    public var aggregator: UpdateAggregator
    /// β for `trimmedMean`: the fraction of the updates dropped at each end of every coordinate.
    public var trimFraction: Double
    /// C: the largest L2 norm an update keeps (over all its tensors together).
    public var normClip: Double

    public init(aggregator: UpdateAggregator, trimFraction: Double, normClip: Double) {
        self.aggregator = aggregator
        self.trimFraction = trimFraction
        self.normClip = normClip
    }

    /// A client whose update was longer than the clip, and its norm before clipping.
    public struct Clipped: Sendable, Equatable {
        public var client: String
        public var norm: Double
    }

    /// The updates as the strategy takes them, and what the combination did.
    public struct Combined: Sendable {
        /// With `mean`: every (clipped) update, weighing the same (the strategy averages them). Otherwise
        /// one update of the combined Δ (the strategy's mean of one update is that update).
        public var updates: [WeightedUpdate]
        public var clipped: [Clipped]
        /// Every update's L2 norm before clipping, in the order given (for the operator's log: the honest
        /// norms are what `update_norm_clip` should be set from).
        public var norms: [Clipped]
        /// With `trimmedMean`: how many values were dropped at each end of every coordinate (k).
        public var trimmedPerSide: Int
    }

    /// How many values `trimmedMean` drops at each end of a coordinate of `count` updates: ⌊β·n⌋.
    public func trimmedPerSide(count: Int) -> Int {
        aggregator == .trimmedMean ? Int((trimFraction * Double(count)).rounded(.down)) : 0
    }

    /// The clipped, combined updates of a round.
    /// - Throws: `FederationError.adapterShape` naming the client and tensor for an update that does not
    ///   match `global` (a missing or extra tensor, a wrong length, a value that is not finite).
    public func combine(global: AdapterTensors, updates: [(client: String, delta: AdapterTensors)]) throws -> Combined {
        let weighted = updates.map { WeightedUpdate(client: $0.client, weight: WeightedUpdate.equalWeight, delta: $0.delta) }
        try checkUpdates(global: global, updates: weighted)
        var clipped: [Clipped] = []
        var norms: [Clipped] = []
        var scaled: [WeightedUpdate] = []
        for update in weighted {
            let norm = update.delta.values.reduce(0.0) { sum, values in values.reduce(sum) { $0 + Double($1) * Double($1) } }
                .squareRoot()
            norms.append(Clipped(client: update.client, norm: norm))
            guard norm > normClip else {
                scaled.append(update)
                continue
            }
            clipped.append(Clipped(client: update.client, norm: norm))
            let factor = normClip / norm
            scaled.append(WeightedUpdate(client: update.client, weight: update.weight,
                                         delta: update.delta.mapValues { $0.map { Float(Double($0) * factor) } }))
        }
        let k = trimmedPerSide(count: scaled.count)
        switch aggregator {
        case .mean:
            return Combined(updates: scaled, clipped: clipped, norms: norms, trimmedPerSide: 0)
        case .trimmedMean, .median:
            var delta: AdapterTensors = [:]
            for name in global.keys {
                let columns = scaled.map { $0.delta[name]! }  // checkUpdates: every update has every global tensor
                delta[name] = (0..<global[name]!.count).map { j in
                    Float(aggregator == .median ? Self.median(columns.map { Double($0[j]) })
                                                : Self.trimmedMean(columns.map { Double($0[j]) }, dropping: k))
                }
            }
            let label = "\(aggregator.rawValue) of \(scaled.map(\.client).joined(separator: ","))"
            return Combined(updates: [WeightedUpdate(client: label, weight: WeightedUpdate.equalWeight, delta: delta)],
                            clipped: clipped, norms: norms, trimmedPerSide: k)
        }
    }

    /// The mean of `values` without their `k` smallest and `k` largest (needs 2k < count).
    static func trimmedMean(_ values: [Double], dropping k: Int) -> Double {
        precondition(2 * k < values.count, "trimming \(k) of \(values.count) values at each end leaves none")
        let kept = values.sorted()[k..<(values.count - k)]
        return kept.reduce(0, +) / Double(kept.count)
    }

    /// The middle value of `values`, or the mean of the two middle ones for an even count.
    static func median(_ values: [Double]) -> Double {
        precondition(!values.isEmpty, "the median of no values")
        let sorted = values.sorted()
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }
}

/// What the coordinator hands its strategy for a committed round: a plain round's updates clipped and
/// combined (`PlainUpdateCombiner`), or a secure round's decoded mean as one update. One function, so
/// that the coordinator's driver and the in-memory harness aggregate alike.
public enum RoundAggregation {
    /// Adaptive clipping's step for a committed client-level round (`SecureUpdate.adaptiveClipStep`): nil for any other
    /// round, or when the policy has no `adaptive_clipping`.
    /// - Throws: as `SecureUpdate.adaptiveClipStep`.
    public static func adaptiveClipStep(of outcome: RoundOutcome, policy: RoundPolicy) throws -> AdaptiveClipStep? {
        guard outcome.isCommitted, let secure = outcome.secure, let facts = outcome.clientLevel, let adaptive = facts.adaptiveClipping
        else { return nil }
        return try SecureUpdate.adaptiveClipStep(sum: secure.sum, survivors: secure.survivors.count, setup: secure.setup,
                                                 plan: policy.plan(round: outcome.round, clientLevel: facts),
                                                 expectedCohort: facts.expectedCohort, adaptive: adaptive)
    }

    /// The strategy's input for `outcome` under `policy`, and the lines the operator's log gets: every
    /// update's norm, one line per clipped client, and the robust aggregator's work (clients named
    /// escaped, each line naming the round).
    /// - Throws: `FederationError.adapterShape` for an update or sum that does not fit the adapter,
    ///   `FederationError.round` for a secure sum whose unmasking failed.
    public static func updates(of outcome: RoundOutcome, policy: RoundPolicy, global: AdapterTensors,
                               layout: AdapterLayout) throws -> (updates: [WeightedUpdate], log: [String]) {
        if let secure = outcome.secure, policy.plan.isClientLevel {
            // DP-FedAvg: the noised sum of clipped whole updates over the fixed denominator q·N, as the optimiser's Δ.
            guard let facts = outcome.clientLevel else {
                throw FederationError.round(outcome.round, "a client-level round without its sampling facts")
            }
            let plan = policy.plan(round: outcome.round, clientLevel: facts)
            let delta = try SecureUpdate.decodeClientLevel(sum: secure.sum, survivors: secure.survivors.count, setup: secure.setup,
                                                           plan: plan, expectedCohort: facts.expectedCohort, layout: layout)
            let range = try SecureUpdate.checkClientLevelSum(secure.sum, survivors: secure.survivors.count, setup: secure.setup,
                                                             plan: plan)
            return ([WeightedUpdate(client: "client-level DP sum of \(secure.survivors.joined(separator: ","))",
                                    weight: WeightedUpdate.equalWeight, delta: delta)],
                    [String(format: "round %llu: decoded the noised sum of %d clipped updates over the fixed denominator q·N = %g "
                            + "(range check: L2 norm %.4g within %.4g grid units)",
                            outcome.round, secure.survivors.count, facts.expectedCohort, range.norm, range.bound)])
        }
        if let secure = outcome.secure, policy.plan.isDistributed {
            // One DP-SGD step over the cohort: the noised sum over the fixed denominator, as the optimiser's Δ, once
            // the sum passes the range check (a sum no clipped, noised cohort reaches aborts the round).
            let delta = try SecureUpdate.decodeDistributed(sum: secure.sum, survivors: secure.survivors.count, setup: secure.setup,
                                                           plan: policy.plan, layout: layout)
            let range = try SecureUpdate.checkDistributedSum(secure.sum, survivors: secure.survivors.count, setup: secure.setup,
                                                             plan: policy.plan)
            return ([WeightedUpdate(client: "distributed DP sum of \(secure.survivors.joined(separator: ","))",
                                    weight: WeightedUpdate.equalWeight, delta: delta)],
                    [String(format: "round %llu: decoded the noised gradient sum of %d clients over the fixed denominator %g "
                            + "(range check: L2 norm %.4g within %.4g grid units)",
                            outcome.round, secure.survivors.count, policy.plan.expectedBatch ?? .nan, range.norm, range.bound)])
        }
        if let secure = outcome.secure {
            // The unmasked sum decodes to the mean delta: one update of weight 1 gives FedAvg global + mean,
            // and FedAdam the mean as its Δ. Each client clipped its values to ±update_clip before masking;
            // the coordinator cannot check that (it never sees an individual update).
            let mean = try SecureUpdate.decodeMean(sum: secure.sum, survivors: secure.survivors.count,
                                                   setup: secure.setup, layout: layout)
            return ([WeightedUpdate(client: "secure sum of \(secure.survivors.joined(separator: ","))",
                                    weight: WeightedUpdate.equalWeight, delta: mean)],
                    [String(format: "round %llu: decoded the mean of %d masked updates", outcome.round, secure.survivors.count)])
        }
        let combiner = policy.plainCombiner(parameterCount: SecureUpdate.vectorLength(layout: layout) - 1)
        let combined = try combiner.combine(global: global, updates: outcome.updates.map { ($0.client, $0.update.delta) })
        var log = [String(format: "round %llu: update L2 norms (update_norm_clip %.6g): ", outcome.round, combiner.normClip)
                   + combined.norms.map { String(format: "%@ %.4g", ClientLogText.escaped($0.client), $0.norm) }.joined(separator: ", ")]
        log += combined.clipped.map {
            String(format: "round %llu: client '%@' sent an update of L2 norm %.6g, above update_norm_clip %.6g: scaled down to it",
                   outcome.round, ClientLogText.escaped($0.client), $0.norm, combiner.normClip)
        }
        if combiner.aggregator != .mean {
            log.append("round \(outcome.round): \(combiner.aggregator.rawValue) of \(outcome.updates.count) clipped updates"
                       + (combiner.aggregator == .trimmedMean ? ", \(combined.trimmedPerSide) dropped at each end of every value" : ""))
        }
        return (combined.updates, log)
    }
}
