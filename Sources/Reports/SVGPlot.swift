import Audit
import Foundation
import Wire

/// A plotting area drawn as inline SVG: linear x and y scales, axes with ticks, and helpers that
/// turn data into SVG elements. Everything it writes is markup built from numbers and escaped text.
struct SVGPlot {
    let width: Double
    let height: Double
    let left: Double, right: Double, top: Double, bottom: Double
    let xDomain: ClosedRange<Double>
    let yDomain: ClosedRange<Double>

    /// A plot of `width` × `height` pixels whose data area shows `xDomain` × `yDomain`. Empty or
    /// non-finite domains are widened so every scale is defined.
    init(width: Double, height: Double, xDomain: ClosedRange<Double>, yDomain: ClosedRange<Double>,
         left: Double = 52, right: Double = 16, top: Double = 14, bottom: Double = 36) {
        self.width = width
        self.height = height
        self.left = left
        self.right = right
        self.top = top
        self.bottom = bottom
        self.xDomain = Self.usable(xDomain, pad: 0.5)
        self.yDomain = Self.usable(yDomain, pad: 1)
    }

    static func usable(_ domain: ClosedRange<Double>, pad: Double) -> ClosedRange<Double> {
        guard domain.lowerBound.isFinite, domain.upperBound.isFinite else { return 0...1 }
        if domain.upperBound - domain.lowerBound > 0 { return domain }
        return (domain.lowerBound - pad)...(domain.upperBound + pad)
    }

    var plotRight: Double { width - right }
    var plotBottom: Double { height - bottom }

    func x(_ value: Double) -> Double {
        left + (value - xDomain.lowerBound) / (xDomain.upperBound - xDomain.lowerBound) * (plotRight - left)
    }

    func y(_ value: Double) -> Double {
        plotBottom - (value - yDomain.lowerBound) / (yDomain.upperBound - yDomain.lowerBound) * (plotBottom - top)
    }

    /// The opening `<svg>` tag with a title for screen readers.
    func open(label: String, attributes: String = "") -> String {
        "<svg width=\"\(Int(width))\" height=\"\(Int(height))\" "
            + "viewBox=\"0 0 \(Int(width)) \(Int(height))\" role=\"img\" aria-label=\"\(HTML.escape(label))\"\(attributes)>"
            + "<title>\(HTML.escape(label))</title>"
    }

    /// Axes, horizontal grid lines with y tick labels, x ticks at `xTicks` with their labels, and axis titles.
    func axes(xTicks: [(value: Double, label: String)], yLabelDigits: Int, xTitle: String, yTitle: String) -> String {
        var svg = ""
        for tick in Self.niceTicks(yDomain) {
            let ty = y(tick)
            svg += "<line class=\"grid\" x1=\"\(n(left))\" y1=\"\(n(ty))\" x2=\"\(n(plotRight))\" y2=\"\(n(ty))\"/>"
            svg += "<text x=\"\(n(left - 6))\" y=\"\(n(ty + 4))\" text-anchor=\"end\">\(HTML.fixed(tick, yLabelDigits))</text>"
        }
        svg += "<line class=\"axis\" x1=\"\(n(left))\" y1=\"\(n(top))\" x2=\"\(n(left))\" y2=\"\(n(plotBottom))\"/>"
        svg += "<line class=\"axis\" x1=\"\(n(left))\" y1=\"\(n(plotBottom))\" x2=\"\(n(plotRight))\" y2=\"\(n(plotBottom))\"/>"
        for tick in xTicks {
            let tx = x(tick.value)
            svg += "<line class=\"axis\" x1=\"\(n(tx))\" y1=\"\(n(plotBottom))\" x2=\"\(n(tx))\" y2=\"\(n(plotBottom + 4))\"/>"
            svg += "<text x=\"\(n(tx))\" y=\"\(n(plotBottom + 16))\" text-anchor=\"middle\">\(HTML.escape(tick.label))</text>"
        }
        svg += "<text x=\"\(n((left + plotRight) / 2))\" y=\"\(n(height - 4))\" text-anchor=\"middle\">\(HTML.escape(xTitle))</text>"
        svg += "<text x=\"12\" y=\"\(n((top + plotBottom) / 2))\" text-anchor=\"middle\" "
            + "transform=\"rotate(-90 12 \(n((top + plotBottom) / 2)))\">\(HTML.escape(yTitle))</text>"
        return svg
    }

    /// A polyline through `points` (data coordinates) with the given stroke and extra attributes.
    func polyline(_ points: [(Double, Double)], stroke: String, width strokeWidth: Double = 2,
                  attributes: String = "") -> String {
        guard points.count > 1 else { return "" }
        let coordinates = points.map { "\(n(x($0.0))),\(n(y($0.1)))" }.joined(separator: " ")
        return "<polyline fill=\"none\" stroke=\"\(stroke)\" stroke-width=\"\(n(strokeWidth))\" points=\"\(coordinates)\"\(attributes)/>"
    }

    /// Up to about six round tick values covering `domain`: steps of 1, 2 or 5 times a power of ten.
    static func niceTicks(_ domain: ClosedRange<Double>) -> [Double] {
        let span = domain.upperBound - domain.lowerBound
        guard span > 0, span.isFinite else { return [domain.lowerBound] }
        let raw = span / 5
        let power = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * power }.first { $0 >= raw } ?? 10 * power
        var ticks: [Double] = []
        var value = (domain.lowerBound / step).rounded(.up) * step
        while value <= domain.upperBound + step * 1e-9 && ticks.count < 12 {
            ticks.append(abs(value) < step * 1e-9 ? 0 : value)
            value += step
        }
        return ticks
    }

    /// Coordinates in SVG are written with at most one decimal.
    func n(_ value: Double) -> String { Self.n(value) }
    static func n(_ value: Double) -> String {
        guard value.isFinite else { return "0" }
        let rounded = (value * 10).rounded() / 10
        return rounded == rounded.rounded() ? String(Int(rounded)) : String(format: "%.1f", rounded)
    }
}
