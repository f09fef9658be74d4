import ClientService
import FederationProtocol
import FineTuning
import Foundation
import LanguageModel
import SystemIO
import TestSupport
import Wire
import XCTest

/// A client's canaries: configuration checks, the secret file (0600, reused, refused when it no longer
/// matches), planting, and the exposure summary as the metrics frame carries it.
final class ClientCanariesTests: XCTestCase {
    let metrics = ClientRoundMetrics(client: "clinic-1", epsilon: 1, delta: 1e-5, epsilonBudget: 8,
                                     heldOut: HeldOutRelease(lossBefore: 30_720, lossAfter: 20_480, count: 61_440, lossClip: 6,
                                                             noiseMultiplier: 5))
    let summary = CanaryExposureSummary(canaries: 5, repetitions: 4, meanBits: 1.5, maxBits: 3.25, spaceSize: 1000,
                                        exact: true, candidatesScored: 999)

    func testMetricsReportCarriesExposureOnlyWhenPresent() throws {
        let plain = MetricsReport(round: 3, metrics: metrics)
        let plainFrame = try plain.frame()
        XCTAssertEqual(try MetricsReport(frame: plainFrame), plain)
        XCTAssertNil(try MetricsReport(frame: plainFrame).metrics.canaryExposure)

        var withExposure = metrics
        withExposure.canaryExposure = summary
        let frame = try MetricsReport(round: 3, metrics: withExposure).frame()
        let decoded = try MetricsReport(frame: frame)
        XCTAssertEqual(decoded.metrics.canaryExposure, summary)
        XCTAssertEqual(decoded.metrics, withExposure)
        // Both carry the presence flag; the summary adds six 8-byte fields and the exact flag (no timing).
        XCTAssertEqual(frame.payload.count - plainFrame.payload.count, 6 * 8 + 1)
        var timed = withExposure
        timed.canaryExposure?.seconds = 0.25
        XCTAssertEqual(try MetricsReport(frame: MetricsReport(round: 3, metrics: timed).frame()).metrics, withExposure,
                       "the measurement's seconds stay in the client's log")

        // Cut short anywhere in the summary or its flag: a truncation error, never a crash.
        for cut in 1...(frame.payload.count - plainFrame.payload.count + 1) {
            let truncated = Frame(type: frame.type, payload: Array(frame.payload.dropLast(cut)))
            XCTAssertThrowsError(try MetricsReport(frame: truncated), "cut \(cut)")
        }
        // A presence flag other than 0 or 1 is refused.
        var flag = plainFrame.payload
        flag[flag.count - 1] = 2
        XCTAssertThrowsError(try MetricsReport(frame: Frame(type: frame.type, payload: flag)))
    }

    func testMetricsReportRefusesImpossibleExposure() throws {
        func refused(_ change: (inout CanaryExposureSummary) -> Void) -> String {
            var bad = summary
            change(&bad)
            var figures = metrics
            figures.canaryExposure = bad
            do {
                _ = try MetricsReport(frame: MetricsReport(round: 1, metrics: figures).frame())
                return "accepted"
            } catch { return "\(error)" }
        }
        XCTAssertTrue(refused { $0.maxBits = 10.5 }.contains("max_bits"))            // above log2 1000 ≈ 9.97
        XCTAssertTrue(refused { $0.meanBits = .nan }.contains("mean_bits"))
        XCTAssertTrue(refused { $0.meanBits = 4 }.contains("above max_bits"))
        XCTAssertTrue(refused { $0.spaceSize = 999 }.contains("space_size"))
        XCTAssertTrue(refused { $0.candidatesScored = 500 }.contains("candidates_scored"))  // exact needs 999
        XCTAssertTrue(refused { $0.canaries = 0 }.contains("canaries"))
        XCTAssertTrue(refused { $0.canaries = 1 << 40 }.contains("out of range"))
        XCTAssertEqual(refused { $0.exact = false; $0.candidatesScored = 500 }, "accepted")
    }

    func testAuditJSONCarriesExposureAsCanaryExposure() throws {
        var figures = metrics
        figures.canaryExposure = summary
        let object = try JSONSerialization.jsonObject(with: JSONEncoder().encode(figures)) as? [String: Any]
        let exposure = object?["canary_exposure"] as? [String: Any]
        XCTAssertEqual(exposure?["mean_bits"] as? Double, 1.5)
        XCTAssertEqual(exposure?["space_size"] as? Int, 1000)
        XCTAssertEqual(try JSONDecoder().decode(ClientRoundMetrics.self, from: JSONEncoder().encode(figures)), figures)
        let plain = try JSONSerialization.jsonObject(with: JSONEncoder().encode(metrics)) as? [String: Any]
        XCTAssertNil(plain?["canary_exposure"], "absent, not null, for clients without canaries")
    }

    func testConfigurationIsChecked() throws {
        let directory = try Fixtures.temporaryDirectory("canary-config")
        let url = directory.appendingPathComponent("c.json")
        func load(_ canaries: String) -> String {
            try? Data((#"{"model": "m", "data": "d", "eval_data": "e", "policy": {"max_epsilon": 8, "delta": 1e-5, "max_steps_per_round": 3}, "canaries": "#
                       + canaries + "}").utf8).write(to: url)
            do {
                let configuration = try ClientConfiguration.load(url)
                return "loaded \(configuration.canaries.map { "\($0.count)×\($0.repetitions) \($0.resolvedPhrase)" } ?? "none")"
            } catch { return "\(error)" }
        }
        XCTAssertEqual(load(#"{"count": 3, "digits": 3, "repetitions": 4}"#), "loaded 3×4 My account number is")
        XCTAssertEqual(load(#"{"count": 0, "digits": 3, "repetitions": 4}"#),
                       "\(url.path): field 'canaries.count': must be 1...10000, got 0")
        XCTAssertEqual(load(#"{"count": 3, "digits": 19, "repetitions": 4}"#),
                       "\(url.path): field 'canaries.digits': must be 1...18, got 19")
        XCTAssertTrue(load(#"{"count": 6, "digits": 1, "repetitions": 4}"#).contains("more than half"))
        XCTAssertEqual(load(#"{"count": 3, "digits": 3}"#), "\(url.path): field 'canaries.repetitions': is missing")
        XCTAssertTrue(load(#"{"count": 3, "digits": 3, "repetitions": 2, "phrase": ""}"#).contains("canaries.phrase"))
    }

    func testSecretsAreKeptPrivateReusedAndNeverSilentlyReplaced() throws {
        let directory = try Fixtures.temporaryDirectory("canary-state")
        let wanted = CanaryConfiguration(count: 4, digits: 3, repetitions: 2, phrase: "The code is")
        let first = try ClientCanaries.loadOrCreate(wanted, directory: directory, tokenizer: nil, vocabularySize: 512)
        let file = directory.appendingPathComponent(ClientCanaries.fileName)
        let attributes = try FileManager.default.attributesOfItem(atPath: file.path)
        XCTAssertEqual((attributes[.posixPermissions] as? NSNumber)?.intValue, 0o600)
        XCTAssertEqual(first.set.canaries.count, 4)
        XCTAssertEqual(first.set.phrase, "The code is")

        let again = try ClientCanaries.loadOrCreate(wanted, directory: directory, tokenizer: nil, vocabularySize: 512)
        XCTAssertEqual(again.set, first.set, "later runs reuse the stored secrets")

        var changed = wanted
        changed.repetitions = 3
        XCTAssertThrowsError(try ClientCanaries.loadOrCreate(changed, directory: directory, tokenizer: nil, vocabularySize: 512)) { error in
            XCTAssertTrue("\(error)".contains("move the file away"), "\(error)")
        }
        // Readable by others: refused, since the file holds secrets.
        chmod(file.path, 0o644)
        XCTAssertThrowsError(try ClientCanaries.loadOrCreate(wanted, directory: directory, tokenizer: nil, vocabularySize: 512)) { error in
            XCTAssertTrue("\(error)".contains("0600"), "\(error)")
        }
        chmod(file.path, 0o600)
        // A damaged file is refused without quoting what it holds.
        let original = try Data(contentsOf: file)
        try Data(#"{"phrase": "The code is", "digits": 3, "repetitions": 2, "canaries": [[9, 8, 17], [1, 2, 3]]}"#.utf8).write(to: file)
        XCTAssertThrowsError(try ClientCanaries.loadOrCreate(wanted, directory: directory, tokenizer: nil, vocabularySize: 512)) { error in
            XCTAssertTrue("\(error)".contains("not a valid canary set"), "\(error)")
            // (The path is left out of the check: a random directory name may contain the digits.)
            let message = "\(error)".replacingOccurrences(of: directory.path, with: "")
            XCTAssertFalse(message.contains("17"), "\(error)")
        }
        try original.write(to: file)
        // Byte tokens need a vocabulary of at least 256.
        XCTAssertThrowsError(try ClientCanaries.loadOrCreate(wanted, directory: directory, tokenizer: nil, vocabularySize: 100)) { error in
            XCTAssertTrue("\(error)".contains("outside the model's vocabulary"), "\(error)")
        }
    }

    func testPlantingAddsEveryRepetitionAsARecord() throws {
        let directory = try Fixtures.temporaryDirectory("canary-plant")
        let canaries = try ClientCanaries.loadOrCreate(CanaryConfiguration(count: 3, digits: 2, repetitions: 5),
                                                       directory: directory, tokenizer: nil, vocabularySize: 512)
        let data = (1...10).map { TokenizedExample(ids: [1, 2, 3], labels: [1, 2, 3], line: $0) }
        let planted = canaries.planted(into: data)
        XCTAssertEqual(planted.count, 10 + 3 * 5)
        // Without a tokenizer the canary is its text's UTF-8 bytes.
        let text = Array(CanarySet.text(phrase: canaries.set.phrase, canary: canaries.set.canaries[0]).utf8).map(Int.init)
        XCTAssertEqual(planted.filter { $0.ids == text }.count, 5)
    }
}

/// The wire's bound on canary digits (Wire cannot see FineTuning) must be the canary generator's.
final class CanaryBoundsAgreementTests: XCTestCase {
    func testWireAndGeneratorAgreeOnTheLargestSecret() {
        XCTAssertEqual(CanaryExposureSummary.maximumDigits, CanarySet.maximumDigits)
        for digits in [1, 6, CanarySet.maximumDigits] {
            XCTAssertEqual(CanaryExposureSummary.spaceSize(digits: digits), CanarySet.spaceSize(digits: digits))
        }
    }
}
