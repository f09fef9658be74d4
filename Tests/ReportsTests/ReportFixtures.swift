import Audit
import Foundation
import ModelFormats
import Reports
import SecureCrypto
import SystemIO
import Wire
import XCTest

/// Audit records, state directories and HTML parsing shared by the report tests.
enum ReportFixtures {
    static let hostileClient = #"<script>alert("x")</script>&'"#
    static let hostileReason = #""><img src=x onerror=alert(1)> budget & more"#

    static func plan(rank: Int = 8) -> TrainingPlan {
        TrainingPlan(steps: 30, learningRate: 0.002, samplingRate: 0.04, noiseMultiplier: 1.2, clipNorm: 1,
                     delta: 1e-5, maxLength: 128, rank: rank, alpha: 16, targets: ["q_proj", "v_proj"])
    }

    /// A client's figures with the release a split of `tokens / 10` records of mean losses `before` and
    /// `after` gives without noise (the report only reads releases).
    static func metrics(_ client: String, epsilon: Double, budget: Double = 10, before: Double, after: Double,
                        tokens: Int = 1000) -> ClientRoundMetrics {
        let records = Double(tokens / 10), s = Double(HeldOutRelease.gridScale)
        return ClientRoundMetrics(client: client, epsilon: epsilon, delta: 1e-5, epsilonBudget: budget,
                                  heldOut: HeldOutRelease(lossBefore: Int64((records * s * before / 6).rounded()),
                                                          lossAfter: Int64((records * s * after / 6).rounded()),
                                                          count: Int64(records * s), lossClip: 6, noiseMultiplier: 5))
    }

    /// A client's figures as a record of the first format holds them (sent in clear).
    static func clearMetrics(_ client: String, epsilon: Double, before: Double, after: Double, tokens: Int) -> ClientRoundMetrics {
        ClientRoundMetrics(client: client, epsilon: epsilon, delta: 1e-5, epsilonBudget: 10,
                           clearFigures: ClearClientFigures(examples: 100, evalLossBefore: before, evalLossAfter: after,
                                                            evalTokens: tokens, trainLoss: 2.5, seconds: 30))
    }

    /// Round `round`, committed, with `clients`' figures; max ε and weighted losses computed from them.
    static func committed(_ round: UInt64, _ clients: [ClientRoundMetrics], cohort extra: [String] = [],
                          declines: [ClientReason] = [], dropouts: [ClientReason] = [], sha: String? = nil) -> AuditRecord {
        let released = ReleasedLoss(clients.compactMap(\.heldOut))
        let started = Date(timeIntervalSince1970: 1_750_000_000 + Double(round) * 600)
        return AuditRecord(
            status: "committed", round: round, started: started, finished: started + 185,
            cohort: clients.map(\.client) + declines.map(\.client) + dropouts.map(\.client) + extra,
            participants: clients.map(\.client), declines: declines, dropouts: dropouts, aggregation: "fedavg",
            secureAggregation: round % 2 == 0, plan: plan(), clients: clients, maxEpsilon: clients.map(\.epsilon).max(),
            evalLossBefore: released?.before, evalLossAfter: released?.after, evalLossStandardError: released?.standardError,
            adapterSHA256: sha ?? String(format: "%064x", round), abortReason: nil, previousHash: "")
    }

    static func aborted(_ round: UInt64, sha: String = String(repeating: "a", count: 64)) -> AuditRecord {
        let started = Date(timeIntervalSince1970: 1_750_000_000 + Double(round) * 600)
        return AuditRecord(status: "aborted", round: round, started: started, finished: started + 12.25,
                           cohort: ["alpha", "beta"], participants: [], declines: [],
                           dropouts: [ClientReason(client: "beta", reason: "connection lost")], aggregation: "fedavg",
                           secureAggregation: true, plan: plan(), clients: [], maxEpsilon: nil, evalLossBefore: nil,
                           evalLossAfter: nil, adapterSHA256: sha, abortReason: "too few participants: 1 < 2",
                           previousHash: "")
    }

    /// Four rounds: three clients (one hostile id), a decline and a dropout with hostile reasons, an aborted round.
    static func records() -> [AuditRecord] {
        [
            committed(1, [metrics("alpha", epsilon: 1.234, before: 2.5, after: 2.0, tokens: 4000),
                          metrics("beta", epsilon: 0.5, budget: 8, before: 3.0, after: 2.5),
                          metrics(hostileClient, epsilon: 0.875, before: 2.75, after: 2.25, tokens: 500)],
                      cohort: ["delta"], declines: [ClientReason(client: "gamma", reason: hostileReason)]),
            committed(2, [metrics("alpha", epsilon: 2.0049, before: 2.1, after: 1.9, tokens: 4000),
                          metrics(hostileClient, epsilon: 1.5, before: 2.3, after: 2.05, tokens: 500)],
                      dropouts: [ClientReason(client: "beta", reason: "timed out <after 60 s>")]),
            aborted(3),
            committed(4, [metrics("alpha", epsilon: 3.3351, before: 1.95, after: 1.8, tokens: 4000),
                          metrics("beta", epsilon: 1.01, budget: 8, before: 2.5, after: 2.4)]),
        ]
    }

    /// A coordinator state directory: settings, signing key and signing.pub, the log of `records`, and
    /// the last committed round's adapter whose sha256 the record carries.
    @discardableResult
    static func makeState(at directory: URL, records: [AuditRecord] = records()) throws -> SigningKeyPair {
        let paths = CoordinatorPaths(root: directory)
        let signer = SigningKeyPair()
        try signer.writeSecretKeyFile(path: paths.signingKey.path)
        try AuditLog.writePublicKey(signer.publicKey, to: paths.signingPublicKey)
        try CoordinatorSettings(name: "clinics <&>", host: "127.0.0.1", port: 7443, nextSerial: 3).save(to: paths.settings)
        let lastCommitted = records.last { $0.status == "committed" }?.round
        let log = AuditLog(paths: paths)
        for var record in records {
            if record.round == lastCommitted {
                let adapter = paths.adapter(round: record.round)
                let a = AdapterTensor(shape: [8, 4], values: (0..<32).map { Float($0) / 32 })
                let b = AdapterTensor(shape: [4, 8], values: [Float](repeating: 0, count: 32))
                try PEFTAdapter.write(rank: 8, alpha: 16, targetModules: ["v_proj", "q_proj"],
                                      tensors: ["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": a,
                                                "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": b],
                                      to: adapter, baseModel: "SmolLM2-135M-Instruct.Q4_1.gguf")
                let weights = try Data(contentsOf: adapter.appendingPathComponent("adapter_model.safetensors"))
                record.adapterSHA256 = Hex.encode(Hash.sha256(Array(weights)))
            }
            try log.append(record, signer: signer)
        }
        return signer
    }

    // MARK: Parsing the page back

    /// Every start tag `<tag ...>` whose class list contains `className` (or any, when nil), as attribute dictionaries.
    static func tags(_ html: String, _ tag: String, className: String? = nil) -> [[String: String]] {
        let pattern = "<\(tag)\\b([^>]*)>"
        let regex = try! NSRegularExpression(pattern: pattern)
        return regex.matches(in: html, range: NSRange(html.startIndex..., in: html)).compactMap { match in
            let attributes = attributesOf(String(html[Range(match.range(at: 1), in: html)!]))
            if let className, !(attributes["class"] ?? "").split(separator: " ").contains(Substring(className)) { return nil }
            return attributes
        }
    }

    static func attributesOf(_ text: String) -> [String: String] {
        let regex = try! NSRegularExpression(pattern: #"([a-zA-Z-]+)="([^"]*)""#)
        var out: [String: String] = [:]
        for match in regex.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
            out[String(text[Range(match.range(at: 1), in: text)!])] = String(text[Range(match.range(at: 2), in: text)!])
        }
        return out
    }

    /// The text of every `<tag class="className" ...>text</tag>`, keyed by the tag's attributes.
    static func texts(_ html: String, _ tag: String, className: String) -> [(attributes: [String: String], text: String)] {
        let regex = try! NSRegularExpression(pattern: "<\(tag)\\b([^>]*class=\"\(className)\"[^>]*)>([^<]*)</\(tag)>")
        return regex.matches(in: html, range: NSRange(html.startIndex..., in: html)).map { match in
            (attributesOf(String(html[Range(match.range(at: 1), in: html)!])), String(html[Range(match.range(at: 2), in: html)!]))
        }
    }

    /// The rows of the table with `id`: each row's attributes and its cells' text by `data-field`.
    static func rows(_ html: String, table id: String) -> [(attributes: [String: String], cells: [String: String])] {
        guard let start = html.range(of: "<table id=\"\(id)\""),
              let end = html.range(of: "</table>", range: start.upperBound..<html.endIndex) else { return [] }
        let table = String(html[start.lowerBound..<end.upperBound])
        let rowRegex = try! NSRegularExpression(pattern: #"<tr\b([^>]*)>(.*?)</tr>"#)
        let cellRegex = try! NSRegularExpression(pattern: #"<td\b([^>]*)>(.*?)</td>"#)
        return rowRegex.matches(in: table, range: NSRange(table.startIndex..., in: table)).compactMap { match in
            let attributes = attributesOf(String(table[Range(match.range(at: 1), in: table)!]))
            guard attributes["data-round"] != nil || attributes["data-entry"] != nil || attributes["data-client"] != nil else {
                return nil
            }
            let inner = String(table[Range(match.range(at: 2), in: table)!])
            var cells: [String: String] = [:]
            for cell in cellRegex.matches(in: inner, range: NSRange(inner.startIndex..., in: inner)) {
                if let field = attributesOf(String(inner[Range(cell.range(at: 1), in: inner)!]))["data-field"] {
                    cells[field] = String(inner[Range(cell.range(at: 2), in: inner)!])
                }
            }
            return (attributes, cells)
        }
    }

    /// Fails the test when the page refers to anything outside itself. Attributes are read inside
    /// start tags only: escaped text such as `&lt;img src=x&gt;` is not markup.
    static func assertSelfContained(_ html: String, file: StaticString = #filePath, line: UInt = #line) {
        let startTags = try! NSRegularExpression(pattern: #"<[a-zA-Z][^>]*>"#)
        let references = try! NSRegularExpression(pattern: #"\s(src|href|xlink:href|action|srcset|poster|data|formaction)\s*=\s*["']?([^"'\s>]*)"#,
                                                  options: [.caseInsensitive])
        for tag in startTags.matches(in: html, range: NSRange(html.startIndex..., in: html)) {
            let text = String(html[Range(tag.range, in: html)!])
            for match in references.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
                let value = String(text[Range(match.range(at: 2), in: text)!])
                XCTAssertTrue(value.hasPrefix("#"), "external reference \(value) in \(text)", file: file, line: line)
            }
        }
        let lower = html.lowercased()
        for forbidden in ["<script", "<link", "<img", "<iframe", "<object", "<embed", "@import", "url(http", "url(//",
                          "url(\"", "url('", "http://", "https://", "//fonts", "@font-face"] {
            XCTAssertFalse(lower.contains(forbidden), "the page contains \(forbidden)", file: file, line: line)
        }
        let urls = try! NSRegularExpression(pattern: #"url\(\s*([^)]*)\)"#, options: [.caseInsensitive])
        for match in urls.matches(in: html, range: NSRange(html.startIndex..., in: html)) {
            XCTAssertTrue(String(html[Range(match.range(at: 1), in: html)!]).hasPrefix("#"), "url() outside the page",
                          file: file, line: line)
        }
    }

    /// The verification banner: its attributes and its inner HTML; fails unless it comes before every section heading.
    static func banner(_ html: String, file: StaticString = #filePath, line: UInt = #line) -> (attributes: [String: String], text: String)? {
        guard let start = html.range(of: "<section class=\"banner"),
              let end = html.range(of: "</section>", range: start.upperBound..<html.endIndex) else {
            XCTFail("no banner", file: file, line: line)
            return nil
        }
        if let heading = html.range(of: "<h2") {
            XCTAssertLessThan(start.lowerBound, heading.lowerBound, "the banner is not at the top", file: file, line: line)
        }
        let tagEnd = html.range(of: ">", range: start.upperBound..<end.lowerBound)!
        let attributes = attributesOf(String(html[start.lowerBound..<tagEnd.lowerBound]))
        return (attributes, String(html[tagEnd.upperBound..<end.lowerBound]))
    }
}
