import Foundation

/// The result of one generation: the new tokens and how long they took.
public struct GenerationResult: Sendable {
    public var tokens: [Int]
    public var promptTokens: Int
    /// Why generation ended: "eos" (an end-of-sequence or end-of-turn token), "length", or "cancelled"
    /// (`shouldStop` said so).
    public var stopReason: String
    public var timeToFirstToken: Double
    public var totalSeconds: Double
    /// Generated tokens per second after the first (the decode rate).
    public var decodeTokensPerSecond: Double
}

extension LlamaModel {
    /// Generates up to `maxTokens` after `prompt`, stopping at any of `stopTokens` (which are not returned). Its cache is
    /// windowed (`makeCache(keepingEveryKey: false)`): a sliding layer keeps a window or two of keys, not the whole sequence.
    ///
    /// - Parameters:
    ///   - onToken: called with each new token as soon as it is chosen (for streaming).
    ///   - shouldStop: asked after each token; true ends generation early (a streaming client that left).
    public func generate(prompt: [Int], maxTokens: Int, sampling: SamplingParameters, stopTokens: Set<Int>,
                         onToken: (Int) -> Void = { _ in }, shouldStop: () -> Bool = { false }) throws -> GenerationResult {
        precondition(!prompt.isEmpty, "generation needs at least one prompt token")
        let started = DispatchTime.now()
        let cache = makeCache(capacity: prompt.count + maxTokens, keepingEveryKey: false)
        var sampler = Sampler(sampling)
        var next = 0
        try forward(tokens: prompt, cache: cache, logits: .last) { _, logits in
            next = sampler.sample(logits, count: configuration.vocabSize)
        }
        let firstTokenTime = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
        let (generated, stopReason) = try continueGeneration(from: next, cache: cache, sampler: &sampler, maxTokens: maxTokens,
                                                             stopTokens: stopTokens, onToken: onToken,
                                                             shouldStop: { _ in shouldStop() })
        let total = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
        let decodeTokens = max(0, generated.count - 1)
        return GenerationResult(tokens: generated, promptTokens: prompt.count, stopReason: stopReason,
                                timeToFirstToken: firstTokenTime, totalSeconds: total,
                                decodeTokensPerSecond: decodeTokens > 0 ? Double(decodeTokens) / (total - firstTokenTime) : 0)
    }

    /// The decoding loop after a prompt: `next` is the token the prompt's last logits chose and `cache` holds the
    /// prompt's keys; each token is appended, handed to `onToken`, and run to choose the following one.
    /// - Returns: the tokens (without the stop token) and why they ended ("eos", "length" or "cancelled").
    func continueGeneration(from next: Int, cache: KVCache, sampler: inout Sampler, maxTokens: Int, stopTokens: Set<Int>,
                            onToken: (Int) -> Void, shouldStop: ([Int]) -> Bool) throws -> (tokens: [Int], stopReason: String) {
        var next = next
        var generated: [Int] = []
        var stopReason = "length"
        while generated.count < maxTokens {
            if stopTokens.contains(next) {
                stopReason = "eos"
                break
            }
            generated.append(next)
            onToken(next)
            if shouldStop(generated) {
                stopReason = "cancelled"
                break
            }
            if generated.count == maxTokens || cache.count >= configuration.contextLength { break }
            try forward(tokens: [next], cache: cache, logits: .last) { _, logits in
                next = sampler.sample(logits, count: configuration.vocabSize)
            }
        }
        return (generated, stopReason)
    }
}
