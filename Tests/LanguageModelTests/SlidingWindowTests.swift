import Foundation
import Kernels
import ModelFormats
import TestSupport
import XCTest
@testable import LanguageModel

/// Gemma 2's sliding window masked past it: tiny-gemma2's 48-token example (Tests/Fixtures/tiny-gemma2/window.json and
/// window.safetensors, made by generate.py's tiny-gemma2-window section) against transformers + PEFT in float64, its even
/// layers masking keys 32 or more positions back. (Gemma 3's window, 5, is crossed by every example of tiny-gemma3:
/// FamilyReferenceTests.)
final class SlidingWindowTests: XCTestCase {
    func testGemma2PastItsWindowMatchesTransformers() throws {
        for gguf in [false, true] {
            let model = try TinyReference.model("gemma2", gguf: gguf)
            XCTAssertEqual(model.configuration.contextLength, 128, "the window (32) is masked, not a bound on the context")
            XCTAssertEqual(model.configuration.slidingLayers, [true, false], "Gemma 2's even layers slide")
            for adapter in [false, true] {
                let (logit, loss) = try TinyReference.worstDifferences(model, "gemma2", adapter: adapter, file: "window")
                print("gemma2 \(gguf ? "GGUF" : "HF")\(adapter ? " + PEFT" : "") past its window: worst logit difference "
                      + "\(logit), loss \(loss)")
                XCTAssertLessThanOrEqual(logit, TinyReference.logitTolerance)
                XCTAssertLessThanOrEqual(loss, TinyReference.lossTolerance)
            }
            try TinyReference.checkGradients("gemma2", gguf: gguf, references: "window")
        }
    }

    /// Incremental decoding over the 48 tokens (the sliding layer's queries reading only the last 32 cached keys).
    func testGemma2KVCachePastItsWindowMatchesFullPass() throws {
        let model = try TinyReference.model("gemma2", gguf: true)
        let worst = try TinyReference.worstCachedDifference(model, ids: try TinyReference.reference("gemma2", file: "window").inputIds[0])
        XCTAssertLessThan(worst, 1e-4, "cached vs full logits differ by \(worst)")
    }

    /// A windowed cache (`makeCache(keepingEveryKey: false)`, what `generate` decodes with) computes exactly what a cache
    /// keeping every key computes, while its sliding layers drop the rows their window no longer reads: tiny-gemma2's
    /// 48-token example (window 32) and tiny-gemma3's first two examples one after the other (32 tokens, window 5), fed as
    /// a prefill of 9, chunks of 7, then one token at a time, so rows are dropped, moved and grown several times. The
    /// global layers keep every row. Control: each sliding layer's first kept position is past 0 (rows were dropped).
    func testWindowedCacheComputesWhatTheFullCacheComputes() throws {
        let cases = [("gemma2", try TinyReference.reference("gemma2", file: "window").inputIds[0]),
                     ("gemma3", try TinyReference.reference("gemma3").inputIds.prefix(2).flatMap { $0 })]
        for (name, ids) in cases {
            let model = try TinyReference.model(name, gguf: true)
            let c = model.configuration, vocabulary = c.vocabSize
            let full = model.makeCache(capacity: 8), windowed = model.makeCache(capacity: 8, keepingEveryKey: false)
            var pieces = [Array(ids[0..<9])], next = 9
            while next < ids.count {
                let size = next < 30 ? 7 : 1
                pieces.append(Array(ids[next..<min(ids.count, next + size)]))
                next += size
            }
            var worst: Float = 0
            for piece in pieces {
                var logits: [[Float]] = [[], []]
                for (i, cache) in [full, windowed].enumerated() {
                    try model.forward(tokens: piece, cache: cache, logits: .all) { _, row in
                        logits[i] += UnsafeBufferPointer(start: row, count: vocabulary)
                    }
                }
                worst = max(worst, zip(logits[0], logits[1]).map { abs($0 - $1) }.max()!)
            }
            XCTAssertEqual(worst, 0, "\(name): windowed vs full cache")
            for layer in 0..<c.numHiddenLayers {
                let window = c.attentionWindow(layer: layer)
                XCTAssertEqual(windowed.origins[layer] > 0, window != nil, "\(name) layer \(layer): rows dropped only where it slides")
                if let window { XCTAssertLessThanOrEqual(windowed.capacities[layer], 2 * (window + 7), "\(name) layer \(layer)") }
            }
            print("\(name): windowed cache \(windowed.bytes) bytes, full cache \(full.bytes) bytes, after \(ids.count) tokens")
            XCTAssertLessThan(windowed.bytes, full.bytes, name)
        }
    }

    /// Positive controls: the window off by one either way, or not masked, moves the logits past it far outside the
    /// tolerance (and changes nothing within it: the 16-token references still match).
    func testGemma2WindowOffByOneFails() throws {
        let weights = try TinyReference.weights("gemma2", gguf: true)
        for window in [31, 33, nil] {
            var c = weights.configuration
            c.slidingWindow = window
            let model = LlamaModel(weights: ModelWeights(configuration: c, embedding: weights.embedding, output: weights.output,
                                                         finalNorm: weights.finalNorm, layers: weights.layers,
                                                         ropeLayout: weights.ropeLayout, source: weights.source),
                                   pool: ThreadPool(threads: 2))
            let past = try TinyReference.worstDifferences(model, "gemma2", adapter: false, file: "window").logit
            let within = try TinyReference.worstDifferences(model, "gemma2", adapter: false).logit
            print("gemma2 with window \(window.map(String.init) ?? "none"): worst logit difference \(past) past it, \(within) within")
            XCTAssertGreaterThan(past, 100 * TinyReference.logitTolerance, "window \(String(describing: window))")
            XCTAssertLessThanOrEqual(within, TinyReference.logitTolerance)
        }
    }
}
