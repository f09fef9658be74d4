import Foundation

/// Log-space arithmetic and Gaussian tail functions shared by the accountants.
enum SpecialFunctions {
    /// log(erfc(x)), accurate where erfc itself underflows (x above about 26.5).
    static func logErfc(_ x: Double) -> Double {
        if x < 26 { return log(erfc(x)) }
        // Asymptotic series (Abramowitz and Stegun 7.1.23); at x >= 26 the first omitted term is
        // below 1e-13 relative.
        let inverseSquare = 1 / (x * x)
        var series = 1.0, term = 1.0
        for k in 1...5 {
            term *= -Double(2 * k - 1) * inverseSquare / 2
            series += term
        }
        return -x * x - log(x) - 0.5 * log(Double.pi) + log(series)
    }

    /// log Γ(x) for x > 0.
    static func logGamma(_ x: Double) -> Double {
        let value: Double = lgamma(x)
        return value
    }

    /// log(exp(a) + exp(b)) without overflow.
    static func logAdd(_ a: Double, _ b: Double) -> Double {
        if a == -.infinity { return b }
        if b == -.infinity { return a }
        let high = max(a, b), low = min(a, b)
        return high + log1p(exp(low - high))
    }

    /// log(exp(a) - exp(b)) for a >= b; -infinity when they are equal.
    static func logSub(_ a: Double, _ b: Double) -> Double {
        precondition(a >= b || b == -.infinity, "logSub needs a >= b (a = \(a), b = \(b))")
        if b == -.infinity { return a }
        if a == b { return -.infinity }
        return a + log(-expm1(b - a))
    }

    /// Standard normal mass of the interval (a, b], computed from whichever tail keeps the
    /// difference free of cancellation; a and b may be infinite.
    static func normalMass(from a: Double, to b: Double) -> Double {
        if !(b > a) { return 0 }
        let scale = 1 / 2.0.squareRoot()
        if a >= 0 {
            // Both in the upper half: difference of upper tails.
            return 0.5 * (erfc(a * scale) - erfc(b * scale))
        }
        if b <= 0 {
            // Both in the lower half: difference of lower tails, Φ(b) − Φ(a).
            return 0.5 * (erfc(-b * scale) - erfc(-a * scale))
        }
        // Straddles zero: one minus both tails.
        return 1 - 0.5 * erfc(-a * scale) - 0.5 * erfc(b * scale)
    }
}
