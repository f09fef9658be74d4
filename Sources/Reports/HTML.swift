import Audit
import Foundation
import Wire

/// Building blocks of the self-contained HTML pages: escaping, number formats and the shared style.
///
/// Every string that comes from a file (client ids, reasons, model names, paths) goes through
/// `HTML.escape` before it reaches the page; numbers are written by the formatters here so the same
/// value reads the same in every table and chart.
public enum HTML {
    /// `text` with `&`, `<`, `>`, `"` and `'` replaced by character references, safe inside element
    /// content and inside double- or single-quoted attribute values.
    public static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            // A NUL or other C0 control is never meant as text: show the replacement character.
            case "\u{00}"..."\u{08}", "\u{0B}", "\u{0C}", "\u{0E}"..."\u{1F}", "\u{7F}": out += "\u{FFFD}"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// A number with `digits` decimals (`1.23`), or `–` when it is not finite.
    static func fixed(_ value: Double, _ digits: Int) -> String {
        if value == .infinity { return "∞" }
        return value.isFinite ? String(format: "%.\(digits)f", value) : "–"
    }

    /// A number in the shortest form that reads back as the same Double, for `data-` attributes that
    /// tests and scripts parse back.
    static func exact(_ value: Double) -> String { value.isFinite ? "\(value)" : "nan" }

    /// A parameter such as q, σ, C or δ as `%g` (six significant digits): `0.25`, `1e-05`.
    static func general(_ value: Double) -> String { value.isFinite ? String(format: "%g", value) : "–" }

    /// Dates as `2025-06-15 15:06:40Z` (UTC, seconds).
    static func date(_ date: Date) -> String {
        let style = Date.ISO8601FormatStyle(dateSeparator: .dash, dateTimeSeparator: .space, timeZone: TimeZone(identifier: "UTC") ?? .gmt)
        return date.formatted(style)
    }

    /// Seconds as `42.5s`, `3m07s` or `2h05m`, as `conclave-coordinator audit` prints durations.
    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0 else { return "–" }
        if seconds < 60 { return String(format: "%.1fs", seconds) }
        let whole = Int(seconds.rounded())
        if whole < 3600 { return String(format: "%dm%02ds", whole / 60, whole % 60) }
        return String(format: "%dh%02dm", whole / 3600, whole % 3600 / 60)
    }

    /// A whole page: doctype, UTF-8, the inline style sheet, `title` and `body`. No external resource.
    static func page(title: String, body: String) -> String {
        """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>\(escape(title))</title>
        <style>
        \(styleSheet)
        </style>
        </head>
        <body>
        \(body)
        </body>
        </html>

        """
    }

    /// The one style sheet, inline; system fonts only.
    static let styleSheet = """
    :root { --ink: #1d2430; --muted: #5b6472; --line: #d9dde3; --good: #1b7f3b; --bad: #b3261e; --warn: #9a6700;
            --before: #8a94a3; --after: #1f6fd1; --budget: #b3261e; }
    * { box-sizing: border-box; }
    body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--ink);
           margin: 0 auto; padding: 24px 32px 48px; max-width: 1240px; line-height: 1.45; background: #fff; }
    h1 { font-size: 26px; margin: 0 0 4px; }
    h2 { font-size: 20px; margin: 32px 0 8px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
    h3 { font-size: 15px; margin: 0 0 4px; }
    p.lede, p.note { color: var(--muted); margin: 4px 0 12px; }
    .banner { border-radius: 8px; padding: 14px 18px; margin: 16px 0 8px; border: 2px solid; }
    .banner.ok { background: #e8f5ec; border-color: var(--good); color: #0f4d24; }
    .banner.bad { background: #fdecea; border-color: var(--bad); color: #6b140f; }
    .banner strong.headline { display: block; font-size: 18px; }
    .banner ul { margin: 8px 0 0; padding-left: 22px; }
    table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
    th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
    th { background: #f3f5f8; font-weight: 600; }
    td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
    td.hash, code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
    #probe pre { white-space: pre-wrap; max-width: 36em; font-size: 11px; }
    #probe td { vertical-align: top; max-width: 22em; }
    td.hash { word-break: break-all; min-width: 150px; max-width: 270px; }
    tr.missing td { background: #fdecea; color: #6b140f; }
    tr.aborted td { background: #fff7e0; }
    .cards { display: flex; flex-wrap: wrap; gap: 16px; }
    .card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
    .legend { font-size: 12px; color: var(--muted); }
    .swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; vertical-align: -1px; margin: 0 4px 0 10px; }
    dl.facts { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; margin: 8px 0; }
    dl.facts dt { color: var(--muted); }
    dl.facts dd { margin: 0; }
    svg text { font-family: system-ui, "DejaVu Sans", sans-serif; font-size: 11px; fill: var(--ink); }
    svg .axis { stroke: #9aa3af; stroke-width: 1; }
    svg .grid { stroke: #eceef2; stroke-width: 1; }
    svg text.budget-label { fill: var(--budget); }
    svg .budget { stroke: var(--budget); stroke-width: 1.5; stroke-dasharray: 6 4; fill: none; }
    footer { margin-top: 32px; color: var(--muted); font-size: 12px; }
    """
}
