import Audit
import Foundation
import Privacy
import Wire

/// A client's own view of its privacy ledger as one self-contained HTML page: cumulative ε after
/// each charge against the budget, and every charge with the DP-SGD parameters that produced it.
///
/// Points of the chart are `<circle class="eps-point" data-entry="N" data-epsilon>` beside
/// `<text class="eps-label" data-entry="N">`; rows of the table are `<tr data-entry="N">` (1-based).
public enum LedgerReport {
    /// The page for a ledger with `budget` and `entries` (oldest first), read from `ledgerPath`.
    public static func html(budget: PrivacyBudget, entries: [PrivacyLedgerEntry], ledgerPath: String,
                            generated: Date? = nil) -> String {
        let spent = entries.last?.cumulativeEpsilon ?? 0
        let left = max(0, budget.epsilon - spent)
        var body = "<header><h1>Privacy ledger</h1><p class=\"lede\">ledger <code>\(HTML.escape(ledgerPath))</code> · "
            + "\(entries.count) charge\(entries.count == 1 ? "" : "s")</p></header>\n"
        var problems: [String] = []
        if spent > budget.epsilon {
            problems.append("The recorded ε \(HTML.fixed(spent, 2)) exceeds the budget \(HTML.fixed(budget.epsilon, 2)).")
        }
        let otherDeltas = Set(entries.map(\.delta)).subtracting([budget.delta])
        if !otherDeltas.isEmpty {
            problems.append("Some charges state ε at δ \(otherDeltas.sorted().map(HTML.general).joined(separator: ", ")), "
                            + "not the budget's δ \(HTML.general(budget.delta)) (the budget was changed since).")
        }
        let headline = "ε spent <span data-field=\"spent\">\(HTML.fixed(spent, 2))</span> of "
            + "<span data-field=\"budget\">\(HTML.fixed(budget.epsilon, 2))</span> (left \(HTML.fixed(left, 2))) at "
            + "δ <span data-field=\"delta\">\(HTML.general(budget.delta))</span> per <span data-field=\"unit\">"
            + "\(budget.unit.rawValue)</span>, \(HTML.escape(budget.accountant.rawValue)) accountant"
        body += "<section class=\"banner \(problems.isEmpty ? "ok" : "bad")\" id=\"summary\"><strong class=\"headline\">\(headline)</strong>"
        if !problems.isEmpty {
            body += "<ul>" + problems.map { "<li class=\"problem\">\(HTML.escape($0))</li>" }.joined() + "</ul>"
        }
        body += "</section>\n"

        body += "<section id=\"privacy\"><h2>Cumulative ε per charge</h2>"
        if entries.isEmpty {
            body += "<p class=\"note\">No charge yet: nothing has been spent.</p>"
        } else {
            body += chart(budget: budget, entries: entries)
        }
        body += "</section>\n"

        body += "<section id=\"entries\"><h2>Charges</h2>"
        if !entries.isEmpty {
            body += "<table id=\"entries-table\"><thead><tr><th>#</th><th>date (UTC)</th><th>purpose</th><th>steps</th>"
                + "<th>q</th><th>σ</th><th>C</th><th>δ</th><th>unit</th><th>accountant</th><th>cumulative ε</th></tr></thead><tbody>"
            for (index, entry) in entries.enumerated() {
                body += "<tr data-entry=\"\(index + 1)\"><td class=\"num\">\(index + 1)</td><td>\(HTML.date(entry.date))</td>"
                    + "<td>\(HTML.escape(entry.purpose))</td><td class=\"num\" data-field=\"steps\">\(entry.steps)</td>"
                    + "<td class=\"num\" data-field=\"q\">\(HTML.general(entry.samplingRate))</td>"
                    + "<td class=\"num\" data-field=\"sigma\">\(HTML.general(entry.noiseMultiplier))</td>"
                    + "<td class=\"num\" data-field=\"clip\">\(HTML.general(entry.clipNorm))</td>"
                    + "<td class=\"num\" data-field=\"delta\">\(HTML.general(entry.delta))</td>"
                    + "<td data-field=\"unit\">\(entry.unit.rawValue)</td>"
                    + "<td>\(HTML.escape(entry.accountant.rawValue))</td>"
                    + "<td class=\"num\" data-field=\"epsilon\">\(HTML.fixed(entry.cumulativeEpsilon, 2))</td></tr>"
            }
            body += "</tbody></table>"
        } else {
            body += "<p class=\"note\">No charges.</p>"
        }
        body += "</section>\n"
        var footer = "Made by <code>conclave-client budget --html</code>"
        if let generated { footer += " at \(HTML.date(generated))" }
        body += "<footer>\(footer). Each charge is written to the ledger before the update it pays for is sent.</footer>"
        return HTML.page(title: "Privacy ledger", body: body)
    }

    static func chart(budget: PrivacyBudget, entries: [PrivacyLedgerEntry]) -> String {
        let epsilons = entries.map(\.cumulativeEpsilon).filter(\.isFinite)
        let top = max(epsilons.max() ?? 0, budget.epsilon) * 1.12
        let plot = SVGPlot(width: 760, height: 280, xDomain: 0.5...(Double(entries.count) + 0.5), yDomain: 0...max(top, 0.01))
        var svg = plot.open(label: "Cumulative epsilon after each charge", attributes: " id=\"ledger-chart\"")
        let ticks: [(value: Double, label: String)] = entries.count <= 20
            ? (1...entries.count).map { (Double($0), String($0)) }
            : SVGPlot.niceTicks(1...Double(entries.count)).filter { $0 == $0.rounded() }.map { ($0, String(format: "%.0f", $0)) }
        svg += plot.axes(xTicks: ticks, yLabelDigits: top < 5 ? 1 : 0, xTitle: "charge", yTitle: "cumulative ε")
        let budgetY = plot.n(plot.y(budget.epsilon))
        svg += "<line class=\"budget\" data-budget=\"\(HTML.exact(budget.epsilon))\" x1=\"\(plot.n(plot.left))\" y1=\"\(budgetY)\" "
            + "x2=\"\(plot.n(plot.plotRight))\" y2=\"\(budgetY)\"/>"
        svg += "<text class=\"budget-label\" x=\"\(plot.n(plot.plotRight - 2))\" y=\"\(plot.n(plot.y(budget.epsilon) - 5))\" "
            + "text-anchor=\"end\">budget \(HTML.fixed(budget.epsilon, 2))</text>"
        let points = entries.enumerated().filter { $0.element.cumulativeEpsilon.isFinite }
        svg += plot.polyline(points.map { (Double($0.offset + 1), $0.element.cumulativeEpsilon) }, stroke: "#1f6fd1")
        let labelled = entries.count <= 20
        for (index, entry) in points {
            let cx = plot.x(Double(index + 1)), cy = plot.y(entry.cumulativeEpsilon)
            svg += "<circle class=\"eps-point\" data-entry=\"\(index + 1)\" data-epsilon=\"\(HTML.exact(entry.cumulativeEpsilon))\" "
                + "cx=\"\(plot.n(cx))\" cy=\"\(plot.n(cy))\" r=\"3.5\" fill=\"#1f6fd1\"><title>\(HTML.escape(entry.purpose))</title></circle>"
            if labelled || index == entries.count - 1 {
                svg += "<text class=\"eps-label\" data-entry=\"\(index + 1)\" x=\"\(plot.n(cx))\" y=\"\(plot.n(cy - 8))\" "
                    + "text-anchor=\"middle\">\(HTML.fixed(entry.cumulativeEpsilon, 2))</text>"
            }
        }
        return svg + "</svg>"
    }
}
