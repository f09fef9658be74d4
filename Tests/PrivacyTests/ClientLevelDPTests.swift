import XCTest
@testable import Privacy

final class ClientLevelDPTests: XCTestCase {
    /// DP-FedAvg's client-level schedule (McMahan et al. 2018) against dp_accounting for the same (q, z, T):
    /// RDP within 0.5% of its RdpAccountant over the same integer orders; PLD between its optimistic and
    /// pessimistic (connect-the-dots, 1e-4) bounds, within 1% of the pessimistic one.
    func testScheduleAgainstDPAccounting() throws {
        let integerOrders = RDPAccountant.defaultOrders.filter { $0 == $0.rounded() }
        for record in try DistributedReference.records("client_level") {
            let q = try record.number("q"), z = try record.number("noise_multiplier"), delta = try record.number("delta")
            let rounds = [ClientLevelDP.Round](repeating: ClientLevelDP.Round(samplingRate: q, noiseMultiplier: z),
                                               count: Int(try record.number("rounds")))
            let mechanisms = ClientLevelDP.mechanisms(rounds)
            XCTAssertEqual(mechanisms.count, 1)
            var rdp = try RDPAccountant(orders: integerOrders)
            for mechanism in mechanisms { try rdp.add(mechanism) }
            let expected = try record.number("dp_accounting_rdp_integer_orders")
            let ours = try rdp.epsilon(delta: delta).epsilon
            let label = "q=\(q) z=\(z) T=\(rounds.count) δ=\(delta)"
            XCTAssertEqual(ours, expected, accuracy: 0.005 * expected, label + ": RDP \(ours) vs \(expected)")
            XCTAssertLessThanOrEqual(try ClientLevelDP.epsilon(rounds: rounds, delta: delta, accountant: .rdp).epsilon, ours * (1 + 1e-12))
            let pld = try ClientLevelDP.epsilon(rounds: rounds, delta: delta, accountant: .pld).epsilon
            let optimistic = try record.number("dp_accounting_pld_optimistic"), pessimistic = try record.number("dp_accounting_pld_pessimistic")
            XCTAssertGreaterThanOrEqual(pld, optimistic * (1 - 1e-6), label + ": PLD \(pld) vs optimistic \(optimistic)")
            XCTAssertLessThan(pld, pessimistic * 1.01, label + ": PLD \(pld) vs pessimistic \(pessimistic)")
            print(label + ": RDP \(ours) (dp_accounting \(expected)), PLD \(pld) (dp_accounting \(optimistic)…\(pessimistic))")
        }
    }

    /// A schedule whose rounds differ composes every round, sampled or not: 10 rounds at q = 0.1 then 10 at
    /// q = 0.2 cost more than either run alone.
    func testScheduleComposesEveryRound() throws {
        let first = [ClientLevelDP.Round](repeating: .init(samplingRate: 0.1, noiseMultiplier: 1), count: 10)
        let second = [ClientLevelDP.Round](repeating: .init(samplingRate: 0.2, noiseMultiplier: 1), count: 10)
        XCTAssertEqual(ClientLevelDP.mechanisms(first + second).map(\.steps), [10, 10])
        let both = try ClientLevelDP.epsilon(rounds: first + second, delta: 1e-5, accountant: .rdp).epsilon
        XCTAssertGreaterThan(both, try ClientLevelDP.epsilon(rounds: second, delta: 1e-5, accountant: .rdp).epsilon)
        XCTAssertThrowsError(try ClientLevelDP.epsilon(rounds: [.init(samplingRate: 1.5, noiseMultiplier: 1)], delta: 1e-5,
                                                       accountant: .rdp))
    }

    /// The fixed-denominator estimator's sensitivity, by direct computation: over a population of weighted
    /// clients, removing the heaviest client with an update of norm S moves the estimate by exactly
    /// w_max·S/(qW) (the stated bound is attained), for every sample that includes it. Positive control: the
    /// self-normalised estimator (divide by the sampled weight) moves by more than that bound on a small sample.
    func testFixedDenominatorSensitivityByDirectComputation() throws {
        let weights: [Double] = [1, 0.5, 0.25, 1, 0.75, 0.5]
        let total = weights.reduce(0, +), q = 0.5, clip = 2.0
        let estimator = try ClientLevelDP.FixedDenominatorEstimator(clipNorm: clip, samplingRate: q, totalWeight: total, maximumWeight: 1)
        // One-dimensional updates; client 0 (weight 1) has norm S, the others arbitrary within S.
        let updates: [Double] = [clip, -1.5, 0.3, 1.9, -2, 0.7]
        var largest = 0.0, selfNormalisedLargest = 0.0
        for mask in 0..<(1 << weights.count) where mask & 1 == 1 {
            let sampled = weights.indices.filter { mask & (1 << $0) != 0 }
            let with = sampled.map { weights[$0] * updates[$0] }.reduce(0, +)
            let without = with - weights[0] * updates[0]
            largest = max(largest, abs(estimator.estimate(fromWeightedSum: with) - estimator.estimate(fromWeightedSum: without)))
            let weightWith = sampled.map { weights[$0] }.reduce(0, +), weightWithout = weightWith - weights[0]
            if weightWithout > 0 { selfNormalisedLargest = max(selfNormalisedLargest, abs(with / weightWith - without / weightWithout)) }
        }
        XCTAssertEqual(largest, estimator.sensitivity, accuracy: 1e-12)
        XCTAssertEqual(estimator.sensitivity, 1 * clip / (q * total), accuracy: 1e-15)
        XCTAssertGreaterThan(selfNormalisedLargest, estimator.sensitivity)
        XCTAssertEqual(estimator.estimateNoiseStandardDeviation(noiseMultiplier: 1.1),
                       estimator.sumNoiseStandardDeviation(noiseMultiplier: 1.1) / (q * total), accuracy: 1e-15)
        XCTAssertThrowsError(try ClientLevelDP.FixedDenominatorEstimator(clipNorm: 1, samplingRate: 0, totalWeight: 10))
    }
}
