import Foundation

/// How the next token is chosen from logits.
public struct SamplingParameters: Sendable, Equatable {
    /// 0 means greedy (argmax); otherwise logits are divided by it.
    public var temperature: Double = 0.7
    /// Keep only the k most likely tokens (0 = all).
    public var topK: Int = 40
    /// Keep the smallest set whose probability reaches p (1 = all).
    public var topP: Double = 0.95
    /// Seed for reproducible sampling; nil draws one from the system.
    public var seed: UInt64?

    public init(temperature: Double = 0.7, topK: Int = 40, topP: Double = 0.95, seed: UInt64? = nil) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.seed = seed
    }

    public static let greedy = SamplingParameters(temperature: 0, topK: 1, topP: 1)
}

/// A small, fast, seedable generator (xoshiro256**, Blackman & Vigna 2018) for *text sampling only*.
///
/// Sampling tokens is not a security boundary, and a seed makes outputs reproducible. Keys, masks and
/// DP noise never use this: they come from libsodium (SecureCrypto).
public struct SamplingRandomGenerator: RandomNumberGenerator, Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        // SplitMix64 expands the seed into the state, as the authors recommend.
        var x = seed
        func next() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s = (next(), next(), next(), next())
    }

    public mutating func next() -> UInt64 {
        let result = ((s.1 &* 5) << 7 | (s.1 &* 5) >> 57) &* 9
        let t = s.1 << 17
        s.2 ^= s.0
        s.3 ^= s.1
        s.1 ^= s.2
        s.0 ^= s.3
        s.2 ^= t
        s.3 = s.3 << 45 | s.3 >> 19
        return result
    }
}

/// Picks tokens from logits with temperature, top-k and top-p (nucleus, Holtzman et al. 2020).
public struct Sampler: Sendable {
    public let parameters: SamplingParameters
    private var generator: SamplingRandomGenerator

    public init(_ parameters: SamplingParameters) {
        self.parameters = parameters
        generator = SamplingRandomGenerator(seed: parameters.seed ?? UInt64.random(in: 0...UInt64.max))
    }

    /// The next token id for one row of logits.
    public mutating func sample(_ logits: UnsafePointer<Float>, count: Int) -> Int {
        if parameters.temperature <= 0 || parameters.topK == 1 {
            var best = 0
            for i in 1..<count where logits[i] > logits[best] { best = i }
            return best
        }
        // Candidates: all tokens, or the top k by logit.
        var candidates = Array(0..<count)
        if parameters.topK > 0 && parameters.topK < count {
            candidates.sort { logits[$0] > logits[$1] }
            candidates.removeSubrange(parameters.topK...)
        } else {
            candidates.sort { logits[$0] > logits[$1] }
        }
        let inverseTemperature = 1 / parameters.temperature
        let maximum = Double(logits[candidates[0]])
        var probabilities = candidates.map { exp((Double(logits[$0]) - maximum) * inverseTemperature) }
        let total = probabilities.reduce(0, +)
        for i in probabilities.indices { probabilities[i] /= total }
        // Nucleus: keep the shortest prefix whose mass reaches top-p.
        var kept = probabilities.count
        if parameters.topP < 1 {
            var mass = 0.0
            for (i, p) in probabilities.enumerated() {
                mass += p
                if mass >= parameters.topP {
                    kept = i + 1
                    break
                }
            }
        }
        let keptMass = probabilities[0..<kept].reduce(0, +)
        var u = Double.random(in: 0..<1, using: &generator) * keptMass
        for i in 0..<kept {
            u -= probabilities[i]
            if u < 0 { return candidates[i] }
        }
        return candidates[kept - 1]
    }
}
