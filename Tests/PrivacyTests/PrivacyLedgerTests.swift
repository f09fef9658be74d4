import TestSupport
import XCTest
@testable import Privacy

final class PrivacyLedgerTests: XCTestCase {
    let budget = PrivacyBudget(epsilon: 3, delta: 1e-5, accountant: .rdp)

    func epsilon(_ mechanisms: [MechanismSteps], _ budget: PrivacyBudget) throws -> Double {
        try PrivacyAccounting.epsilon(steps: mechanisms, delta: budget.delta, accountant: budget.accountant)
    }

    func permissions(_ url: URL) throws -> Int {
        try (FileManager.default.attributesOfItem(atPath: url.path)[.posixPermissions] as? NSNumber)?.intValue ?? -1
    }

    /// A new ledger creates its directory 0700 and its file 0600, and writes the budget.
    func testCreatesDirectoryAndFileWithPrivatePermissions() throws {
        let parent = try Fixtures.temporaryDirectory("ledger")
        defer { try? FileManager.default.removeItem(at: parent) }
        let directory = parent.appendingPathComponent("state")
        var ledger = try PrivacyLedger(directory: directory, creatingWith: budget)
        XCTAssertEqual(try permissions(directory), 0o700)
        XCTAssertEqual(try permissions(ledger.fileURL), 0o600)
        try ledger.charge(purpose: "run:a", samplingRate: 0.01, noiseMultiplier: 1, clipNorm: 1, steps: 100)
        XCTAssertEqual(try permissions(ledger.fileURL), 0o600, "the atomic rewrite must keep 0600")
        XCTAssertEqual(ledger.entries.count, 1)
    }

    /// A charge is on disk when `charge` returns: a fresh instance sees the entry, its cumulative ε,
    /// and the budget.
    func testChargeIsDurableAcrossReopen() throws {
        let directory = try Fixtures.temporaryDirectory("ledger")
        defer { try? FileManager.default.removeItem(at: directory) }
        var ledger = try PrivacyLedger(directory: directory, creatingWith: budget)
        let entry = try ledger.charge(purpose: "round:1", samplingRate: 0.01, noiseMultiplier: 1.2, clipNorm: 0.5, steps: 300)
        let reopened = try PrivacyLedger(directory: directory)
        XCTAssertEqual(reopened.budget, budget)
        XCTAssertEqual(reopened.entries.count, 1)
        XCTAssertEqual(reopened.entries[0].id, entry.id)
        XCTAssertEqual(reopened.entries[0].purpose, "round:1")
        XCTAssertEqual(reopened.entries[0].clipNorm, 0.5)
        XCTAssertEqual(reopened.spentEpsilon, entry.cumulativeEpsilon)
        XCTAssertEqual(entry.cumulativeEpsilon,
                       try epsilon([MechanismSteps(samplingRate: 0.01, noiseMultiplier: 1.2, steps: 300)], budget))
        XCTAssertNoThrow(try PrivacyLedger(directory: directory, creatingWith: budget), "same budget reopens")
        XCTAssertThrowsError(try PrivacyLedger(directory: directory,
                                               creatingWith: PrivacyBudget(epsilon: 9, delta: 1e-5, accountant: .rdp)))
    }

    /// Two charges compose: the second entry's cumulative ε is the ε of both mechanisms together
    /// (for both accountants), not the sum of the two.
    func testTwoChargesCompose() throws {
        for kind in AccountantKind.allCases {
            let directory = try Fixtures.temporaryDirectory("ledger")
            defer { try? FileManager.default.removeItem(at: directory) }
            let budget = PrivacyBudget(epsilon: 10, delta: 1e-5, accountant: kind)
            var ledger = try PrivacyLedger(directory: directory, creatingWith: budget)
            let first = MechanismSteps(samplingRate: 0.01, noiseMultiplier: 1, steps: 400)
            let second = MechanismSteps(samplingRate: 0.02, noiseMultiplier: 1.5, steps: 300)
            let a = try ledger.charge(purpose: "round:1", samplingRate: 0.01, noiseMultiplier: 1, clipNorm: 1, steps: 400)
            let b = try ledger.charge(purpose: "round:2", samplingRate: 0.02, noiseMultiplier: 1.5, clipNorm: 1, steps: 300)
            XCTAssertEqual(a.cumulativeEpsilon, try epsilon([first], budget), "\(kind)")
            XCTAssertEqual(b.cumulativeEpsilon, try epsilon([first, second], budget), "\(kind)")
            XCTAssertLessThan(b.cumulativeEpsilon, a.cumulativeEpsilon + (try epsilon([second], budget)), "\(kind)")
            XCTAssertGreaterThan(b.cumulativeEpsilon, a.cumulativeEpsilon, "\(kind)")
        }
    }

    /// With ε_max exactly the ε of T steps, T steps fit and then one more step is refused with a
    /// message giving ε spent, ε left and what would fit; with ε_max just below it, T steps are refused
    /// and T − 1 is named as the most that fits. A refusal writes nothing.
    func testRefusalAtTheBoundary() throws {
        let mechanism = MechanismSteps(samplingRate: 0.01, noiseMultiplier: 1, steps: 500)
        let exact = try epsilon([mechanism], budget)

        let directory = try Fixtures.temporaryDirectory("ledger")
        defer { try? FileManager.default.removeItem(at: directory) }
        var ledger = try PrivacyLedger(directory: directory, creatingWith: PrivacyBudget(epsilon: exact, delta: 1e-5, accountant: .rdp))
        try ledger.charge(purpose: "run:1", samplingRate: 0.01, noiseMultiplier: 1, clipNorm: 1, steps: 500)
        let before = try Data(contentsOf: ledger.fileURL)
        XCTAssertThrowsError(try ledger.charge(purpose: "run:2", samplingRate: 0.01, noiseMultiplier: 1, clipNorm: 1, steps: 1)) { error in
            guard let refusal = error as? PrivacyBudgetExceededError else { return XCTFail("unexpected \(error)") }
            XCTAssertEqual(refusal.spentEpsilon, exact)
            XCTAssertEqual(refusal.remainingEpsilon, 0)
            XCTAssertEqual(refusal.maximumSteps, 0)
            XCTAssertNil(refusal.minimumNoiseMultiplier, "no σ fits once the budget is spent")
            let message = refusal.description
            XCTAssertTrue(message.contains("epsilon spent \(exact)"), message)
            XCTAssertTrue(message.contains("left 0"), message)
            XCTAssertTrue(message.contains(ledger.fileURL.path), message)
        }
        XCTAssertEqual(try Data(contentsOf: ledger.fileURL), before, "a refused charge must not write")
        XCTAssertEqual(ledger.entries.count, 1)

        let other = try Fixtures.temporaryDirectory("ledger")
        defer { try? FileManager.default.removeItem(at: other) }
        let tight = PrivacyBudget(epsilon: exact * (1 - 1e-9), delta: 1e-5, accountant: .rdp)
        var tightLedger = try PrivacyLedger(directory: other, creatingWith: tight)
        XCTAssertThrowsError(try tightLedger.charge(purpose: "run:1", samplingRate: 0.01, noiseMultiplier: 1, clipNorm: 1, steps: 500)) { error in
            guard let refusal = error as? PrivacyBudgetExceededError else { return XCTFail("unexpected \(error)") }
            XCTAssertEqual(refusal.spentEpsilon, 0)
            XCTAssertEqual(refusal.maximumSteps, 499)
            XCTAssertEqual(refusal.minimumNoiseMultiplier, 1.001)
            XCTAssertTrue(refusal.description.contains("at most 499 steps"), refusal.description)
            XCTAssertTrue(refusal.description.contains("noise multiplier >= 1.001"), refusal.description)
        }
        XCTAssertEqual(try PrivacyLedger(directory: other).entries.count, 0)
    }

    /// Garbage, a truncated file, an empty file and a bad field are precise errors naming the file;
    /// the file is left as it was.
    func testCorruptLedgerIsAnErrorNeverAReset() throws {
        let directory = try Fixtures.temporaryDirectory("ledger")
        defer { try? FileManager.default.removeItem(at: directory) }
        var ledger = try PrivacyLedger(directory: directory, creatingWith: budget)
        try ledger.charge(purpose: "run:1", samplingRate: 0.01, noiseMultiplier: 1, clipNorm: 1, steps: 100)
        let valid = try Data(contentsOf: ledger.fileURL)
        let badStepsText = String(decoding: valid, as: UTF8.self).replacingOccurrences(of: "\"steps\" : 100", with: "\"steps\" : -5")
        XCTAssertNotEqual(Data(badStepsText.utf8), valid)
        let cases: [(String, Data, String)] = [
            ("garbage", Data("not json at all".utf8), "not valid JSON"),
            ("truncated", valid.prefix(valid.count / 2), "not valid JSON"),
            ("empty", Data(), "file is empty"),
            ("negative steps", Data(badStepsText.utf8), "entries[0]"),
            ("missing budget", Data("{\"version\": 1, \"entries\": []}".utf8), "missing field budget"),
        ]
        for (label, contents, expected) in cases {
            try contents.write(to: ledger.fileURL)
            XCTAssertThrowsError(try PrivacyLedger(directory: directory), label) { error in
                guard case PrivacyLedgerError.corrupt(let path, let reason) = error else { return XCTFail("\(label): \(error)") }
                XCTAssertEqual(path, ledger.fileURL.path)
                XCTAssertTrue(reason.contains(expected), "\(label): \(reason)")
            }
            XCTAssertThrowsError(try PrivacyLedger(directory: directory, creatingWith: budget), label)
            XCTAssertThrowsError(try ledger.charge(purpose: "run:2", samplingRate: 0.01, noiseMultiplier: 1, clipNorm: 1, steps: 1), label)
            XCTAssertEqual(try Data(contentsOf: ledger.fileURL), contents, "\(label): the file must not be reset")
        }
    }

    /// The budget changes only explicitly, durably, and never below what is already spent.
    func testUpdateBudget() throws {
        let directory = try Fixtures.temporaryDirectory("ledger")
        defer { try? FileManager.default.removeItem(at: directory) }
        var ledger = try PrivacyLedger(directory: directory, creatingWith: budget)
        let entry = try ledger.charge(purpose: "run:1", samplingRate: 0.01, noiseMultiplier: 1, clipNorm: 1, steps: 500)
        XCTAssertThrowsError(try ledger.updateBudget(PrivacyBudget(epsilon: entry.cumulativeEpsilon / 2, delta: 1e-5, accountant: .rdp)))
        let raised = PrivacyBudget(epsilon: 8, delta: 1e-6, accountant: .pld)
        try ledger.updateBudget(raised)
        XCTAssertEqual(try PrivacyLedger(directory: directory).budget, raised)
        XCTAssertEqual(try PrivacyLedger(directory: directory).entries, [entry])
    }

    /// After the budget's δ changes, ε spent is read at the new δ at once, by this instance and by
    /// any that opens the file, not at the δ of the last charge until the next one (issue 15).
    func testSpentEpsilonFollowsTheBudgetsDelta() throws {
        let directory = try Fixtures.temporaryDirectory("ledger")
        defer { try? FileManager.default.removeItem(at: directory) }
        var ledger = try PrivacyLedger(directory: directory, creatingWith: PrivacyBudget(epsilon: 20, delta: 1e-5, accountant: .rdp))
        let mechanism = MechanismSteps(samplingRate: 0.25, noiseMultiplier: 1, steps: 20)
        let entry = try ledger.charge(purpose: "run:1", samplingRate: 0.25, noiseMultiplier: 1, clipNorm: 1, steps: 20)
        XCTAssertEqual(ledger.spentEpsilon, entry.cumulativeEpsilon)
        let stricter = PrivacyBudget(epsilon: 20, delta: 1e-7, accountant: .rdp)
        try ledger.updateBudget(stricter)
        let expected = try epsilon([mechanism], stricter)
        XCTAssertGreaterThan(expected, entry.cumulativeEpsilon + 0.5, "a smaller δ costs more ε")
        for reader in [ledger, try PrivacyLedger(directory: directory)] {
            XCTAssertEqual(reader.spentEpsilon, expected, accuracy: 1e-12)
            XCTAssertEqual(reader.remainingEpsilon, 20 - expected, accuracy: 1e-12)
            XCTAssertEqual(reader.entries, [entry], "the recorded entry keeps the δ it was charged at")
        }
        // The accountant counts too: RDP entries read under a PLD budget are recomposed by PLD.
        try ledger.updateBudget(PrivacyBudget(epsilon: 20, delta: 1e-7, accountant: .pld))
        XCTAssertEqual(try PrivacyLedger(directory: directory).spentEpsilon,
                       try epsilon([mechanism], PrivacyBudget(epsilon: 20, delta: 1e-7, accountant: .pld)), accuracy: 1e-12)
    }

    /// Without a budget, a missing ledger is an error naming the path.
    func testMissingLedgerWithoutBudgetNamesThePath() throws {
        let directory = try Fixtures.temporaryDirectory("ledger")
        defer { try? FileManager.default.removeItem(at: directory) }
        XCTAssertThrowsError(try PrivacyLedger(directory: directory)) { error in
            guard case PrivacyLedgerError.missing(let path) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(path, directory.appendingPathComponent("privacy-ledger.json").path)
            XCTAssertTrue("\(error)".contains(path))
        }
    }

    /// Charges from separate ledger instances (separate lock descriptions, as separate processes
    /// would have) on several threads are serialised: none is lost and ε grows with each.
    func testConcurrentChargesAreSerialised() throws {
        let directory = try Fixtures.temporaryDirectory("ledger")
        defer { try? FileManager.default.removeItem(at: directory) }
        _ = try PrivacyLedger(directory: directory, creatingWith: PrivacyBudget(epsilon: 50, delta: 1e-5, accountant: .rdp))
        let count = 8
        let failures = FailureLog()
        DispatchQueue.concurrentPerform(iterations: count) { index in
            do {
                var ledger = try PrivacyLedger(directory: directory)
                try ledger.charge(purpose: "round:\(index)", samplingRate: 0.01, noiseMultiplier: 1, clipNorm: 1, steps: 100)
            } catch {
                failures.append("\(index): \(error)")
            }
        }
        XCTAssertEqual(failures.all, [])
        let ledger = try PrivacyLedger(directory: directory)
        XCTAssertEqual(ledger.entries.count, count)
        XCTAssertEqual(Set(ledger.entries.map(\.purpose)).count, count)
        let cumulative = ledger.entries.map(\.cumulativeEpsilon)
        XCTAssertEqual(cumulative, cumulative.sorted())
        XCTAssertEqual(Set(cumulative).count, count)
        XCTAssertEqual(ledger.spentEpsilon,
                       try epsilon([MechanismSteps(samplingRate: 0.01, noiseMultiplier: 1, steps: 100 * count)], ledger.budget),
                       accuracy: 1e-12)
    }
}

/// Thread-safe collection of failure messages.
final class FailureLog: @unchecked Sendable {
    private let lock = NSLock()
    private var messages: [String] = []
    func append(_ message: String) { lock.lock(); messages.append(message); lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return messages }
}
