import Foundation
import Privacy
import Wire

/// The privacy side of a client's held-out metrics release (`HeldOutRelease`, Wire): what it spends,
/// charged in the same `chargeBeforeTraining` as the round's training.
public enum MetricsRelease {
    /// The release as the accountant counts it: one Gaussian mechanism (q = 1, one step) of noise
    /// multiplier z = the plan's `metrics_noise_multiplier`. The discrete Gaussian release has the
    /// continuous one's RDP curve α/(2z²) at L2 sensitivity √3·S and σ = z·√3·S (Canonne, Kamath,
    /// Steinke 2020, Theorem 4 and, for vectors, Theorem 14), so the RDP accountant's figure is sound for
    /// it; it is marked `.discreteGaussian` for the accountant that tells the two apart.
    /// - Parameter rounds: how many rounds' releases (they compose as steps of the same mechanism).
    public static func mechanism(plan: TrainingPlan, rounds: Int = 1) -> MechanismSteps {
        mechanism(noiseMultiplier: plan.metricsNoiseMultiplier, rounds: rounds)
    }

    /// The condition accuracy release (`ConditionAccuracyRelease`, Wire), as the accountant counts it: one Gaussian
    /// mechanism (q = 1, one step) of noise multiplier z = the plan's `accuracy_noise_multiplier` (L2 sensitivity √3,
    /// σ = z·√3, discrete: the same RDP curve α/(2z²) as above). Charged only by a client that makes the release.
    public static func accuracyMechanism(plan: TrainingPlan, rounds: Int = 1) -> MechanismSteps {
        mechanism(noiseMultiplier: plan.accuracyNoiseMultiplier, rounds: rounds)
    }

    /// The release at metrics noise multiplier z, for `rounds` rounds (previews that have no plan).
    public static func mechanism(noiseMultiplier: Double, rounds: Int = 1) -> MechanismSteps {
        MechanismSteps(samplingRate: 1, noiseMultiplier: noiseMultiplier, steps: rounds, noise: .discreteGaussian)
    }
}
