import Audit
import Foundation
import Wire

/// The auditor's report of a federation: one self-contained HTML page (inline CSS, charts as inline
/// SVG, no script, no external resource) answering, round by round, how much privacy each client has
/// spent under which parameters and what the model gained, with the audit chain's verification
/// result at the top.
///
/// Numbers that tests and tools read back carry `data-` attributes: rows of the rounds table are
/// `<tr data-round="N">` with cells `data-field="q|sigma|clip|steps|delta|max-epsilon|..."`; points of
/// the ε charts are `<circle class="eps-point" data-client data-round data-epsilon>` beside
/// `<text class="eps-label" data-client data-round>`; budget lines are `class="budget" data-budget`.
public enum AuditReport {
    /// Every problem the report states at the top: what could not be loaded, a failed or unchecked
    /// chain, rounds missing from the log, and figures within records that do not add up.
    public static func problems(_ input: AuditReportInput) -> [String] {
        var problems = chainProblem(input.chain).map { [$0] } ?? []
        problems += input.loadProblems
        let rounds = input.records.map(\.round)
        var seen = Set<UInt64>()
        let duplicates = Set(rounds.filter { !seen.insert($0).inserted })
        if !duplicates.isEmpty {
            problems.append("Round\(duplicates.count == 1 ? "" : "s") \(describe(duplicates.sorted().map { $0...$0 })) "
                            + "appear\(duplicates.count == 1 ? "s" : "") more than once in the log.")
        }
        let missing = missingRounds(input.records)
        if !missing.isEmpty {
            let single = missing.count == 1 && missing[0].lowerBound == missing[0].upperBound
            problems.append("Round\(single ? "" : "s") \(describe(missing)) \(single ? "is" : "are") missing from the log: "
                            + "rounds are numbered from 1 without gaps, so lines have been removed or could not be read.")
        }
        for record in input.records where record.status != "committed" && record.status != "aborted" {
            problems.append("Round \(record.round) has the unknown status '\(record.status)' (expected committed or aborted).")
        }
        for record in input.records where record.status == "committed" {
            let largest = record.clients.map(\.epsilon).max()
            if let stated = record.maxEpsilon, let largest, stated != largest {
                problems.append("Round \(record.round): max_epsilon \(HTML.general(stated)) is not the largest client ε "
                                + "\(HTML.general(largest)).")
            }
            let reported = Set(record.clients.map(\.client)), participants = Set(record.participants)
            if reported != participants {
                problems.append("Round \(record.round): the participants (\(participants.sorted().joined(separator: ", "))) "
                                + "are not the clients with metrics (\(reported.sorted().joined(separator: ", "))).")
            }
            for client in record.clients {
                if let problem = client.canaryExposure?.problem {
                    problems.append("Round \(record.round): client \(client.client)'s canary exposure is impossible: \(problem).")
                }
            }
            for client in record.clients where client.epsilon > client.epsilonBudget {
                problems.append("Round \(record.round): client \(client.client)'s cumulative ε \(HTML.fixed(client.epsilon, 2)) "
                                + "exceeds its budget \(HTML.fixed(client.epsilonBudget, 2)).")
            }
        }
        return problems
    }

    /// The chain's failure as one sentence, nil when it verified.
    static func chainProblem(_ chain: AuditChainStatus) -> String? {
        switch chain {
        case .verified: return nil
        case let .failed(record, reason):
            return "Audit chain FAILED at record \(record): \(reason). Records from line \(record) on are shown as read "
                + "and cannot be trusted."
        case let .unchecked(reason):
            return "Audit chain NOT VERIFIED: \(reason). Signatures not checked: the records are shown as read and "
                + "cannot be trusted."
        }
    }

    /// The runs of round numbers between 1 and the largest round in `records` that no record holds.
    public static func missingRounds(_ records: [AuditRecord]) -> [ClosedRange<UInt64>] {
        var gaps: [ClosedRange<UInt64>] = []
        var expected: UInt64 = 1
        for round in Set(records.map(\.round)).sorted() {
            if round > expected { gaps.append(expected...(round - 1)) }
            if round == UInt64.max { break }
            expected = max(expected, round + 1)
        }
        return gaps
    }

    /// Ids of every client the log names: invited, participating, declining or dropped, sorted.
    public static func clientIDs(_ records: [AuditRecord]) -> [String] {
        var ids = Set<String>()
        for record in records {
            ids.formUnion(record.cohort)
            ids.formUnion(record.participants)
            ids.formUnion(record.declines.map(\.client))
            ids.formUnion(record.dropouts.map(\.client))
            ids.formUnion(record.clients.map(\.client))
        }
        return ids.sorted()
    }

    /// The report as one self-contained HTML page.
    public static func html(_ input: AuditReportInput) -> String {
        let problems = problems(input)
        let name = input.settings?.name
        var body = "<header><h1>Conclave audit report\(name.map { " — " + HTML.escape($0) } ?? "")</h1>"
        var lede: [String] = []
        if let settings = input.settings {
            lede.append("coordinator \(HTML.escape(settings.host)):\(settings.port)")
        }
        if let source = input.source { lede.append("state <code>\(HTML.escape(source))</code>") }
        let rounds = input.records.map(\.round)
        if let first = rounds.min(), let last = rounds.max() {
            lede.append("\(input.records.count) record\(input.records.count == 1 ? "" : "s"), rounds \(first)–\(last)")
        } else {
            lede.append("no rounds recorded")
        }
        body += "<p class=\"lede\">\(lede.joined(separator: " · "))</p></header>\n"
        body += banner(input.chain, problems: problems)
        body += modelSection(input)
        body += privacySection(input.records)
        body += distributedSection(input.records)
        body += clientLevelSection(input.records)
        body += lossSection(input.records)
        body += accuracySection(input.records)
        body += probeSection(input.probe)
        body += exposureSection(input.records)
        body += participationSection(input.records)
        body += roundsSection(input.records)
        var footer = "Made by <code>conclave-coordinator report</code>"
        if let generated = input.generated { footer += " at \(HTML.date(generated))" }
        footer += ". The log is append-only and hash-chained: removing its last lines cannot be seen from the log "
            + "alone, so compare the record count (\(input.records.count)) with one kept elsewhere."
        body += "<footer>\(footer)</footer>"
        return HTML.page(title: "Conclave audit report" + (name.map { " — " + $0 } ?? ""), body: body)
    }

    // MARK: Sections

    static func banner(_ chain: AuditChainStatus, problems: [String]) -> String {
        let headline: String
        if case let .verified(records, key) = chain {
            headline = "Audit chain verified: \(records) record\(records == 1 ? "" : "s"), every signature valid under "
                + "key <code>\(HTML.escape(String(key.prefix(16))))…</code>, every link intact."
        } else {
            headline = HTML.escape(chainProblem(chain) ?? "")
        }
        // The chain's own sentence is the headline; the list holds the rest.
        let others = problems.filter { $0 != chainProblem(chain) }
        let ok = chain.isVerified && problems.isEmpty
        var html = "<section class=\"banner \(ok ? "ok" : "bad")\" id=\"verification\" data-verified=\"\(chain.isVerified)\" "
            + "data-problems=\"\(problems.count)\"><strong class=\"headline\">\(headline)</strong>"
        if !others.isEmpty {
            html += "<p>This report is incomplete or shows records that do not add up; it shows what could be read:</p><ul>"
            html += others.map { "<li class=\"problem\">\(HTML.escape($0))</li>" }.joined()
            html += "</ul>"
        }
        return html + "</section>\n"
    }

    static func modelSection(_ input: AuditReportInput) -> String {
        var html = "<section id=\"model\"><h2>Base model and adapter</h2>"
        let latestPlan = input.records.last?.plan
        var facts: [(String, String)] = []
        if let adapter = input.adapter {
            facts.append(("Base model", adapter.baseModel.map { "<code>\(HTML.escape($0))</code>" } ?? "not recorded in the adapter"))
            facts.append(("LoRA rank r", "<span data-field=\"rank\">\(adapter.rank)</span>"))
            facts.append(("LoRA alpha", "<span data-field=\"alpha\">\(HTML.general(adapter.alpha))</span> "
                          + "(scaling alpha / r = \(HTML.general(adapter.alpha / Double(adapter.rank))))"))
            facts.append(("Adapted projections", adapter.targets.map { "<code>\(HTML.escape($0))</code>" }.joined(separator: ", ")))
            facts.append(("Tensors", "\(adapter.tensorCount) (\(adapter.parameterCount) trainable parameters)"))
            facts.append(("Read from", "the global adapter of round \(adapter.round), its sha256 matching the audit record"))
        } else if let plan = latestPlan {
            facts.append(("Base model", "unknown (no committed adapter could be read)"))
            facts.append(("LoRA rank r", "<span data-field=\"rank\">\(plan.rank)</span>"))
            facts.append(("LoRA alpha", "<span data-field=\"alpha\">\(HTML.general(plan.alpha))</span>"))
            facts.append(("Adapted projections", plan.targets.map { "<code>\(HTML.escape($0))</code>" }.joined(separator: ", ")))
            facts.append(("Read from", "the training plan of round \(input.records.last?.round ?? 0)"))
        } else {
            html += "<p class=\"note\">No round and no adapter: nothing to describe.</p>"
        }
        if !facts.isEmpty {
            html += "<dl class=\"facts\">" + facts.map { "<dt>\($0.0)</dt><dd>\($0.1)</dd>" }.joined() + "</dl>"
        }
        let shapes = Set(input.records.map { "r \($0.plan.rank), alpha \(HTML.general($0.plan.alpha)), \($0.plan.targets.sorted().joined(separator: "+"))" })
        if shapes.count > 1 {
            html += "<p class=\"note\">The adapter shape changed between rounds: \(HTML.escape(shapes.sorted().joined(separator: "; "))).</p>"
        }
        return html + "</section>\n"
    }

    /// Per client: cumulative ε after each round it took part in, against its budget.
    static func privacySection(_ records: [AuditRecord]) -> String {
        var html = "<section id=\"privacy\"><h2>Privacy spent per client</h2>"
        html += "<p class=\"note\">Cumulative ε after each round, from each client's own ledger, against the budget it "
            + "reported (dashed). ε is stated at the δ shown under each chart.</p>"
        var perClient: [String: [(round: UInt64, metrics: ClientRoundMetrics)]] = [:]
        for record in records where record.status == "committed" {
            for metrics in record.clients { perClient[metrics.client, default: []].append((record.round, metrics)) }
        }
        guard !perClient.isEmpty else {
            return html + "<p class=\"note\">No committed round carries client figures.</p></section>\n"
        }
        let allRounds = records.map { Double($0.round) }
        html += "<div class=\"cards\">"
        for client in perClient.keys.sorted() {
            html += epsilonCard(client: client, points: perClient[client] ?? [], roundRange: allRounds)
        }
        html += "</div>"

        html += "<table id=\"privacy-summary\"><thead><tr><th>client</th><th>rounds taken part in</th><th>ε spent</th>"
            + "<th>budget</th><th>used</th><th>δ</th></tr></thead><tbody>"
        for client in perClient.keys.sorted() {
            guard let last = perClient[client]?.last else { continue }
            let used = last.metrics.epsilonBudget > 0 ? 100 * last.metrics.epsilon / last.metrics.epsilonBudget : .nan
            html += "<tr data-client=\"\(HTML.escape(client))\"><td>\(HTML.escape(client))</td>"
                + "<td class=\"num\">\(perClient[client]?.count ?? 0)</td>"
                + "<td class=\"num\" data-field=\"epsilon\">\(HTML.fixed(last.metrics.epsilon, 2))</td>"
                + "<td class=\"num\" data-field=\"budget\">\(HTML.fixed(last.metrics.epsilonBudget, 2))</td>"
                + "<td class=\"num\">\(HTML.fixed(used, 0))%</td>"
                + "<td class=\"num\" data-field=\"delta\">\(HTML.general(last.metrics.delta))</td></tr>"
        }
        return html + "</tbody></table></section>\n"
    }

    static func epsilonCard(client: String, points: [(round: UInt64, metrics: ClientRoundMetrics)], roundRange: [Double]) -> String {
        let epsilons = points.map(\.metrics.epsilon).filter(\.isFinite)
        let budgets = points.map(\.metrics.epsilonBudget).filter(\.isFinite)
        let top = max(epsilons.max() ?? 0, budgets.max() ?? 0) * 1.12
        let low = (roundRange.min() ?? 1) - 0.5, high = (roundRange.max() ?? 1) + 0.5
        let plot = SVGPlot(width: 340, height: 220, xDomain: low...high, yDomain: 0...max(top, 0.01))
        let escaped = HTML.escape(client)
        var svg = plot.open(label: "Cumulative epsilon of client \(client) by round",
                            attributes: " class=\"eps-chart\" data-client=\"\(escaped)\"")
        svg += plot.axes(xTicks: roundTicks(roundRange), yLabelDigits: top < 5 ? 1 : 0, xTitle: "round", yTitle: "cumulative ε")
        // The budget: one dashed line while it stays the same, a step line through each round's budget otherwise.
        if Set(budgets).count == 1, let budget = budgets.first {
            let y = plot.n(plot.y(budget))
            svg += "<line class=\"budget\" data-client=\"\(escaped)\" data-budget=\"\(HTML.exact(budget))\" "
                + "x1=\"\(plot.n(plot.left))\" y1=\"\(y)\" x2=\"\(plot.n(plot.plotRight))\" y2=\"\(y)\"/>"
            svg += "<text class=\"budget-label\" x=\"\(plot.n(plot.plotRight - 2))\" y=\"\(plot.n(plot.y(budget) - 5))\" "
                + "text-anchor=\"end\" fill=\"#b3261e\">budget \(HTML.fixed(budget, 2))</text>"
        } else {
            var steps: [(Double, Double)] = []
            for point in points where point.metrics.epsilonBudget.isFinite {
                let round = Double(point.round)
                steps.append((round - 0.5, point.metrics.epsilonBudget))
                steps.append((round + 0.5, point.metrics.epsilonBudget))
                svg += "<text class=\"budget-label\" x=\"\(plot.n(plot.x(round)))\" y=\"\(plot.n(plot.y(point.metrics.epsilonBudget) - 5))\" "
                    + "text-anchor=\"middle\" data-round=\"\(point.round)\" "
                    + "data-budget=\"\(HTML.exact(point.metrics.epsilonBudget))\">budget \(HTML.fixed(point.metrics.epsilonBudget, 2))</text>"
            }
            svg += plot.polyline(steps, stroke: "#b3261e", width: 1.5,
                                 attributes: " class=\"budget\" data-client=\"\(escaped)\" stroke-dasharray=\"6 4\"")
        }
        let finite = points.filter { $0.metrics.epsilon.isFinite }
        svg += plot.polyline(finite.map { (Double($0.round), $0.metrics.epsilon) }, stroke: "#1f6fd1")
        // Every point is labelled while the labels fit; beyond 12 points, every k-th and the last.
        let labelEvery = max(1, (finite.count + 11) / 12)
        for (index, point) in finite.enumerated() {
            let cx = plot.x(Double(point.round)), cy = plot.y(point.metrics.epsilon)
            svg += "<circle class=\"eps-point\" data-client=\"\(escaped)\" data-round=\"\(point.round)\" "
                + "data-epsilon=\"\(HTML.exact(point.metrics.epsilon))\" cx=\"\(plot.n(cx))\" cy=\"\(plot.n(cy))\" r=\"3.5\" fill=\"#1f6fd1\"/>"
            guard (finite.count - 1 - index) % labelEvery == 0 else { continue }
            svg += "<text class=\"eps-label\" data-client=\"\(escaped)\" data-round=\"\(point.round)\" x=\"\(plot.n(cx))\" "
                + "y=\"\(plot.n(cy - 8))\" text-anchor=\"middle\">\(HTML.fixed(point.metrics.epsilon, 2))</text>"
        }
        svg += "</svg>"
        let deltas = Set(points.map(\.metrics.delta)).sorted().map(HTML.general)
        let caption = "δ = \(deltas.joined(separator: ", "))" + (deltas.count > 1 ? " (δ changed between rounds)" : "")
        return "<div class=\"card\"><h3>\(escaped)</h3>\(svg)<div class=\"legend\" data-field=\"delta\">\(caption)</div></div>"
    }

    /// Held-out loss per round: the mean before and after over the participants' DP releases, and the
    /// spread across clients (old records: the token-weighted figures sent in clear, marked so).
    static func lossSection(_ records: [AuditRecord]) -> String {
        var html = "<section id=\"loss\"><h2>Held-out loss per round (DP-released)</h2>"
        let committed = records.filter { $0.status == "committed" && $0.evalLossBefore != nil && $0.evalLossAfter != nil }
        guard !committed.isEmpty else {
            return html + "<p class=\"note\">No committed round carries held-out losses.</p></section>\n"
        }
        html += "<p class=\"note\">Each client scores its own held-out split with the incoming global adapter (before) and "
            + "with the adapter it trained (after), clips each record's mean token loss to [0, L], and releases the sums and "
            + "the record count with discrete Gaussian noise, charged to its ledger (SECURITY.md, \"What a client sends\"). "
            + "Lines: the mean per record over the participants' releases, with the standard error of the noise; bars: the "
            + "range of the clients' own released means. Rounds recorded before releases existed show figures clients sent "
            + "in clear (token-weighted), marked \"clear\".</p>"
        var values: [Double] = []
        for record in committed {
            values += [record.evalLossBefore, record.evalLossAfter].compactMap { $0 }
            values += record.clients.flatMap { [$0.reportedLoss.before, $0.reportedLoss.after] }
        }
        values = values.filter(\.isFinite)
        let low = values.min() ?? 0, high = values.max() ?? 1
        let pad = max((high - low) * 0.1, 0.01)
        let roundValues = committed.map { Double($0.round) }
        let plot = SVGPlot(width: 760, height: 280, xDomain: ((roundValues.min() ?? 1) - 0.5)...((roundValues.max() ?? 1) + 0.5),
                           yDomain: (low - pad)...(high + pad), left: 60)
        var svg = plot.open(label: "Held-out loss per round, before and after", attributes: " id=\"loss-chart\"")
        svg += plot.axes(xTicks: roundTicks(roundValues), yLabelDigits: high - low < 0.5 ? 3 : 2, xTitle: "round",
                         yTitle: "held-out loss")
        for (kind, color, offset) in [("before", "#8a94a3", -0.12), ("after", "#1f6fd1", 0.12)] {
            for record in committed {
                let losses = record.clients.map { kind == "before" ? $0.reportedLoss.before : $0.reportedLoss.after }
                    .filter(\.isFinite)
                guard let minimum = losses.min(), let maximum = losses.max() else { continue }
                let x = plot.n(plot.x(Double(record.round) + offset))
                svg += "<line class=\"loss-band\" data-round=\"\(record.round)\" data-kind=\"\(kind)\" "
                    + "data-min=\"\(HTML.exact(minimum))\" data-max=\"\(HTML.exact(maximum))\" x1=\"\(x)\" "
                    + "y1=\"\(plot.n(plot.y(minimum) + (minimum == maximum ? 2 : 0)))\" x2=\"\(x)\" "
                    + "y2=\"\(plot.n(plot.y(maximum) - (minimum == maximum ? 2 : 0)))\" stroke=\"\(color)\" stroke-opacity=\"0.35\" "
                    + "stroke-width=\"10\" stroke-linecap=\"round\"/>"
            }
            let means = committed.compactMap { record -> (UInt64, Double)? in
                guard let value = kind == "before" ? record.evalLossBefore : record.evalLossAfter, value.isFinite else { return nil }
                return (record.round, value)
            }
            svg += plot.polyline(means.map { (Double($0.0) + offset, $0.1) }, stroke: color)
            for (round, value) in means {
                svg += "<circle class=\"loss-point\" data-round=\"\(round)\" data-kind=\"\(kind)\" data-loss=\"\(HTML.exact(value))\" "
                    + "cx=\"\(plot.n(plot.x(Double(round) + offset)))\" cy=\"\(plot.n(plot.y(value)))\" r=\"4\" fill=\"\(color)\"/>"
            }
        }
        svg += "</svg>"
        html += svg + "<div class=\"legend\"><span class=\"swatch\" style=\"background:#8a94a3\"></span>before the round "
            + "<span class=\"swatch\" style=\"background:#1f6fd1\"></span>after the round (client-trained adapters)</div>"

        html += "<table id=\"loss-table\"><thead><tr><th>round</th><th>mean before</th><th>mean after</th><th>change</th>"
            + "<th>standard error</th><th>clients before (min–max)</th><th>clients after (min–max)</th>"
            + "<th>held-out records (released)</th></tr></thead><tbody>"
        for record in committed {
            let before = record.evalLossBefore ?? .nan, after = record.evalLossAfter ?? .nan
            func spread(_ values: [Double]) -> String {
                guard let minimum = values.min(), let maximum = values.max() else { return "–" }
                return "\(HTML.fixed(minimum, 4)) – \(HTML.fixed(maximum, 4))"
            }
            html += "<tr data-round=\"\(record.round)\"><td class=\"num\">\(record.round)</td>"
                + "<td class=\"num\" data-field=\"loss-before\">\(HTML.fixed(before, 4))</td>"
                + "<td class=\"num\" data-field=\"loss-after\">\(HTML.fixed(after, 4))</td>"
                + "<td class=\"num\">\(HTML.fixed(after - before, 4))</td>"
                + "<td class=\"num\" data-field=\"loss-se\">"
                + (record.metricsReleased ? record.evalLossStandardError.map { "± " + HTML.fixed($0, 4) } ?? "–" : "clear") + "</td>"
                + "<td class=\"num\">\(spread(record.clients.map(\.reportedLoss.before).filter(\.isFinite)))</td>"
                + "<td class=\"num\">\(spread(record.clients.map(\.reportedLoss.after).filter(\.isFinite)))</td>"
                + "<td class=\"num\" data-field=\"records\">\(releasedRecords(record))</td></tr>"
        }
        return html + "</tbody></table></section>\n"
    }

    /// Canary exposure per round, for the clients that plant canaries; nothing when none does.
    ///
    /// Rows are `<tr data-round data-client>` with cells `data-field="exposure-mean|exposure-max|space|method"`.
    static func exposureSection(_ records: [AuditRecord]) -> String {
        let rows = records.filter { $0.status == "committed" }.flatMap { record in
            record.clients.compactMap { client in client.canaryExposure.map { (record.round, client.client, $0) } }
        }
        guard !rows.isEmpty else { return "" }
        var html = "<section id=\"exposure\"><h2>Canary exposure per round</h2>"
        html += "<p class=\"note\">Clients that plant secret canaries (Carlini et al. 2019) measure each one's exposure, "
            + "log<sub>2</sub>|R| − log<sub>2</sub> rank among all |R| candidate secrets, on the global adapter they received at the "
            + "start of the round, before training: round N measures the result of round N − 1, round 1 the initial adapter. "
            + "Chance is about 1.44 bits; a canary the model has memorised approaches log<sub>2</sub>|R|. Only this summary "
            + "leaves the client; the secrets do not.</p>"
        html += "<table id=\"exposure-table\"><thead><tr><th>round</th><th>client</th><th>canaries × repetitions</th>"
            + "<th>mean exposure (bits)</th><th>max exposure (bits)</th><th>|R| (log<sub>2</sub>)</th><th>method</th></tr></thead><tbody>"
        for (round, client, exposure) in rows {
            let method = exposure.exact ? "exact" : "estimated from \(exposure.candidatesScored) candidates"
            html += "<tr data-round=\"\(round)\" data-client=\"\(HTML.escape(client))\"><td class=\"num\">\(round)</td>"
                + "<td>\(HTML.escape(client))</td>"
                + "<td class=\"num\">\(exposure.canaries) × \(exposure.repetitions)</td>"
                + "<td class=\"num\" data-field=\"exposure-mean\">\(HTML.fixed(exposure.meanBits, 2))</td>"
                + "<td class=\"num\" data-field=\"exposure-max\">\(HTML.fixed(exposure.maxBits, 2))</td>"
                + "<td class=\"num\" data-field=\"space\">\(exposure.spaceSize) (\(HTML.fixed(log2(Double(exposure.spaceSize)), 2)))</td>"
                + "<td data-field=\"method\">\(method)</td></tr>"
        }
        return html + "</tbody></table></section>\n"
    }

    /// Who was invited, took part, declined (and why) and dropped (and why), per round.
    static func participationSection(_ records: [AuditRecord]) -> String {
        var html = "<section id=\"participation\"><h2>Participation per round</h2>"
        guard !records.isEmpty else { return html + "<p class=\"note\">No rounds.</p></section>\n" }
        let kinds: [(key: String, label: String, color: String)] = [
            ("participated", "took part", "#1b7f3b"), ("declined", "declined", "#8a94a3"),
            ("dropped", "dropped", "#d97706"), ("silent", "no answer", "#e5e7eb"),
        ]
        func counts(_ record: AuditRecord) -> [Int] {
            let answered = Set(record.participants).union(record.declines.map(\.client)).union(record.dropouts.map(\.client))
            let silent = Set(record.cohort).subtracting(answered).count
            return [record.participants.count, record.declines.count, record.dropouts.count, silent]
        }
        let largest = records.map { counts($0).reduce(0, +) }.max() ?? 1
        let roundValues = records.map { Double($0.round) }
        let plot = SVGPlot(width: 760, height: 220, xDomain: ((roundValues.min() ?? 1) - 0.5)...((roundValues.max() ?? 1) + 0.5),
                           yDomain: 0...Double(max(largest, 1)) * 1.1)
        var svg = plot.open(label: "Clients per round by outcome", attributes: " id=\"participation-chart\"")
        svg += plot.axes(xTicks: roundTicks(roundValues), yLabelDigits: 0, xTitle: "round", yTitle: "clients")
        let slot = (plot.x(1) - plot.x(0))
        let barWidth = min(48, max(4, slot * 0.6))
        for record in records {
            var base = 0
            for (kind, count) in zip(kinds, counts(record)) where count > 0 {
                let y0 = plot.y(Double(base)), y1 = plot.y(Double(base + count))
                svg += "<rect class=\"participation-bar\" data-round=\"\(record.round)\" data-kind=\"\(kind.key)\" "
                    + "data-count=\"\(count)\" x=\"\(plot.n(plot.x(Double(record.round)) - barWidth / 2))\" y=\"\(plot.n(y1))\" "
                    + "width=\"\(plot.n(barWidth))\" height=\"\(plot.n(y0 - y1))\" fill=\"\(kind.color)\"/>"
                base += count
            }
        }
        svg += "</svg>"
        html += svg + "<div class=\"legend\">" + kinds.map {
            "<span class=\"swatch\" style=\"background:\($0.color)\"></span>\($0.label)"
        }.joined(separator: " ") + "</div>"

        html += "<table id=\"participation-table\"><thead><tr><th>round</th><th>status</th><th>invited</th><th>took part</th>"
            + "<th>declined (reason)</th><th>dropped (reason)</th><th>no answer</th></tr></thead><tbody>"
        for record in records {
            func names(_ list: [String]) -> String { list.isEmpty ? "–" : list.map(HTML.escape).joined(separator: ", ") }
            func reasons(_ list: [ClientReason]) -> String {
                list.isEmpty ? "–" : list.map { "<span class=\"reason\"><b>\(HTML.escape($0.client))</b>: \(HTML.escape($0.reason))</span>" }
                    .joined(separator: "<br>")
            }
            let answered = Set(record.participants).union(record.declines.map(\.client)).union(record.dropouts.map(\.client))
            html += "<tr data-round=\"\(record.round)\"><td class=\"num\">\(record.round)</td><td>\(HTML.escape(record.status))</td>"
                + "<td data-field=\"invited\" data-count=\"\(record.cohort.count)\">\(record.cohort.count): \(names(record.cohort))</td>"
                + "<td data-field=\"participated\" data-count=\"\(record.participants.count)\">\(record.participants.count): \(names(record.participants))</td>"
                + "<td data-field=\"declined\" data-count=\"\(record.declines.count)\">\(reasons(record.declines))</td>"
                + "<td data-field=\"dropped\" data-count=\"\(record.dropouts.count)\">\(reasons(record.dropouts))</td>"
                + "<td>\(names(record.cohort.filter { !answered.contains($0) }))</td></tr>"
        }
        return html + "</tbody></table></section>\n"
    }

    /// One row per round: outcome, plan, aggregation, maximum ε (two decimals, as `audit` prints it) and adapter hash.
    static func roundsSection(_ records: [AuditRecord]) -> String {
        var html = "<section id=\"rounds\"><h2>Rounds and their plans</h2>"
        guard !records.isEmpty else { return html + "<p class=\"note\">No rounds.</p></section>\n" }
        html += "<p class=\"note\">q: Poisson sampling rate (of records, or of users at unit user); σ: noise multiplier; "
            + "C: clipping norm (per record, or per user's summed gradient); unit: whom ε protects, one record or one "
            + "user with all their records; max ε: the largest cumulative ε among the round's participants. Missing "
            + "rounds are marked in red.</p>"
        html += "<table id=\"rounds-table\"><thead><tr><th>round</th><th>status</th><th>started (UTC)</th><th>duration</th>"
            + "<th>steps</th><th>q</th><th>σ</th><th>C</th><th>learning rate</th><th>δ</th><th>unit</th><th>aggregation</th>"
            + "<th>secure aggregation</th><th>max ε</th><th>held-out loss</th><th>adapter sha256</th></tr></thead><tbody>"
        let missing = missingRounds(records)
        var rows: [(UInt64, String)] = []
        for record in records {
            let plan = record.plan
            let loss: String
            if let before = record.evalLossBefore, let after = record.evalLossAfter {
                loss = "\(HTML.fixed(before, 4)) → \(HTML.fixed(after, 4))" + (record.metricsReleased ? " (DP)" : " (clear)")
            } else {
                loss = "–"
            }
            var row = "<tr data-round=\"\(record.round)\" data-status=\"\(HTML.escape(record.status))\"\(record.status == "committed" ? "" : " class=\"aborted\"")>"
                + "<td class=\"num\" data-field=\"round\">\(record.round)</td>"
                + "<td data-field=\"status\">\(HTML.escape(record.status))"
                + (record.abortReason.map { "<br><small>\(HTML.escape($0))</small>" } ?? "") + "</td>"
                + "<td>\(HTML.date(record.started))</td>"
                + "<td class=\"num\">\(HTML.duration(record.finished.timeIntervalSince(record.started)))</td>"
            row += "<td class=\"num\" data-field=\"steps\">\(plan.steps)</td>"
                + "<td class=\"num\" data-field=\"q\">\(HTML.general(plan.samplingRate))</td>"
                + "<td class=\"num\" data-field=\"sigma\">\(HTML.general(plan.noiseMultiplier))</td>"
                + "<td class=\"num\" data-field=\"clip\">\(HTML.general(plan.clipNorm))</td>"
                + "<td class=\"num\" data-field=\"learning-rate\">\(HTML.general(plan.learningRate))</td>"
                + "<td class=\"num\" data-field=\"delta\">\(HTML.general(plan.delta))</td>"
                + "<td data-field=\"privacy-unit\">\(plan.privacyUnit.rawValue)</td>"
                + "<td data-field=\"aggregation\">\(HTML.escape(record.aggregationText))</td>"
                + "<td data-field=\"secure-aggregation\">\(record.secureAggregation ? "yes" : "no")</td>"
                + "<td class=\"num\" data-field=\"max-epsilon\">\(record.maxEpsilon.map { HTML.fixed($0, 2) } ?? "–")</td>"
                + "<td class=\"num\" data-field=\"loss\">\(loss)</td>"
                + "<td class=\"hash\" data-field=\"adapter-sha256\">\(HTML.escape(record.adapterSHA256))</td></tr>"
            rows.append((record.round, row))
        }
        for run in missing {
            let label = run.lowerBound == run.upperBound ? "\(run.lowerBound)" : "\(run.lowerBound)–\(run.upperBound)"
            rows.append((run.lowerBound, "<tr class=\"missing\" data-round=\"\(label)\" data-status=\"missing\">"
                         + "<td class=\"num\">\(label)</td><td colspan=\"15\">missing from the audit log</td></tr>"))
        }
        // File order for rounds present; each missing round where its number belongs.
        let ordered = rows.enumerated().sorted { ($0.element.0, $0.offset) < ($1.element.0, $1.offset) }.map(\.element.1)
        return html + ordered.joined() + "</tbody></table></section>\n"
    }

    // MARK: Helpers

    /// Tick marks at every round when there are at most 20, otherwise at round numbers of a nice step.
    static func roundTicks(_ rounds: [Double]) -> [(value: Double, label: String)] {
        let distinct = Set(rounds).sorted()
        if distinct.count <= 20 { return distinct.map { ($0, String(format: "%.0f", $0)) } }
        guard let low = distinct.first, let high = distinct.last else { return [] }
        return SVGPlot.niceTicks(low...high).filter { $0 == $0.rounded() }.map { ($0, String(format: "%.0f", $0)) }
    }

    /// `1, 3–5, 9` for runs of round numbers; long lists are cut after 20 runs.
    static func describe(_ runs: [ClosedRange<UInt64>]) -> String {
        let parts = runs.prefix(20).map { $0.lowerBound == $0.upperBound ? "\($0.lowerBound)" : "\($0.lowerBound)–\($0.upperBound)" }
        return parts.joined(separator: ", ") + (runs.count > 20 ? ", …" : "")
    }
}

/// The held-out record count of a round: the participants' released (noised) counts summed, or for an
/// old record the exact counts they sent in clear, marked so.
func releasedRecords(_ record: AuditRecord) -> String {
    guard record.metricsReleased else {
        return HTML.fixed(record.clients.reduce(0.0) { $0 + Double($1.clearFigures?.examples ?? 0) }, 0) + " (clear)"
    }
    return HTML.fixed(record.clients.reduce(0.0) { $0 + ($1.heldOut?.records ?? 0) }, 1)
}

extension ClientRoundMetrics {
    /// This client's held-out loss before and after as its record gives it: its DP release,
    /// post-processed (`ReleasedLoss`), or an old record's figures sent in clear; NaN when there is none.
    public var reportedLoss: (before: Double, after: Double) {
        if let clear = clearFigures { return (clear.evalLossBefore, clear.evalLossAfter) }
        guard let heldOut, let released = ReleasedLoss([heldOut]) else { return (.nan, .nan) }
        return (released.before ?? .nan, released.after ?? .nan)
    }
}
