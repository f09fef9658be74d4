import Audit
import ClientService
import CoordinatorService
import FederationDemo
import FederationProtocol
import FineTuning
import Foundation
import Reports
import TestSupport
import Wire
import XCTest

/// The demo's typed configurations as the processes read them back, its folder rules, and its
/// outcome as a table and as `demo --json`. (The processes themselves run in EndToEndTests.)
final class DemoTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws {
        directory = try Fixtures.temporaryDirectory("conclave-demo-tests")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    /// The files written for `serve --config` and `join --config` load with the loaders those commands
    /// use, and validate.
    func testConfigurationFilesLoadAsTheProcessesReadThem() throws {
        let demo = DemoConfiguration(clients: 3, rounds: 2, model: "/models/m.gguf", aggregation: .fedadam,
                                     secureAggregation: false, canaries: Demo.defaultCanaries, distributedNoise: false)
        let coordinatorFile = directory.appendingPathComponent("coordinator.json")
        try LocalFederation.file(demo.coordinator).write(to: coordinatorFile)
        let coordinator = try CoordinatorConfiguration.load(coordinatorFile)
        XCTAssertEqual(coordinator, demo.coordinator)
        XCTAssertEqual(coordinator.rounds.minClients, 2)
        XCTAssertEqual(coordinator.rounds.maxClients, 3)
        XCTAssertEqual(coordinator.rounds.aggregation, .fedadam)
        XCTAssertFalse(coordinator.rounds.secureAggregation, "written, not left to the default")
        XCTAssertEqual(coordinator.rounds.plan.noiseMultiplier, 1.0)

        for index in 0..<2 {
            let folder = directory.appendingPathComponent(demo.client(index).directory)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            let file = folder.appendingPathComponent("config.json")
            try LocalFederation.file(demo.clientConfiguration(index, folder: folder)).write(to: file)
            let client = try ClientConfiguration.load(file)
            XCTAssertEqual(client, demo.clientConfiguration(index, folder: folder))
            XCTAssertEqual(client.data, folder.appendingPathComponent("notes.jsonl").path)
            XCTAssertEqual(client.policy.maxEpsilon, 10)
            XCTAssertTrue(client.policy.requirePrivacy)
            XCTAssertNil(client.policy.objection(to: coordinator.rounds.plan), "each client accepts the demo's plan")
            // Only the first client plants canaries: 3-digit secrets, each 4 times.
            XCTAssertEqual(client.canaries, index == 0 ? CanaryConfiguration(count: 5, digits: 3, repetitions: 4) : nil)
        }
        XCTAssertNil(DemoConfiguration(model: "m", canaries: 0).clientConfiguration(0, folder: directory).canaries)
        XCTAssertEqual(DemoConfiguration(clients: 1, model: "m").coordinator.rounds.minClients, 1)
    }

    /// The demo runs distributed DP by default (issue 17): one step a round over the three clients' notes in the
    /// task form, `Demo.expectedPerClient` expected from each (0.0658 × 380 training notes), FedAdam at the demo's η;
    /// the coordinator's configuration validates, and each client, assuming 2 of the 3 honest, accepts the plan under
    /// secure aggregation and objects to it without (control). `--noise local` keeps the earlier demo.
    func testTheDemoIsDistributedByDefaultAndEveryClientAcceptsItsPlan() throws {
        let demo = DemoConfiguration(model: "/models/m.gguf")
        XCTAssertTrue(demo.distributedNoise)
        XCTAssertEqual(demo.rounds, Demo.distributedRounds)
        XCTAssertEqual(demo.records, Demo.distributedRecords)
        XCTAssertEqual(demo.aggregation, .fedadam)
        XCTAssertEqual(demo.form, .task)
        XCTAssertEqual(demo.coordinator.serverLearningRate, Demo.serverLearningRate)
        let plan = demo.coordinator.rounds.plan
        XCTAssertTrue(plan.isDistributed)
        XCTAssertEqual(plan.steps, 1)
        XCTAssertEqual(plan.samplingRate, Demo.expectedPerClient / 380, accuracy: 1e-12)
        XCTAssertEqual(try XCTUnwrap(plan.expectedBatch), 3 * Demo.expectedPerClient, accuracy: 1e-9)
        XCTAssertEqual(plan.maxContributions, Int((4 * 3 * Demo.expectedPerClient).rounded(.up)) + 32)
        XCTAssertEqual(plan.maxLength, Demo.distributedMaxLength)
        XCTAssertNoThrow(try demo.coordinator.rounds.validate(path: "demo"))
        let client = demo.clientConfiguration(1, folder: directory)
        XCTAssertEqual(client.policy.assumeHonest, 2)
        XCTAssertNil(client.policy.objection(to: plan, secureAggregation: true))
        XCTAssertNotNil(client.policy.objection(to: plan, secureAggregation: false))

        let local = DemoConfiguration(model: "m", distributedNoise: false)
        XCTAssertEqual(local.policy.assumeHonest, 1, "the local demo is unchanged")
        XCTAssertFalse(local.plan.isDistributed)
        XCTAssertEqual(local.rounds, 3)
        XCTAssertEqual(local.records, 120)
        XCTAssertEqual(local.aggregation, .fedavg)
        XCTAssertEqual(local.form, .text)
        XCTAssertNil(local.coordinator.serverLearningRate)
    }

    /// The public probe: one fictional note per specialty of the first three clients, ending "Assessment:", none of
    /// them among the notes any client of the demo is given (clients take seeds 1...N). Control: the same check
    /// finds client 1's own first note among client 1's notes, so it would catch a probe drawn from client data.
    func testTheProbeNotesArePublicAndNoClientHasThem() {
        let probe = DemoProbe.notes(clients: 3)
        XCTAssertEqual(probe.map(\.specialty), [.cardiology, .dermatology, .pediatrics])
        XCTAssertEqual(DemoProbe.notes(clients: 8).count, DemoProbe.maximumNotes)
        XCTAssertEqual(DemoProbe.notes(clients: 2).count, 2)
        let demo = DemoConfiguration(model: "m")
        func clientPrompts(_ index: Int) -> Set<String> {
            Set(SyntheticNotes.generate(specialty: demo.client(index).specialty, records: demo.records,
                                        seed: UInt64(index + 1)).map(\.prompt))
        }
        for (index, note) in probe.enumerated() {
            XCTAssertTrue(note.prompt.hasSuffix("\nAssessment:"))
            for client in 0..<demo.clients {
                XCTAssertFalse(clientPrompts(client).contains(note.prompt), "probe note \(index) is client \(client)'s")
            }
        }
        let clientOwn = SyntheticNotes.generate(specialty: .cardiology, records: 1, seed: 1)[0]
        XCTAssertTrue(clientPrompts(0).contains(clientOwn.prompt), "control: a client's own note is found")
        XCTAssertEqual(DemoProbe.firstLine(" Acne vulgaris. Mild.\nPlan: more"), "Acne vulgaris. Mild.")
        XCTAssertEqual(DemoProbe.firstLine("\n \nPsoriasis.\nMore"), "Psoriasis.")
        XCTAssertEqual(DemoProbe.firstLine("\n  \n"), "(nothing)")
    }

    /// The public held-out set: `heldOutPerSpecialty` notes of each probe specialty, none of them any client's note nor
    /// a probe note. Control: the same search finds a client's own note among its notes.
    func testThePublicHeldOutNotesAreNoClientsAndNotTheProbes() {
        let demo = DemoConfiguration(model: "m")
        let heldOut = DemoProbe.heldOutNotes(clients: demo.clients)
        XCTAssertEqual(heldOut.count, DemoProbe.heldOutPerSpecialty * 3)
        XCTAssertEqual(heldOut.filter { $0.specialty == .dermatology }.count, DemoProbe.heldOutPerSpecialty)
        var clientPrompts = Set<String>()
        for index in 0..<demo.clients {
            clientPrompts.formUnion(SyntheticNotes.generate(specialty: demo.client(index).specialty, records: demo.records,
                                                            seed: UInt64(index + 1)).map(\.prompt))
        }
        let probePrompts = Set(DemoProbe.notes(clients: demo.clients).map(\.prompt))
        for note in heldOut {
            XCTAssertFalse(clientPrompts.contains(note.prompt), "a public held-out note is a client's")
            XCTAssertFalse(probePrompts.contains(note.prompt), "a public held-out note is a probe note")
        }
        let own = SyntheticNotes.generate(specialty: .pediatrics, records: 1, seed: 3)[0]
        XCTAssertTrue(clientPrompts.contains(own.prompt), "control: client 3's own note is found")
    }

    /// One specialty per client, in the synthetic notes' own order, wrapping after the sixth.
    func testClientsTakeTheSpecialtiesInTurn() {
        let demo = DemoConfiguration(clients: 8, model: "m")
        XCTAssertEqual(demo.client(0).name, "clinic-1-cardiology")
        XCTAssertEqual(demo.client(0).directory, "client-1")
        XCTAssertEqual(demo.client(5).name, "clinic-6-endocrinology")
        XCTAssertEqual(demo.client(6).name, "clinic-7-cardiology")
        XCTAssertEqual(demo.client(7).specialty.rawValue, "dermatology")
    }

    func testFolderMustBeEmptyAndTheClientBesideTheCoordinator() throws {
        let executables = FederationExecutables(coordinator: URL(fileURLWithPath: "/bin/true"), client: URL(fileURLWithPath: "/bin/true"))
        try Data("x".utf8).write(to: directory.appendingPathComponent("taken"))
        XCTAssertThrowsError(try Demo(DemoConfiguration(model: "m", directory: directory.path), executables: executables,
                                      narrate: { _ in })) { error in
            XCTAssertEqual(error as? LocalFederationError, .setup("--dir: '\(directory.path)' exists and is not empty"))
        }
        let fresh = directory.appendingPathComponent("a/b")
        let demo = try Demo(DemoConfiguration(model: "m", directory: fresh.path), executables: executables, narrate: { _ in })
        XCTAssertEqual(demo.root.path, fresh.path)
        XCTAssertTrue(FileManager.default.fileExists(atPath: fresh.path))

        XCTAssertThrowsError(try FederationExecutables.beside(coordinator: directory.appendingPathComponent("conclave-coordinator"))) {
            XCTAssertTrue("\($0)".contains("conclave-client is not beside this executable"), "\($0)")
        }
    }

    static let release = HeldOutRelease(lossBefore: 2_867, lossAfter: 2_580, count: 6_881, lossClip: 6, noiseMultiplier: 5)

    func record(_ round: UInt64, status: String, exposure: CanaryExposureSummary? = nil) -> AuditRecord {
        let plan = DemoConfiguration(model: "m", distributedNoise: false).plan
        let started = Date(timeIntervalSince1970: 1_750_000_000)
        let metrics = ClientRoundMetrics(client: "clinic-1-cardiology", epsilon: 1.5, delta: 1e-5, epsilonBudget: 10,
                                         heldOut: Self.release, canaryExposure: exposure)
        let committed = status == "committed"
        return AuditRecord(status: status, round: round, started: started, finished: started + 42, cohort: [metrics.client],
                           participants: committed ? [metrics.client] : [], declines: [], dropouts: [], aggregation: "fedavg",
                           secureAggregation: true, plan: plan, clients: committed ? [metrics] : [],
                           maxEpsilon: committed ? 1.5 : nil, evalLossBefore: committed ? 2.5 : nil,
                           evalLossAfter: committed ? 2.25 : nil, evalLossStandardError: committed ? 0.1 : nil, adapterSHA256: String(repeating: "0", count: 64),
                           abortReason: committed ? nil : "too few participants: 0 < 1", previousHash: "")
    }

    func outcome() -> DemoOutcome {
        let exposure = CanaryExposureSummary(canaries: 5, repetitions: 4, meanBits: 1.5, maxBits: 3.25, spaceSize: 1000,
                                             exact: true, candidatesScored: 1000)
        return DemoOutcome(rounds: [
            DemoOutcome.Round(summary: RoundSummary(record(1, status: "committed", exposure: exposure)),
                              canaryExposure: CanaryExposure(client: "clinic-1-cardiology", summary: exposure)),
            DemoOutcome.Round(summary: RoundSummary(record(2, status: "aborted")), canaryExposure: nil),
        ], auditRecords: 2, auditFailure: nil, adapter: "/d/coordinator/adapters/round-000001", state: "/d/coordinator",
           seconds: 61.4, release: Self.release)
    }

    /// `demo --json`: the fields its help promises.
    func testJSONHasTheDocumentedFields() throws {
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: JSONEncoder().encode(outcome())) as? [String: Any])
        XCTAssertEqual(Set(json.keys), ["rounds", "audit_verified", "adapter", "state", "seconds"])
        XCTAssertEqual(json["audit_verified"] as? Bool, true)
        let rounds = try XCTUnwrap(json["rounds"] as? [[String: Any]])
        XCTAssertEqual(Set(rounds[0].keys), ["round", "status", "participants", "eval_loss_before", "eval_loss_after",
                                             "eval_loss_standard_error", "eval_loss_released", "max_epsilon", "seconds",
                                             "canary_exposure"])
        XCTAssertEqual(rounds[0]["eval_loss_released"] as? Bool, true)
        XCTAssertEqual(rounds[0]["eval_loss_standard_error"] as? Double, 0.1)
        let exposure = try XCTUnwrap(rounds[0]["canary_exposure"] as? [String: Any])
        XCTAssertEqual(Set(exposure.keys), ["client", "mean_bits", "max_bits", "space_size"])
        XCTAssertEqual(exposure["client"] as? String, "clinic-1-cardiology")
        XCTAssertEqual(exposure["mean_bits"] as? Double, 1.5)
        XCTAssertEqual(exposure["max_bits"] as? Double, 3.25)
        XCTAssertEqual(exposure["space_size"] as? Int, 1000)
        XCTAssertEqual(rounds[1]["status"] as? String, "aborted")
        XCTAssertTrue(rounds[1]["eval_loss_after"] is NSNull)
        XCTAssertEqual(rounds[1]["abort_reason"] as? String, "too few participants: 0 < 1")
        XCTAssertNil(rounds[1]["canary_exposure"])
    }

    /// The summary's learning line compares the first and last committed rounds' released "before" losses, and the
    /// probe's lines show each note's reference, before and after; `--json` carries the probe. Control: with one
    /// committed round there is nothing to compare and no learning line.
    func testLearningAndProbeLines() throws {
        var outcome = outcome()
        var later = record(3, status: "committed")
        later.evalLossBefore = 2.0
        outcome.rounds.append(DemoOutcome.Round(summary: RoundSummary(later), canaryExposure: nil))
        outcome.probe = PublicProbe(adapterRound: 3, notes: [
            PublicProbe.Note(title: "Dermatology Clinic Note (dermatology, public)", prompt: "Dermatology Clinic Note\nAssessment:",
                             reference: "Nodulocystic acne.", before: "The patient", after: "Acne vulgaris."),
        ])
        let text = outcome.text
        XCTAssertTrue(text.contains("held-out loss (DP-released, pooled over the clients): 2.5000 at round 1 → 2.0000 at round 3 "
                                    + "(each ± its s.e. above)"), text)
        XCTAssertTrue(text.contains("""
              Dermatology Clinic Note (dermatology, public)
                author's:  Nodulocystic acne.
                before:    The patient
                after:     Acne vulgaris.
            """), text)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: JSONEncoder().encode(outcome)) as? [String: Any])
        let probe = try XCTUnwrap(json["probe"] as? [String: Any])
        XCTAssertEqual(probe["adapter_round"] as? Int, 3)
        XCTAssertEqual(Set(try XCTUnwrap((probe["notes"] as? [[String: Any]])?.first).keys),
                       ["title", "prompt", "reference", "before", "after"])
        XCTAssertFalse(self.outcome().text.contains("pooled over the clients"), "control: one committed round, no comparison")
        XCTAssertFalse(text.contains("names the note's condition"), "control: a probe without conditions says nothing of them")
        // With the note's condition: whether each assessment names it, and the count over the probe.
        outcome.probe?.notes[0].condition = "acne vulgaris"
        outcome.probe?.notes[0].namedBefore = false
        outcome.probe?.notes[0].namedAfter = true
        XCTAssertTrue(outcome.text.contains("""
                after:     Acne vulgaris.
                names acne vulgaris: no before, yes after
            public probe: the assessment names the note's condition in 0 of 1 notes before → 1 after (exact: public notes)
            """), outcome.text)
        let named = try XCTUnwrap(JSONSerialization.jsonObject(with: JSONEncoder().encode(outcome)) as? [String: Any])
        let note = try XCTUnwrap(((named["probe"] as? [String: Any])?["notes"] as? [[String: Any]])?.first)
        XCTAssertEqual(note["named_after"] as? Bool, true)
        XCTAssertEqual(note["condition"] as? String, "acne vulgaris")
    }

    /// The condition accuracy lines: per round, then the first committed round's "before" against the last one's
    /// "after"; `--json` carries the three fields in the round. Control: an outcome without releases has neither.
    func testConditionAccuracyLinesAndJSON() throws {
        var outcome = outcome()
        XCTAssertFalse(outcome.text.contains("condition accuracy"), "control: \(outcome.text)")
        outcome.rounds[0].summary.conditionAccuracyBefore = 0.1
        outcome.rounds[0].summary.conditionAccuracyAfter = 0.1
        outcome.rounds[0].summary.conditionAccuracyStandardError = 0.25
        var later = record(3, status: "committed")
        later.conditionAccuracyBefore = 0.4
        later.conditionAccuracyAfter = 0.55
        later.conditionAccuracyStandardError = 0.2
        outcome.rounds.append(DemoOutcome.Round(summary: RoundSummary(later), canaryExposure: nil))
        let text = outcome.text
        XCTAssertTrue(text.contains("    1  condition accuracy (DP-released, ± 0.250) 0.100 → 0.100\n"
                                    + "    3  condition accuracy (DP-released, ± 0.200) 0.400 → 0.550\n"
                                    + "condition accuracy: 0.100 before round 1 → 0.550 after round 3 (each ± its s.e. above)"), text)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: JSONEncoder().encode(outcome)) as? [String: Any])
        let rounds = try XCTUnwrap(json["rounds"] as? [[String: Any]])
        XCTAssertEqual(rounds.last?["condition_accuracy_after"] as? Double, 0.55)
        XCTAssertEqual(rounds.last?["condition_accuracy_standard_error"] as? Double, 0.2)
        XCTAssertNil(rounds[1]["condition_accuracy_before"], "the aborted round has none")
    }

    /// The DP-released learning line carries no change in percent (a release clipped to 0 gave "+inf%"); the public
    /// held-out loss is its own line, exact, with its change, and `--json` carries it. Control: the same outcome without
    /// the probe's held-out figures has no public held-out line.
    func testLearningLineWithoutAPercentAndThePublicHeldOutLine() throws {
        var outcome = outcome()
        outcome.rounds[0].summary.evalLossBefore = 0
        var later = record(3, status: "committed")
        later.evalLossBefore = 6.0
        outcome.rounds.append(DemoOutcome.Round(summary: RoundSummary(later), canaryExposure: nil))
        outcome.probe = PublicProbe(adapterRound: 3, notes: [
            PublicProbe.Note(title: "t", prompt: "p\nAssessment:", reference: "r", before: "b", after: "a"),
        ], heldOut: PublicProbe.HeldOutLoss(notes: 30, tokens: 1500, lossBefore: 4.0, lossAfter: 3.5))
        let text = outcome.text
        XCTAssertTrue(text.contains("held-out loss (DP-released, pooled over the clients): 0.0000 at round 1 → 6.0000 at round 3 "
                                    + "(each ± its s.e. above)"), text)
        XCTAssertFalse(text.contains("inf%"), text)
        XCTAssertTrue(text.contains("public held-out loss (30 fictional notes no client holds, 1500 assessment tokens; exact): "
                                    + "4.0000 base model → 3.5000 global adapter of round 3 (-12.5%)"), text)
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: JSONEncoder().encode(outcome)) as? [String: Any])
        let held = try XCTUnwrap((json["probe"] as? [String: Any])?["held_out"] as? [String: Any])
        XCTAssertEqual(held["loss_after"] as? Double, 3.5)
        XCTAssertEqual(Set(held.keys), ["notes", "tokens", "loss_before", "loss_after"])
        outcome.probe?.heldOut = nil
        XCTAssertFalse(outcome.text.contains("public held-out loss"), "control: \(outcome.text)")
    }

    func testTableAndExitStatus() {
        var outcome = outcome()
        XCTAssertEqual(outcome.text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init), [
            "round  status     clients  held-out loss (DP-released) before → after   ± s.e.   max ε   seconds",
            "    1  committed        1                              2.5000 →  2.2500   0.1000     1.50     42.0",
            "    2  aborted          0                                   - →       -        -        -     42.0",
            "held-out losses: each client's per-record losses clipped to [0, 6] nats, summed with its record count and released "
                + "with discrete Gaussian noise (z 5: σ 8.66 records on the count, 51.96 nats on each sum), charged to its "
                + "ledger with the round",
            "",
            "canary exposure on the global adapter each round received (bits; chance ≈ 1.44, at most 9.97)",
            "    1  clinic-1-cardiology  mean 1.50  max 3.25  (5 canaries × 4, exact)",
            "",
            "audit chain: verified (2 records, Ed25519-signed, BLAKE2b-chained)",
            "final global adapter (PEFT): /d/coordinator/adapters/round-000001",
            "coordinator state: /d/coordinator",
            "  conclave-coordinator audit --state /d/coordinator",
            "demo took 61 s",
        ])
        XCTAssertFalse(outcome.succeeded, "a round aborted")
        outcome.rounds.removeLast()
        XCTAssertTrue(outcome.succeeded)
        outcome.auditFailure = DemoOutcome.AuditFailure(record: 2, reason: "signature does not verify")
        XCTAssertFalse(outcome.succeeded)
        XCTAssertTrue(outcome.text.contains("audit chain: FAILED at record 2: signature does not verify"), outcome.text)
    }
}
