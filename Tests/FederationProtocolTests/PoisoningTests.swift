import FederationHarness
@testable import FederationProtocol
import Foundation
import ModelFormats
import SecureAggregation
import TestSupport
import Wire
import XCTest

/// A poisoning client in a plain round (issue 14, item 4): what its claimed record count and a scaled
/// update decide in the aggregate, with the mean and the coordinator's clip, and with the trimmed mean
/// and the median up to their breakdown points (Yin et al. 2018, ICML, "Byzantine-Robust Distributed
/// Learning: Towards Optimal Statistical Rates": the coordinate-wise median and the β-trimmed mean).
/// Every expected value is computed here from those definitions.
final class PoisoningTests: XCTestCase {
    static let model = InMemoryFederationTests.model
    static let plan = InMemoryFederationTests.plan
    let t0 = Date(timeIntervalSince1970: 1_700_000_000)

    /// P, the adapter's parameter count, and C = B·√P with B = 8 · steps · learning rate: the default
    /// clip of plain updates (the bound a secure round puts on every value, as a norm).
    var parameterCount: Int {
        get throws { try AdapterLayout(configuration: Self.model, plan: Self.plan).shapes.values.reduce(0) { $0 + $1.reduce(1, *) } }
    }
    var defaultClip: Double {
        get throws { 8 * Double(Self.plan.steps) * Self.plan.learningRate * Double(try parameterCount).squareRoot() }
    }

    func policy(clients: Int, aggregator: UpdateAggregator = .mean, trimFraction: Double? = nil,
                updateNormClip: Double? = nil) -> RoundPolicy {
        RoundPolicy(minClients: clients, maxClients: clients, fraction: 1, aggregation: .fedavg, secureAggregation: false,
                    inviteTimeout: 30, roundTimeout: 120, waitForClients: 60, plan: Self.plan,
                    aggregator: aggregator, trimFraction: trimFraction, updateNormClip: updateNormClip)
    }

    func spec(_ name: String, training: @escaping InMemoryFederation.Training) throws -> InMemoryFederation.ClientSpec {
        InMemoryFederation.ClientSpec(name: name, policy: InMemoryFederationTests.policy, examples: 40,
                                      directory: try Fixtures.temporaryDirectory("poison-\(name)"), training: training)
    }

    func honest(_ name: String) throws -> InMemoryFederation.ClientSpec {
        try spec(name) { _, global, round in InMemoryFederation.fixedUpdate(like: global, client: name, round: round) }
    }

    /// A client that sends `factor` times the update an honest client of its name would send.
    func scaling(_ name: String, by factor: Float) throws -> InMemoryFederation.ClientSpec {
        try spec(name) { _, global, round in
            InMemoryFederation.fixedUpdate(like: global, client: name, round: round).mapValues { $0.map { $0 * factor } }
        }
    }

    /// A client that sends `value` for every parameter.
    func constant(_ name: String, _ value: Float) throws -> InMemoryFederation.ClientSpec {
        try spec(name) { _, global, _ in global.mapValues { $0.map { _ in value } } }
    }

    /// The global adapter before the round (as `InMemoryFederationTests` starts from).
    func start() throws -> AdapterTensors {
        try AdapterLayout(configuration: Self.model, plan: Self.plan).shapes.mapValues { shape in
            (0..<shape.reduce(1, *)).map { Float(sin(Double($0) * 0.11)) * 0.02 }
        }
    }

    /// One round of `clients` under `policy`: the global adapter after it, and the coordinator's log.
    func round(_ policy: RoundPolicy, _ clients: [InMemoryFederation.ClientSpec]) throws -> (AdapterTensors, [String]) {
        let federation = try InMemoryFederation(policy: policy, model: Self.model, global: try start(), clients: clients, now: t0)
        try federation.startRounds(1)
        let round = try XCTUnwrap(federation.finished.first)
        XCTAssertTrue(round.outcome.isCommitted, round.outcome.abortReason ?? "")
        XCTAssertEqual(round.outcome.updates.count, clients.count)
        return (federation.global, federation.coordinatorLog)
    }

    /// Per parameter (tensors in name order), the honest clients' round-1 updates.
    func honestColumns(_ names: [String]) throws -> [[Double]] {
        let start = try start()
        let updates = names.map { InMemoryFederation.fixedUpdate(like: start, client: $0, round: 1) }
        return start.keys.sorted().flatMap { name in
            start[name]!.indices.map { j in updates.map { Double($0[name]![j]) } }
        }
    }

    /// `after − before` flattened in tensor-name order.
    func change(_ after: AdapterTensors, from before: AdapterTensors) -> [Double] {
        before.keys.sorted().flatMap { name in before[name]!.indices.map { Double(after[name]![$0]) - Double(before[name]![$0]) } }
    }

    func norm(_ values: [Double]) -> Double { values.reduce(0) { $0 + $1 * $1 }.squareRoot() }

    // MARK: The mean, with and without the clip

    /// A client sending its update scaled 10⁵ times (norm ~10³·C) among four honest ones moves the
    /// mean by exactly its clipped update over n: at most C/n. Before the clip it moved the adapter by
    /// ‖update‖/n, about 1.2·10³ times that bound (847 against 0.718 on the code before the clip, and
    /// so in the control below): it decided the aggregate.
    func testAScaledUpdateMovesTheMeanByAtMostTheClipOverN() throws {
        let names = ["a", "b", "c", "d"]
        let (global, log) = try round(policy(clients: 5), try names.map(honest) + [scaling("e", by: 1e5)])
        let honestMean = try honestColumns(names).map { $0.reduce(0, +) / 5 }
        let influence = norm(zip(change(global, from: try start()), honestMean).map { $0 - $1 })
        let bound = try defaultClip / 5
        XCTAssertLessThanOrEqual(influence, bound * (1 + 1e-5), "one client moves the mean by at most C/n")
        XCTAssertGreaterThan(influence, bound * (1 - 1e-5), "the clipped update still counts, at full length C")
        let attack = try honestColumns(["e"]).map { $0[0] * 1e5 }
        XCTAssertGreaterThan(norm(attack) / 5, 1000 * bound, "the unclipped attack is far beyond the bound")
        XCTAssertEqual(log.filter { $0.contains("above update_norm_clip") }.count, 1, "\(log)")
        XCTAssertTrue(log.contains { $0.hasPrefix("round 1: client 'e' sent an update of L2 norm") }, "\(log)")
    }

    /// Positive control: with the clip out of the way (10¹² is never reached), the same client moves the
    /// adapter by its whole update over n, far past C/n: the code before the clip.
    func testWithoutTheClipTheScaledUpdateDecidesTheMean() throws {
        let names = ["a", "b", "c", "d"]
        let (global, log) = try round(policy(clients: 5, updateNormClip: 1e12), try names.map(honest) + [scaling("e", by: 1e5)])
        let honestMean = try honestColumns(names).map { $0.reduce(0, +) / 5 }
        let influence = norm(zip(change(global, from: try start()), honestMean).map { $0 - $1 })
        let attack = try honestColumns(["e"]).map { $0[0] * 1e5 }
        XCTAssertEqual(influence, norm(attack) / 5, accuracy: norm(attack) / 5 * 1e-5)
        XCTAssertGreaterThan(influence, 1000 * (try defaultClip) / 5, "the bound C/n is violated without the clip")
        XCTAssertFalse(log.contains { $0.contains("above update_norm_clip") }, "\(log)")
    }

    /// Honest updates (within ±0.004 a value, norm ≤ 0.004·√P) are far inside the default clip: none is touched.
    func testTheDefaultClipLeavesHonestUpdatesAlone() throws {
        let names = ["a", "b", "c"]
        let (global, log) = try round(policy(clients: 3), try names.map(honest))
        let mean = try honestColumns(names).map { $0.reduce(0, +) / 3 }
        let worst = zip(change(global, from: try start()), mean).map { abs($0 - $1) }.max() ?? .infinity
        XCTAssertLessThan(worst, 1e-7)
        XCTAssertFalse(log.contains { $0.contains("above update_norm_clip") }, "\(log)")
        XCTAssertEqual(log.filter { $0.hasPrefix("round 1: update L2 norms") }.count, 1, "the operator sees the honest norms")
    }

    /// The record count a client releases never weighs its update (issue 13 removed the weights): a client
    /// claiming 2⁴⁰ held-out records gets the same share as one claiming 100. This held already before
    /// the clip; the test keeps it.
    func testAClaimedRecordCountDoesNotWeighTheAggregate() throws {
        let start = try start()
        let layout = try AdapterLayout(configuration: Self.model, plan: Self.plan)
        func metrics(_ client: String, records: Int64) -> ClientRoundMetrics {
            ClientRoundMetrics(client: client, epsilon: 1, delta: 1e-5, epsilonBudget: 8,
                               heldOut: HeldOutRelease(lossBefore: records * 512, lossAfter: records * 427,
                                                       count: records * HeldOutRelease.gridScale, lossClip: 6, noiseMultiplier: 5))
        }
        let updates = ["a", "b"].map { InMemoryFederation.fixedUpdate(like: start, client: $0, round: 1) }
        let outcome = RoundOutcome(round: 1, started: t0, finished: t0, cohort: ["a", "b"],
                                   updates: [("a", ReceivedUpdate(delta: updates[0], metrics: metrics("a", records: 1 << 40))),
                                             ("b", ReceivedUpdate(delta: updates[1], metrics: metrics("b", records: 100)))],
                                   declines: [], dropouts: [], abortReason: nil)
        let (weighted, _) = try RoundAggregation.updates(of: outcome, policy: policy(clients: 2), global: start, layout: layout)
        XCTAssertEqual(weighted.map(\.weight), [1, 1])
        var fedavg = FedAvg()
        let global = try fedavg.aggregate(global: start, updates: weighted)
        let mean = try honestColumns(["a", "b"]).map { ($0[0] + $0[1]) / 2 }
        XCTAssertLessThan(zip(change(global, from: start), mean).map { abs($0 - $1) }.max() ?? .infinity, 1e-7)
    }

    /// The clip's log line names the round and the client, with the client's id escaped.
    func testTheClipLogLineNamesRoundAndEscapedClient() throws {
        let start = try start()
        let layout = try AdapterLayout(configuration: Self.model, plan: Self.plan)
        let client = "evil\nround 9 committed"
        let metrics = ClientRoundMetrics(client: client, epsilon: 1, delta: 1e-5, epsilonBudget: 8,
                                         heldOut: InMemoryFederation.heldOut(plan: Self.plan))
        let outcome = RoundOutcome(round: 7, started: t0, finished: t0, cohort: [client],
                                   updates: [(client, ReceivedUpdate(delta: start.mapValues { $0.map { _ in 1000 } }, metrics: metrics))],
                                   declines: [], dropouts: [], abortReason: nil)
        let (_, log) = try RoundAggregation.updates(of: outcome, policy: policy(clients: 1), global: start, layout: layout)
        XCTAssertEqual(log.count, 2)
        XCTAssertTrue(log[0].hasPrefix(#"round 7: update L2 norms (update_norm_clip "#), log[0])
        XCTAssertTrue(log[0].hasSuffix(#": evil\nround 9 committed 1.497e+04"#), log[0])
        XCTAssertTrue(log[1].hasPrefix(#"round 7: client 'evil\nround 9 committed' sent an update of L2 norm"#), log[1])
        XCTAssertFalse(log.contains { $0.contains("\n") })
    }

    // MARK: Secure rounds

    /// What SECURITY.md says a malicious client can do in a secure round: masks hide its input, so nothing
    /// checks that its words encode values within ±B. With n = 5 clients and B = 8·steps·η, four honest
    /// clients encode 0.001 per value and the fifth picks the word that makes the decoded sum the most
    /// negative the encoding can represent, −(2³¹ − 1)/2^f, between −n·B and −2n·B (f is the finest scale
    /// at which n values of ±B cannot wrap): the mean lands below −B, a shift of more than n/2 times the
    /// 2B/n that a client keeping to ±B can cause. (Masks cancel in the sum, so the unmasked sum is the
    /// sum of the words, as here.)
    func testInASecureRoundOneClientsWordsSetTheMeanAnywhereInTheDecodeRange() throws {
        let b = 8 * Double(Self.plan.steps) * Self.plan.learningRate
        let n = 5
        let encoding = try FixedPointEncoding(clipBound: b, maximumClients: n)
        let honest = try (0..<(n - 1)).map { _ in try encoding.encode([0.001], rounding: .nearest).words[0] }
        let target = UInt32(bitPattern: -Int32.max)
        let chosen = honest.reduce(target) { $0 &- $1 }
        let mean = try encoding.decodeSum([honest.reduce(chosen) { $0 &+ $1 }], clientCount: n)[0] / Double(n)
        XCTAssertEqual(mean, -Double(Int32.max) / encoding.scale / Double(n), accuracy: 1e-12)
        XCTAssertLessThan(mean, -b, "one client sets the mean below −B")
        let honestMean = 0.004 / Double(n)
        XCTAssertGreaterThan(honestMean - mean, Double(n) / 2 * (2 * b / Double(n)),
                             "more than n/2 times what a client within ±B could cause (2B/n)")
        // Control: the same client encoding −B honestly moves the mean by at most B/n + rounding.
        let bounded = try encoding.encode([Float(-b)], rounding: .nearest).words[0]
        let honestly = try encoding.decodeSum([honest.reduce(bounded) { $0 &+ $1 }], clientCount: n)[0] / Double(n)
        XCTAssertEqual(honestly, (0.004 - b) / Double(n), accuracy: 2 / encoding.scale)
    }

    // MARK: Trimmed mean and median up to their breakdown points

    /// β = 0.2 of 5 drops k = 1 value at each end. One client sending +1000 everywhere (clipped to +B a
    /// value, above every honest value) is the largest in every coordinate and dropped; so is the
    /// smallest honest value: each coordinate is the mean of the other three honest values.
    func testTheTrimmedMeanRemovesOneAttackerOfFive() throws {
        let names = ["a", "b", "c", "d"]
        let (global, log) = try round(policy(clients: 5, aggregator: .trimmedMean, trimFraction: 0.2),
                                      try names.map(honest) + [constant("e", 1000)])
        let expected = try honestColumns(names).map { column in (column.reduce(0, +) - column.min()!) / 3 }
        let got = change(global, from: try start())
        XCTAssertLessThan(zip(got, expected).map { abs($0 - $1) }.max() ?? .infinity, 1e-7)
        XCTAssertTrue(log.contains("round 1: trimmed_mean of 5 clipped updates, 1 dropped at each end of every value"), "\(log)")
    }

    /// Positive control, past the breakdown point (k = 1): with two such clients one +B survives in every
    /// coordinate, and the result is (B + the two middle honest values) / 3, outside the honest range.
    func testTheTrimmedMeanBreaksDownAtTwoAttackersOfFive() throws {
        let names = ["a", "b", "c"]
        let (global, _) = try round(policy(clients: 5, aggregator: .trimmedMean, trimFraction: 0.2),
                                    try names.map(honest) + [constant("e", 1000), constant("f", 1000)])
        let b = 8 * Double(Self.plan.steps) * Self.plan.learningRate
        let columns = try honestColumns(names)
        let expected = columns.map { column in (b + column.reduce(0, +) - column.min()!) / 3 }
        let got = change(global, from: try start())
        XCTAssertLessThan(zip(got, expected).map { abs($0 - $1) }.max() ?? .infinity, 1e-6)
        XCTAssertTrue(zip(got, columns).allSatisfy { $0 > $1.max()! }, "every coordinate above every honest value")
    }

    /// The median of 5 tolerates 2: with three honest clients and two sending +1000 (clipped to +B), the
    /// middle of each coordinate is the largest honest value.
    func testTheMedianRemovesTwoAttackersOfFive() throws {
        let names = ["a", "b", "c"]
        let (global, _) = try round(policy(clients: 5, aggregator: .median),
                                    try names.map(honest) + [constant("e", 1000), constant("f", 1000)])
        let expected = try honestColumns(names).map { $0.max()! }
        XCTAssertLessThan(zip(change(global, from: try start()), expected).map { abs($0 - $1) }.max() ?? .infinity, 1e-7)
    }

    /// Positive control, past the breakdown point: three of five attackers make every coordinate +B.
    func testTheMedianBreaksDownAtThreeAttackersOfFive() throws {
        let (global, _) = try round(policy(clients: 5, aggregator: .median),
                                    try ["a", "b"].map(honest) + [constant("e", 1000), constant("f", 1000), constant("g", 1000)])
        let b = 8 * Double(Self.plan.steps) * Self.plan.learningRate
        XCTAssertLessThan(change(global, from: try start()).map { abs($0 - b) }.max() ?? .infinity, 1e-6)
    }

    /// The statistics themselves on small cases worked by hand.
    func testMedianAndTrimmedMeanByHand() {
        XCTAssertEqual(PlainUpdateCombiner.median([3, 1, 2]), 2)
        XCTAssertEqual(PlainUpdateCombiner.median([4, 1, 3, 2]), 2.5)
        XCTAssertEqual(PlainUpdateCombiner.trimmedMean([100, 1, 2, 3, -100], dropping: 1), 2)
        XCTAssertEqual(PlainUpdateCombiner.trimmedMean([1, 2, 3, 4], dropping: 0), 2.5)
        let combiner = PlainUpdateCombiner(aggregator: .trimmedMean, trimFraction: 0.2, normClip: 1)
        XCTAssertEqual([4, 5, 9, 10, 14].map { combiner.trimmedPerSide(count: $0) }, [0, 1, 1, 2, 2])
    }
}
