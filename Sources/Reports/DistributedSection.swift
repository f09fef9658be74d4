import Audit
import Foundation
import Wire

extension AuditReport {
    /// Distributed-DP rounds (issue 17): per round the unit, the noise planned and the noise that survived in
    /// the sum, and per participant the trust it assumed with this round's ε under it and trusting no one, and
    /// its cumulative ε both ways (its ledger's under its assumption, and its ledger composed as if it had trusted
    /// no one in any round). Empty when no round shared its noise.
    static func distributedSection(_ records: [AuditRecord]) -> String {
        let rounds = records.filter { $0.status == "committed" && $0.distributed != nil }
        guard !rounds.isEmpty else { return "" }
        var html = "<section id=\"distributed\"><h2>Distributed differential privacy</h2>"
        html += "<p class=\"note\">Each of these rounds was one DP-SGD step over the union of the cohort's data: every client "
            + "added a share of discrete Gaussian noise to its clipped sum on the integer grid of secure aggregation (Kairouz, "
            + "Liu, Steinke 2021), sized so that the threshold's survivors carry the plan's noise. A client counts only the "
            + "shares of the clients it assumes honest (assume_honest, itself included, less the dropouts); its ledger is "
            + "charged the ε under that assumption. The ε trusting no one is the local DP of its own share; its cumulative "
            + "figure composes every round the client was charged for that way (nothing is charged against it).</p>"
        html += "<table id=\"distributed-table\"><thead><tr><th>round</th><th>unit</th><th>cohort / threshold / survivors</th>"
            + "<th>z planned</th><th>z survived</th><th>wrap probability</th><th>client</th><th>assume honest</th>"
            + "<th>round ε (assumed)</th><th>round ε (trusting no one)</th><th>cumulative ε (assumed)</th>"
            + "<th>cumulative ε (trusting no one)</th></tr></thead><tbody>"
        for record in rounds {
            guard let noise = record.distributed else { continue }
            let clients = record.clients.isEmpty ? [nil] : record.clients.map { Optional($0) }
            for client in clients {
                html += "<tr data-round=\"\(record.round)\" data-client=\"\(HTML.escape(client?.client ?? ""))\">"
                    + "<td class=\"num\">\(record.round)</td><td data-field=\"unit\">\(HTML.escape(noise.unit))</td>"
                    + "<td class=\"num\" data-field=\"shares\">\(noise.cohort) / \(noise.threshold) / \(noise.survivors)</td>"
                    + "<td class=\"num\" data-field=\"z-planned\">\(HTML.fixed(noise.plannedNoiseMultiplier, 3))</td>"
                    + "<td class=\"num\" data-field=\"z-survived\">\(HTML.fixed(noise.survivingNoiseMultiplier, 3))</td>"
                    + "<td class=\"num\" data-field=\"wrap\">\(String(format: "%.1e", noise.wrapProbability))</td>"
                    + "<td>\(HTML.escape(client?.client ?? "–"))</td>"
                    + cell("assume-honest", client?.trust.map { "\($0.assumeHonest)" })
                    + cell("epsilon-assumed", client?.trust.map { HTML.fixed($0.roundEpsilon, 3) })
                    + cell("epsilon-trusting-no-one", client?.trust.map { HTML.fixed($0.roundEpsilonTrustingNoOne, 3) })
                    + cell("epsilon-cumulative", client.map { HTML.fixed($0.epsilon, 3) })
                    + cell("epsilon-cumulative-trusting-no-one", client?.trust?.epsilonTrustingNoOne.map { HTML.fixed($0, 3) })
                    + "</tr>"
            }
        }
        return html + "</tbody></table></section>\n"
    }

    private static func cell(_ field: String, _ text: String?) -> String {
        "<td class=\"num\" data-field=\"\(field)\">\(text ?? "–")</td>"
    }
}
