import FederationHarness
import FederationProtocol
import Foundation
import ModelFormats
import Privacy
import SecureAggregation
import TestSupport
import Wire
import XCTest

/// The protocol end to end without sockets or processes: the coordinator's round engine and the
/// clients' agents in one `InMemoryFederation`, each client with a real ledger and a fixed update.
final class InMemoryFederationTests: XCTestCase {
    static let model = LlamaConfiguration(vocabSize: 64, hiddenSize: 16, intermediateSize: 32, numHiddenLayers: 2,
                                          numAttentionHeads: 4, numKeyValueHeads: 2, maxPositionEmbeddings: 128)
    static let plan = TrainingPlan(steps: 3, learningRate: 0.01, samplingRate: 0.1, noiseMultiplier: 1.1, clipNorm: 0.5,
                                   delta: 1e-5, maxLength: 64, rank: 2, alpha: 4, targets: ["q_proj", "v_proj"])
    static let policy = ClientPolicy(maxEpsilon: 50, delta: 1e-5, maxStepsPerRound: 10)
    let t0 = Date(timeIntervalSince1970: 1_700_000_000)

    func roundPolicy(clients: Int, minimum: Int, secure: Bool) -> RoundPolicy {
        RoundPolicy(minClients: minimum, maxClients: clients, fraction: 1, aggregation: .fedavg, secureAggregation: secure,
                    inviteTimeout: 30, roundTimeout: 120, waitForClients: 60, plan: Self.plan)
    }

    func initialGlobal() throws -> AdapterTensors {
        try AdapterLayout(configuration: Self.model, plan: Self.plan).shapes.mapValues { shape in
            (0..<shape.reduce(1, *)).map { Float(sin(Double($0) * 0.11)) * 0.02 }
        }
    }

    func client(_ name: String, examples: Int = 40, policy: ClientPolicy = InMemoryFederationTests.policy,
                fault: InMemoryFederation.ClientFault? = nil) throws -> InMemoryFederation.ClientSpec {
        InMemoryFederation.ClientSpec(name: name, policy: policy, examples: examples,
                                      directory: try Fixtures.temporaryDirectory("harness-\(name)"), fault: fault) { _, global, round in
            InMemoryFederation.fixedUpdate(like: global, client: name, round: round)
        }
    }

    /// FedAvg of the named clients' fixed updates of round 1 with the given weights (the coordinator's
    /// are all equal: a client's record count never travels).
    func expectedGlobal(_ start: AdapterTensors, _ weights: [String: Int]) -> AdapterTensors {
        let total = Double(weights.values.reduce(0, +))
        var sums = start.mapValues { $0.map(Double.init) }
        for (client, weight) in weights {
            let update = InMemoryFederation.fixedUpdate(like: start, client: client, round: 1)
            for (name, values) in update {
                for i in values.indices { sums[name]![i] += Double(weight) / total * Double(values[i]) }
            }
        }
        return sums.mapValues { $0.map(Float.init) }
    }

    func worstDifference(_ a: AdapterTensors, _ b: AdapterTensors) -> Double {
        var worst = 0.0
        for (name, values) in a {
            guard let other = b[name], other.count == values.count else { return .infinity }
            for i in values.indices { worst = max(worst, abs(Double(values[i]) - Double(other[i]))) }
        }
        return worst
    }

    /// The secure round's rounding bound on the decoded mean: n · 2^-f / n, f the finest scale at
    /// which n inputs of at most B = 8 · steps · lr sum within 31 bits (`SecureUpdate`).
    func secureBound(clients n: Int, examples: [Int]) -> Double {
        let clip = SecureUpdate.defaultClip(plan: Self.plan)
        var bits = 62
        while Double(n) * (clip * Double(sign: .plus, exponent: bits, significand: 1)).rounded(.up) > 2_147_483_647 { bits -= 1 }
        return Double(n) / Double(sign: .plus, exponent: bits, significand: 1) / Double(examples.count)
    }

    func entries(_ federation: InMemoryFederation, _ name: String) throws -> [PrivacyLedgerEntry] {
        try federation.clients[name]!.ledger().entries
    }

    /// Clients of 10, 20 and 30 records: the round commits the equal-weight mean (before issue 13 the
    /// weights were the record counts, which the clients sent in clear).
    func testAPlainRoundCommitsTheEqualWeightMeanAndEveryClientKeepsIt() throws {
        let start = try initialGlobal()
        let federation = try InMemoryFederation(policy: roundPolicy(clients: 3, minimum: 2, secure: false), model: Self.model,
                                                global: start, clients: [client("a", examples: 10), client("b", examples: 20),
                                                                         client("c", examples: 30)], now: t0)
        try federation.startRounds(1)
        let round = try XCTUnwrap(federation.finished.first)
        XCTAssertTrue(round.outcome.isCommitted, round.outcome.abortReason ?? "")
        XCTAssertEqual(round.outcome.updates.map(\.client), ["a", "b", "c"])
        XCTAssertLessThan(worstDifference(federation.global, expectedGlobal(start, ["a": 1, "b": 1, "c": 1])), 1e-7)
        XCTAssertGreaterThan(worstDifference(federation.global, expectedGlobal(start, ["a": 10, "b": 20, "c": 30])), 1e-5,
                             "control: the count-weighted mean differs")
        XCTAssertGreaterThan(worstDifference(federation.global, start), 1e-3, "the round moves the adapter")
        for (name, update) in round.outcome.updates {
            let client = try XCTUnwrap(federation.clients[name])
            XCTAssertEqual(client.errors, [])
            XCTAssertEqual(client.agent.roundsEnded, 1)
            XCTAssertEqual("\(client.agent.state)", "idle")
            XCTAssertEqual(client.globalAdapter, federation.global, "the committed adapter reached '\(name)'")
            // Charged once, before training, with the metrics release in the same write; the metrics
            // carry the ledger's ε, both included.
            let ledger = try entries(federation, name)
            XCTAssertEqual(ledger.map(\.purpose), ["round 1 in memory", "round 1 in memory: release"])
            XCTAssertEqual(ledger.last.map { [$0.samplingRate, $0.noiseMultiplier, Double($0.steps)] },
                           [1, TrainingPlan.defaultMetricsNoiseMultiplier, 1], "one Gaussian mechanism at the plan's z")
            XCTAssertEqual(update.metrics.epsilon, ledger.last?.cumulativeEpsilon)
            XCTAssertEqual(update.metrics.epsilonBudget, 50)
            XCTAssertEqual(client.sent, [.accept] + Array(repeating: .tensorChunk, count: 8) + [.tensorsDone, .metrics])
        }
    }

    /// Declines on the policy (steps), on the policy's ε ceiling, and on the ledger's own budget:
    /// each with its reason, nothing charged, and the round commits with the others.
    func testClientsDeclineOnPolicyAndOnBudget() throws {
        let start = try initialGlobal()
        let strict = ClientPolicy(maxEpsilon: 50, delta: 1e-5, maxStepsPerRound: 1)
        let frugal = ClientPolicy(maxEpsilon: 0.01, delta: 1e-5, maxStepsPerRound: 10)
        let spent = try client("e")
        // e's ledger was created with a smaller budget than its policy's (the ledger's budget rules).
        _ = try PrivacyLedger(directory: spent.directory, creatingWith: PrivacyBudget(epsilon: 0.02, delta: 1e-5, accountant: .rdp))
        let federation = try InMemoryFederation(
            policy: roundPolicy(clients: 5, minimum: 2, secure: false), model: Self.model, global: start,
            clients: [client("a"), client("b"), client("c", policy: strict), client("d", policy: frugal), spent], now: t0)
        try federation.startRounds(1)
        let outcome = try XCTUnwrap(federation.finished.first?.outcome)
        XCTAssertTrue(outcome.isCommitted, outcome.abortReason ?? "")
        XCTAssertEqual(outcome.updates.map(\.client), ["a", "b"])
        // The coordinator hears codes only (issue 13); the words stay in each client's own log.
        let reasons = Dictionary(uniqueKeysWithValues: outcome.declines.map { ($0.client, $0.reason) })
        XCTAssertEqual(reasons, ["c": "policy", "d": "privacy_budget", "e": "privacy_budget"])
        XCTAssertEqual(federation.coordinatorLog.filter { $0.contains("declined") },
                       ["round 1: client 'c' declined: policy", "round 1: client 'd' declined: privacy_budget",
                        "round 1: client 'e' declined: privacy_budget"])
        func declineLine(_ name: String) throws -> String {
            try XCTUnwrap(federation.clients[name]?.log.first { $0.contains("declining") })
        }
        XCTAssertEqual(try declineLine("c"), "round 1: declining (policy): policy: the plan asks 3 steps, this client trains at most 1 per round")
        let ceiling = try declineLine("d")
        XCTAssertTrue(ceiling.hasPrefix("round 1: declining (privacy_budget): privacy budget: this round would bring ε to "), ceiling)
        XCTAssertTrue(ceiling.hasSuffix(", over the policy's 0.010 (0.000 spent)"), ceiling)
        let budget = try declineLine("e")
        XCTAssertTrue(budget.hasPrefix("round 1: declining (privacy_budget): privacy budget: privacy budget exceeded ("), budget)
        XCTAssertTrue(budget.contains("budget 0.02"), budget)
        for name in ["c", "d", "e"] {
            let client = try XCTUnwrap(federation.clients[name])
            XCTAssertEqual(try entries(federation, name).count, 0, "'\(name)' declined: nothing charged")
            XCTAssertEqual(client.sent, [.decline])
            XCTAssertEqual(client.agent.roundsEnded, 1)
            XCTAssertEqual("\(client.agent.state)", "idle")
            XCTAssertNotEqual(client.globalAdapter, federation.global, "a client that declined is not sent the result")
        }
        XCTAssertNil(federation.clients["c"]!.globalAdapter, "a policy decline comes before any work")
        XCTAssertEqual(federation.clients["d"]!.globalAdapter, start, "a budget decline comes after preparing")
        XCTAssertLessThan(worstDifference(federation.global, expectedGlobal(start, ["a": 40, "b": 40])), 1e-7)
    }

    /// A user-level plan through the whole protocol: clients whose policy counts users take part and
    /// their ledgers are charged per user; a client whose ledger counts records declines before any work.
    func testAUserLevelRoundChargesUserLedgersAndRecordClientsDecline() throws {
        let start = try initialGlobal()
        var policy = roundPolicy(clients: 3, minimum: 2, secure: false)
        policy.plan.privacyUnit = .user
        let users = ClientPolicy(maxEpsilon: 50, delta: 1e-5, maxStepsPerRound: 10, privacyUnit: .user)
        let federation = try InMemoryFederation(policy: policy, model: Self.model, global: start,
                                                clients: [client("a", policy: users), client("b", policy: users), client("c")],
                                                now: t0)
        try federation.startRounds(1)
        let outcome = try XCTUnwrap(federation.finished.first?.outcome)
        XCTAssertTrue(outcome.isCommitted, outcome.abortReason ?? "")
        XCTAssertEqual(outcome.updates.map(\.client), ["a", "b"])
        // The coordinator hears the code; the words stay in c's own log.
        XCTAssertEqual(outcome.declines.map(\.reason), ["policy"])
        XCTAssertTrue(federation.clients["c"]!.log.contains("round 1: declining (policy): policy: the plan's privacy unit is "
                                                            + "user, this client's ledger counts ε per record (its policy's "
                                                            + "privacy_unit)"), "\(federation.clients["c"]!.log)")
        for name in ["a", "b"] {
            let ledger = try XCTUnwrap(federation.clients[name]).ledger()
            XCTAssertEqual(ledger.budget.unit, .user)
            XCTAssertEqual(ledger.entries.map(\.unit), [.user, .user], "the round and its metrics release, per user")
            XCTAssertEqual(ledger.entries.first?.samplingRate, 0.1, "the plan's rate, per user")
        }
        XCTAssertEqual(try entries(federation, "c").count, 0)
    }

    /// A coordinator that shows one client a survivor set that leaves it out: that client refuses to
    /// sign, leaves the round with the abort code secure_aggregation (its words stay in its log), and
    /// reveals nothing; its input is in the sum already, so the three others' signatures (t = 3) let
    /// the round commit with all four. (A client shown a set that omits another survivor signs it;
    /// the coordinator, which checks every signature against the set it sent, then refuses it.)
    func testAClientShownAnotherSurvivorSetLeavesWithTheAbortCode() throws {
        let names = ["a", "b", "c", "d"]
        let federation = try InMemoryFederation(policy: roundPolicy(clients: 4, minimum: 3, secure: true), model: Self.model,
                                                global: try initialGlobal(), clients: try names.map { try client($0) }, now: t0)
        federation.tamperDownlink = { name, frame in
            guard name == "a", frame.type == .secureConsistencyRequest else { return frame }
            let message = try SecureConsistencyRequest(frame: frame)
            let request = message.request
            return try SecureConsistencyRequest(round: message.round, request: ConsistencyRequest(
                sessionID: request.sessionID, recipient: request.recipient, survivors: request.survivors.filter { $0 != request.recipient })).frame()
        }
        try federation.startRounds(1)
        let outcome = try XCTUnwrap(federation.finished.first?.outcome)
        XCTAssertTrue(outcome.isCommitted, outcome.abortReason ?? "")
        XCTAssertEqual(outcome.secure?.survivors, names)
        let a = try XCTUnwrap(federation.clients["a"])
        XCTAssertEqual(a.sent, [.accept, .secureAdvertise, .secureShares, .secureMaskedInput, .metrics, .abort])
        XCTAssertTrue(a.log.contains { $0.contains("consistency check: refused") }, "\(a.log)")
        let abort = try Abort(frame: try XCTUnwrap(a.sentFrames.last))
        XCTAssertEqual(abort.code, .secureAggregation)
    }

    /// The same federation with secure aggregation off and on: the masked round's adapter equals
    /// the plain one within the fixed-point rounding bound.
    func testSecureRoundAgreesWithThePlainRound() throws {
        let start = try initialGlobal()
        let names = ["a", "b", "c", "d"], examples = [40, 40, 40, 40]
        var results: [Bool: InMemoryFederation] = [:]
        for secure in [false, true] {
            let federation = try InMemoryFederation(policy: roundPolicy(clients: 4, minimum: 3, secure: secure), model: Self.model,
                                                    global: start, clients: try names.map { try client($0) }, now: t0)
            try federation.startRounds(1)
            let outcome = try XCTUnwrap(federation.finished.first?.outcome)
            XCTAssertTrue(outcome.isCommitted, outcome.abortReason ?? "")
            XCTAssertEqual(outcome.secure != nil, secure)
            for name in names {
                XCTAssertEqual(federation.clients[name]!.errors, [])
                XCTAssertEqual(federation.clients[name]!.globalAdapter, federation.global)
                XCTAssertEqual(try entries(federation, name).count, 2, "training and release")
            }
            results[secure] = federation
        }
        let secure = try XCTUnwrap(results[true]), plain = try XCTUnwrap(results[false])
        XCTAssertEqual(secure.finished.first?.outcome.secure?.survivors, names)
        XCTAssertEqual(secure.clients["a"]!.sent, [.accept, .secureAdvertise, .secureShares, .secureMaskedInput, .metrics,
                                                   .secureConsistencySignature, .secureUnmaskResponse], "no plain update leaves a client in a secure round")
        let bound = secureBound(clients: 4, examples: examples)
        let worst = worstDifference(secure.global, plain.global)
        XCTAssertLessThanOrEqual(worst, bound + 1e-8, "secure vs plain: worst \(worst), bound \(bound)")
        XCTAssertGreaterThan(worstDifference(plain.global, start), 1000 * bound, "the round moves the adapter beyond the bound")
    }

    /// What the debug-only end-to-end test covered, in every build: a client dies after sharing its
    /// keys and before its masked input. The round commits with the three survivors (t = 3 of 4),
    /// records the dropout, and the unmasked sum is theirs alone: the dropped client's pairwise
    /// masks were recovered from the survivors' shares and removed.
    func testClientDyingAfterSharingKeysDoesNotStopTheSecureRound() throws {
        let start = try initialGlobal()
        let federation = try InMemoryFederation(
            policy: roundPolicy(clients: 4, minimum: 3, secure: true), model: Self.model, global: start,
            clients: [client("a"), client("b"), client("c"), client("d", fault: .dies(receiving: .secureShareBundle))], now: t0)
        try federation.startRounds(1)
        let outcome = try XCTUnwrap(federation.finished.first?.outcome)
        XCTAssertTrue(outcome.isCommitted, outcome.abortReason ?? "")
        XCTAssertEqual(outcome.secure?.survivors, ["a", "b", "c"])
        XCTAssertEqual(outcome.secure?.metrics.map(\.client), ["a", "b", "c"])
        XCTAssertEqual(outcome.dropouts.map(\.client), ["d"])
        XCTAssertEqual(outcome.dropouts.first?.reason, "disconnected")
        let dead = try XCTUnwrap(federation.clients["d"])
        XCTAssertFalse(dead.alive)
        XCTAssertEqual(dead.sent, [.accept, .secureAdvertise, .secureShares], "it shared its keys, and sent nothing after")
        XCTAssertEqual(try entries(federation, "d").count, 2, "charged (training and release) before training, though it never finished")
        XCTAssertTrue(federation.coordinatorLog.contains("round 1: secure aggregation unmasked the sum of 3 updates (1 dropped)"),
                      federation.coordinatorLog.joined(separator: "\n"))
        let bound = secureBound(clients: 4, examples: [40, 40, 40])
        let worst = worstDifference(federation.global, expectedGlobal(start, ["a": 40, "b": 40, "c": 40]))
        XCTAssertLessThanOrEqual(worst, bound + 1e-8, "survivors' mean: worst \(worst), bound \(bound)")
        XCTAssertGreaterThan(worstDifference(federation.global, expectedGlobal(start, ["a": 40, "b": 40, "c": 40, "d": 40])),
                             10 * bound, "the dropped client's update is not in the sum")
        for name in ["a", "b", "c"] { XCTAssertEqual(federation.clients[name]!.globalAdapter, federation.global) }
    }

    /// A client that goes silent (its process hangs) after advertising keys is dropped at the share
    /// stage's deadline; the survivors' round commits once the clock passes it.
    func testSilentClientIsDroppedAtTheStageDeadline() throws {
        let start = try initialGlobal()
        let federation = try InMemoryFederation(
            policy: roundPolicy(clients: 4, minimum: 3, secure: true), model: Self.model, global: start,
            clients: [client("a"), client("b"), client("c"), client("d", fault: .silent(receiving: .secureAdvertisements))],
            now: t0)
        try federation.startRounds(1)
        XCTAssertTrue(federation.finished.isEmpty, "the round waits for d until the stage's deadline")
        try federation.advance(by: 31)
        let outcome = try XCTUnwrap(federation.finished.first?.outcome)
        XCTAssertTrue(outcome.isCommitted, outcome.abortReason ?? "")
        XCTAssertEqual(outcome.secure?.survivors, ["a", "b", "c"])
        XCTAssertEqual(outcome.dropouts.map(\.client), ["d"])
        XCTAssertEqual(outcome.dropouts.first?.reason, "no key shares within 30 s")
        let bound = secureBound(clients: 4, examples: [40, 40, 40])
        XCTAssertLessThanOrEqual(worstDifference(federation.global, expectedGlobal(start, ["a": 40, "b": 40, "c": 40])), bound + 1e-8)
    }
}
