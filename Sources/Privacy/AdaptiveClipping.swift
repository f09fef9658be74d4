import Foundation

extension ClientLevelDP {
    /// Adaptive clipping for DP-FedAvg (Andrew, Thakkar, McMahan, Ramaswamy, NeurIPS 2021, "Differentially
    /// Private Learning with Adaptive Clipping", arXiv:1905.03871): instead of a fixed S, the coordinator tracks the
    /// γ-quantile of the sampled clients' update norms. Each sampled client also sends b = 1[‖Δ‖ ≤ S], shifted to
    /// b − ½ (so that adding or removing a client moves the count by ½, not 1); the cohort's sum of it is noised with
    /// N(0, σ_b²), divided by the expected cohort q·N and shifted back, b̄ = (Σ(b − ½) + noise)/(q·N) + ½, clamped to
    /// [0, 1]; then S ← S·exp(−η(b̄ − γ)) (the paper's geometric update; TensorFlow Privacy's
    /// `QuantileEstimatorQuery` with `geometric_update`).
    ///
    /// Privacy: the update sum (sensitivity S, noise z_Δ·S) and the count (sensitivity ½, noise σ_b) are one Gaussian
    /// mechanism whose noise multiplier z satisfies z⁻² = z_Δ⁻² + (2σ_b)⁻² (the paper, Section 3; TFF's
    /// `DifferentiallyPrivateFactory.gaussian_adaptive`): the update's noise is raised to
    /// z_Δ = (z⁻² − (2σ_b)⁻²)^−½ so that the federation's accountant, which composes the Gaussian at z, stays exact.
    /// On the integer grid of distributed DP the count is one more coordinate of each client's vector, ±h grid units,
    /// with h chosen so that the share noise every coordinate carries is σ_b on the count (`countHalfWidth`); the
    /// vector's L2 sensitivity is √(Δ₂² + h²), and the noise z times it, so the same identity holds exactly there.
    public struct AdaptiveClipping: Codable, Sendable, Hashable {
        /// γ: the fraction of sampled clients whose update S should leave unclipped (the paper's default 0.5).
        public var targetQuantile: Double
        /// η_C: the geometric step, S moving by at most a factor exp(η_C) a round (the paper's default 0.2).
        public var learningRate: Double
        /// σ_b: the noise standard deviation on the cohort's sum of shifted bits (the paper suggests m/20 for m
        /// expected clients; it must exceed z/2, and the further above, the less the update's noise grows).
        public var countNoiseMultiplier: Double

        /// - Throws: `PrivacyParameterError` unless 0 < γ < 1, 0 < η_C ≤ 10 and σ_b is finite and positive.
        public init(targetQuantile: Double, learningRate: Double, countNoiseMultiplier: Double) throws {
            self.targetQuantile = targetQuantile
            self.learningRate = learningRate
            self.countNoiseMultiplier = countNoiseMultiplier
            try validate()
        }

        /// The same checks as `init`, for values decoded from a file.
        public func validate() throws {
            guard targetQuantile.isFinite, targetQuantile > 0, targetQuantile < 1 else {
                throw PrivacyParameterError(name: "adaptive clipping target_quantile", value: targetQuantile, expected: "in (0, 1)")
            }
            guard learningRate.isFinite, learningRate > 0, learningRate <= 10 else {
                throw PrivacyParameterError(name: "adaptive clipping learning_rate", value: learningRate, expected: "in (0, 10]")
            }
            guard countNoiseMultiplier.isFinite, countNoiseMultiplier > 0 else {
                throw PrivacyParameterError(name: "adaptive clipping count_noise_multiplier", value: countNoiseMultiplier,
                                            expected: "finite and > 0")
            }
        }

        /// z_Δ = (z⁻² − (2σ_b)⁻²)^−½, the update's noise multiplier when the round as a whole is accounted at z.
        /// - Throws: `PrivacyParameterError` unless z > 0 and 2σ_b > z (else no noise on the update is enough).
        public static func updateNoiseMultiplier(noiseMultiplier z: Double, countNoiseMultiplier sigmaB: Double) throws -> Double {
            guard z.isFinite, z > 0, sigmaB.isFinite, 2 * sigmaB > z else {
                throw PrivacyParameterError(name: "adaptive clipping count_noise_multiplier", value: sigmaB, expected: String(
                    format: "above z/2 = %g: the count's share of the round's noise budget z⁻² is (2σ_b)⁻², which must leave "
                        + "some to the update", z / 2))
            }
            return 1 / (1 / (z * z) - 1 / (4 * sigmaB * sigmaB)).squareRoot()
        }

        /// h, the count coordinate's half-width in grid units for an update of rounded sensitivity Δ₂ (grid units):
        /// ⌊z·Δ₂/√(4σ_b² − z²)⌋, at least 1. With noise σ = z·√(Δ₂² + h²) on every coordinate, the count's noise in
        /// bit units is σ/(2h), which is σ_b exactly for the real-valued h and at least σ_b for the floor (a smaller h
        /// puts less of the budget on the count), and the update's is σ/Δ₂, at most z_Δ (unless h was raised to 1).
        /// - Throws: `PrivacyParameterError` as `updateNoiseMultiplier`, or for Δ₂ not finite and positive.
        public static func countHalfWidth(noiseMultiplier z: Double, countNoiseMultiplier sigmaB: Double,
                                          updateSensitivity: Double) throws -> Int64 {
            _ = try updateNoiseMultiplier(noiseMultiplier: z, countNoiseMultiplier: sigmaB)
            guard updateSensitivity.isFinite, updateSensitivity > 0 else {
                throw PrivacyParameterError(name: "update sensitivity", value: updateSensitivity, expected: "finite and > 0 grid units")
            }
            let h = (z * updateSensitivity / (4 * sigmaB * sigmaB - z * z).squareRoot()).rounded(.down)
            guard h < 0x1p40 else {
                throw PrivacyParameterError(name: "count half-width", value: h, expected: "below 2^40 grid units: raise σ_b")
            }
            return max(1, Int64(h))
        }

        /// b̄: the noised fraction of unclipped updates, from the noised sum of the shifted bits in bit units
        /// (Σ(b − ½) + N(0, σ_b²)) over the expected cohort q·N, shifted back by ½ and clamped to [0, 1].
        public static func unclippedFraction(noisedShiftedSum: Double, expectedCohort: Double) -> Double {
            min(1, max(0, noisedShiftedSum / expectedCohort + 0.5))
        }

        /// The next S: S·exp(−η_C(b̄ − γ)). More unclipped than γ shrinks S; fewer grows it.
        public func nextClipNorm(_ clipNorm: Double, unclippedFraction: Double) -> Double {
            clipNorm * exp(-learningRate * (unclippedFraction - targetQuantile))
        }

        enum CodingKeys: String, CodingKey {
            case targetQuantile = "target_quantile"
            case learningRate = "learning_rate"
            case countNoiseMultiplier = "count_noise_multiplier"
        }
    }
}
