import XCTest
@testable import Privacy

final class ClientLevelRoundTests: XCTestCase {
    /// The client's clip of its whole round update against a direct computation: an update of norm > S comes
    /// out at norm S (to 1e-12 relative) in the same direction; one below S comes out bit for bit the same; a
    /// huge finite update does not overflow. Positive controls: the unclipped update and a per-coordinate clamp
    /// to S/√d fail the same norm check.
    func testClipAgainstDirectComputation() throws {
        let s = 1.5
        let update: [Double] = [3, -4, 0.5, 12, -0.25]  // ‖Δ‖ = √(9 + 16 + 0.25 + 144 + 0.0625)
        let direct = update.reduce(0) { $0 + $1 * $1 }.squareRoot()
        XCTAssertGreaterThan(direct, s)
        let (clipped, norm) = try ClientLevelDP.clip(update: update, to: s)
        XCTAssertEqual(norm, direct, accuracy: 1e-12 * direct)
        let clippedNorm = clipped.reduce(0) { $0 + $1 * $1 }.squareRoot()
        XCTAssertEqual(clippedNorm, s, accuracy: 1e-12 * s, "a clipped update's norm is S")
        for (a, b) in zip(clipped, update) { XCTAssertEqual(a, b * s / direct, accuracy: 1e-15) }
        // Controls: the same check fails on the unclipped update and on a per-coordinate clamp.
        XCTAssertGreaterThan(abs(direct - s), 1e-12 * s)
        let clamp = s / Double(update.count).squareRoot()
        let clamped = update.map { min(max($0, -clamp), clamp) }
        XCTAssertGreaterThan(abs(clamped.reduce(0) { $0 + $1 * $1 }.squareRoot() - s), 1e-12 * s)

        let small: [Double] = [0.3, -0.4, 0.1]  // norm 0.51 < S
        let (same, smallNorm) = try ClientLevelDP.clip(update: small, to: s)
        XCTAssertEqual(same, small, "an update within S is untouched")
        XCTAssertEqual(smallNorm, 0.26.squareRoot(), accuracy: 1e-15)
        // Control: the equality check sees a change of one ulp.
        XCTAssertNotEqual(small.map { $0.nextUp }, small)

        let huge: [Double] = [3e200, 4e200]
        let (hugeClipped, hugeNorm) = try ClientLevelDP.clip(update: huge, to: s)
        XCTAssertEqual(hugeNorm, 5e200, accuracy: 1e188)
        XCTAssertEqual(hugeClipped[0], 0.6 * s, accuracy: 1e-15)
        XCTAssertEqual(hugeClipped[1], 0.8 * s, accuracy: 1e-15)
        XCTAssertEqual(try ClientLevelDP.clip(update: [0, 0], to: s).clipped, [0, 0])
        XCTAssertThrowsError(try ClientLevelDP.clip(update: [1, .nan], to: s))
        XCTAssertThrowsError(try ClientLevelDP.clip(update: [1, .infinity], to: s))
        XCTAssertThrowsError(try ClientLevelDP.clip(update: [1], to: 0))
    }

    /// The coordinator's sampling: through the seam, client i is in when its uniform is below q; from
    /// libsodium, the count over 20,000 clients lies within 6 standard deviations of qN and two draws differ.
    /// Positive control: the count at twice the rate lies outside the band.
    func testClientSamplingIsPoissonFromTheCSPRNG() throws {
        let sampler = try ClientLevelDP.ClientSampler(samplingRate: 0.1)
        XCTAssertEqual(sampler.sample(["a", "b", "c", "d"], uniforms: [0.05, 0.5, 0.0999, 0.1]), ["a", "c"])
        let population = Array(0..<20_000)
        let n = Double(population.count), q = sampler.samplingRate
        let band = 6 * (n * q * (1 - q)).squareRoot()
        let first = sampler.sample(population), second = sampler.sample(population)
        XCTAssertEqual(Double(first.count), n * q, accuracy: band)
        XCTAssertNotEqual(first, second, "a fresh sample each round")
        let doubled = try ClientLevelDP.ClientSampler(samplingRate: 0.2).sample(population)
        XCTAssertGreaterThan(abs(Double(doubled.count) - n * q), band, "control: a different rate leaves the band")
        XCTAssertThrowsError(try ClientLevelDP.ClientSampler(samplingRate: 0))
        XCTAssertThrowsError(try ClientLevelDP.ClientSampler(samplingRate: 1.01))
    }

    /// The coordinator's accountant against dp_accounting 0.6.0 (Tests/PrivacyTests/Reference/
    /// make_distributed_reference.py, "client_level": its RdpAccountant over integer orders and its PLD,
    /// connect-the-dots at 1e-4, for the Poisson-subsampled Gaussian at the same q, z, rounds). After T rounds
    /// charged its RDP ε is at most dp_accounting's RDP (ours has more orders) and at least dp_accounting's
    /// optimistic PLD (a lower bound on the true ε); with PLD it is within 1% of the pessimistic one.
    /// Positive control: charging only the rounds a client took part in (qT rounds, as if q were 1) falls
    /// outside the same window.
    func testAccountantAgainstDPAccounting() throws {
        for record in try DistributedReference.records("client_level") {
            let q = try record.number("q"), z = try record.number("noise_multiplier"), delta = try record.number("delta")
            let count = Int(try record.number("rounds"))
            let rdp = try record.number("dp_accounting_rdp_integer_orders")
            let optimistic = try record.number("dp_accounting_pld_optimistic")
            let pessimistic = try record.number("dp_accounting_pld_pessimistic")
            let round = ClientLevelDP.Round(samplingRate: q, noiseMultiplier: z)
            var accountant = try ClientLevelDP.FederationAccountant(
                epsilonBudget: 1000, delta: delta, rounds: [ClientLevelDP.Round](repeating: round, count: count - 1))
            let epsilon = try accountant.charge(round)
            let label = "q=\(q) z=\(z) T=\(count) δ=\(delta): \(epsilon)"
            XCTAssertEqual(accountant.rounds.count, count)
            XCTAssertLessThanOrEqual(epsilon, rdp * (1 + 1e-9), label + " vs dp_accounting RDP \(rdp)")
            XCTAssertGreaterThanOrEqual(epsilon, optimistic, label + " vs dp_accounting optimistic PLD \(optimistic)")
            XCTAssertGreaterThan(epsilon, 0.9 * rdp, label + " is within 10% of dp_accounting RDP \(rdp)")
            let participations = max(1, Int((q * Double(count)).rounded()))
            let wrong = try ClientLevelDP.epsilon(rounds: [ClientLevelDP.Round](repeating: .init(samplingRate: 1, noiseMultiplier: z),
                                                                                 count: participations),
                                                  delta: delta, accountant: .rdp).epsilon
            if q < 1 {
                XCTAssertFalse(wrong >= optimistic && wrong <= rdp * (1 + 1e-9) && wrong > 0.9 * rdp,
                               label + ": control (participations only, \(wrong)) must fall outside the window")
            }
            if count <= 200 {
                let pld = try ClientLevelDP.FederationAccountant(
                    epsilonBudget: 1000, delta: delta, accountant: .pld, rounds: [ClientLevelDP.Round](repeating: round, count: count))
                let value = try pld.epsilon()
                XCTAssertGreaterThanOrEqual(value, optimistic * (1 - 1e-6), label + ": PLD \(value)")
                XCTAssertLessThan(value, pessimistic * 1.01, label + ": PLD \(value) vs pessimistic \(pessimistic)")
            }
        }
    }

    /// A round that would pass the federation's client-level budget is refused before it is charged, and a
    /// plan of too many rounds is refused naming the first round over. Positive control: the rounds within the
    /// budget are admitted and charged.
    func testRefusesRoundsOverTheClientLevelBudget() throws {
        let round = ClientLevelDP.Round(samplingRate: 0.05, noiseMultiplier: 1.0)
        let probe = try ClientLevelDP.FederationAccountant(epsilonBudget: 1000, delta: 1e-5)
        let at20 = try probe.epsilon(after: [ClientLevelDP.Round](repeating: round, count: 20))
        let at21 = try probe.epsilon(after: [ClientLevelDP.Round](repeating: round, count: 21))
        XCTAssertLessThan(at20, at21)
        var accountant = try ClientLevelDP.FederationAccountant(epsilonBudget: (at20 + at21) / 2, delta: 1e-5)
        XCTAssertNoThrow(try accountant.admit(round, count: 20))
        XCTAssertThrowsError(try accountant.admit(round, count: 50)) { error in
            XCTAssertEqual((error as? ClientLevelDP.BudgetError)?.round, 21, "\(error)")
        }
        for _ in 0..<20 { try accountant.charge(round) }
        XCTAssertEqual(try accountant.epsilon(), at20, accuracy: 1e-12)
        XCTAssertThrowsError(try accountant.charge(round)) { error in
            let refusal = error as? ClientLevelDP.BudgetError
            XCTAssertEqual(refusal?.round, 21)
            XCTAssertTrue("\(error)".contains("client-level ε"), "\(error)")
        }
        XCTAssertEqual(accountant.rounds.count, 20, "a refused round is not charged")
        XCTAssertThrowsError(try ClientLevelDP.FederationAccountant(
            epsilonBudget: at20, delta: 1e-5, rounds: [ClientLevelDP.Round](repeating: round, count: 21)))
        XCTAssertThrowsError(try ClientLevelDP.FederationAccountant(epsilonBudget: 0, delta: 1e-5))
    }

    /// A client-level plan is refused by name when it lacks secure aggregation, distributed noise, S, q or z.
    /// Positive control: the consistent plan passes.
    func testInconsistentClientLevelPlansAreRefusedByName() throws {
        func field(secure: Bool = true, placement: NoisePlacement = .distributed, clip: Double? = 0.5, rate: Double? = 0.1,
                   z: Double = 1.0) -> String? {
            do {
                try ClientLevelDP.checkPlan(secureAggregation: secure, noisePlacement: placement, clipNorm: clip, samplingRate: rate,
                                            noiseMultiplier: z)
                return nil
            } catch let error as ClientLevelDP.PlanError {
                XCTAssertTrue(error.description.hasPrefix("plan.\(error.field): "), error.description)
                return error.field
            } catch {
                return "unexpected \(error)"
            }
        }
        XCTAssertNil(field(), "control: the consistent plan passes")
        XCTAssertEqual(field(secure: false), "secure_aggregation")
        XCTAssertEqual(field(placement: .local), "noise_placement")
        XCTAssertEqual(field(clip: nil), "clip_norm")
        XCTAssertEqual(field(clip: -1), "clip_norm")
        XCTAssertEqual(field(rate: nil), "sampling_rate")
        XCTAssertEqual(field(rate: 1.5), "sampling_rate")
        XCTAssertEqual(field(z: 0), "noise_multiplier")
    }
}

final class ClientLevelShareTests: XCTestCase {
    /// Three sampled clients (of N = 6 at q = 0.5) clip their updates to S, mask them on the grid with their noise
    /// shares (libsodium), and the coordinator divides the modular sum by 2^f·qN: the residual against
    /// Σ clip(Δ)/(qN), computed directly, has mean 0 (within 6 standard errors) and variance (z·Δ₂/2^f/(qN))²
    /// within 15% over d = 4096 coordinates (the sample variance's sd is 2.2%). Positive control: against the
    /// unclipped Σ Δ/(qN) the residual variance is more than twice the noise's.
    func testClippedNoisedSharesDecodeToTheFixedDenominatorMean() throws {
        let d = 4096, s = 1.0, z = 0.05, q = 0.5, population = 6.0
        let round = try ClientLevelDP.round(samplingRate: q, noiseMultiplier: z, clipNorm: s, dimension: d, cohort: 3,
                                            threshold: 3, assumeHonest: 1)
        func update(norm: Double, phase: Double) -> [Double] {
            let raw = (0..<d).map { sin(Double($0) * 0.37 + phase) }
            let length = raw.reduce(0) { $0 + $1 * $1 }.squareRoot()
            return raw.map { $0 * norm / length }
        }
        let updates = [update(norm: 10, phase: 0), update(norm: 0.5, phase: 1), update(norm: 3, phase: 2)]
        var sum = [UInt32](repeating: 0, count: d)
        for u in updates {
            let words = try ClientLevelDP.maskedWords(update: u, clipNorm: s, round: round).words
            for i in 0..<d { sum[i] = sum[i] &+ words[i] }
        }
        let estimate = ClientLevelDP.estimate(modularSum: sum, round: round, expectedCohort: q * population)
        let clippedMean = (0..<d).map { i in updates.reduce(0.0) { total, u in
            let norm = u.reduce(0) { $0 + $1 * $1 }.squareRoot()
            return total + u[i] * min(1, s / norm)
        } / (q * population) }
        let rawMean = (0..<d).map { i in updates.reduce(0.0) { $0 + $1[i] } / (q * population) }
        let sigma = round.shareSigma * 3.0.squareRoot() / round.scale / (q * population)
        XCTAssertGreaterThanOrEqual(sigma, z * s / (q * population), "the sum carries at least z·S")
        func residual(_ expected: [Double]) -> (mean: Double, variance: Double) {
            let r = zip(estimate, expected).map { $0 - $1 }
            let mean = r.reduce(0, +) / Double(d)
            return (mean, r.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(d - 1))
        }
        let clipped = residual(clippedMean)
        XCTAssertEqual(clipped.mean, 0, accuracy: 6 * sigma / Double(d).squareRoot())
        XCTAssertEqual(clipped.variance, sigma * sigma, accuracy: 0.15 * sigma * sigma)
        XCTAssertGreaterThan(residual(rawMean).variance, 2 * sigma * sigma, "control: the unclipped mean is not what was decoded")
    }
}
