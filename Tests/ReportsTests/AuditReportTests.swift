import Audit
import Foundation
import Privacy
import Reports
import SecureCrypto
import SystemIO
import TestSupport
import Wire
import XCTest

/// The auditor's report: self-contained, every figure read back equal to the audit records, hostile
/// strings escaped, and every bad state directory named in a banner at the top.
final class AuditReportTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws {
        directory = try Fixtures.temporaryDirectory("conclave-report")
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    func render(_ records: [AuditRecord] = ReportFixtures.records()) -> String {
        AuditReport.html(AuditReportInput(records: records, chain: .verified(records: records.count, publicKey: String(repeating: "ab", count: 32))))
    }

    func testPageHasNoExternalReference() throws {
        ReportFixtures.assertSelfContained(render())
        try ReportFixtures.makeState(at: directory)
        ReportFixtures.assertSelfContained(AuditReport.html(AuditReport.load(stateDirectory: directory)))
    }

    func testRoundsTableMatchesTheRecords() throws {
        let records = ReportFixtures.records()
        let rows = ReportFixtures.rows(render(records), table: "rounds-table")
        XCTAssertEqual(rows.map { $0.attributes["data-round"] }, records.map { String($0.round) })
        for (row, record) in zip(rows, records) {
            let cells = row.cells
            XCTAssertEqual(cells["round"], String(record.round))
            XCTAssertEqual(cells["status"]?.hasPrefix(record.status), true, "\(cells)")
            // Maximum ε to two decimals, exactly as `conclave-coordinator audit` prints it.
            XCTAssertEqual(cells["max-epsilon"], record.maxEpsilon.map { String(format: "%.2f", $0) } ?? "–")
            XCTAssertEqual(cells["steps"], String(record.plan.steps))
            XCTAssertEqual(Double(cells["q"] ?? ""), record.plan.samplingRate)
            XCTAssertEqual(Double(cells["sigma"] ?? ""), record.plan.noiseMultiplier)
            XCTAssertEqual(Double(cells["clip"] ?? ""), record.plan.clipNorm)
            XCTAssertEqual(Double(cells["delta"] ?? ""), record.plan.delta)
            XCTAssertEqual(Double(cells["learning-rate"] ?? ""), record.plan.learningRate)
            XCTAssertEqual(cells["aggregation"], record.aggregation)
            XCTAssertEqual(cells["privacy-unit"], record.plan.privacyUnit.rawValue)
            XCTAssertEqual(cells["secure-aggregation"], record.secureAggregation ? "yes" : "no")
            XCTAssertEqual(cells["adapter-sha256"], record.adapterSHA256)
            if let before = record.evalLossBefore, let after = record.evalLossAfter {
                XCTAssertEqual(cells["loss"], String(format: "%.4f → %.4f (DP)", before, after))
            }
        }
        XCTAssertEqual(rows[1].cells["max-epsilon"], "2.00")
        XCTAssertEqual(rows[2].cells["max-epsilon"], "–")
        XCTAssertEqual(rows[3].cells["max-epsilon"], "3.34")
    }

    func testEpsilonChartsMatchTheRecords() throws {
        let records = ReportFixtures.records()
        let html = render(records)
        var expected: [String: Double] = [:]
        var budgets: [String: Double] = [:]
        for record in records where record.status == "committed" {
            for client in record.clients {
                expected["\(HTML.escape(client.client))@\(record.round)"] = client.epsilon
                budgets[HTML.escape(client.client)] = client.epsilonBudget
            }
        }
        let points = ReportFixtures.tags(html, "circle", className: "eps-point")
        var found: [String: Double] = [:]
        for point in points {
            found["\(point["data-client"] ?? "?")@\(point["data-round"] ?? "?")"] = Double(point["data-epsilon"] ?? "")
        }
        XCTAssertEqual(points.count, expected.count)
        XCTAssertEqual(found, expected)

        let labels = ReportFixtures.texts(html, "text", className: "eps-label")
        XCTAssertEqual(labels.count, expected.count)
        for label in labels {
            let key = "\(label.attributes["data-client"] ?? "?")@\(label.attributes["data-round"] ?? "?")"
            XCTAssertEqual(label.text, expected[key].map { String(format: "%.2f", $0) }, key)
        }

        let lines = ReportFixtures.tags(html, "line", className: "budget")
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: lines.map { ($0["data-client"] ?? "?", Double($0["data-budget"] ?? "")) }),
                       budgets.mapValues { Optional($0) })
        // δ is stated under each chart.
        XCTAssertEqual(ReportFixtures.texts(html, "div", className: "legend").filter { $0.text == "δ = 1e-05" }.count, budgets.count)
    }

    func testLossAndParticipationMatchTheRecords() throws {
        let records = ReportFixtures.records()
        let html = render(records)
        let committed = records.filter { $0.status == "committed" }
        let points = ReportFixtures.tags(html, "circle", className: "loss-point")
        XCTAssertEqual(points.count, 2 * committed.count)
        for point in points {
            let record = try XCTUnwrap(records.first { String($0.round) == point["data-round"] })
            let expected = point["data-kind"] == "before" ? record.evalLossBefore : record.evalLossAfter
            XCTAssertEqual(Double(point["data-loss"] ?? ""), expected)
        }
        for band in ReportFixtures.tags(html, "line", className: "loss-band") {
            let record = try XCTUnwrap(records.first { String($0.round) == band["data-round"] })
            let losses = record.clients.map { band["data-kind"] == "before" ? $0.reportedLoss.before : $0.reportedLoss.after }
            XCTAssertEqual(Double(band["data-min"] ?? ""), losses.min())
            XCTAssertEqual(Double(band["data-max"] ?? ""), losses.max())
        }
        for row in ReportFixtures.rows(html, table: "loss-table") {
            let record = try XCTUnwrap(records.first { String($0.round) == row.attributes["data-round"] })
            XCTAssertEqual(row.cells["loss-before"], record.evalLossBefore.map { String(format: "%.4f", $0) })
            XCTAssertEqual(row.cells["loss-after"], record.evalLossAfter.map { String(format: "%.4f", $0) })
            XCTAssertEqual(row.cells["loss-se"], record.evalLossStandardError.map { String(format: "± %.4f", $0) })
        }

        var bars: [String: Int] = [:]
        for bar in ReportFixtures.tags(html, "rect", className: "participation-bar") {
            bars["\(bar["data-round"] ?? "?")/\(bar["data-kind"] ?? "?")"] = Int(bar["data-count"] ?? "")
        }
        XCTAssertEqual(bars["1/participated"], 3)
        XCTAssertEqual(bars["1/declined"], 1)
        XCTAssertEqual(bars["1/silent"], 1)
        XCTAssertEqual(bars["2/dropped"], 1)
        XCTAssertEqual(bars["3/participated"], nil)
        XCTAssertEqual(bars["3/dropped"], 1)
        XCTAssertEqual(bars["3/silent"], 1)
        let table = ReportFixtures.rows(html, table: "participation-table")
        XCTAssertEqual(table.count, records.count)
        XCTAssertTrue(table[0].cells["declined"]?.contains("budget &amp; more") ?? false, "\(table[0].cells)")
        XCTAssertTrue(table[1].cells["dropped"]?.contains("timed out &lt;after 60 s&gt;") ?? false, "\(table[1].cells)")
    }

    func testCanaryExposureAppearsPerRoundForTheClientsThatReportIt() throws {
        var records = ReportFixtures.records()
        XCTAssertFalse(render(records).contains("id=\"exposure\""), "no section when no client plants canaries")
        let first = CanaryExposureSummary(canaries: 5, repetitions: 4, meanBits: 1.4375, maxBits: 3.1, spaceSize: 1000,
                                          exact: true, candidatesScored: 999, seconds: 2)
        let later = CanaryExposureSummary(canaries: 5, repetitions: 4, meanBits: 6.25, maxBits: 9.5, spaceSize: 10_000_000,
                                          exact: false, candidatesScored: 500, seconds: 9)
        records[0].clients[0].canaryExposure = first
        records[3].clients[0].canaryExposure = later
        let html = render(records)
        ReportFixtures.assertSelfContained(html)
        let rows = ReportFixtures.rows(html, table: "exposure-table")
        XCTAssertEqual(rows.map { $0.attributes["data-round"] }, ["1", "4"])
        XCTAssertEqual(rows.map { $0.attributes["data-client"] }, ["alpha", "alpha"])
        XCTAssertEqual(rows.map { $0.cells["exposure-mean"] }, ["1.44", "6.25"])
        XCTAssertEqual(rows.map { $0.cells["exposure-max"] }, ["3.10", "9.50"])
        XCTAssertEqual(rows.map { $0.cells["method"] }, ["exact", "estimated from 500 candidates"])
        XCTAssertEqual(rows.first?.cells["space"], "1000 (9.97)")
        XCTAssertTrue(AuditReport.problems(AuditReportInput(records: records, chain: .verified(records: 4, publicKey: ""))).isEmpty)

        // An impossible figure (above log2 |R|) is stated at the top.
        records[0].clients[0].canaryExposure?.maxBits = 12
        let problems = AuditReport.problems(AuditReportInput(records: records, chain: .verified(records: 4, publicKey: "")))
        XCTAssertEqual(problems.count, 1)
        XCTAssertTrue(problems.first?.contains("canary exposure") ?? false, "\(problems)")
    }

    func testHostileClientIdsAndReasonsAreEscaped() throws {
        let html = render()
        XCTAssertFalse(html.contains("<script"), "a client id became markup")
        XCTAssertFalse(html.contains("<img"), "a reason became markup")
        XCTAssertFalse(html.contains("<after"))
        XCTAssertTrue(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"))
        XCTAssertTrue(html.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"))
        XCTAssertEqual(HTML.escape("a\u{0}b<"), "a\u{FFFD}b&lt;")
        // The only elements are the ones the report writes.
        let allowed: Set<String> = ["html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "p", "code",
                                    "section", "strong", "ul", "li", "dl", "dt", "dd", "span", "div", "svg", "line", "text",
                                    "polyline", "circle", "rect", "table", "thead", "tbody", "tr", "th", "td", "br", "small",
                                    "b", "footer"]
        let regex = try NSRegularExpression(pattern: "<([a-zA-Z][a-zA-Z0-9]*)")
        let names = Set(regex.matches(in: html, range: NSRange(html.startIndex..., in: html)).map {
            String(html[Range($0.range(at: 1), in: html)!]).lowercased()
        })
        XCTAssertEqual(names.subtracting(allowed), [])
    }

    func testManyRoundsThinTheLabelsAndAForgedRoundNumberStillRenders() {
        let records = (1...30).map { round in
            ReportFixtures.committed(UInt64(round), [ReportFixtures.metrics("alpha", epsilon: 0.25 * Double(round), budget: 10,
                                                                            before: 2, after: 1.9)])
        }
        let html = render(records)
        XCTAssertEqual(ReportFixtures.tags(html, "circle", className: "eps-point").count, 30)
        let labels = ReportFixtures.texts(html, "text", className: "eps-label")
        XCTAssertLessThanOrEqual(labels.count, 12)
        XCTAssertEqual(labels.last?.attributes["data-round"], "30")
        XCTAssertEqual(labels.last?.text, "7.50")

        let forged = [records[0], ReportFixtures.committed(UInt64.max, [ReportFixtures.metrics("alpha", epsilon: 1, before: 2, after: 1.9)])]
        let page = render(forged)
        XCTAssertEqual(AuditReport.missingRounds(forged), [2...(UInt64.max - 1)])
        XCTAssertTrue(page.contains("Rounds 2–18446744073709551614 are missing from the log"))
        ReportFixtures.assertSelfContained(page)

        // Figures a forged log may carry: released sums at the ends of Int64 that overflow when summed, an ε
        // near the largest Double.
        var extreme = records[0]
        extreme.clients = [ReportFixtures.metrics("a", epsilon: 1e308, budget: 1e308, before: 1, after: 1),
                           ReportFixtures.metrics("b", epsilon: 0, budget: 1, before: 0, after: 0)]
        extreme.clients[0].heldOut = HeldOutRelease(lossBefore: .max, lossAfter: .min, count: .max, lossClip: 1e300,
                                                    noiseMultiplier: 1e300)
        extreme.clients[1].heldOut = HeldOutRelease(lossBefore: .min, lossAfter: .max, count: .max, lossClip: 6, noiseMultiplier: 5)
        extreme.plan.steps = Int.max
        extreme.finished = extreme.started.addingTimeInterval(1e11)
        ReportFixtures.assertSelfContained(render([extreme]))
    }

    // MARK: State directories, good and bad

    func testGoodStateDirectoryHasAGreenBannerAndTheAdapterShape() throws {
        try ReportFixtures.makeState(at: directory)
        let input = AuditReport.load(stateDirectory: directory)
        XCTAssertEqual(AuditReport.problems(input), [])
        XCTAssertTrue(input.chain.isVerified)
        XCTAssertEqual(input.records.count, 4)
        let adapter = try XCTUnwrap(input.adapter)
        XCTAssertEqual(adapter.rank, 8)
        XCTAssertEqual(adapter.alpha, 16)
        XCTAssertEqual(adapter.targets, ["q_proj", "v_proj"])
        XCTAssertEqual(adapter.baseModel, "SmolLM2-135M-Instruct.Q4_1.gguf")
        XCTAssertEqual(adapter.parameterCount, 64)
        XCTAssertEqual(adapter.round, 4)
        let html = AuditReport.html(input)
        let banner = try XCTUnwrap(ReportFixtures.banner(html))
        XCTAssertEqual(banner.attributes["class"], "banner ok")
        XCTAssertEqual(banner.attributes["data-verified"], "true")
        XCTAssertTrue(banner.text.contains("Audit chain verified: 4 records"), banner.text)
        XCTAssertTrue(html.contains("<code>SmolLM2-135M-Instruct.Q4_1.gguf</code>"))
        XCTAssertTrue(html.contains("clinics &lt;&amp;&gt;"))
    }

    /// The demo's public probe kept in the state directory shows as its own section, escaped; without the file there
    /// is no section (control), and a file that does not decode is a problem named at the top, not a crash.
    func testPublicProbeIsShownWhenTheStateKeepsOne() throws {
        try ReportFixtures.makeState(at: directory)
        XCTAssertNil(AuditReport.load(stateDirectory: directory).probe)
        XCTAssertFalse(AuditReport.html(AuditReport.load(stateDirectory: directory)).contains("id=\"probe\""), "control: no probe")
        let probe = PublicProbe(adapterRound: 4, notes: [
            PublicProbe.Note(title: "Heart Center Outpatient Note (cardiology, public)", prompt: "CC: dyspnea\nAssessment:",
                             reference: "Heart failure <HFrEF>", before: "The patient is a", after: "Heart failure with reduced EF"),
        ])
        let file = directory.appendingPathComponent(PublicProbe.fileName)
        try JSONEncoder().encode(probe).write(to: file)
        let input = AuditReport.load(stateDirectory: directory)
        XCTAssertEqual(input.probe, probe)
        XCTAssertEqual(AuditReport.problems(input), [])
        let html = AuditReport.html(input)
        XCTAssertTrue(html.contains("id=\"probe\""))
        XCTAssertTrue(html.contains("global adapter of round 4"))
        XCTAssertTrue(html.contains("<td data-field=\"probe-before\">The patient is a</td>"), html)
        XCTAssertTrue(html.contains("<td data-field=\"probe-after\">Heart failure with reduced EF</td>"))
        XCTAssertTrue(html.contains("Heart failure &lt;HFrEF&gt;"))
        ReportFixtures.assertSelfContained(html)

        XCTAssertFalse(html.contains("probe-held-out"), "control: a probe without the public held-out loss shows none")

        var measured = probe
        measured.heldOut = PublicProbe.HeldOutLoss(notes: 30, tokens: 1234, lossBefore: 4.5, lossAfter: 3.96)
        try JSONEncoder().encode(measured).write(to: file)
        let withLoss = AuditReport.load(stateDirectory: directory)
        XCTAssertEqual(withLoss.probe, measured)
        XCTAssertTrue(AuditReport.html(withLoss).contains("<p data-field=\"probe-held-out\">Held-out loss on 30 public notes of the "
                                                          + "same kind (1234 assessment tokens; exact: public data, no noise "
                                                          + "needed): 4.5000 with the base model, 3.9600 with the global adapter "
                                                          + "(-12.0%).</p>"), AuditReport.html(withLoss))

        try Data("{\"notes\": 3}".utf8).write(to: file)
        let broken = AuditReport.load(stateDirectory: directory)
        XCTAssertNil(broken.probe)
        XCTAssertTrue(AuditReport.problems(broken).contains { $0.contains("Public probe unavailable") && $0.contains(PublicProbe.fileName) },
                      "\(AuditReport.problems(broken))")
    }

    func assertBadBanner(_ html: String, verified: Bool, mentions phrases: [String],
                         file: StaticString = #filePath, line: UInt = #line) {
        guard let banner = ReportFixtures.banner(html, file: file, line: line) else { return }
        XCTAssertEqual(banner.attributes["class"], "banner bad", file: file, line: line)
        XCTAssertEqual(banner.attributes["data-verified"], String(verified), file: file, line: line)
        for phrase in phrases {
            XCTAssertTrue(banner.text.contains(phrase), "banner lacks '\(phrase)': \(banner.text)", file: file, line: line)
        }
    }

    func testMissingLogSaysSoAtTheTop() throws {
        try ReportFixtures.makeState(at: directory)
        try FileManager.default.removeItem(at: CoordinatorPaths(root: directory).auditLog)
        let html = AuditReport.html(AuditReport.load(stateDirectory: directory))
        assertBadBanner(html, verified: true, mentions: ["No audit log", "audit.jsonl does not exist"])
        XCTAssertTrue(html.contains("no rounds recorded"))
    }

    func testMissingRoundsAreNamedAtTheTopAndInTheTable() throws {
        var records = ReportFixtures.records()
        records.remove(at: 1)
        records.append(ReportFixtures.committed(7, [ReportFixtures.metrics("alpha", epsilon: 4, before: 1.8, after: 1.7)]))
        try ReportFixtures.makeState(at: directory, records: records)
        let input = AuditReport.load(stateDirectory: directory)
        XCTAssertTrue(input.chain.isVerified, "the log itself is a valid chain: rounds only increase")
        XCTAssertEqual(AuditReport.missingRounds(input.records), [2...2, 5...6])
        let html = AuditReport.html(input)
        assertBadBanner(html, verified: true, mentions: ["Rounds 2, 5–6 are missing from the log"])
        let rows = ReportFixtures.rows(html, table: "rounds-table")
        XCTAssertEqual(rows.map { $0.attributes["data-round"] ?? "" }, ["1", "2", "3", "4", "5–6", "7"])
        XCTAssertEqual(rows.filter { $0.attributes["data-status"] == "missing" }.count, 2)
    }

    func testTamperedLogSaysFailedAtTheRecord() throws {
        try ReportFixtures.makeState(at: directory)
        let log = CoordinatorPaths(root: directory).auditLog
        var text = try String(contentsOf: log, encoding: .utf8)
        // Round 2's alpha ε 2.0049 becomes 0.0049: a one-byte change in the second line.
        let range = try XCTUnwrap(text.range(of: "\"epsilon\":2.0049"))
        text.replaceSubrange(range, with: "\"epsilon\":0.0049")
        try text.write(to: log, atomically: true, encoding: .utf8)
        let input = AuditReport.load(stateDirectory: directory)
        XCTAssertEqual(input.chain, .failed(record: 2, reason: "signature does not verify under key "
                                            + (try String(contentsOf: CoordinatorPaths(root: directory).signingPublicKey, encoding: .utf8))
                                                .trimmingCharacters(in: .whitespacesAndNewlines)))
        let html = AuditReport.html(input)
        assertBadBanner(html, verified: false, mentions: ["Audit chain FAILED at record 2: signature does not verify"])
        // The records are still shown, as read (the tampered figure included, flagged by the banner).
        XCTAssertEqual(ReportFixtures.rows(html, table: "rounds-table").count, 4)
    }

    func testDeletedLineBreaksTheChainAndLeavesAGap() throws {
        try ReportFixtures.makeState(at: directory)
        let log = CoordinatorPaths(root: directory).auditLog
        var lines = try String(contentsOf: log, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        lines.remove(at: 1)
        try lines.joined(separator: "\n").write(to: log, atomically: true, encoding: .utf8)
        let html = AuditReport.html(AuditReport.load(stateDirectory: directory))
        assertBadBanner(html, verified: false, mentions: ["FAILED at record 2", "previous_hash", "Round 2 is missing"])
    }

    func testMissingOrUnreadableKeyStillShowsTheRecordsUnverified() throws {
        try ReportFixtures.makeState(at: directory)
        let paths = CoordinatorPaths(root: directory)
        try FileManager.default.removeItem(at: paths.signingPublicKey)
        try FileManager.default.removeItem(at: paths.signingKey)
        var input = AuditReport.load(stateDirectory: directory)
        XCTAssertEqual(input.records.count, 4)
        var html = AuditReport.html(input)
        assertBadBanner(html, verified: false, mentions: ["Audit chain NOT VERIFIED", "no usable signing key", "Signatures not checked"])
        XCTAssertEqual(ReportFixtures.rows(html, table: "rounds-table").count, 4)
        XCTAssertEqual(AuditReport.problems(input).count, 1, "the links are intact: only the missing key is a problem")

        // Without a key the links are still checked: an edited line breaks the next record's previous_hash.
        var text = try String(contentsOf: paths.auditLog, encoding: .utf8)
        text.replaceSubrange(try XCTUnwrap(text.range(of: "\"epsilon\":2.0049")), with: "\"epsilon\":0.0049")
        try (text + "{\"record\":garbage}\n").write(to: paths.auditLog, atomically: true, encoding: .utf8)
        html = AuditReport.html(AuditReport.load(stateDirectory: directory))
        assertBadBanner(html, verified: false, mentions: ["1 of the log&#39;s 5 lines could not be read as records"])
        try text.write(to: paths.auditLog, atomically: true, encoding: .utf8)
        html = AuditReport.html(AuditReport.load(stateDirectory: directory))
        assertBadBanner(html, verified: false, mentions: ["Round 3&#39;s previous_hash is not the hash of the line before it"])

        try Data("not a key\n".utf8).write(to: paths.signingPublicKey)
        input = AuditReport.load(stateDirectory: directory)
        XCTAssertEqual(input.records.count, 4)
        html = AuditReport.html(input)
        assertBadBanner(html, verified: false, mentions: ["NOT VERIFIED", "signing.pub", "lower-case hex digits"])
    }

    func testAdapterThatDoesNotMatchItsRecordIsAProblem() throws {
        try ReportFixtures.makeState(at: directory)
        let weights = CoordinatorPaths(root: directory).adapter(round: 4).appendingPathComponent("adapter_model.safetensors")
        var bytes = Array(try Data(contentsOf: weights))
        bytes[bytes.count - 1] ^= 1
        try Data(bytes).write(to: weights)
        let input = AuditReport.load(stateDirectory: directory)
        XCTAssertNil(input.adapter)
        let html = AuditReport.html(input)
        assertBadBanner(html, verified: true, mentions: ["Adapter of round 4 unavailable", "has sha256"])
        // The shape still comes from the plan.
        XCTAssertTrue(html.contains("the training plan of round 4"))
    }

    func testInconsistentRecordsAreProblems() {
        var records = ReportFixtures.records()
        records[2].status = "commitxed"
        records[0].maxEpsilon = 9
        records[3].clients[1].epsilon = 8.5
        records[3].participants = ["alpha"]
        let problems = AuditReport.problems(AuditReportInput(records: records, chain: .unchecked(reason: "test")))
        XCTAssertTrue(problems.contains { $0.contains("Round 1: max_epsilon 9 is not the largest client ε 1.234") }, "\(problems)")
        XCTAssertTrue(problems.contains { $0.contains("Round 4: client beta's cumulative ε 8.50 exceeds its budget 8.00") }, "\(problems)")
        XCTAssertTrue(problems.contains { $0.contains("Round 3 has the unknown status 'commitxed'") }, "\(problems)")
        XCTAssertTrue(problems.contains { $0.contains("Round 4: the participants (alpha) are not the clients with metrics") }, "\(problems)")
    }

    func testEmptyLogAndNoStateStillRender() throws {
        let html = AuditReport.html(AuditReport.load(stateDirectory: directory))
        assertBadBanner(html, verified: false, mentions: ["Settings unavailable", "No audit log", "no usable signing key"])
        ReportFixtures.assertSelfContained(html)
    }

    /// Issue 13: the held-out figures are labelled as DP releases with their standard error; a record
    /// of the first format (figures sent in clear) still renders, marked "clear", with its exact counts.
    func testReleasedAndClearLossesAreLabelledAsSuch() throws {
        let released = ReportFixtures.records()
        let html = render(released)
        XCTAssertTrue(html.contains("Held-out loss per round (DP-released)"))
        XCTAssertFalse(html.contains("(clear)"), "no record of these is of the old format")
        let first = try XCTUnwrap(released.first)
        XCTAssertTrue(first.metricsReleased)
        XCTAssertTrue(AuditTable.text(released).contains(String(format: "± %.4f (DP)", try XCTUnwrap(first.evalLossStandardError))))
        // The same round as an old record: clear figures, exact counts, labelled so.
        var old = first
        old.clients = [ReportFixtures.clearMetrics("alpha", epsilon: 1.234, before: 2.5, after: 2.0, tokens: 4000)]
        old.evalLossBefore = 2.5
        old.evalLossAfter = 2.0
        old.evalLossStandardError = nil
        XCTAssertFalse(old.metricsReleased)
        let oldHTML = render([old])
        let row = try XCTUnwrap(ReportFixtures.rows(oldHTML, table: "loss-table").first)
        XCTAssertEqual(row.cells["loss-se"], "clear")
        XCTAssertEqual(row.cells["records"], "100 (clear)")
        XCTAssertTrue(AuditTable.text([old]).contains("2.5000 → 2.0000 (clear)"), AuditTable.text([old]))
        XCTAssertEqual(RoundSummary(old).lossLabel, "sent in clear")
        XCTAssertEqual(RoundSummary(first).lossLabel, String(format: "DP-released, ± %.4f", first.evalLossStandardError ?? 0))
    }
}

/// A client's ledger page.
final class LedgerReportTests: XCTestCase {
    func testLedgerPageMatchesTheLedger() throws {
        let directory = try Fixtures.temporaryDirectory("conclave-ledger-report")
        defer { try? FileManager.default.removeItem(at: directory) }
        var ledger = try PrivacyLedger(directory: directory, creatingWith: PrivacyBudget(epsilon: 6, delta: 1e-5, accountant: .rdp))
        try ledger.charge(purpose: "round:1 <b>", samplingRate: 0.05, noiseMultiplier: 1.1, clipNorm: 1, steps: 40)
        try ledger.charge(purpose: "round:2", samplingRate: 0.05, noiseMultiplier: 1.1, clipNorm: 1, steps: 40)
        let html = LedgerReport.html(budget: ledger.budget, entries: ledger.entries, ledgerPath: ledger.fileURL.path)
        ReportFixtures.assertSelfContained(html)
        XCTAssertFalse(html.contains("<b>"))
        XCTAssertTrue(html.contains("round:1 &lt;b&gt;"))
        let points = ReportFixtures.tags(html, "circle", className: "eps-point")
        XCTAssertEqual(points.map { Double($0["data-epsilon"] ?? "") }, ledger.entries.map(\.cumulativeEpsilon))
        let rows = ReportFixtures.rows(html, table: "entries-table")
        XCTAssertEqual(rows.map { $0.cells["epsilon"] }, ledger.entries.map { String(format: "%.2f", $0.cumulativeEpsilon) })
        XCTAssertEqual(rows.map { $0.cells["steps"] }, ["40", "40"])
        XCTAssertEqual(ReportFixtures.tags(html, "line", className: "budget").first?["data-budget"], "6.0")
        XCTAssertTrue(html.contains("<span data-field=\"budget\">6.00</span>"))
        XCTAssertTrue(html.contains("class=\"banner ok\""))
    }

    /// A run without privacy (issue 13) reads as ε ∞ on the page, not as a blank: the auditor sees that
    /// the ledger is spent. Its point is left off the plot (it has no height), the others stay.
    func testARunWithoutPrivacyShowsInfiniteEpsilon() throws {
        let directory = try Fixtures.temporaryDirectory("conclave-ledger-report-infinite")
        defer { try? FileManager.default.removeItem(at: directory) }
        var ledger = try PrivacyLedger(directory: directory, creatingWith: PrivacyBudget(epsilon: 6, delta: 1e-5, accountant: .rdp))
        try ledger.charge(purpose: "round:1", samplingRate: 0.05, noiseMultiplier: 1.1, clipNorm: 1, steps: 40)
        try ledger.charge(.nonPrivate(samplingRate: 0.05, steps: 40), clipNorm: 0, purpose: "round:2")
        let html = LedgerReport.html(budget: ledger.budget, entries: ledger.entries, ledgerPath: ledger.fileURL.path)
        let rows = ReportFixtures.rows(html, table: "entries-table")
        XCTAssertEqual(rows.map { $0.cells["epsilon"] }, [String(format: "%.2f", ledger.entries[0].cumulativeEpsilon), "∞"])
        XCTAssertEqual(ReportFixtures.tags(html, "circle", className: "eps-point").count, 1)
        XCTAssertFalse(html.contains("nan"))
    }
}
