import FederationProtocol
import Foundation
import LanguageModel
import ModelFormats
import SecureAggregation
import SecureCrypto
import SystemIO
import TestSupport
import Wire
import XCTest

/// Secure rounds driven through the round engine without sockets: each client is a real
/// `SecureAggregationClient`, messages go through their wire encodings, and tests drop clients at
/// every stage, by disconnection or by a missed deadline.
final class SecureRoundTests: XCTestCase {
    static let plan = TrainingPlan(steps: 4, learningRate: 0.002, samplingRate: 0.05, noiseMultiplier: 1.0, clipNorm: 1.0,
                                   delta: 1e-5, maxLength: 256, rank: 4, alpha: 8, targets: ["q_proj", "v_proj"])
    let t0 = Date(timeIntervalSince1970: 2_000_000)

    /// Where a simulated client stops answering.
    enum Stop: Equatable { case never, beforeAdvertise, beforeShares, beforeMaskedInput, beforeUnmask }
    /// How it stops: its connection closes, or it just goes silent until the deadline.
    enum Manner { case disconnect, silence }

    struct SimulatedClient {
        let name: String
        let identity = SigningKeyPair()
        var machine: SecureAggregationClient?
        var input: [UInt32] = []
        var stop: Stop = .never
    }

    /// A secure round over `clients` with random inputs of `parameters` words (plus the weight word).
    struct Run {
        var engine: RoundEngine
        var clients: [String: SimulatedClient]
        var now: Date
        var outcome: RoundOutcome?
        var log: [String] = []
        let manner: Manner

        init(names: [String], stops: [String: Stop], manner: Manner, parameters: Int, minClients: Int = 2,
             degree: Int? = nil, now: Date) throws {
            let policy = RoundPolicy(minClients: minClients, maxClients: names.count, fraction: 1, aggregation: .fedavg,
                                     secureAggregation: true, inviteTimeout: 10, roundTimeout: 100, waitForClients: 30,
                                     plan: SecureRoundTests.plan, neighbourDegree: degree)
            engine = RoundEngine(policy: policy, nextRound: 1) { clients, count in Array(clients.prefix(count)) }
            engine.setGlobalAdapter(digest: String(repeating: "ab", count: 32), parameterCount: parameters)
            clients = [:]
            self.now = now
            self.manner = manner
            for name in names {
                var client = SimulatedClient(name: name)
                client.stop = stops[name] ?? .never
                clients[name] = client
                _ = engine.connect(name, now: now, signingKey: client.identity.publicKey)
            }
        }

        /// Whether `name` answers at `stage`.
        func answers(_ name: String, before stage: Stop) -> Bool {
            guard let stop = clients[name]?.stop else { return false }
            let order: [Stop] = [.beforeAdvertise, .beforeShares, .beforeMaskedInput, .beforeUnmask, .never]
            return order.firstIndex(of: stop)! > order.firstIndex(of: stage)!
        }

        /// A client that stops here leaves: disconnects now, or stays silent (the deadline drops it).
        mutating func leave(_ name: String) {
            if manner == .disconnect { handle(engine.disconnect(name, now: now)) }
        }

        mutating func handle(_ actions: [RoundEngine.Action]) {
            var queue = actions
            while !queue.isEmpty {
                let action = queue.removeFirst()
                switch action {
                case let .inviteSecurely(name, invite, setup):
                    // Through the wire, as the client receives them.
                    guard let invite = try? Invite(frame: invite.frame()), let setup = try? SecureRoundSetup(frame: setup.frame()),
                          var client = clients[name], let id = setup.id(of: name) else { return XCTFail("bad invitation") }
                    client.machine = try? SecureAggregationClient(session: setup.session(invite: invite), id: id,
                                                                  identity: client.identity,
                                                                  localAdapterHash: Array(invite.adapterSHA256.utf8))
                    client.input = (0..<Int(setup.vectorLength)).map { _ in SecureRandom.uniform(UInt32.max) }
                    clients[name] = client
                    queue += engine.accept(name, round: invite.round, now: now)
                    guard answers(name, before: .beforeAdvertise) else { leave(name); continue }
                    guard let advertisement = try? clients[name]!.machine!.advertiseKeys(),
                          let wire = try? SecureAdvertise(frame: SecureAdvertise(round: invite.round, advertisement: advertisement).frame())
                    else { return XCTFail("advertise failed") }
                    queue += engine.secureAdvertise(name, round: invite.round, wire, now: now)
                case let .secure(name, message):
                    guard let frame = try? message.frame() else { return XCTFail("cannot frame \(message)") }
                    do {
                        switch frame.type {
                        case .secureAdvertisements:
                            guard answers(name, before: .beforeShares) else { leave(name); continue }
                            let message = try SecureAdvertisements(frame: frame)
                            let shares = try clients[name]!.machine!.shareKeys(message.broadcast)
                            queue += engine.secureShares(name, round: message.round,
                                                         try SecureShares(frame: SecureShares(round: message.round, message: shares).frame()),
                                                         now: now)
                        case .secureShareBundle:
                            guard answers(name, before: .beforeMaskedInput) else { leave(name); continue }
                            let message = try SecureShareBundle(frame: frame)
                            let masked = try clients[name]!.machine!.maskInput(message.bundle, input: clients[name]!.input)
                            let wire = try SecureMaskedInput(frame: SecureMaskedInput(round: message.round, input: masked).frame())
                            queue += engine.secureMaskedInput(name, round: message.round, wire, metrics: metrics(name), now: now)
                        case .secureConsistencyRequest:
                            // A client leaving before unmasking leaves here, before signing: a survivor all the same.
                            guard answers(name, before: .beforeUnmask) else { leave(name); continue }
                            let message = try SecureConsistencyRequest(frame: frame)
                            let signature = try clients[name]!.machine!.signSurvivors(message.request)
                            let wire = try SecureConsistencySignature(
                                frame: SecureConsistencySignature(round: message.round, signature: signature).frame())
                            queue += engine.secureConsistency(name, round: message.round, wire, now: now)
                        case .secureUnmaskRequest:
                            guard answers(name, before: .beforeUnmask) else { leave(name); continue }
                            let message = try SecureUnmaskRequest(frame: frame)
                            let response = try clients[name]!.machine!.unmask(message.request)
                            let wire = try SecureUnmaskResponse(frame: SecureUnmaskResponse(round: message.round, response: response).frame())
                            queue += engine.secureUnmask(name, round: message.round, wire, now: now)
                        default:
                            XCTFail("unexpected \(frame.type)")
                        }
                    } catch {
                        XCTFail("client \(name): \(error)")
                    }
                case let .finish(outcome):
                    self.outcome = outcome
                case let .log(line):
                    log.append(line)
                case .invite:
                    XCTFail("a plain invitation in a secure round")
                case .beginRound, .chargeFederation, .dismiss, .tellResult:
                    break
                }
            }
        }

        func metrics(_ name: String) -> ClientRoundMetrics {
            ClientRoundMetrics(client: name, epsilon: 1.5, delta: 1e-5, epsilonBudget: 8,
                               heldOut: HeldOutRelease(lossBefore: 5120, lossAfter: 4267, count: 10240, lossClip: 6, noiseMultiplier: 5))
        }

        /// Starts the round and moves the clock through every deadline until it finishes.
        mutating func run() {
            handle(engine.requestRounds(1, now: now))
            for _ in 0..<8 where outcome == nil {
                now = now.addingTimeInterval(101)
                handle(engine.tick(now: now))
            }
        }

        func plainSum(of survivors: [String]) -> [UInt32] {
            var sum = [UInt32](repeating: 0, count: clients.values.first!.input.count)
            for name in survivors { for (i, word) in clients[name]!.input.enumerated() { sum[i] &+= word } }
            return sum
        }
    }

    let names = ["ana", "ben", "cai", "dov", "eli"]  // n = 5: complete graph, t = 4

    func testEveryClientAnsweringGivesTheExactSum() throws {
        var run = try Run(names: names, stops: [:], manner: .disconnect, parameters: 300, now: t0)
        run.run()
        let outcome = try XCTUnwrap(run.outcome)
        XCTAssertTrue(outcome.isCommitted, outcome.abortReason ?? "")
        let secure = try XCTUnwrap(outcome.secure)
        XCTAssertEqual(secure.survivors, names)
        XCTAssertEqual(secure.sum, run.plainSum(of: names), "the unmasked sum is bit for bit the sum of the inputs")
        XCTAssertEqual(secure.metrics.map(\.client), names)
        XCTAssertTrue(outcome.updates.isEmpty, "no individual update reaches the outcome")
    }

    /// One client of five drops at each stage, by disconnection and by silence: the round commits
    /// with the exact sum of those whose masked input arrived.
    func testOneDropoutAtEveryStage() throws {
        for manner in [Manner.disconnect, .silence] {
            for stop in [Stop.beforeAdvertise, .beforeShares, .beforeMaskedInput, .beforeUnmask] {
                var run = try Run(names: names, stops: ["cai": stop], manner: manner, parameters: 97, now: t0)
                run.run()
                let outcome = try XCTUnwrap(run.outcome, "\(manner) \(stop)")
                XCTAssertTrue(outcome.isCommitted, "\(manner) \(stop): \(outcome.abortReason ?? "")")
                let secure = try XCTUnwrap(outcome.secure)
                // A client that stops only before unmasking has its input in the sum.
                let expected = stop == .beforeUnmask ? names : names.filter { $0 != "cai" }
                XCTAssertEqual(secure.survivors, expected, "\(manner) \(stop)")
                XCTAssertEqual(secure.sum, run.plainSum(of: expected), "\(manner) \(stop)")
                if stop != .beforeUnmask {
                    XCTAssertEqual(outcome.dropouts.map(\.client), ["cai"], "\(manner) \(stop)")
                }
            }
        }
    }

    /// Two of five drop (survivors 3 < t = 4) at any stage before unmasking: the round aborts and
    /// the outcome carries no sum.
    func testTooManyDropoutsAbortRevealingNothing() throws {
        for stop in [Stop.beforeAdvertise, .beforeShares, .beforeMaskedInput] {
            var run = try Run(names: names, stops: ["ben": stop, "dov": stop], manner: .silence, parameters: 50, now: t0)
            run.run()
            let outcome = try XCTUnwrap(run.outcome, "\(stop)")
            XCTAssertFalse(outcome.isCommitted, "\(stop)")
            XCTAssertNil(outcome.secure, "\(stop)")
            XCTAssertTrue(outcome.abortReason?.contains("threshold is 4") == true, "\(stop): \(outcome.abortReason ?? "")")
        }
        // Two survivors silent at unmask: the remaining 3 hold fewer than t shares of each secret.
        var run = try Run(names: names, stops: ["ben": .beforeUnmask, "dov": .beforeUnmask], manner: .silence,
                          parameters: 50, now: t0)
        run.run()
        XCTAssertEqual(run.outcome?.isCommitted, false)
        XCTAssertNil(run.outcome?.secure)
    }

    /// SecAgg+: 12 clients on a Harary graph of degree 6 (t = 5 per neighbourhood), two dropping.
    func testSparseGraphWithDropouts() throws {
        let many = (1...12).map { String(format: "c%02d", $0) }
        var run = try Run(names: many, stops: ["c03": .beforeShares, "c08": .beforeMaskedInput], manner: .disconnect,
                          parameters: 64, degree: 6, now: t0)
        run.run()
        let outcome = try XCTUnwrap(run.outcome)
        XCTAssertTrue(outcome.isCommitted, outcome.abortReason ?? "")
        let survivors = many.filter { $0 != "c03" && $0 != "c08" }
        XCTAssertEqual(outcome.secure?.survivors, survivors)
        XCTAssertEqual(outcome.secure?.sum, run.plainSum(of: survivors))
        XCTAssertTrue(run.log.contains { $0.contains("Harary graph of degree 6") }, "\(run.log)")
    }

    /// A message whose protocol sender is another member's id is refused and its sender dropped.
    func testImpersonationIsRefused() throws {
        var run = try Run(names: ["ana", "ben", "cai"], stops: [:], manner: .disconnect, parameters: 8, now: t0)
        var invitations: [(String, Invite, SecureRoundSetup)] = []
        for action in run.engine.requestRounds(1, now: t0) {
            if case let .inviteSecurely(name, invite, setup) = action { invitations.append((name, invite, setup)) }
        }
        XCTAssertEqual(invitations.count, 3)
        let (_, invite, setup) = invitations[0]
        for name in ["ana", "ben", "cai"] { _ = run.engine.accept(name, round: 1, now: t0) }
        // ana signs an advertisement as herself but sends it over ben's connection.
        var ana = try SecureAggregationClient(session: setup.session(invite: invite), id: setup.id(of: "ana")!,
                                              identity: run.clients["ana"]!.identity,
                                              localAdapterHash: Array(invite.adapterSHA256.utf8))
        let actions = run.engine.secureAdvertise("ben", round: 1, SecureAdvertise(round: 1, advertisement: try ana.advertiseKeys()),
                                                 now: t0)
        XCTAssertTrue(actions.contains { if case let .dismiss(client, _, reason) = $0 { return client == "ben" && reason.contains("claims participant") } else { return false } },
                      "\(actions)")
    }

    // MARK: The update encoding

    func layout() throws -> AdapterLayout {
        let configuration = try LlamaConfiguration(configJSON: Fixtures.url("tiny-llama/config.json"))
        return try AdapterLayout(configuration: configuration, plan: Self.plan)
    }

    func setup(layout: AdapterLayout, members: Int, clip: Double = 0.05) throws -> SecureRoundSetup {
        SecureRoundSetup(round: 3, members: (1...members).map {
            SecureRoundSetup.Member(id: ParticipantID($0), name: "m\($0)", signingKey: SigningKeyPair().publicKey)
        }, degree: 0, threshold: UInt32(members), updateClip: clip,
        vectorLength: UInt64(SecureUpdate.vectorLength(layout: layout)))
    }

    func randomDelta(_ layout: AdapterLayout, scale: Double) -> AdapterTensors {
        layout.shapes.mapValues { shape in
            SecureRandom.unitDoubles(count: shape.reduce(1, *)).map { Float(($0 * 2 - 1) * scale) }
        }
    }

    /// The decoded mean equals the plain (equal-weight) mean of the deltas within the stated bound
    /// 2^-f per value (plus Float rounding): no client's record count enters the sum (issue 13).
    func testDecodedMeanIsTheEqualWeightMeanWithinTheRoundingBound() throws {
        let layout = try layout()
        let setup = try setup(layout: layout, members: 4)
        let deltas = (0..<4).map { _ in randomDelta(layout, scale: 0.01) }
        var sum = [UInt32](repeating: 0, count: Int(setup.vectorLength))
        for delta in deltas {
            let encoded = try SecureUpdate.encode(delta: delta, setup: setup, layout: layout)
            XCTAssertEqual(encoded.clipped, 0)
            for i in 0..<sum.count { sum[i] &+= encoded.words[i] }
        }
        let mean = try SecureUpdate.decodeMean(sum: sum, survivors: 4, setup: setup, layout: layout)
        let unit = 1 / (try setup.valueEncoding()).scale
        // Error of Σ Δ: n units, divided by n; then one Float rounding.
        var worst = 0.0, bound = 0.0
        for name in layout.shapes.keys {
            for i in 0..<(mean[name]!.count) {
                let expected = deltas.reduce(0.0) { $0 + Double($1[name]![i]) } / 4
                let error = abs(Double(mean[name]![i]) - expected)
                worst = max(worst, error)
                bound = max(bound, unit * 1.01 + abs(expected) * 0x1p-23)
            }
        }
        XCTAssertLessThanOrEqual(worst, bound, "worst error \(worst) against the bound \(bound)")
        let bits = try setup.valueEncoding().fractionalBits
        XCTAssertGreaterThan(worst, 0, "stochastic rounding at 2^-\(bits) must show")
        // Control: a sum missing one survivor's participation word is refused, not decoded as a mean.
        var short = sum
        short[short.count - 1] &-= (try setup.participationEncoding().encode([1], rounding: .nearest)).words[0]
        XCTAssertThrowsError(try SecureUpdate.decodeMean(sum: short, survivors: 4, setup: setup, layout: layout)) { error in
            XCTAssertTrue("\(error)".contains("participation words sum to 3"), "\(error)")
        }
    }

    /// One client that skips the clip (issue 14, item 4): with four deltas of 1e-4 and a fifth client
    /// sending the word that brings the first value of the sum to 2^31 − 1, the decoded mean's first
    /// value was 1250× the honest one (clip 0.05, n = 5: seen on the commit before this bound, where
    /// decodeMean returned it); now the sum is refused by name. What the bound still lets one client
    /// do is printed too: the largest sum value that passes is 5 × the clip, 625× here. A participation word other than 1 from one client is refused as well
    /// (it was already), so the divisor cannot be made tiny or huge.
    func testOneClientCannotInflateTheMean() throws {
        let layout = try layout()
        let setup = try setup(layout: layout, members: 5)
        let name = layout.shapes.keys.sorted()[0]
        var sum = [UInt32](repeating: 0, count: Int(setup.vectorLength))
        var honestFirst = 0.0
        for _ in 0..<4 {
            var delta = randomDelta(layout, scale: 1e-4)
            delta[name]![0] = 1e-4
            honestFirst += 1e-4
            let encoded = try SecureUpdate.encode(delta: delta, setup: setup, layout: layout, rounding: .nearest)
            for i in 0..<sum.count { sum[i] &+= encoded.words[i] }
        }
        var forged = try SecureUpdate.encode(delta: randomDelta(layout, scale: 0), setup: setup, layout: layout, rounding: .nearest).words
        forged[0] = UInt32(Int32.max) &- sum[0]
        var inflated = sum
        for i in 0..<sum.count { inflated[i] &+= forged[i] }
        let encoding = try setup.valueEncoding()
        let factor = Double(Int32(bitPattern: inflated[0])) / encoding.scale / honestFirst
        let within = 5 * encoding.maximumMagnitude / encoding.scale / honestFirst
        print(String(format: "one unclipped client inflates a mean value %.0f× (2^%.1f) at clip %g, n = 5; the bound leaves %.0f×",
                     factor, log2(factor), setup.updateClip, within))
        XCTAssertGreaterThan(factor, within)
        XCTAssertThrowsError(try SecureUpdate.decodeMean(sum: inflated, survivors: 5, setup: setup, layout: layout)) { error in
            XCTAssertTrue("\(error)".contains("beyond 5 survivors × the clip"), "\(error)")
            XCTAssertEqual((error as? FederationError).map { "\($0)" }?.contains("round \(setup.round)"), true, "\(error)")
        }
        // Control: the five clients within the clip decode.
        var honest = sum
        for i in 0..<sum.count { honest[i] &+= forged[i] }
        honest[0] = sum[0]
        XCTAssertNoThrow(try SecureUpdate.decodeMean(sum: honest, survivors: 5, setup: setup, layout: layout))
        // Participation: one client sending 0, or 2^20 times its word, is refused.
        let one = try setup.participationEncoding().encode([1], rounding: .nearest).words[0]
        for word in [UInt32(0), one &* (1 << 20)] {
            var bad = honest
            bad[bad.count - 1] = one &* 4 &+ word
            XCTAssertThrowsError(try SecureUpdate.decodeMean(sum: bad, survivors: 5, setup: setup, layout: layout)) { error in
                XCTAssertTrue("\(error)".contains("participation words sum to"), "\(error)")
            }
        }
    }

    /// Values beyond the clip are clipped and counted; an update of the wrong shape is refused.
    func testClippingAndShapeChecks() throws {
        let layout = try layout()
        let setup = try setup(layout: layout, members: 2, clip: 0.001)
        var delta = randomDelta(layout, scale: 0.0001)
        let name = layout.shapes.keys.sorted()[0]
        delta[name]![0] = 5  // 5 ≫ 0.001
        let encoded = try SecureUpdate.encode(delta: delta, setup: setup, layout: layout)
        XCTAssertEqual(encoded.clipped, 1)
        let mean = try SecureUpdate.decodeMean(sum: encoded.words, survivors: 1, setup: setup, layout: layout)
        XCTAssertEqual(Double(mean[name]![0]), 0.001, accuracy: 1e-6)
        delta[name] = nil
        XCTAssertThrowsError(try SecureUpdate.encode(delta: delta, setup: setup, layout: layout))
        XCTAssertThrowsError(try SecureUpdate.decodeMean(sum: [1, 2, 3], survivors: 1, setup: setup, layout: layout))
    }

    /// Every wire message of the stages round-trips, and a truncated one is refused.
    func testSetupWireChecks() throws {
        let layout = try layout()
        let setup = try setup(layout: layout, members: 3)
        XCTAssertEqual(try SecureRoundSetup(frame: setup.frame()), setup)
        var frame = try setup.frame()
        frame.payload.removeLast()
        XCTAssertThrowsError(try SecureRoundSetup(frame: frame))
        var unsorted = setup
        unsorted.members.swapAt(0, 1)
        XCTAssertThrowsError(try SecureRoundSetup(frame: unsorted.frame()), "ids must be strictly increasing")
    }

}
