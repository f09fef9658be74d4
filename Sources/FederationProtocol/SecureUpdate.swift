import Foundation
import Privacy
import SecureAggregation
import SecureCrypto
import SystemIO
import Wire

/// How a client's update becomes the words it masks, and how the coordinator turns the unmasked sum
/// back into FedAvg's mean (see `SecureRoundSetup` for the layout of the words).
///
/// Weighting: every client weighs the same. A weight from the client's record count (as before issue
/// 13) made the count travel: `Σ wᵢ` was decoded exactly, and it scaled a DP-noised update by a
/// data-dependent factor the accountant never saw. Client i contributes `Δᵢ` and a participation word
/// 1, so the coordinator learns `Σ Δᵢ` and the survivor count; the count must equal the survivors it
/// unmasked, a check on the whole unmasking.
///
/// Scale: `Δᵢ` is clipped to ±B (B the setup's update clip) and each value is encoded with the finest
/// scale 2^f for which the cohort's n inputs sum within 31 bits (n · ⌈B·2^f⌉ ≤ 2^31 − 1,
/// `FixedPointEncoding`), so no sum of survivors can wrap and the decoded sums are exact sums of the
/// encoded integers. The decoded mean is off from the clipped plain mean by at most n · 2^-f / n = 2^-f
/// per value (stochastic rounding, each client's error below one unit 2^-f).
public enum SecureUpdate {
    /// The default update clip B for a plan, when the policy sets none: 8 · steps · learning rate.
    /// AdamW (β1 = 0.9, β2 = 0.999, no weight decay in federated rounds) moves a parameter by at most
    /// η · (1 − β1) / √((1 − β2)(1 − β1²/β2)) ≈ 7.25 η per step (Cauchy–Schwarz on the moment sums,
    /// bias corrections included), so a client's delta stays within ±B and is never clipped.
    public static func defaultClip(plan: TrainingPlan) -> Double { 8 * Double(plan.steps) * plan.learningRate }

    /// The number of words an update of `layout` takes: every parameter and the participation word.
    public static func vectorLength(layout: AdapterLayout) -> Int {
        layout.shapes.values.reduce(1) { $0 + $1.reduce(1, *) }
    }

    /// The words a secure round of `plan` masks for an adapter of `parameterCount` values: the values, adaptive
    /// clipping's count coordinate when the plan carries σ_b (client-level only), and the participation word.
    public static func vectorLength(parameterCount: Int, plan: TrainingPlan) -> Int {
        parameterCount + 1 + (plan.isClientLevel && plan.countNoiseMultiplier != nil ? 1 : 0)
    }

    /// The words a client masks: every value of `delta` (tensors in name order), then the participation word 1.
    /// - Returns: the words and how many values were clipped to ±B.
    /// - Throws: `FederationError.adapterShape` if `delta` does not have the layout's tensors, or
    ///   `SecureAggregationError.invalidEncoding` for a non-finite value.
    public static func encode(delta: AdapterTensors, setup: SecureRoundSetup, layout: AdapterLayout,
                              rounding: FixedPointEncoding.Rounding = .stochastic) throws -> (words: [UInt32], clipped: Int) {
        try layout.check(delta, from: "the update to mask")
        var flat: [Float] = []
        flat.reserveCapacity(Int(setup.vectorLength))
        for name in delta.keys.sorted() {
            guard let values = delta[name] else { continue }
            flat.append(contentsOf: values)
        }
        guard flat.count + 1 == Int(setup.vectorLength) else {
            throw FederationError.adapterShape("the update has \(flat.count) values; the secure round expects \(setup.vectorLength - 1)")
        }
        let values = try setup.valueEncoding().encode(flat, rounding: rounding)
        let participation = try setup.participationEncoding().encode([1], rounding: rounding)
        return (values.words + participation.words, values.clippedCount)
    }

    /// The mean delta `Σ Δ / survivors` from the unmasked sum of `survivors` inputs.
    ///
    /// Bounds: the participation words must decode to the survivor count (a client sending another
    /// word than 1 shifts it by whole survivors and is refused), and every value of the decoded sum
    /// must lie within ± survivors · ⌈B·2^f⌉ in the encoding, the most the survivors can reach if each
    /// clipped to ±B as the encoding does. Masked words are never seen one by one, so a client that
    /// skips the clip and sends up to ±(2^31 − 1) could otherwise move a mean value by up to
    /// (2^31 − 1) / (2^f · survivors), about n/survivors · B (`SecureRoundTests` measures it); past
    /// the bound the round is refused. Within it a client still moves the mean by up to
    /// (survivors · B) / survivors per value: poisoning within the clip needs range proofs, which this
    /// protocol does not have. The L2 norm follows: ≤ survivors · B · √d, per-value clipping being the
    /// only clip the encoding applies.
    /// - Throws: `FederationError.adapterShape` for a sum of the wrong length, `SecureAggregationError`
    ///   for a survivor count the encoding cannot decode, `FederationError.round` when the participation
    ///   words do not sum to `survivors` (the unmasking went wrong) or a value of the sum exceeds the
    ///   survivors' clip.
    public static func decodeMean(sum: [UInt32], survivors: Int, setup: SecureRoundSetup,
                                  layout: AdapterLayout) throws -> AdapterTensors {
        try checkParticipation(sum: sum, survivors: survivors, setup: setup)
        let encoding = try setup.valueEncoding()
        let limit = Double(survivors) * encoding.maximumMagnitude
        if let index = sum.dropLast().firstIndex(where: { abs(Double(Int32(bitPattern: $0))) > limit }) {
            throw FederationError.round(
                setup.round, "value \(index) of the unmasked sum is \(Double(Int32(bitPattern: sum[index])) / encoding.scale), beyond "
                    + "\(survivors) survivors × the clip \(setup.updateClip): a client sent words it did not clip; the round is refused")
        }
        let values = try encoding.decodeSum(Array(sum.dropLast()), clientCount: survivors)
        return try tensors(values.map { $0 / Double(survivors) }, layout: layout)
    }

    // MARK: Distributed DP (issue 17)

    /// A distributed-DP round's parameters as every party computes them: the plan's q, z, C and
    /// `max_contributions`, the adapter's d (the setup's words less the participation word), the setup's cohort
    /// and threshold; `assumeHonest` changes only the ε, never the scale (the coordinator passes 1).
    /// - Throws: `FederationError.round` for a plan that is not distributed; `PrivacyParameterError` as
    ///   `DistributedRound` does.
    public static func distributedParameters(plan: TrainingPlan, setup: SecureRoundSetup, assumeHonest: Int) throws -> DistributedRound {
        if plan.isClientLevel { return try clientLevelParameters(plan: plan, setup: setup, assumeHonest: assumeHonest) }
        guard plan.isDistributed, let contributions = plan.maxContributions else {
            throw FederationError.round(setup.round, "the plan is not a distributed-DP plan (noise_placement, max_contributions)")
        }
        return try DistributedRound(samplingRate: plan.samplingRate, noiseMultiplier: plan.noiseMultiplier, clipNorm: plan.clipNorm,
                                    dimension: Int(setup.vectorLength) - 1, cohort: setup.members.count,
                                    threshold: Int(setup.threshold), assumeHonest: assumeHonest, contributions: contributions)
    }

    /// The words a client masks in a distributed-DP round: its clipped sum (tensors in name order) on the
    /// round's grid with its noise share (`DistributedRound.noisedShare`), each reduced modulo 2^32, then the
    /// participation word 1.
    /// - Throws: `FederationError.adapterShape` for a sum without the layout's tensors; `PrivacyParameterError`
    ///   for a value the grid cannot hold.
    public static func encodeDistributed(clippedSum: AdapterTensors, parameters: DistributedRound, setup: SecureRoundSetup,
                                         layout: AdapterLayout) throws -> [UInt32] {
        try layout.check(clippedSum, from: "the clipped gradient sum to mask")
        var flat: [Double] = []
        flat.reserveCapacity(Int(setup.vectorLength))
        for name in clippedSum.keys.sorted() { flat.append(contentsOf: clippedSum[name]!.lazy.map(Double.init)) }
        guard flat.count + 1 == Int(setup.vectorLength) else {
            throw FederationError.adapterShape("the clipped sum has \(flat.count) values; the secure round expects \(setup.vectorLength - 1)")
        }
        let share = try parameters.noisedShare(clippedSum: flat)
        let participation = try setup.participationEncoding().encode([1], rounding: .nearest)
        return share.map { UInt32(truncatingIfNeeded: $0) } + participation.words
    }

    /// The server optimiser's Δ from a distributed round's unmasked sum: −η·ĝ, ĝ = (sum read as signed 32-bit
    /// integers) / 2^f / `expected_batch`, the fixed-denominator estimate of the cohort's mean clipped gradient
    /// (the noise in it, all post-processing). η is the plan's learning rate: FedAvg then takes an SGD step,
    /// FedAdam an Adam step on it. Nothing here refuses a value: a wrapped coordinate is decoded like any other,
    /// so the coordinator's reaction to the sum never depends on more than the sum modulo 2^32.
    /// - Throws: `FederationError.adapterShape` for a sum of the wrong length, `FederationError.round` when the
    ///   participation words do not sum to `survivors`.
    public static func decodeDistributed(sum: [UInt32], survivors: Int, setup: SecureRoundSetup, plan: TrainingPlan,
                                         layout: AdapterLayout) throws -> AdapterTensors {
        try checkParticipation(sum: sum, survivors: survivors, setup: setup)
        let parameters = try distributedParameters(plan: plan, setup: setup, assumeHonest: 1)
        guard let expectedBatch = plan.expectedBatch else {
            throw FederationError.round(setup.round, "a distributed plan without expected_batch")
        }
        let factor = -plan.learningRate / (parameters.scale * expectedBatch)
        return try tensors(sum.dropLast().map { Double(Int32(bitPattern: $0)) * factor }, layout: layout)
    }

    // MARK: Client-level DP-FedAvg (issue 17)

    /// A client-level round's grid and shares as every party computes them (`ClientLevelDP.round`): S, z and adaptive
    /// clipping's σ_b from the plan, d from the setup (its words less the participation word and, with σ_b, the count
    /// coordinate), each of the setup's n members one clipped update (K = n), its threshold t.
    /// The q in it is 1: a client's charge for taking part (it knows it was sampled; SECURITY.md), while the
    /// federation's ε at the plan's q is the coordinator's accountant's. The scale does not depend on q or h.
    /// - Throws: `FederationError.round` for a plan that is not client-level; `PrivacyParameterError` as
    ///   `DistributedRound` does.
    public static func clientLevelParameters(plan: TrainingPlan, setup: SecureRoundSetup, assumeHonest: Int) throws -> DistributedRound {
        guard plan.isClientLevel, plan.isDistributed else {
            throw FederationError.round(setup.round, "the plan is not a client-level plan (privacy_unit client, noise_placement distributed)")
        }
        let extra = vectorLength(parameterCount: 0, plan: plan)
        return try ClientLevelDP.round(samplingRate: 1, noiseMultiplier: plan.noiseMultiplier, clipNorm: plan.clipNorm,
                                       dimension: Int(setup.vectorLength) - extra, cohort: setup.members.count,
                                       threshold: Int(setup.threshold), assumeHonest: assumeHonest,
                                       countNoiseMultiplier: plan.countNoiseMultiplier)
    }

    /// The words a sampled client masks in a client-level round: its whole update (local − global, tensors in name
    /// order) clipped to S, on the grid, with adaptive clipping the count coordinate ±h for ‖Δ‖ ≤ S, each with its
    /// noise share (`ClientLevelDP.maskedWords`), then the participation word 1.
    /// - Returns: the words and ‖Δ‖ before the clip (the client's own log only).
    /// - Throws: `FederationError.adapterShape` for an update without the layout's tensors; `PrivacyParameterError`
    ///   for a non-finite update.
    public static func encodeClientLevel(update: AdapterTensors, parameters: DistributedRound, plan: TrainingPlan,
                                         setup: SecureRoundSetup, layout: AdapterLayout) throws -> (words: [UInt32], norm: Double) {
        try layout.check(update, from: "the round update to clip and mask")
        var flat: [Double] = []
        flat.reserveCapacity(Int(setup.vectorLength))
        for name in update.keys.sorted() { flat.append(contentsOf: update[name]!.lazy.map(Double.init)) }
        let extra = vectorLength(parameterCount: 0, plan: plan)
        guard flat.count + extra == Int(setup.vectorLength) else {
            throw FederationError.adapterShape("the update has \(flat.count) values; the secure round expects "
                                               + "\(Int(setup.vectorLength) - extra)")
        }
        let (words, norm) = try ClientLevelDP.maskedWords(update: flat, clipNorm: plan.clipNorm, round: parameters)
        let participation = try setup.participationEncoding().encode([1], rounding: .nearest)
        return (words + participation.words, norm)
    }

    /// The range check on a client-level round's unmasked sum, as `checkDistributedSum` does for distributed rounds:
    /// its L2 norm (words as signed 32-bit integers, the participation word left out) against
    /// `DistributedRound.sumNormBound` with K = the survivors, each one update clipped to S (and rounded).
    /// - Returns: the norm and the bound, in grid units, for the log.
    /// - Throws: `FederationError.round` naming both when the norm is above the bound: a client masked an update it
    ///   did not clip, or the sum wrapped; the round is aborted rather than stepped with it.
    @discardableResult
    public static func checkClientLevelSum(_ sum: [UInt32], survivors: Int, setup: SecureRoundSetup,
                                           plan: TrainingPlan) throws -> (norm: Double, bound: Double) {
        let parameters = try clientLevelParameters(plan: plan, setup: setup, assumeHonest: 1)
        let bound = try parameters.sumNormBound(survivors: survivors, contributions: survivors, clipNorm: plan.clipNorm,
                                                failureProbability: sumCheckFailureProbability)
        let norm = valueNorm(sum)
        guard norm <= bound else {
            throw FederationError.round(setup.round, String(
                format: "range check: the noised sum's L2 norm %.6g (grid units) is above %.6g, the most %d survivors each "
                    + "clipping its update to S %g on 2^-%d reach with the noise except with probability %g: a client masked "
                    + "an update it did not clip, or the sum wrapped; not applied", norm, bound, survivors, plan.clipNorm,
                parameters.fractionalBits, sumCheckFailureProbability))
        }
        return (norm, bound)
    }

    /// The server optimiser's Δ from a client-level round's unmasked sum: McMahan et al.'s fixed-denominator
    /// estimate Σ clipped Δ_k / (q·N) plus the noise (`ClientLevelDP.estimate`), N the registered clients when the
    /// round was sampled (`expectedCohort` = q·N, public). Not divided by the survivors: their number depends on
    /// who was sampled. Like `decodeDistributed`, nothing refuses a wrapped value.
    /// - Throws: `FederationError.adapterShape` for a sum of the wrong length, `FederationError.round` when the
    ///   participation words do not sum to `survivors` or q·N is not positive.
    public static func decodeClientLevel(sum: [UInt32], survivors: Int, setup: SecureRoundSetup, plan: TrainingPlan,
                                         expectedCohort: Double, layout: AdapterLayout) throws -> AdapterTensors {
        try checkParticipation(sum: sum, survivors: survivors, setup: setup)
        guard expectedCohort.isFinite, expectedCohort > 0 else {
            throw FederationError.round(setup.round, "the fixed denominator q·N is \(expectedCohort), not positive")
        }
        let parameters = try clientLevelParameters(plan: plan, setup: setup, assumeHonest: 1)
        let estimate = ClientLevelDP.estimate(modularSum: Array(sum.dropLast()), round: parameters, expectedCohort: expectedCohort)
        return try tensors(estimate, layout: layout)
    }

    /// Adaptive clipping's step from a client-level round's unmasked sum: b̄ from its count coordinate
    /// (`ClientLevelDP.unclippedFraction`) and the next S (`AdaptiveClipping.nextClipNorm`); nil when the round's plan
    /// carries no σ_b. Post-processing of the noised sum, like the Δ.
    /// - Throws: as `decodeClientLevel` for a sum of the wrong length, failed unmasking or a q·N not positive.
    public static func adaptiveClipStep(sum: [UInt32], survivors: Int, setup: SecureRoundSetup, plan: TrainingPlan,
                                        expectedCohort: Double, adaptive: ClientLevelDP.AdaptiveClipping?) throws -> AdaptiveClipStep? {
        guard let adaptive, plan.countNoiseMultiplier != nil else { return nil }
        try checkParticipation(sum: sum, survivors: survivors, setup: setup)
        guard expectedCohort.isFinite, expectedCohort > 0 else {
            throw FederationError.round(setup.round, "the fixed denominator q·N is \(expectedCohort), not positive")
        }
        let parameters = try clientLevelParameters(plan: plan, setup: setup, assumeHonest: 1)
        guard let fraction = ClientLevelDP.unclippedFraction(modularSum: Array(sum.dropLast()), round: parameters,
                                                             expectedCohort: expectedCohort),
              let noise = parameters.preview.adaptiveNoise else {
            throw FederationError.round(setup.round, "the round's sum has no count coordinate for adaptive clipping")
        }
        return AdaptiveClipStep(clipNorm: plan.clipNorm, unclippedFraction: fraction,
                                nextClipNorm: adaptive.nextClipNorm(plan.clipNorm, unclippedFraction: fraction),
                                updateNoiseMultiplier: noise.update, countNoise: noise.count)
    }
}

/// One committed round's move of adaptive clipping's S (Andrew et al. 2021), as the audit record keeps it.
public struct AdaptiveClipStep: Sendable, Equatable {
    /// The S the round clipped to.
    public var clipNorm: Double
    /// b̄: the noised fraction of the cohort's updates that S left unclipped (over q·N, clamped to [0, 1]).
    public var unclippedFraction: Double
    /// S·exp(−η(b̄ − γ)): the next round's S.
    public var nextClipNorm: Double
    /// The noise the threshold's shares carried: on the update, over its sensitivity (z_Δ, above the accountant's z),
    /// and on the count, in bits (σ_b or a little more).
    public var updateNoiseMultiplier: Double
    public var countNoise: Double

    public init(clipNorm: Double, unclippedFraction: Double, nextClipNorm: Double, updateNoiseMultiplier: Double, countNoise: Double) {
        self.clipNorm = clipNorm
        self.unclippedFraction = unclippedFraction
        self.nextClipNorm = nextClipNorm
        self.updateNoiseMultiplier = updateNoiseMultiplier
        self.countNoise = countNoise
    }
}

extension SecureUpdate {
    /// Throws unless an unmasked sum has the round's words and its participation word decodes to `survivors`: the
    /// check every decoder of a secure sum makes before it reads a value.
    /// - Throws: `FederationError.adapterShape` for a sum of the wrong length, `FederationError.round` when the
    ///   participation words do not sum to `survivors` (the unmasking went wrong).
    static func checkParticipation(sum: [UInt32], survivors: Int, setup: SecureRoundSetup) throws {
        guard sum.count == Int(setup.vectorLength), let participationWord = sum.last else {
            throw FederationError.adapterShape("the unmasked sum has \(sum.count) words; the round expects \(setup.vectorLength)")
        }
        let participants = try setup.participationEncoding().decodeSum([participationWord], clientCount: survivors)[0]
        guard survivors > 0, abs(participants - Double(survivors)) < 0.5 else {
            throw FederationError.round(setup.round, "the unmasked participation words sum to \(participants), "
                                        + "not the \(survivors) survivors: the unmasking failed")
        }
    }

    /// A sum's values (the participation word left out) as the adapter's tensors, in name order.
    /// - Throws: `FederationError.adapterShape` when the values are not exactly the layout's.
    static func tensors(_ values: [Double], layout: AdapterLayout) throws -> AdapterTensors {
        var tensors: AdapterTensors = [:]
        var offset = 0
        for name in layout.shapes.keys.sorted() {
            let count = layout.shapes[name]!.reduce(1, *)
            guard offset + count <= values.count else { break }
            tensors[name] = values[offset..<(offset + count)].map { Float($0) }
            offset += count
        }
        guard offset == values.count, tensors.count == layout.shapes.count else {
            throw FederationError.adapterShape("the unmasked sum has \(values.count) values; the layout has "
                                               + "\(layout.shapes.values.reduce(0) { $0 + $1.reduce(1, *) })")
        }
        return tensors
    }
}
