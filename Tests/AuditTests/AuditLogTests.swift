import Audit
import Foundation
import SecureCrypto
import SystemIO
import TestSupport
import Wire
import XCTest

/// The audit log: its exact line format, the hash chain, signatures, tamper detection byte by byte,
/// torn-write repair and the size limits.
final class AuditLogTests: XCTestCase {
    var directory: URL!
    var log: AuditLog!
    let signer = SigningKeyPair()

    override func setUpWithError() throws {
        directory = try Fixtures.temporaryDirectory("conclave-audit")
        log = AuditLog(url: directory.appendingPathComponent("audit.jsonl"))
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    static let plan = TrainingPlan(steps: 20, learningRate: 0.002, samplingRate: 0.05, noiseMultiplier: 1.1, clipNorm: 1,
                                   delta: 1e-5, maxLength: 128, rank: 8, alpha: 16, targets: ["q_proj", "v_proj"])

    /// A round's record; `small` leaves out the clients so that byte-by-byte tests stay quick.
    static func record(round: UInt64, small: Bool = false, cohort: [String]? = nil) -> AuditRecord {
        let started = Date(timeIntervalSince1970: 1_740_000_000.125 + Double(round) * 600)
        let metrics = small ? [] : [
            ClientRoundMetrics(client: "clinic-a", epsilon: 0.75 * Double(round), delta: 1e-5, epsilonBudget: 10,
                               heldOut: HeldOutRelease(lossBefore: 170_667, lossAfter: 153_600, count: 409_612, lossClip: 6,
                                                       noiseMultiplier: 5)),
            ClientRoundMetrics(client: "clinic/b é", epsilon: 0.5 * Double(round), delta: 1e-5, epsilonBudget: 10,
                               heldOut: HeldOutRelease(lossBefore: 117_000, lossAfter: -3_210, count: 256_020, lossClip: 6,
                                                       noiseMultiplier: 5)),
        ]
        let aborted = round % 3 == 0
        return AuditRecord(
            status: aborted ? "aborted" : "committed", round: round, started: started, finished: started + 95.5,
            cohort: cohort ?? (small ? ["a"] : ["clinic-a", "clinic/b é", "clinic-c"]),
            participants: small ? ["a"] : ["clinic-a", "clinic/b é"],
            declines: small ? [] : [ClientReason(client: "clinic-c", reason: "budget: ε would reach 8.1 > 8")],
            dropouts: [], aggregation: "fedavg", secureAggregation: !small, plan: plan, clients: metrics,
            maxEpsilon: small ? nil : 0.75 * Double(round), evalLossBefore: small ? nil : 2.6,
            evalLossAfter: small ? nil : 2.35, evalLossStandardError: small ? nil : 0.047, adapterSHA256: String(repeating: "ab", count: 32),
            abortReason: aborted ? "too few participants: 1 < 2" : nil, previousHash: "ignored")
    }

    func contents() throws -> [UInt8] { Array(try Data(contentsOf: log.url)) }
    func write(_ bytes: [UInt8]) throws { try Data(bytes).write(to: log.url) }
    func lines() throws -> [[UInt8]] { try contents().split(separator: 10, omittingEmptySubsequences: false).dropLast().map(Array.init) }
    func write(lines: [[UInt8]]) throws { try write(lines.flatMap { $0 + [10] }) }
    func verify(_ key: SigningPublicKey? = nil) throws -> AuditVerification {
        try log.verify(publicKey: key ?? signer.publicKey)
    }

    /// A client whose ledger recorded a round without privacy reports ε = +∞ (issue 13); its record is
    /// written ("Infinity", as JSON has no number for it), verifies and reads back as +∞. Seen failing on
    /// the old code: "cannot encode round 4's audit record: ... Unable to encode Double.inf directly in JSON".
    func testAnInfiniteEpsilonIsWrittenAndVerified() throws {
        var record = Self.record(round: 4)
        record.clients[0].epsilon = .infinity
        record.maxEpsilon = .infinity
        let written = try log.append(record, signer: signer).record
        XCTAssertEqual(written.clients[0].epsilon, .infinity)
        let result = try verify()
        XCTAssertTrue(result.verified, "\(String(describing: result.failure))")
        XCTAssertEqual(result.records.first?.maxEpsilon, .infinity)
        XCTAssertTrue(String(decoding: try contents(), as: UTF8.self).contains(#""epsilon":"Infinity""#))
    }

    func testChainOfRoundsVerifiesAndKeepsTheExactLineFormat() throws {
        var written: [AuditRecord] = []
        for round: UInt64 in [1, 2, 3, 5] {
            let append = try log.append(Self.record(round: round), signer: signer)
            XCTAssertFalse(append.repairedTornTail)
            written.append(append.record)
        }
        let result = try verify()
        XCTAssertTrue(result.verified, "\(String(describing: result.failure))")
        XCTAssertNil(result.failure)
        XCTAssertEqual(result.records, written)
        XCTAssertEqual(result.records.map(\.round), [1, 2, 3, 5])
        XCTAssertEqual(written[2].abortReason, "too few participants: 1 < 2")
        XCTAssertEqual(written[0].started.timeIntervalSince1970, 1_740_000_600.125, accuracy: 1e-6,
                       "milliseconds survive the round trip")

        // The format, checked independently of the library: prefix, record, 128-hex signature, suffix.
        let lines = try lines()
        XCTAssertEqual(lines.count, 4)
        let prefix = Array(#"{"record":"#.utf8)
        let signatureOpening = Array(#","signature":""#.utf8)
        var previous = String(repeating: "0", count: 64)
        for (index, line) in lines.enumerated() {
            XCTAssertEqual(Array(line.prefix(prefix.count)), prefix)
            XCTAssertEqual(Array(line.suffix(2)), Array(#""}"#.utf8))
            let signatureHex = String(decoding: line[(line.count - 130)..<(line.count - 2)], as: UTF8.self)
            XCTAssertEqual(signatureHex, signatureHex.lowercased())
            XCTAssertEqual(Array(line[(line.count - 144)..<(line.count - 130)]), signatureOpening)
            let recordBytes = Array(line[prefix.count..<(line.count - 144)])
            XCTAssertTrue(signer.publicKey.isValidSignature(try Hex.decode(signatureHex), for: recordBytes))
            let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(recordBytes)) as? [String: Any])
            XCTAssertEqual(object["previous_hash"] as? String, previous, "line \(index + 1)")
            XCTAssertEqual(object["round"] as? Int, Int(written[index].round))
            previous = Hex.encode(Hash.blake2b(line))
            let text = String(decoding: recordBytes, as: UTF8.self)
            XCTAssertTrue(text.contains(#""started":"2025-"#) && text.contains(".125Z\""), text)
            XCTAssertEqual(written[index].previousHash, object["previous_hash"] as? String)
        }
        XCTAssertTrue(String(decoding: lines[0], as: UTF8.self).contains(#""clinic/b é""#), "slashes are not escaped")
        let mode = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: log.url.path)[.posixPermissions] as? Int)
        XCTAssertEqual(mode, 0o644)
    }

    /// The rule: every byte of a line is covered by that line's own checks (form, lower-case hex,
    /// Ed25519 over the record bytes), and a newline belongs to the line it ends. So a changed byte is
    /// always reported at the line that holds it, never at the next line whose hash covers it.
    func testEveryFlippedByteFailsAtTheLineHoldingIt() throws {
        for round: UInt64 in 1...3 { try log.append(Self.record(round: round, small: true), signer: signer) }
        let original = try contents()
        var lineOfByte: [Int] = []
        var line = 1
        for byte in original {
            lineOfByte.append(line)
            if byte == 10 { line += 1 }
        }
        XCTAssertEqual(line, 4)
        XCTAssertTrue(try verify().verified)
        for mask: UInt8 in [0x01, 0x20, 0x80] {
            for offset in original.indices {
                var tampered = original
                tampered[offset] ^= mask
                try write(tampered)
                let result = try verify()
                XCTAssertFalse(result.verified, "byte \(offset) ^ \(mask) went unnoticed")
                XCTAssertEqual(result.failure?.record, lineOfByte[offset],
                               "byte \(offset) ^ \(mask): \(result.failure?.reason ?? "")")
                if result.failure?.record != lineOfByte[offset] { return }
            }
        }
    }

    func testDeletingDuplicatingOrReorderingALineFails() throws {
        for round: UInt64 in 1...4 { try log.append(Self.record(round: round), signer: signer) }
        let lines = try lines()

        try write(lines: Array(lines.dropFirst()))
        XCTAssertEqual(try verify().failure?.record, 1)
        XCTAssertTrue(try verify().failure?.reason.contains("first record") ?? false)

        try write(lines: [lines[0], lines[2], lines[3]])
        XCTAssertEqual(try verify().failure?.record, 2)
        XCTAssertTrue(try verify().failure?.reason.contains("not the hash of line 1") ?? false)

        try write(lines: [lines[0], lines[1], lines[1], lines[2], lines[3]])
        XCTAssertEqual(try verify().failure?.record, 3)

        try write(lines: [lines[0], lines[2], lines[1], lines[3]])
        XCTAssertEqual(try verify().failure?.record, 2)

        try write(lines: lines + [lines[3]])
        XCTAssertEqual(try verify().failure?.record, 5)

        // An empty line inserted between two records.
        try write(lines: [lines[0], [], lines[1]])
        XCTAssertEqual(try verify().failure?.record, 2)

        // The documented limit: dropping the last lines leaves a shorter, valid chain.
        try write(lines: Array(lines.prefix(3)))
        XCTAssertTrue(try verify().verified)
        XCTAssertEqual(try verify().records.count, 3)
    }

    func testWrongPublicKeyFailsAtTheFirstRecord() throws {
        for round: UInt64 in 1...2 { try log.append(Self.record(round: round), signer: signer) }
        let result = try verify(SigningKeyPair().publicKey)
        XCTAssertFalse(result.verified)
        XCTAssertEqual(result.failure?.record, 1)
        XCTAssertTrue(result.failure?.reason.contains("signature does not verify") ?? false)
        XCTAssertEqual(result.records.count, 2, "records still parse for display")
    }

    func testAppendRefusesANonIncreasingRoundAndAForeignLastRecord() throws {
        try log.append(Self.record(round: 4), signer: signer)
        let before = try contents()
        XCTAssertThrowsError(try log.append(Self.record(round: 4), signer: signer)) { error in
            guard case let FederationError.round(round, reason)? = error as? FederationError else {
                return XCTFail("\(error)")
            }
            XCTAssertEqual(round, 4)
            XCTAssertTrue(reason.contains("already holds round 4"), reason)
        }
        XCTAssertThrowsError(try log.append(Self.record(round: 5), signer: SigningKeyPair())) { error in
            XCTAssertTrue("\(error)".contains("signature does not verify"), "\(error)")
        }
        XCTAssertEqual(try contents(), before, "refused appends leave the file as it was")
    }

    /// A line built here with an independent encoder (keys unsorted, dates by ISO8601DateFormatter)
    /// verifies: the verifier checks the bytes as signed and never re-encodes. A chain whose rounds do
    /// not increase fails at the line that repeats a round.
    func testHandBuiltLinesVerifyAndRepeatedRoundsFail() throws {
        func line(round: UInt64, previous: String) throws -> [UInt8] {
            var record = Self.record(round: round, small: true)
            record.previousHash = previous
            let encoder = JSONEncoder()
            encoder.dateEncodingStrategy = .custom { date, encoder in
                let formatter = ISO8601DateFormatter()
                formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
                var container = encoder.singleValueContainer()
                try container.encode(formatter.string(from: date))
            }
            let bytes = Array(try encoder.encode(record))
            return Array(#"{"record":"#.utf8) + bytes + Array(#","signature":""#.utf8)
                + Array(Hex.encode(signer.signature(for: bytes)).utf8) + Array(#""}"#.utf8)
        }
        let first = try line(round: 7, previous: String(repeating: "0", count: 64))
        let second = try line(round: 7, previous: Hex.encode(Hash.blake2b(first)))
        try write(lines: [first])
        let single = try verify()
        XCTAssertTrue(single.verified, "\(String(describing: single.failure))")
        XCTAssertEqual(single.records.first?.round, 7)
        try write(lines: [first, second])
        let repeated = try verify()
        XCTAssertEqual(repeated.failure?.record, 2)
        XCTAssertTrue(repeated.failure?.reason.contains("does not follow round 7") ?? false)

        // Upper-case hex in the signature is refused even though it decodes to the same bytes.
        var upper = first
        let hexRange = (upper.count - 130)..<(upper.count - 2)
        upper.replaceSubrange(hexRange, with: Array(String(decoding: upper[hexRange], as: UTF8.self).uppercased().utf8))
        try write(lines: [upper])
        XCTAssertEqual(try verify().failure?.record, 1)
        XCTAssertTrue(try verify().failure?.reason.contains("lower-case hex") ?? false)
    }

    func testTornTailIsRepairedOnAppendAndTheChainStillVerifies() throws {
        try log.append(Self.record(round: 1), signer: signer)
        try log.append(Self.record(round: 2), signer: signer)
        let committed = try contents()
        // A crash in the middle of writing round 3: part of a line, no newline.
        let torn = Array(#"{"record":{"aggregation":"fedavg","cohort":["#.utf8)
        try write(committed + torn)
        let before = try verify()
        XCTAssertEqual(before.failure?.record, 3)
        XCTAssertTrue(before.failure?.reason.contains("no terminating newline") ?? false)
        XCTAssertEqual(before.records.count, 2)

        let append = try log.append(Self.record(round: 3), signer: signer)
        XCTAssertTrue(append.repairedTornTail)
        XCTAssertEqual(append.discardedBytes, torn.count)
        XCTAssertEqual(Array(try contents().prefix(committed.count)), committed)
        let lines = try lines()
        XCTAssertEqual(append.record.previousHash, Hex.encode(Hash.blake2b(lines[1])))
        let after = try verify()
        XCTAssertTrue(after.verified, "\(String(describing: after.failure))")
        XCTAssertEqual(after.records.map(\.round), [1, 2, 3])

        // A complete line that lost only its newline was not committed either.
        let full = try contents()
        try write(Array(full.dropLast()))
        XCTAssertEqual(try verify().failure?.record, 3)
        let again = try log.append(Self.record(round: 4), signer: signer)
        XCTAssertEqual(again.discardedBytes, lines[2].count)
        XCTAssertEqual(try verify().records.map(\.round), [1, 2, 4])
        XCTAssertTrue(try verify().verified)
    }

    func testTornFirstLineLeavesAFreshChain() throws {
        try write(Array(#"{"record":{"aggre"#.utf8))
        let append = try log.append(Self.record(round: 1), signer: signer)
        XCTAssertTrue(append.repairedTornTail)
        XCTAssertEqual(append.record.previousHash, String(repeating: "0", count: 64))
        XCTAssertTrue(try verify().verified)
    }

    func testOversizedLinesAreRefused() throws {
        try log.append(Self.record(round: 1), signer: signer)
        let before = try contents()
        let huge = String(repeating: "x", count: AuditLog.maximumLineLength)
        XCTAssertThrowsError(try log.append(Self.record(round: 2, cohort: [huge]), signer: signer)) { error in
            XCTAssertTrue("\(error)".contains("over the 4194304-byte line limit"), "\(error)")
        }
        XCTAssertEqual(try contents(), before)

        // A line over the limit in the file fails verification at that line, before any parsing.
        try write(before + Array(repeating: UInt8(ascii: "x"), count: AuditLog.maximumLineLength + 1) + [10])
        let result = try verify()
        XCTAssertEqual(result.failure?.record, 2)
        XCTAssertTrue(result.failure?.reason.contains("is 4194305 bytes, over the 4194304-byte limit") ?? false,
                      result.failure?.reason ?? "")
        // And append will not chain to it.
        XCTAssertThrowsError(try log.append(Self.record(round: 2), signer: signer)) { error in
            XCTAssertTrue("\(error)".contains("line limit"), "\(error)")
        }
    }

    func testOversizedFileIsRefusedBeforeReading() throws {
        XCTAssertTrue(FileManager.default.createFile(atPath: log.url.path, contents: nil))
        let handle = try FileHandle(forWritingTo: log.url)
        try handle.truncate(atOffset: UInt64(AuditLog.maximumFileSize) + 1)  // sparse: no disk used
        try handle.close()
        XCTAssertThrowsError(try verify()) { error in
            XCTAssertEqual(error as? FederationError,
                           .state(path: log.url.path, "is 268435457 bytes, over the 268435456-byte limit of an audit log"))
        }
        XCTAssertThrowsError(try log.append(Self.record(round: 1), signer: signer)) { error in
            XCTAssertTrue("\(error)".contains("over the 268435456-byte limit"), "\(error)")
        }
    }

    func testMissingFileIsAnEmptyVerifiedLog() throws {
        let result = try verify()
        XCTAssertTrue(result.verified)
        XCTAssertEqual(result.records, [])
        // An empty file is the same: no committed line.
        try write([])
        XCTAssertTrue(try verify().verified)
    }

    func testVerifyingKeyComesFromSigningPubOrSigningKey() throws {
        let paths = CoordinatorPaths(root: directory)
        XCTAssertThrowsError(try AuditLog.verifyingKey(in: paths)) { error in
            XCTAssertTrue("\(error)".contains("neither signing.pub nor signing.key"), "\(error)")
        }
        try signer.writeSecretKeyFile(path: paths.signingKey.path)
        XCTAssertEqual(try AuditLog.verifyingKey(in: paths), signer.publicKey)

        let other = SigningKeyPair()
        try AuditLog.writePublicKey(other.publicKey, to: paths.signingPublicKey)
        XCTAssertEqual(paths.signingPublicKey.lastPathComponent, "signing.pub")
        XCTAssertEqual(try String(contentsOf: paths.signingPublicKey, encoding: .utf8), Hex.encode(other.publicKey.bytes) + "\n")
        XCTAssertEqual(try AuditLog.verifyingKey(in: paths), other.publicKey, "signing.pub is preferred")

        try Data(Hex.encode(other.publicKey.bytes).uppercased().utf8).write(to: paths.signingPublicKey)
        XCTAssertThrowsError(try AuditLog.verifyingKey(in: paths)) { error in
            XCTAssertTrue("\(error)".contains("signing.pub: expected 64 lower-case hex digits"), "\(error)")
        }
        try Data(repeating: 0x61, count: 4096).write(to: paths.signingPublicKey)
        XCTAssertThrowsError(try AuditLog.readPublicKey(from: paths.signingPublicKey)) { error in
            XCTAssertTrue("\(error)".contains("is 4096 bytes"), "\(error)")
        }
    }

    // MARK: Logs written before the metrics release (issue 13)

    /// A real log of the first record format (two rounds of a canary federation, written by the
    /// previous release: exact counts, losses and timings in clear) still verifies under its key, and
    /// its clients' figures are read as clear figures, never as releases.
    func testALogOfTheFirstFormatStillVerifiesAndReadsItsClearFigures() throws {
        let folder = Fixtures.repositoryRoot.appendingPathComponent("Tests/AuditTests/Fixtures")
        let key = try String(contentsOf: folder.appendingPathComponent("audit-format1.signing.pub"), encoding: .utf8)
        let publicKey = try SigningPublicKey(bytes: try Hex.decode(key.trimmingCharacters(in: .whitespacesAndNewlines)))
        let verification = try AuditLog(url: folder.appendingPathComponent("audit-format1.jsonl")).verify(publicKey: publicKey)
        XCTAssertNil(verification.failure.map { "\($0.record): \($0.reason)" })
        XCTAssertEqual(verification.records.map(\.round), [1, 2])
        let first = try XCTUnwrap(verification.records.first)
        XCTAssertFalse(first.metricsReleased)
        XCTAssertNil(first.evalLossStandardError)
        XCTAssertEqual(first.clients.map { $0.clearFigures?.examples }, [42, 30])
        XCTAssertEqual(first.clients.map(\.heldOut), [nil, nil])
        XCTAssertEqual(first.clients[0].canaryExposure?.seconds ?? 0, 0.05768764019012451, accuracy: 1e-15)
        XCTAssertEqual(first.plan.metricsNoiseMultiplier, TrainingPlan.defaultMetricsNoiseMultiplier, "absent: the default")
        // Control: the same bytes under another key do not verify.
        XCTAssertNotNil(try AuditLog(url: folder.appendingPathComponent("audit-format1.jsonl"))
                            .verify(publicKey: SigningKeyPair().publicKey).failure)
    }

    /// A record of today's format keeps its releases through the log; a client entry with neither a release nor the
    /// old figures is a round that asked for no held-out release (`heldout_interval`), and one with some of the old
    /// figures only is an error naming the first missing field.
    func testReleasesRoundTripAndAnEntryWithPartOfTheOldFormIsRefused() throws {
        let written = try log.append(Self.record(round: 1), signer: signer).record
        XCTAssertTrue(written.metricsReleased)
        XCTAssertEqual(written.clients.map(\.heldOut?.count), [409_612, 256_020])
        XCTAssertEqual(written.evalLossStandardError, 0.047)
        let bare = #"{"client":"a","epsilon":1,"delta":1e-05,"epsilon_budget":10}"#
        let skipped = try JSONFile.decode(ClientRoundMetrics.self, from: Data(bare.utf8), keys: .declared)
        XCTAssertNil(skipped.heldOut)
        XCTAssertNil(skipped.clearFigures)
        let partial = #"{"client":"a","epsilon":1,"delta":1e-05,"epsilon_budget":10,"examples":40}"#
        XCTAssertThrowsError(try JSONFile.decode(ClientRoundMetrics.self, from: Data(partial.utf8), keys: .declared)) { error in
            XCTAssertTrue("\(error)".contains("eval_loss_before"), "\(error)")
        }
    }
}
