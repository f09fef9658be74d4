import Foundation

/// Privacy-loss-distribution accountant for the Poisson-subsampled Gaussian under add/remove
/// adjacency: an upper bound on ε(δ), tight to about the discretisation interval.
///
/// Method. For each adjacency direction — "remove" compares P = (1 − q)N(0, σ²) + qN(1, σ²) with
/// Q = N(0, σ²), "add" compares P = N(0, σ²) with Q = that mixture — the privacy loss
/// L = log(P/Q)(z) is monotone in z, so the P- and Q-mass of L in each grid interval
/// ((i − 1)h, ih] is a difference of Gaussian CDFs. Each interval's mass is split between its two
/// end points so that both its P-mass and its Q-mass are kept (the "connect the dots" discretisation
/// of Doroshenko, Ghazi, Kamath, Kumar and Manurangsi 2022, which dp_accounting uses by default):
/// the hockey-stick curve of the result is the chord of the true, convex one, hence pessimistic at
/// every ε, without the drift of T·h/2 that rounding every loss up would add over T steps. Mass
/// below the grid is moved up to its first point, and mass above it goes partly to the last point
/// and partly to +∞, keeping Q-mass; all three moves can only increase δ(ε).
///
/// Composition convolves the distributions (Koskela, Jälkö and Honkela 2020): every mechanism's
/// distribution is folded onto one circular grid, transformed by FFT, raised to its step count
/// pointwise, multiplied, and transformed back. The grid covers the composed loss except for at
/// most 10⁻¹⁶ of mass at either end (Chernoff bounds from the discretised distributions' moment
/// generating functions); that mass is added to δ, as is all mass at +∞, so the result stays an
/// upper bound. ε(δ) is then solved exactly on the discrete distribution; the answer is the larger
/// of the two directions'.
public struct PLDAccountant: Sendable {
    /// Grid interval h of the privacy loss.
    public let discretization: Double
    /// The mechanisms added so far, in order.
    public private(set) var mechanisms: [MechanismSteps] = []

    /// Mass allowed outside the composition window at each end (added to δ).
    static let windowTailMass = 1e-16
    /// Tail of N(0, 1) beyond which a single step's loss is not resolved on the grid (about 1e-21).
    static let gaussianTailStandardDeviations = 9.5
    /// The largest grid, in points, for one step or for the composition (memory: 4 doubles a point).
    public static let maximumGridPoints = 1 << 22

    /// An empty accountant with dp_accounting's default loss grid interval, 1e-4.
    public init() { discretization = 1e-4 }

    /// An empty accountant with loss grid interval `discretization`; throws `PrivacyParameterError`
    /// unless it is finite and in [1e-7, 1].
    public init(discretization: Double) throws {
        guard discretization.isFinite, discretization >= 1e-7, discretization <= 1 else {
            throw PrivacyParameterError(name: "PLD discretization", value: discretization, expected: "in [1e-7, 1]")
        }
        self.discretization = discretization
    }

    /// Composes `steps` more applications of the sampled Gaussian. Throws `PrivacyParameterError`
    /// for values out of range.
    public mutating func add(samplingRate: Double, noiseMultiplier: Double, steps: Int) throws {
        try add(MechanismSteps(samplingRate: samplingRate, noiseMultiplier: noiseMultiplier, steps: steps))
    }

    /// Composes `mechanism` (any noise kind; see `estimate(delta:)` for how each is accounted).
    public mutating func add(_ mechanism: MechanismSteps) throws {
        try mechanism.validate()
        mechanisms.append(mechanism)
    }

    /// The smallest ε ≥ 0 such that the composition is (ε, δ)-DP (always an upper bound, see
    /// `estimate(delta:)`); infinity when no ε reaches δ. Throws for δ outside (0, 1).
    public func epsilon(delta: Double) throws -> Double {
        try estimate(delta: delta).epsilon
    }

    /// ε at δ and the method that produced it. Sound at every δ in (0, 1):
    /// - a step without noise makes ε = +∞;
    /// - discrete-Gaussian steps have no published PLD dominance result here, so a composition that
    ///   holds any is accounted by RDP as a whole (`.rdpForDiscreteNoise`);
    /// - otherwise the PLD bound (FFT rounding and truncation bounded and added to δ, see `compose`)
    ///   and the RDP bound are both upper bounds; the smaller is returned, and `.rdpTighter` says when
    ///   RDP won (very small δ, where the FFT error bound dominates, or a grid over the limit).
    public func estimate(delta: Double) throws -> PrivacyEstimate {
        try validateDelta(delta)
        if mechanisms.contains(where: \.isUnbounded) { return PrivacyEstimate(epsilon: .infinity, method: .noNoise) }
        var rdp = RDPAccountant()
        for mechanism in mechanisms { try rdp.add(mechanism) }
        if mechanisms.contains(where: { $0.noise == .discreteGaussian && !$0.isTrivial }) {
            return PrivacyEstimate(epsilon: try rdp.epsilon(delta: delta).epsilon, method: .rdpForDiscreteNoise)
        }
        let rdpEpsilon = try rdp.epsilon(delta: delta).epsilon
        let pldEpsilon: Double
        do {
            pldEpsilon = try pldOnlyEpsilon(delta: delta)
        } catch is PLDGridTooLargeError {
            return PrivacyEstimate(epsilon: rdpEpsilon, method: .rdpTighter)
        }
        return pldEpsilon <= rdpEpsilon ? PrivacyEstimate(epsilon: pldEpsilon, method: .pld)
            : PrivacyEstimate(epsilon: rdpEpsilon, method: .rdpTighter)
    }

    /// The PLD bound alone (continuous Gaussian steps only): the larger of the two directions. Each
    /// direction is composed untilted first; when the FFT error bound moves that answer noticeably, it is composed
    /// again exponentially tilted towards the answer (`compose(_:tilt:)`), where the bound is tiny,
    /// and the smaller of the two sound answers is kept.
    func pldOnlyEpsilon(delta: Double) throws -> Double {
        var worst = 0.0
        for direction in directions {
            guard let plain = try compose(direction, tilt: 0) else { continue }
            var best = plain.epsilon(delta: delta, includingErrorBound: true)
            let raw = plain.epsilon(delta: delta, includingErrorBound: false)
            // Tilting costs a second composition; it is worth it only where the error bound moves the
            // answer by more than 1e-4 relative (below δ ≈ 1e-7 at typical grids).
            if raw.isFinite, best - raw > 1e-4 * max(raw, discretization) {
                let lambda = try chernoffTilt(direction, at: max(raw, discretization))
                if lambda > 0, let tilted = try compose(direction, tilt: lambda) {
                    best = min(best, tilted.epsilon(delta: delta, includingErrorBound: true))
                }
            }
            worst = max(worst, best)
        }
        return worst
    }

    /// Both directions, or only one when every mechanism has q = 1: for the plain Gaussian the two
    /// loss distributions coincide (both N(1/(2σ²), 1/σ²)), and so do their grids here.
    private var directions: [AdjacencyDirection] {
        mechanisms.allSatisfy { $0.samplingRate == 1 || $0.isTrivial } ? [.remove] : AdjacencyDirection.allCases
    }

    /// The smallest δ such that the composition is (ε, δ)-DP (an upper bound): the smallest of PLD with
    /// its error bound (untilted, and tilted towards ε) and RDP's conversion; RDP alone when the
    /// composition holds discrete-Gaussian steps; 1 without noise.
    public func delta(epsilon: Double) throws -> Double {
        guard epsilon.isFinite, epsilon >= 0 else {
            throw PrivacyParameterError(name: "epsilon", value: epsilon, expected: "finite and >= 0")
        }
        if mechanisms.contains(where: \.isUnbounded) { return 1 }
        if mechanisms.contains(where: { $0.noise == .discreteGaussian && !$0.isTrivial }) {
            var rdp = RDPAccountant()
            for mechanism in mechanisms { try rdp.add(mechanism) }
            return rdp.delta(epsilon: epsilon)
        }
        var rdp = RDPAccountant()
        for mechanism in mechanisms { try rdp.add(mechanism) }
        var worst = 0.0
        do {
            for direction in directions {
                guard let composed = try compose(direction, tilt: 0) else { continue }
                var best = composed.delta(epsilon: epsilon)
                let lambda = try chernoffTilt(direction, at: max(epsilon, discretization))
                if lambda > 0, let tilted = try compose(direction, tilt: lambda) {
                    best = min(best, tilted.delta(epsilon: epsilon))
                }
                worst = max(worst, best)
            }
        } catch is PLDGridTooLargeError {
            return rdp.delta(epsilon: epsilon)
        }
        return min(1, worst, rdp.delta(epsilon: epsilon))
    }

    /// Mechanisms with the same q and σ merged, trivial ones dropped.
    private var mergedMechanisms: [MechanismSteps] {
        var merged: [MechanismSteps] = []
        for mechanism in mechanisms where !mechanism.isTrivial {
            if let index = merged.firstIndex(where: {
                $0.samplingRate == mechanism.samplingRate && $0.noiseMultiplier == mechanism.noiseMultiplier
                    && $0.noise == mechanism.noise
            }) {
                merged[index].steps += mechanism.steps
            } else {
                merged.append(mechanism)
            }
        }
        return merged
    }

    private func discretised(_ direction: AdjacencyDirection) throws -> [(steps: Double, loss: DiscretePrivacyLoss)] {
        try mergedMechanisms.map {
            (Double($0.steps), try DiscretePrivacyLoss(samplingRate: $0.samplingRate, noiseMultiplier: $0.noiseMultiplier,
                                                      direction: direction, interval: discretization))
        }
    }

    /// The tilt λ > 0 minimising the Chernoff exponent Σ_j T_j log M_j(λ) − λε of the composed loss at
    /// `epsilon` (over a geometric grid of λ), so that the tilted distribution has its bulk near ε.
    func chernoffTilt(_ direction: AdjacencyDirection, at epsilon: Double) throws -> Double {
        let steps = try discretised(direction)
        let lambdas = (0..<48).map { 0.05 * pow(1.25, Double($0)) }
        var exponents = lambdas.map { -$0 * epsilon }
        for (count, step) in steps {
            for (k, logMoment) in step.logMoments(lambdas, interval: discretization).enumerated() {
                exponents[k] += count * logMoment
            }
        }
        guard let best = exponents.indices.filter({ exponents[$0].isFinite }).min(by: { exponents[$0] < exponents[$1] }) else {
            return 0
        }
        return lambdas[best]
    }

    /// The composed loss distribution in one direction, or nil when nothing was released.
    ///
    /// With `tilt` λ > 0 each step distribution p is replaced by p·e^(λℓ)/M(λ) (M its moment generating
    /// function at λ) before the FFT; tilting commutes with convolution, so the composed tilted masses
    /// times e^(Σ T_j log M_j(λ) − λℓ) are the composed masses, exactly. Rounding errors of the FFT are
    /// absolute on the tilted scale, so near the loss ℓ ≈ ε where the tilt puts the bulk they shrink by
    /// the Chernoff factor e^(C − λℓ) (about δ). See `FFTErrorBound` for the bound itself.
    /// `keepingNegativeMasses` exists for the test that shows what using them as they are did (issue 13).
    func compose(_ direction: AdjacencyDirection, tilt lambda: Double = 0,
                 keepingNegativeMasses: Bool = false) throws -> ComposedPrivacyLoss? {
        let steps = try discretised(direction)
        if steps.isEmpty { return nil }
        let h = discretization
        let window = try compositionWindow(steps, tilt: lambda)
        var size = 1
        while size < window.width { size <<= 1 }

        // Fold every step distribution (tilted, normalised) onto the circle of `size` bins,
        // transform, raise, multiply.
        let fft = RadixTwoFFT(count: size)
        var accumulatedReal = [Double](), accumulatedImaginary = [Double]()
        var logFinite = 0.0, logScale = 0.0
        var bound = FFTErrorBound(size: size)
        for (count, step) in steps {
            logFinite += count * log1p(-step.infinityMass)
            let logMoment = step.logMoments([lambda], interval: h)[0]
            logScale += count * logMoment
            var real = [Double](repeating: 0, count: size), imaginary = [Double](repeating: 0, count: size)
            var squares = 0.0
            for (offset, mass) in step.masses.enumerated() where mass > 0 {
                let tilted = exp(log(mass) + lambda * Double(step.lowIndex + offset) * h - logMoment)
                real[Self.modulo(step.lowIndex + offset, size)] += tilted
                squares += tilted * tilted
            }
            bound.addMechanism(steps: count, inputNorm: squares.squareRoot())
            fft.transform(real: &real, imaginary: &imaginary, inverse: false)
            Self.raise(real: &real, imaginary: &imaginary, toPower: Int(count))
            if accumulatedReal.isEmpty {
                accumulatedReal = real; accumulatedImaginary = imaginary
            } else {
                for k in 0..<size {
                    let r = accumulatedReal[k] * real[k] - accumulatedImaginary[k] * imaginary[k]
                    accumulatedImaginary[k] = accumulatedReal[k] * imaginary[k] + accumulatedImaginary[k] * real[k]
                    accumulatedReal[k] = r
                }
            }
        }
        fft.transform(real: &accumulatedReal, imaginary: &accumulatedImaginary, inverse: true)
        var masses = [Double](repeating: 0, count: size)
        for k in 0..<size { masses[k] = accumulatedReal[Self.modulo(window.lowestIndex + k, size)] }
        return ComposedPrivacyLoss(lowIndex: window.lowestIndex, tiltedMasses: masses, interval: h, tilt: lambda,
                                   logScale: logScale, errorBound: bound.composedL2Error,
                                   relativeError: bound.relativeMassError,
                                   extraDelta: -expm1(logFinite) + window.outsideMass, keepingNegativeMasses: keepingNegativeMasses)
    }

    /// Window [lowest, highest] in grid indices from Chernoff bounds on the untilted composition:
    /// P(S ≥ b) ≤ Π_j M_j(μ)^T_j e^(−μb) for μ > 0, and symmetrically below with −μ; the mass outside
    /// (at most `windowTailMass` each side) is added to δ. With a tilt λ the top is also raised to
    /// where the tilted composition has that little mass left, so that it does not wrap around.
    private func compositionWindow(_ steps: [(steps: Double, loss: DiscretePrivacyLoss)], tilt lambda: Double) throws
        -> (lowestIndex: Int, width: Int, outsideMass: Double) {
        let h = discretization
        let mus = (-3...10).map { pow(2.0, Double($0)) }
        let logTail = log(Self.windowTailMass)
        var supportLow = 0.0, supportHigh = 0.0
        var upper = [Double](repeating: 0, count: mus.count), lower = upper, tiltedUpper = upper
        var tiltNormaliser = 0.0
        for (count, step) in steps {
            supportLow += count * Double(step.lowIndex) * h
            supportHigh += count * Double(step.lowIndex + step.masses.count - 1) * h
            let tilted = lambda > 0 ? mus.map { $0 + lambda } + [lambda] : []
            let moments = step.logMoments(mus + mus.map { -$0 } + tilted, interval: h)
            for k in mus.indices {
                upper[k] += count * moments[k]
                lower[k] += count * moments[mus.count + k]
                if lambda > 0 { tiltedUpper[k] += count * moments[2 * mus.count + k] }
            }
            if lambda > 0 { tiltNormaliser += count * moments[3 * mus.count] }
        }
        var high = supportHigh, low = supportLow, tiltedHigh = lambda > 0 ? supportHigh : -Double.infinity
        for (k, mu) in mus.enumerated() {
            high = min(high, (upper[k] - logTail) / mu)
            low = max(low, -(lower[k] - logTail) / mu)
            if lambda > 0 { tiltedHigh = min(tiltedHigh, (tiltedUpper[k] - tiltNormaliser - logTail) / mu) }
        }
        let outsideMass = (high < supportHigh ? Self.windowTailMass : 0) + (low > supportLow ? Self.windowTailMass : 0)
        high = max(high, tiltedHigh)
        let points = (high - low) / h + 3
        guard points.isFinite, points <= Double(Self.maximumGridPoints) else {
            throw PLDGridTooLargeError(points: points, limit: Self.maximumGridPoints, discretization: h)
        }
        let lowestIndex = Int((low / h).rounded(.down)), highestIndex = Int((high / h).rounded(.up))
        return (lowestIndex, highestIndex - lowestIndex + 1, outsideMass)
    }

    private static func modulo(_ value: Int, _ size: Int) -> Int {
        let r = value % size
        return r < 0 ? r + size : r
    }

    /// z^n pointwise by binary exponentiation (no transcendental functions, error O(log n) ulps).
    private static func raise(real: inout [Double], imaginary: inout [Double], toPower power: Int) {
        if power == 1 { return }
        for k in 0..<real.count {
            var baseR = real[k], baseI = imaginary[k]
            var resultR = 1.0, resultI = 0.0
            var n = power
            while n > 0 {
                if n & 1 == 1 {
                    let r = resultR * baseR - resultI * baseI
                    resultI = resultR * baseI + resultI * baseR
                    resultR = r
                }
                n >>= 1
                if n > 0 {
                    let r = baseR * baseR - baseI * baseI
                    baseI = 2 * baseR * baseI
                    baseR = r
                }
            }
            real[k] = resultR; imaginary[k] = resultI
        }
    }
}

/// What an accountant reported and how.
public struct PrivacyEstimate: Sendable, Equatable {
    /// How the ε was obtained.
    public enum Method: String, Sendable, Equatable {
        /// Rényi DP (the accountant asked for).
        case rdp
        /// The PLD bound with its FFT error bound.
        case pld
        /// PLD was asked for; RDP gave the smaller (equally sound) bound, e.g. at very small δ.
        case rdpTighter = "rdp (tighter than pld here)"
        /// PLD was asked for, but the composition holds discrete-Gaussian steps: RDP accounts for all.
        case rdpForDiscreteNoise = "rdp (discrete gaussian steps: pld not applicable)"
        /// A step without noise: ε = +∞.
        case noNoise = "none (a step without noise)"
    }

    public var epsilon: Double
    public var method: Method
}

/// A rigorous bound on the rounding error of the FFT composition, in ℓ2 over the composed (tilted)
/// masses. Model: IEEE double, unit roundoff u = 2⁻⁵³.
/// - Radix-2 FFT: Higham, "Accuracy and Stability of Numerical Algorithms" (2nd ed., 2002),
///   Theorem 24.2: ‖ŷ − y‖₂ ≤ a‖y‖₂ with a = Lη/(1 − Lη), L = log₂ n, η = μ + γ₄(√2 + μ),
///   γ₄ = 4u/(1 − 4u), μ the twiddle factors' error. `RadixTwoFFT` computes each as cos/sin of
///   2π·m/n (angle within 3u·2π, libm within 1 ulp), so μ ≤ 4e-15.
/// - Parseval: a forward transform of x has ‖X‖₂ = √n‖x‖₂, so its error d_j ≤ a√n‖x_j‖₂, also a
///   bound on every entry's error. Each |X_k| ≤ 1 (x_j is a probability vector), so raising to the
///   T-th power multiplies an entry's error by at most T(1 + d_j)^(T−1) ≤ T·e^(T·d_j); the binary
///   exponentiation's own ≤ 2⌈log₂ T⌉ complex products add relative √2γ₂ each (Higham §3.6).
/// - Products across mechanisms add errors (all magnitudes ≤ e^(T d)), and the inverse transform
///   divides the frequency-domain ℓ2 error by √n and adds its own a·‖r‖₂ (‖r‖₂ ≤ 1 + error).
/// The result is doubled as a margin. The per-step masses and the tilt are computed with relative
/// error below 16u each and all masses are non-negative, so the composed masses are off by a factor
/// within e^(±16u·ΣT) (`relativeMassError`), applied to the masses as (1 + ρ).
struct FFTErrorBound {
    static let unitRoundoff = 0x1p-53
    static let twiddleError = 4e-15
    let size: Int
    let a: Double
    private var frequencyError = 0.0
    private var totalSteps = 0.0
    private var exponentSum = 0.0

    init(size: Int) {
        self.size = size
        let u = Self.unitRoundoff
        let gamma4 = 4 * u / (1 - 4 * u)
        let eta = Self.twiddleError + gamma4 * (2.0.squareRoot() + Self.twiddleError)
        let levels = Double(max(1, size.trailingZeroBitCount))
        a = levels * eta / (1 - levels * eta)
    }

    /// One mechanism: `steps` self-compositions of a probability vector with ℓ2 norm `inputNorm`.
    mutating func addMechanism(steps: Double, inputNorm: Double) {
        let u = Self.unitRoundoff, gamma2 = 2 * u / (1 - 2 * u)
        let rootN = Double(size).squareRoot()
        let forward = a * rootN * inputNorm
        let growth = exp(steps * forward)
        let multiplications = 2 * (log2(max(steps, 1)).rounded(.up) + 1)
        let powerRounding = multiplications * 2.0.squareRoot() * gamma2 * growth * rootN * inputNorm * (1 + a)
        frequencyError += steps * growth * forward + powerRounding + 2.0.squareRoot() * gamma2 * rootN
        exponentSum += steps * forward
        totalSteps += steps
    }

    /// ℓ2 bound on the error of the composed (tilted) masses.
    var composedL2Error: Double {
        let rootN = Double(size).squareRoot()
        let fromFrequency = frequencyError * exp(exponentSum) / rootN
        return 2 * (fromFrequency * (1 + a) + (a + Self.unitRoundoff) * (1 + fromFrequency))
    }

    /// ρ: composed masses are within a factor 1 + ρ of exact, from the per-step masses' rounding.
    var relativeMassError: Double { expm1(16 * Self.unitRoundoff * totalSteps) }
}

/// The composition needs a loss grid larger than the accountant allows (tiny σ or huge step counts).
public struct PLDGridTooLargeError: Error, CustomStringConvertible, Sendable {
    /// Points the grid would need (infinite when the loss itself is unbounded in Double).
    public let points: Double
    /// `PLDAccountant.maximumGridPoints`.
    public let limit: Int
    /// The loss grid interval in use.
    public let discretization: Double

    public var description: String {
        "PLD accounting needs \(points.isFinite ? String(format: "%.3g", points) : "unboundedly many") loss grid points at "
            + "discretization \(discretization), more than the limit of \(limit) (the noise multiplier is too small for "
            + "this grid); the RDP accountant gives an upper bound instead"
    }
}

/// Which neighbouring dataset plays P in the privacy loss log(P/Q).
enum AdjacencyDirection: CaseIterable {
    /// P = (1 − q)N(0, σ²) + qN(1, σ²) (the record is present), Q = N(0, σ²).
    case remove
    /// P = N(0, σ²), Q = (1 − q)N(0, σ²) + qN(1, σ²).
    case add
}

/// One step's privacy loss on the grid ih, i ∈ lowIndex..<lowIndex + masses.count, plus mass at +∞.
struct DiscretePrivacyLoss {
    let lowIndex: Int
    let masses: [Double]
    let infinityMass: Double

    /// The connect-the-dots discretisation described on `PLDAccountant`.
    init(samplingRate q: Double, noiseMultiplier sigma: Double, direction: AdjacencyDirection, interval h: Double) throws {
        let logOneMinusQ = log1p(-q), logQ = log(q)
        let twoSigmaSquared = 2 * sigma * sigma
        // Remove-direction loss at z, increasing: log(1 − q + q·e^((2z − 1)/(2σ²))).
        func removeLoss(_ z: Double) -> Double {
            SpecialFunctions.logAdd(logOneMinusQ, logQ + (2 * z - 1) / twoSigmaSquared)
        }
        // Its inverse: the z where the remove-direction loss equals ℓ (−∞ below its range).
        func removeInverse(_ loss: Double) -> Double {
            if q == 1 { return sigma * sigma * loss + 0.5 }
            if loss == .infinity { return .infinity }
            let excess = loss < -1 ? exp(loss) - (1 - q) : expm1(loss) + q  // e^ℓ − (1 − q)
            if excess <= 0 { return -.infinity }
            return sigma * sigma * (log(excess) - logQ) + 0.5
        }
        let tail = PLDAccountant.gaussianTailStandardDeviations
        let lowLoss: Double, highLoss: Double
        switch direction {
        case .remove:
            lowLoss = q < 1 ? logOneMinusQ : removeLoss(1 - tail * sigma)
            highLoss = removeLoss(1 + tail * sigma)
        case .add:
            lowLoss = -removeLoss(tail * sigma)
            highLoss = q < 1 ? -logOneMinusQ : -removeLoss(-tail * sigma)
        }
        // Checked in Double first: a tiny σ makes the loss range overflow any Int (issue 13: σ = 1e-9
        // crashed here when the module was built with -Ounchecked).
        let points = (highLoss - lowLoss) / h + 3
        guard points.isFinite, points <= Double(PLDAccountant.maximumGridPoints) else {
            throw PLDGridTooLargeError(points: points, limit: PLDAccountant.maximumGridPoints, discretization: h)
        }
        let low = Int((lowLoss / h).rounded(.down)), high = Int((highLoss / h).rounded(.up))

        // P-mass, and P-mass minus x times Q-mass, of the loss interval (a, b].
        func masses(lossFrom a: Double, to b: Double, x: Double) -> (p: Double, residual: Double) {
            let zLow: Double, zHigh: Double
            switch direction {
            case .remove: zLow = removeInverse(a); zHigh = removeInverse(b)
            case .add: zLow = removeInverse(-b); zHigh = removeInverse(-a)
            }
            let g0 = SpecialFunctions.normalMass(from: zLow / sigma, to: zHigh / sigma)
            let g1 = SpecialFunctions.normalMass(from: (zLow - 1) / sigma, to: (zHigh - 1) / sigma)
            switch direction {
            case .remove: return ((1 - q) * g0 + q * g1, q * g1 + (1 - q - x) * g0)
            case .add: return (g0, (1 - x * (1 - q)) * g0 - x * q * g1)
            }
        }

        var grid = [Double](repeating: 0, count: high - low + 1)
        // Below the grid: all P-mass moves up to the first point.
        grid[0] += masses(lossFrom: -.infinity, to: Double(low) * h, x: 0).p
        // Each interval ((i−1)h, ih]: mass e^h·(π − x_{i−1}κ)/(e^h − 1) to ih, the rest to (i−1)h,
        // which keeps both the P-mass π and the Q-mass κ.
        let upperShare = exp(h) / expm1(h)
        for i in (low + 1)...max(low + 1, high) where high > low {
            let lower = Double(i - 1) * h
            let (p, residual) = masses(lossFrom: lower, to: Double(i) * h, x: exp(lower))
            let toUpper = min(p, max(0, upperShare * residual))
            grid[i - low] += toUpper
            grid[i - 1 - low] += p - toUpper
        }
        // Above the grid: e^(ε_high)·κ at the last point keeps Q-mass; the remainder is at +∞.
        let top = Double(high) * h
        let (p, residual) = masses(lossFrom: top, to: .infinity, x: exp(top))
        let toInfinity = min(p, max(0, residual))
        grid[grid.count - 1] += p - toInfinity
        lowIndex = low
        self.masses = grid
        infinityMass = toInfinity
    }

    /// log Σ_i p_i e^(λ·ih) over the finite masses, for each λ (log moment generating function).
    func logMoments(_ lambdas: [Double], interval h: Double) -> [Double] {
        var losses: [Double] = [], logMasses: [Double] = []
        losses.reserveCapacity(masses.count); logMasses.reserveCapacity(masses.count)
        for (offset, mass) in masses.enumerated() where mass > 0 {
            losses.append(Double(lowIndex + offset) * h)
            logMasses.append(log(mass))
        }
        return lambdas.map { lambda in
            var largest = -Double.infinity
            for k in 0..<losses.count { largest = max(largest, logMasses[k] + lambda * losses[k]) }
            if largest == -.infinity { return -.infinity }
            var sum = 0.0
            for k in 0..<losses.count { sum += exp(logMasses[k] + lambda * losses[k] - largest) }
            return largest + log(sum)
        }
    }
}

/// A composed loss distribution on the grid ih: the composed masses are
/// m_k = (1 + ρ)·max(0, r̂_k)·e^(C − λℓ_k), with r̂ the computed tilted masses (negative rounding
/// residue zeroed: the true masses are ≥ 0, so zeroing only moves r̂ towards them), plus
/// `extraDelta` (mass at +∞ and outside the window). Every δ it reports adds the FFT error bound:
/// Σ_{ℓ_k > ε} |r̂_k − r_k|·e^(C − λℓ_k) ≤ E·(Σ_{ℓ_k > ε} e^(2(C − λℓ_k)))^(1/2) by Cauchy–Schwarz,
/// E the ℓ2 bound of `FFTErrorBound`.
struct ComposedPrivacyLoss {
    let lowIndex: Int
    /// Composed masses on the untilted scale, negatives zeroed and inflated by 1 + ρ.
    let masses: [Double]
    /// e^(2(C − λℓ_k)): the squared weight of index k's error on the untilted scale.
    let errorWeights: [Double]
    let interval: Double
    let errorBound: Double
    let extraDelta: Double

    init(lowIndex: Int, tiltedMasses: [Double], interval: Double, tilt: Double, logScale: Double, errorBound: Double,
         relativeError: Double, extraDelta: Double, keepingNegativeMasses: Bool = false) {
        self.lowIndex = lowIndex
        self.interval = interval
        self.errorBound = errorBound
        self.extraDelta = extraDelta
        var masses = [Double](repeating: 0, count: tiltedMasses.count), weights = masses
        for (k, tilted) in tiltedMasses.enumerated() {
            let logWeight = logScale - tilt * Double(lowIndex + k) * interval
            weights[k] = exp(2 * logWeight)
            if tilted > 0 {
                masses[k] = (1 + relativeError) * exp(log(tilted) + logWeight)
            } else if keepingNegativeMasses {
                masses[k] = tilted * exp(logWeight)
            }
        }
        self.masses = masses
        self.errorWeights = weights
    }

    /// δ(ε) = extra + Σ_{ℓ > ε} m_ℓ (1 − e^(ε − ℓ)) + E·(Σ_{ℓ > ε} w_ℓ)^(1/2).
    func delta(epsilon: Double) -> Double {
        var total = extraDelta, weights = 0.0
        for (offset, mass) in masses.enumerated() {
            let loss = Double(lowIndex + offset) * interval
            if loss > epsilon {
                total += mass * -expm1(epsilon - loss)
                weights += errorWeights[offset]
            }
        }
        return max(0, total + errorBound * weights.squareRoot())
    }

    /// The smallest ε ≥ 0 with δ(ε) ≤ `delta`, solved exactly between grid points: scanning down from
    /// the top, S = Σ_{j>k} m_j and W = Σ_{j>k} m_j e^(ℓ_k − ℓ_j) give the mass part of δ(ℓ_k) as S − W,
    /// and on (ℓ_{k−1}, ℓ_k] δ(ε) = extra + B_k + S + m_k − e^(ε − ℓ_k)(W + m_k), where the error term
    /// B_k = E·(Σ_{j≥k} w_j)^(1/2) is constant there. Without `includingErrorBound` B is left out: the
    /// raw figure, only a guide for where to tilt, never reported.
    func epsilon(delta target: Double, includingErrorBound: Bool = true) -> Double {
        if extraDelta >= target { return .infinity }
        let h = interval
        let decay = exp(-h)
        var sum = 0.0, weighted = 0.0, weights = 0.0
        var k = masses.count - 1
        while k >= 0 {
            let mass = masses[k]
            weights += errorWeights[k]
            let bound = includingErrorBound ? errorBound * weights.squareRoot() : 0
            let nextSum = sum + mass, nextWeighted = (weighted + mass) * decay
            let loss = Double(lowIndex + k) * h
            if extraDelta + bound + nextSum - nextWeighted > target || k == 0 {
                // δ(ℓ_{k−1}) exceeds the target (or the grid ends): the answer lies at or below ℓ_k.
                let excess = extraDelta + bound + nextSum - target
                if excess <= 0 { return 0 }  // only at k = 0: δ stays below the target down to ε = 0
                // δ just below ℓ_k already exceeds the target (the error term jumps there, or a mass is
                // beyond Double's range): the answer is ℓ_k itself, where the previous step (or, at the
                // top, δ = extra) showed δ(ℓ_k) ≤ target.
                if !(excess.isFinite && (weighted + mass).isFinite) || extraDelta + bound + sum - weighted > target {
                    return max(0, loss)
                }
                return max(0, loss + log(excess / (weighted + mass)))
            }
            sum = nextSum; weighted = nextWeighted
            k -= 1
        }
        return 0
    }
}
