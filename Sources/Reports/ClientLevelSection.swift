import Audit
import Foundation
import Wire

extension AuditReport {
    /// Client-level DP-FedAvg rounds (issue 17): per round, committed, aborted or skipped (each was charged before its
    /// sample), the unit, the registered clients N, how many the Poisson sample drew, q, z, S, the fixed denominator
    /// q·N, and the federation's client-level ε after it with its budget, at δ; with adaptive clipping, also the noised
    /// unclipped fraction b̄ against its target γ, the S it set for the next round and the update's noise z_Δ. Empty when
    /// no round was client-level.
    static func clientLevelSection(_ records: [AuditRecord]) -> String {
        let rounds = records.filter { $0.clientLevel != nil }
        guard !rounds.isEmpty else { return "" }
        var html = "<section id=\"client-level\"><h2>Client-level differential privacy</h2>"
        html += "<p class=\"note\">Each of these rounds protected whole clients (DP-FedAvg, McMahan et al. 2018): the coordinator "
            + "charged the federation's accountant, then sampled each registered client with probability q; every sampled "
            + "client clipped its whole update to S and added its share of the noise N(0, z²S²) on the sum, which was divided "
            + "by q·N, not by the number that arrived. The ε is the federation's, charged to every client for every round "
            + "here, sampled or not; a skipped round (too few sampled clients connected) is charged too. Each client's own "
            + "ledger charges the rounds it took part in without amplification (see SECURITY.md).</p>"
        let adaptive = rounds.contains { $0.clientLevel?.adaptiveClipping != nil }
        if adaptive {
            html += "<p class=\"note\">Adaptive clipping (Andrew et al. 2021): each sampled client also added the bit "
                + "‖update‖ ≤ S to the noised sum; the noised fraction b̄ of unclipped updates moved S by the factor "
                + "exp(−η(b̄ − γ)) for the next round. The update's own noise z_Δ is above z so that the two together are one "
                + "Gaussian mechanism at z, the one the ε composes.</p>"
        }
        html += "<table id=\"client-level-table\"><thead><tr><th>round</th><th>status</th><th>unit</th><th>registered N</th>"
            + "<th>sampled</th><th>participants</th><th>q</th><th>z</th><th>S</th><th>q·N</th><th>federation ε</th>"
            + "<th>budget</th><th>δ</th>"
            + (adaptive ? "<th>unclipped b̄ (target γ)</th><th>next S</th><th>update z_Δ</th>" : "") + "</tr></thead><tbody>"
        for record in rounds {
            guard let level = record.clientLevel else { continue }
            html += "<tr data-round=\"\(record.round)\"><td class=\"num\">\(record.round)</td>"
                + "<td data-field=\"status\">\(HTML.escape(record.abortReason?.hasPrefix("skipped") == true ? "skipped" : record.status))</td>"
                + "<td data-field=\"unit\">\(HTML.escape(level.unit))</td>"
                + "<td class=\"num\" data-field=\"population\">\(level.population)</td>"
                + "<td class=\"num\" data-field=\"sampled\">\(level.sampled)</td>"
                + "<td class=\"num\" data-field=\"participants\">\(record.participants.count)</td>"
                + "<td class=\"num\" data-field=\"q\">\(String(format: "%g", level.samplingRate))</td>"
                + "<td class=\"num\" data-field=\"z\">\(HTML.fixed(level.noiseMultiplier, 3))</td>"
                + "<td class=\"num\" data-field=\"clip\">\(String(format: "%g", level.clipNorm))</td>"
                + "<td class=\"num\" data-field=\"expected-cohort\">\(String(format: "%g", level.expectedCohort))</td>"
                + "<td class=\"num\" data-field=\"epsilon\">\(HTML.fixed(level.epsilon, 3))</td>"
                + "<td class=\"num\" data-field=\"budget\">\(String(format: "%g", level.epsilonBudget))</td>"
                + "<td class=\"num\" data-field=\"delta\">\(String(format: "%g", level.delta))</td>"
                + (adaptive ? adaptiveCells(level.adaptiveClipping) : "") + "</tr>"
        }
        return html + "</tbody></table></section>\n"
    }

    /// Adaptive clipping's three cells of a round: "n/a" where the round did not move S (aborted, skipped, or none).
    private static func adaptiveCells(_ adaptive: AdaptiveClippingRecord?) -> String {
        func cell(_ field: String, _ text: String?) -> String {
            "<td class=\"num\" data-field=\"\(field)\">\(HTML.escape(text ?? "n/a"))</td>"
        }
        let fraction = adaptive.flatMap { a in a.unclippedFraction.map { String(format: "%.3f (%g)", $0, a.targetQuantile) } }
        return cell("unclipped-fraction", fraction) + cell("next-clip", adaptive?.nextClipNorm.map { String(format: "%.4g", $0) })
            + cell("update-z", adaptive?.updateNoiseMultiplier.map { String(format: "%.3f", $0) })
    }
}
