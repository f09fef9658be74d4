import Audit
import Foundation
import Wire

extension AuditReport {
    /// Condition accuracy per round (issue 17): the pooled share of the participants' scored held-out notes whose
    /// greedy assessment named the note's condition, before and after, from their DP releases; nothing when no round
    /// carries one.
    ///
    /// Rows are `<tr data-round>` with cells `data-field="accuracy-before|accuracy-after|accuracy-se|accuracy-records|
    /// accuracy-clients"`.
    static func accuracySection(_ records: [AuditRecord]) -> String {
        let rows = records.filter { record in
            record.status == "committed" && (record.conditionAccuracyBefore != nil || record.conditionAccuracyAfter != nil)
        }
        guard !rows.isEmpty else { return "" }
        var html = "<section id=\"accuracy\"><h2>Condition accuracy per round (DP-released)</h2>"
        html += "<p class=\"note\">Clients whose held-out records name a condition (<code>condition</code>, "
            + "<code>condition_names</code>) write each scored note's assessment greedily, with the incoming global adapter "
            + "(before) and with the adapter they trained (after; the global adapter again in a distributed round), and count "
            + "the notes whose first line names the condition. Each releases the two counts and the number scored (at most the "
            + "plan's <code>accuracy_records</code>) with discrete Gaussian noise, charged to its ledger with the round "
            + "(SECURITY.md, \"The held-out metrics release\"). The table pools the releases; the standard error is the "
            + "noise's alone.</p>"
        html += "<table id=\"accuracy-table\"><thead><tr><th>round</th><th>accuracy before</th><th>accuracy after</th>"
            + "<th>change</th><th>standard error</th><th>notes scored (released)</th><th>clients releasing</th></tr></thead><tbody>"
        for record in rows {
            let before = record.conditionAccuracyBefore ?? .nan, after = record.conditionAccuracyAfter ?? .nan
            let releases = record.clients.compactMap(\.conditionAccuracy)
            html += "<tr data-round=\"\(record.round)\"><td class=\"num\">\(record.round)</td>"
                + "<td class=\"num\" data-field=\"accuracy-before\">\(HTML.fixed(before, 3))</td>"
                + "<td class=\"num\" data-field=\"accuracy-after\">\(HTML.fixed(after, 3))</td>"
                + "<td class=\"num\">\(HTML.fixed(after - before, 3))</td>"
                + "<td class=\"num\" data-field=\"accuracy-se\">"
                + (record.conditionAccuracyStandardError.map { "± " + HTML.fixed($0, 3) } ?? "–") + "</td>"
                + "<td class=\"num\" data-field=\"accuracy-records\">\(HTML.fixed(ReleasedAccuracy(releases)?.records ?? .nan, 1))</td>"
                + "<td class=\"num\" data-field=\"accuracy-clients\">\(releases.count)</td></tr>"
        }
        return html + "</tbody></table></section>\n"
    }
}
