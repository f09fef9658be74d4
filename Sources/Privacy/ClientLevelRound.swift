import Foundation
import SecureCrypto

/// The parts of a client-level DP-FedAvg round (McMahan et al., ICLR 2018) that do not depend on the
/// protocol: the coordinator's Poisson sampling of clients, each sampled client's clip of its whole round
/// update, the plan's consistency, and the coordinator's accountant over client participations.
extension ClientLevelDP {
    /// A sampled client's whole round update (its adapter after local training minus the global adapter it
    /// started from) scaled to L2 norm at most S: by S/‖Δ‖ when ‖Δ‖ > S, untouched otherwise. One client's
    /// contribution to the sum is then at most S whatever its data and its number of local steps.
    /// - Returns: the clipped update and ‖Δ‖ before the clip (the client's own log only; never sent).
    /// - Throws: `PrivacyParameterError` for a clip norm not finite and positive, or an update whose norm
    ///   is not finite (a diverged local run: refuse rather than send).
    public static func clip(update: [Double], to clipNorm: Double) throws -> (clipped: [Double], norm: Double) {
        guard clipNorm.isFinite, clipNorm > 0 else {
            throw PrivacyParameterError(name: "client clip norm S", value: clipNorm, expected: "finite and > 0")
        }
        // Scaled by the largest magnitude first so that a huge (but finite) update does not overflow.
        // (Each value checked: Swift's max drops a NaN.)
        if let index = update.firstIndex(where: { !$0.isFinite }) {
            throw PrivacyParameterError(name: "round update value \(index)", value: update[index], expected: "a finite update")
        }
        let largest = update.reduce(0.0) { max($0, abs($1)) }
        guard largest > 0 else { return (update, 0) }
        var squared = 0.0
        for value in update { squared += (value / largest) * (value / largest) }
        let norm = largest * squared.squareRoot()
        guard norm > clipNorm else { return (update, norm) }
        let factor = clipNorm / norm
        return (update.map { $0 * factor }, norm)
    }

    /// The coordinator's Poisson sampling of clients: each client of the population joins a round
    /// independently with probability q, drawn from libsodium (the secrecy of the sample is where the
    /// amplification comes from; a seeded generator would make it guessable).
    public struct ClientSampler: Sendable {
        /// q: each client's probability of being sampled.
        public let samplingRate: Double

        /// - Throws: `PrivacyParameterError` unless 0 < q ≤ 1.
        public init(samplingRate: Double) throws {
            guard samplingRate.isFinite, samplingRate > 0, samplingRate <= 1 else {
                throw PrivacyParameterError(name: "client sampling rate q", value: samplingRate, expected: "in (0, 1]")
            }
            self.samplingRate = samplingRate
        }

        /// This round's sample of `clients`, in their order (possibly empty: the round then adds noise alone,
        /// or is skipped; either way it is charged).
        public func sample<Client>(_ clients: [Client]) -> [Client] {
            sample(clients, uniforms: SecureRandom.unitDoubles(count: clients.count))
        }

        /// The seam tests use: client i is sampled when `uniforms[i] < q` (uniforms in (0, 1)).
        func sample<Client>(_ clients: [Client], uniforms: [Double]) -> [Client] {
            precondition(uniforms.count == clients.count, "one uniform per client")
            return clients.indices.filter { uniforms[$0] < samplingRate }.map { clients[$0] }
        }
    }

    /// Why a client-level plan cannot run: the field and what it needs.
    public struct PlanError: Error, CustomStringConvertible, Equatable, Sendable {
        public let field: String
        public let reason: String
        public var description: String { "plan.\(field): \(reason)" }
    }

    /// What a plan at privacy unit client needs before any round: secure aggregation (the coordinator never
    /// holds an un-noised individual update), distributed noise (the sum carries N(0, z²S²), each client adding
    /// its share), a clip norm S and a client sampling rate q, and a positive noise multiplier z.
    /// - Throws: `PlanError` naming the first field that is missing or inconsistent.
    public static func checkPlan(secureAggregation: Bool, noisePlacement: NoisePlacement, clipNorm: Double?,
                                 samplingRate: Double?, noiseMultiplier: Double) throws {
        guard secureAggregation else {
            throw PlanError(field: "secure_aggregation", reason: "privacy_unit client needs secure aggregation: without it the "
                            + "coordinator would see each client's un-noised update")
        }
        guard noisePlacement == .distributed else {
            throw PlanError(field: "noise_placement", reason: "privacy_unit client needs noise_placement distributed: the noise "
                            + "N(0, z²S²) is on the cohort's sum, each client adding its share, got \(noisePlacement.rawValue)")
        }
        guard let clipNorm else {
            throw PlanError(field: "clip_norm", reason: "privacy_unit client needs the clip norm S of a client's whole round update")
        }
        guard clipNorm.isFinite, clipNorm > 0 else {
            throw PlanError(field: "clip_norm", reason: "must be finite and positive, got \(clipNorm)")
        }
        guard let samplingRate else {
            throw PlanError(field: "sampling_rate", reason: "privacy_unit client needs the client sampling rate q of each round")
        }
        guard samplingRate.isFinite, samplingRate > 0, samplingRate <= 1 else {
            throw PlanError(field: "sampling_rate", reason: "must be in (0, 1], got \(samplingRate)")
        }
        guard noiseMultiplier.isFinite, noiseMultiplier > 0 else {
            throw PlanError(field: "noise_multiplier", reason: "privacy_unit client needs a positive z, got \(noiseMultiplier)")
        }
    }
}

extension ClientLevelDP {
    /// A client-level round on the secure-aggregation grid: `DistributedRound` with the client's whole update
    /// as the unit (clip S, the client sampling rate q), each of the cohort's n sampled clients contributing one
    /// vector (the wrap bound's K = n). The shares are sized as in distributed DP, so any t survivors carry
    /// σ = z·Δ₂ on the sum, Δ₂ = S·2^f + √d (the rounding's slack on top of z·S). With adaptive clipping's σ_b each
    /// vector also carries the count coordinate ±h, and Δ₂ becomes √(Δ₂² + h²) (`AdaptiveClipping`).
    /// - Throws: `PrivacyParameterError` as `DistributedRound` does.
    public static func round(samplingRate: Double, noiseMultiplier: Double, clipNorm: Double, dimension: Int, cohort: Int,
                             threshold: Int, assumeHonest: Int, countNoiseMultiplier: Double? = nil) throws -> DistributedRound {
        try DistributedRound(samplingRate: samplingRate, noiseMultiplier: noiseMultiplier, clipNorm: clipNorm, dimension: dimension,
                             cohort: cohort, threshold: threshold, assumeHonest: assumeHonest, contributions: cohort,
                             countNoiseMultiplier: countNoiseMultiplier)
    }

    /// Whether the federation's accountant, which composes the continuous Gaussian at noise multiplier z
    /// (`FederationAccountant`), covers a round whose sum holds `steps.shares` discrete Gaussian shares: Kairouz,
    /// Liu, Steinke 2021 (Theorem 1, eq. (4)) bound the sum's zCDP by ρ = ε²/2 with ε = min{√(l₂² + 2τd), l₂ + τ√d},
    /// l₂ = Δ₂/(√t·σ_share) = 1/z, which is the continuous Gaussian's 1/(2z²) when τ = 10·Σ exp(−2π²σ²k/(k+1))
    /// underflows, as it does at every share σ the grid gives in practice (thousands of grid units). A round whose ρ
    /// is larger is refused before its invitations (its charge, made before the sample, is kept).
    /// - Throws: `PrivacyParameterError` naming τ and ρ when the discrete bound passes the continuous one.
    public static func checkAccountedNoise(_ steps: DistributedDiscreteGaussianSteps, noiseMultiplier z: Double) throws {
        let accounted = 1 / (2 * z * z)
        guard steps.zCDP <= accounted * (1 + 1e-9) else {
            throw PrivacyParameterError(name: "the discrete shares' τ", value: steps.tau, expected: String(
                format: "a sum whose zCDP ρ %.6g (Kairouz, Liu, Steinke 2021, Theorem 1) is at most the federation's "
                    + "accountant's 1/(2z²) = %.6g: raise the noise multiplier or the grid's scale", steps.zCDP, accounted))
        }
    }

    /// The same check for a client-level round: its t shares at σ_share over Δ₂ on the round's grid.
    public static func checkAccountedNoise(_ round: DistributedRound, noiseMultiplier z: Double) throws {
        try checkAccountedNoise(DistributedDiscreteGaussianSteps(
            samplingRate: 1, shares: round.trust.threshold, shareSigma: round.shareSigma, dimension: round.preview.assumed.dimension,
            sensitivity: round.preview.sensitivity, steps: 1), noiseMultiplier: z)
    }

    /// What a sampled client masks: its whole round update clipped to S, on the round's grid, then (adaptive clipping)
    /// the count coordinate ±h for b = 1[‖Δ‖ ≤ S], with its share of the noise on each (`DistributedRound.noisedShare`,
    /// libsodium), each value then reduced modulo 2^32.
    /// - Returns: the words and ‖Δ‖ before the clip (the client's own log only; never sent).
    /// - Throws: `PrivacyParameterError` for a non-finite update, a wrong length or a value the grid cannot hold.
    public static func maskedWords(update: [Double], clipNorm: Double, round: DistributedRound) throws -> (words: [UInt32], norm: Double) {
        let (clipped, norm) = try clip(update: update, to: clipNorm)
        let bit: Bool? = round.preview.countHalfWidth == nil ? nil : norm <= clipNorm
        return (try round.noisedShare(clippedSum: clipped, unclipped: bit).map { UInt32(truncatingIfNeeded: $0) }, norm)
    }

    /// The coordinator's fixed-denominator estimate of the mean clipped update (McMahan et al.'s f̃_f with unit
    /// weights) from the unmasked sum of the words (the update's d, without the count coordinate): each read as a
    /// signed 32-bit integer, over 2^f and the expected cohort q·N (public, data-independent: post-processing of the
    /// noised sum).
    public static func estimate(modularSum: [UInt32], round: DistributedRound, expectedCohort: Double) -> [Double] {
        let factor = 1 / (round.scale * expectedCohort)
        return modularSum.prefix(round.preview.updateDimension).map { Double(Int32(bitPattern: $0)) * factor }
    }

    /// Adaptive clipping: b̄ from the unmasked sum's count coordinate (word d, read as a signed 32-bit integer, over
    /// 2h: Σ(b − ½) + noise of σ_b in bit units), over q·N, shifted back and clamped (`AdaptiveClipping`); nil when
    /// the round has no count coordinate or the sum lacks it. Post-processing of the noised sum.
    public static func unclippedFraction(modularSum: [UInt32], round: DistributedRound, expectedCohort: Double) -> Double? {
        let index = round.preview.updateDimension
        guard let h = round.preview.countHalfWidth, index < modularSum.count else { return nil }
        let shifted = Double(Int32(bitPattern: modularSum[index])) / (2 * Double(h))
        return AdaptiveClipping.unclippedFraction(noisedShiftedSum: shifted, expectedCohort: expectedCohort)
    }
}
