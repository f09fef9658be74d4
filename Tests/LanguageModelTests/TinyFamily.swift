import Foundation
import Kernels
import ModelFormats
@testable import LanguageModel

/// One family's tiny random model in Tests/Fixtures (`tiny-<name>`: HF directory, the converter's GGUF and its Q8_0
/// copy, a PEFT adapter on every projection, transformers' float64 references), and what its block has. The family
/// tests (FamilyReferenceTests, FamilyRefusalTests, FamilyExportTests, FamilyCommandTests) loop over `all`: XCTest
/// on Linux runs no inherited test methods, so a family is a row of this table, not a subclass.
struct TinyFamily {
    let name: String
    let architecture: ModelArchitecture
    /// A block's projections, each adapted by the fixture's adapter (PEFT's names: Phi-3's are fused).
    let projections: Set<ProjectionModule>
    let tied: Bool
    let headDim: Int
    /// The sliding window (Gemma's, masked on `slidingLayers`; Phi-3's, bounding the context), or nil.
    let window: Int?
    /// The layers that mask the window (Gemma 2's even ones, Gemma 3's five of six); empty: the window bounds the context.
    var slidingLayers: [Bool] = []
    /// Layers of the fixture (two, but Gemma 3's six, so that its pattern has a global layer).
    var layers = 2
    /// The projections with biases (Qwen2's q, k, v).
    var biased: Set<ProjectionModule> = []
    /// Per-head q/k norms (Qwen3).
    var headNorms = false
    /// Norms after the attention and the feed-forward (Gemma 2, Gemma 3).
    var postNorms = false
    /// How far the Q8_0 file's losses at int8 activations may be from transformers' over its dequantized weights:
    /// 0.004-0.018 nats measured (AVX-512 VNNI; Gemma 3's 0.018, its 32-wide rows one int8 block each over six layers),
    /// a bias left out of that path moves qwen2's by up to 0.11.
    var int8LossTolerance = 0.02
    /// How close training's int8 gradient must be to its float32 one (relative L2 error below, cosine above): 0.024-0.036
    /// measured on AVX-512 VNNI, 0.011-0.031 on the generic tier and 0.030-0.046 on AVX2 (whose backward products take
    /// 7-bit activations: four times the 8-bit error). Gemma 3's is larger on every tier (0.044 VNNI, 0.051 generic, 0.058
    /// AVX2, cosine ≥ 0.9984), its q/k head norm gains near 0.4 (GEMMA3_NORM_MEANS in generate.py): its row says so.
    var int8GradientAgreement = (relative: 0.05, cosine: 0.998)
    /// Positive controls: each breaks one of the family's own parts in the converter's weights, which must then
    /// fail the reference comparison by far.
    var breakages: [(label: String, apply: (ModelWeights) -> ModelWeights)] = []

    /// How many tensors the adapter has: an A and a B per projection and layer.
    var adapterTensors: Int { projections.count * 2 * layers }

    /// The projection whose type shows a file's quantization (q, or Phi-3's fused qkv).
    var queryProjection: ProjectionModule { projections.contains(.qkvProj) ? .qkvProj : .qProj }

    static let separate: Set<ProjectionModule> = [.qProj, .kProj, .vProj, .oProj, .gateProj, .upProj, .downProj]

    static var all: [TinyFamily] { [qwen2, qwen3, gemma2, gemma3, phi3] }

    static var qwen2: TinyFamily {
        let zeroBiases: (ModelWeights) -> ModelWeights = { weights in
            rebuilt(weights) { layer in
                LayerWeights(attentionNorm: layer.attentionNorm, feedForwardNorm: layer.feedForwardNorm,
                             projections: layer.projections, biases: layer.biases.mapValues { [Float](repeating: 0, count: $0.count) })
            }
        }
        return TinyFamily(name: "qwen2", architecture: .qwen2, projections: separate, tied: true, headDim: 16, window: nil,
                          biased: [.qProj, .kProj, .vProj], breakages: [("biases zeroed", zeroBiases)])
    }

    /// Head size 32 where hidden / heads is 16, untied.
    static var qwen3: TinyFamily {
        let unitHeadNorms: (ModelWeights) -> ModelWeights = { weights in
            rebuilt(weights) { layer in
                let ones = [Float](repeating: 1, count: layer.queryNorm!.count)
                return LayerWeights(attentionNorm: layer.attentionNorm, feedForwardNorm: layer.feedForwardNorm,
                                    projections: layer.projections, queryNorm: ones, keyNorm: ones)
            }
        }
        return TinyFamily(name: "qwen3", architecture: .qwen3, projections: separate, tied: false, headDim: 32, window: nil,
                          headNorms: true, breakages: [("head norms set to 1", unitHeadNorms)])
    }

    /// Embeddings times √hidden, (1 + w) pre- and post-norms, GeGLU with gelu-tanh, attention and final-logit
    /// soft-capping, head size 32 with hidden 64 and 4 heads, tied embeddings, a sliding window on the even layers.
    /// (Its window masked past it: SlidingWindowTests.)
    static var gemma2: TinyFamily {
        let noPlusOne: (ModelWeights) -> ModelWeights = { weights in
            rebuilt(weights, finalNorm: weights.finalNorm.map { $0 - 1 }) { layer in
                var changed = LayerWeights(attentionNorm: layer.attentionNorm.map { $0 - 1 },
                                           feedForwardNorm: layer.feedForwardNorm.map { $0 - 1 }, projections: layer.projections)
                changed.postAttentionNorm = layer.postAttentionNorm!.map { $0 - 1 }
                changed.postFeedForwardNorm = layer.postFeedForwardNorm!.map { $0 - 1 }
                return changed
            }
        }
        let noPostNorms: (ModelWeights) -> ModelWeights = { weights in
            rebuilt(weights) { layer in
                LayerWeights(attentionNorm: layer.attentionNorm, feedForwardNorm: layer.feedForwardNorm,
                             projections: layer.projections)
            }
        }
        return TinyFamily(name: "gemma2", architecture: .gemma2, projections: separate, tied: true, headDim: 32, window: 32,
                          slidingLayers: [true, false], postNorms: true, breakages: [
                              ("attention soft-capping dropped", configured { $0.attentionSoftcap = nil }),
                              ("final soft-capping dropped", configured { $0.finalLogitSoftcap = nil }),
                              ("query scale 1/sqrt(16)", configured { $0.queryPreAttentionScalar = 16 }),
                              ("embedding not scaled", configured { $0.embeddingScale = nil }),
                              ("norms w instead of 1 + w", noPlusOne), ("post-norms dropped", noPostNorms)])
    }

    /// Gemma 2's block with (1 + w) per-head q/k norms and no soft-capping; six layers of which the sixth is global; a
    /// window of 5 that every 16-token example crosses; the sliding layers' own rope base, the global layer's linear
    /// rope scaling; head size 16 with hidden 32 and 4 heads, tied embeddings. Its breakages: the window off by one
    /// either way or gone, the layer kinds moved, the sliding layers' rope base or the global layer's scaling lost, the
    /// head norms w instead of 1 + w.
    static var gemma3: TinyFamily {
        let headNormsW: (ModelWeights) -> ModelWeights = { weights in
            rebuilt(weights) { layer in
                var changed = LayerWeights(attentionNorm: layer.attentionNorm, feedForwardNorm: layer.feedForwardNorm,
                                           projections: layer.projections, queryNorm: layer.queryNorm!.map { $0 - 1 },
                                           keyNorm: layer.keyNorm!.map { $0 - 1 })
                changed.postAttentionNorm = layer.postAttentionNorm
                changed.postFeedForwardNorm = layer.postFeedForwardNorm
                return changed
            }
        }
        let sliding = [true, true, true, true, true, false]
        var family = TinyFamily(name: "gemma3", architecture: .gemma3, projections: separate, tied: true, headDim: 16, window: 5,
                          slidingLayers: sliding, layers: 6, headNorms: true, postNorms: true, breakages: [
                              ("no window", configured { $0.slidingWindow = nil }),
                              ("window 4 (one key fewer)", configured { $0.slidingWindow = 4 }),
                              ("window 6 (one key more)", configured { $0.slidingWindow = 6 }),
                              ("every layer global", configured { $0.slidingLayers = sliding.map { _ in false } }),
                              ("every layer sliding", configured { $0.slidingLayers = sliding.map { _ in true } }),
                              ("sliding layers with the global rope", configured { $0.slidingRopeTheta = nil }),
                              ("global layer unscaled", configured { $0.ropeScaling = .none }),
                              ("head norms w instead of 1 + w", headNormsW)])
        family.int8GradientAgreement = (relative: 0.07, cosine: 0.998)
        return family
    }

    /// Fused qkv_proj and gate_up_proj, partial rotary 0.75 and LongRoPE as Phi-4-mini's, a sliding window shorter
    /// than its context, untied.
    static var phi3: TinyFamily {
        // gate_up_proj's halves swapped (up activated instead of gate); qkv_proj's k and v rows swapped.
        let swappedGateUp: (ModelWeights) -> ModelWeights = { weights in
            let ff = weights.configuration.intermediateSize
            return rowsSwapped(weights, .gateUpProj, first: 0..<ff, second: ff..<(2 * ff))
        }
        let swappedKV: (ModelWeights) -> ModelWeights = { weights in
            let c = weights.configuration
            let qWidth = c.numAttentionHeads * c.headDim, kvWidth = c.numKeyValueHeads * c.headDim
            return rowsSwapped(weights, .qkvProj, first: qWidth..<(qWidth + kvWidth),
                               second: (qWidth + kvWidth)..<(qWidth + 2 * kvWidth))
        }
        let wholeHead = configured {  // 16 values rotated, the two added pairs with factor 1
            $0.rotaryDim = $0.headDim
            if case .longrope(let short, let long, let attention, let original) = $0.ropeScaling {
                $0.ropeScaling = .longrope(shortFactors: short + [1, 1], longFactors: long + [1, 1], attentionFactor: attention,
                                           originalContext: original)
            }
        }
        let noAttentionFactor = configured {
            if case .longrope(let short, let long, _, let original) = $0.ropeScaling {
                $0.ropeScaling = .longrope(shortFactors: short, longFactors: long, attentionFactor: 1, originalContext: original)
            }
        }
        return TinyFamily(name: "phi3", architecture: .phi3, projections: [.qkvProj, .oProj, .gateUpProj, .downProj],
                          tied: false, headDim: 16, window: 32, breakages: [
                              ("gate/up swapped", swappedGateUp), ("k/v swapped", swappedKV),
                              ("adjacent-pair rope", { rebuilt($0, ropeLayout: RoPE.Layout.adjacentPairs) }),
                              ("every value of the head rotated", wholeHead),
                              ("LongRoPE dropped", configured { $0.ropeScaling = .none }),
                              ("LongRoPE's attention factor dropped", noAttentionFactor)])
    }

    /// A breakage that changes only the configuration.
    static func configured(_ change: @escaping (inout LlamaConfiguration) -> Void) -> (ModelWeights) -> ModelWeights {
        { weights in
            var changed = weights.configuration
            change(&changed)
            return rebuilt(weights, configuration: changed)
        }
    }

    /// `weights` with another configuration, final norm, rope layout or layers (each layer through `layer`).
    static func rebuilt(_ weights: ModelWeights, configuration: LlamaConfiguration? = nil, finalNorm: [Float]? = nil,
                        ropeLayout: RoPE.Layout? = nil, layer: (LayerWeights) -> LayerWeights = { $0 }) -> ModelWeights {
        ModelWeights(configuration: configuration ?? weights.configuration, embedding: weights.embedding,
                     output: weights.output, finalNorm: finalNorm ?? weights.finalNorm, layers: weights.layers.map(layer),
                     ropeLayout: ropeLayout ?? weights.ropeLayout, source: weights.source)
    }

    /// `weights` with the rows `first` and `second` (of equal length) of one projection exchanged in every layer.
    static func rowsSwapped(_ weights: ModelWeights, _ module: ProjectionModule, first: Range<Int>, second: Range<Int>) -> ModelWeights {
        rebuilt(weights) { layer in
            let matrix = layer.projection(module), columns = matrix.columns
            let values = matrix.dequantized()
            var swapped = values
            for (a, b) in zip(first, second) {
                swapped.replaceSubrange((a * columns)..<((a + 1) * columns), with: values[(b * columns)..<((b + 1) * columns)])
                swapped.replaceSubrange((b * columns)..<((b + 1) * columns), with: values[(a * columns)..<((a + 1) * columns)])
            }
            var projections = layer.projections
            projections[module] = WeightMatrix(float32: swapped, rows: matrix.rows, columns: columns)
            return LayerWeights(attentionNorm: layer.attentionNorm, feedForwardNorm: layer.feedForwardNorm,
                                projections: projections, biases: layer.biases)
        }
    }
}
