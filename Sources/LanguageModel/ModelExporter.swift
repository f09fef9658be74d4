import Foundation
import Kernels
import ModelFormats
import Tokenizer

/// Writes a model (optionally with a LoRA adapter merged into its weights) as a GGUF v3 file that
/// llama.cpp loads: the family's architecture and keys (`llama`, `qwen2`, `qwen3`, `phi3`, `gemma2`, `gemma3`) as
/// convert_hf_to_gguf.py writes them, llama.cpp's tensor names (Qwen2's q/k/v biases, Qwen3's and Gemma 3's q/k head
/// norms and Gemma's post-norms included, in F32), Llama's Q/K rows in its permuted order (the others' in HF's, which llama.cpp
/// rotates NEOX-style), tokenizer metadata.
public enum ModelExporter {
    /// llama.cpp's `general.file_type` (enum llama_ftype) for a uniform file of `type` (the mixes: `ExportScheme`).
    static func fileType(_ type: TensorType) -> UInt32 {
        switch type {
        case .f32: return 0
        case .f16: return 1
        case .q4_0: return 2
        case .q4_1: return 3
        case .q8_0: return 7
        case .q5_0: return 8
        case .q5_1: return 9
        case .q2_K: return 10
        // The uniform K-quant files are llama.cpp's "_S" types (its "_M" mixes keep some tensors finer).
        case .q3_K: return 11
        case .q4_K: return 14
        case .q5_K: return 16
        case .q6_K: return 18
        case .bf16: return 32
        }
    }

    /// Exports `loaded` to `url` as `scheme` says, merging `adapter` (W + scaling·B·A) first when given.
    ///
    /// 2-D weights take the scheme's type for their role (for 4-bit uniform outputs the embedding stays Q8_0,
    /// as llama.cpp's own quantizer keeps the output head at higher precision). Norm weights stay F32.
    public static func export(_ loaded: LoadedModel, adapter: LoRAAdapter?, scheme: ExportScheme, to url: URL,
                              progress: (Int, Int) -> Void = { _, _ in }) throws {
        let weights = loaded.model.weights
        let c = weights.configuration
        let tied = weights.output.data == weights.embedding.data
        // Every part `BlockDescription` gives these families is written below (norms, head norms, post-norms,
        // projections, biases); a family that adds another part must be added here once its part is written.
        switch c.architecture {
        case .llama, .qwen2, .qwen3, .phi3: break
        case .gemma2, .gemma3: try checkGemmaGraph(weights, tied: tied)
        }
        try checkTokensFitEmbedding(loaded)
        let block = BlockDescription.of(c.architecture)
        var writer = GGUFWriter()
        setMetadata(of: loaded, fileType: scheme.fileType, adapterMerged: adapter != nil, on: &writer)

        func add(_ name: String, _ matrix: WeightMatrix, as role: ExportScheme.Role,
                 merge: (module: ProjectionModule, pair: LoRAPair)? = nil, permuteHeads: Int? = nil) throws {
            let tensorType = scheme.type(of: role, columns: matrix.columns)
            var values = matrix.dequantized()
            if let (module, pair) = merge {
                mergeLoRA(pair, of: module, scaling: Float(adapter!.scaling), into: &values, of: matrix, weights: weights)
            }
            if let heads = permuteHeads, weights.ropeLayout == .halfSplit, block.ggufRopeLayout == .adjacentPairs {
                values = ggufRowOrder(values, rows: matrix.rows, columns: matrix.columns, heads: heads)
            }
            guard values.allSatisfy({ $0.isFinite }) else {
                throw LanguageModelError.badTensor(file: url.path, tensor: name, problem: "non-finite values after merging")
            }
            let quantized = Quantize.matrix(values, rows: matrix.rows, columns: matrix.columns, format: weightFormat(tensorType))
            let bytes = Array(UnsafeRawBufferPointer(start: quantized.data, count: matrix.rows * quantized.rowBytes))
            try writer.addTensor(name: name, dimensions: [matrix.columns, matrix.rows], type: tensorType, data: bytes)
        }
        func addVector(_ name: String, _ values: [Float]?, permuteHeads: Int? = nil) throws {
            guard var values else {
                throw LanguageModelError.badTensor(file: weights.source, tensor: name, problem: "missing from the loaded model")
            }
            if let heads = permuteHeads, weights.ropeLayout == .halfSplit, block.ggufRopeLayout == .adjacentPairs {
                values = ggufRowOrder(values, rows: values.count, columns: 1, heads: heads)
            }
            try writer.addTensor(name: name, dimensions: [values.count], type: .f32, data: values.withUnsafeBytes { Array($0) })
        }
        let total = c.numHiddenLayers + 1
        try add("token_embd.weight", weights.embedding, as: .embedding(tied: tied))
        if !tied { try add("output.weight", weights.output, as: .output) }
        try addVector("output_norm.weight", weights.finalNorm)
        // llama3's scaling (from an HF config or a GGUF's own factors) travels as llama.cpp's frequency divisors.
        switch c.ropeScaling {
        case .llama3, .frequencyFactors: try addVector("rope_freqs.weight", RopeFrequencies.divisors(c)!.map(Float.init))
        // dynamic has no GGUF form (nor in the converter): the same frequencies within context_length, as here.
        case .none, .linear, .dynamic: break
        case .yarn: try checkYarnCarried(c, source: weights.source)  // as keys (`setMetadata`)
        // Phi-3's LongRoPE as convert_hf_to_gguf.py writes it (the keys in `setMetadata`).
        case .longrope(let short, let long, _, _):
            try addVector("rope_factors_long.weight", long.map(Float.init))
            try addVector("rope_factors_short.weight", short.map(Float.init))
        }
        progress(1, total)
        for (l, layer) in weights.layers.enumerated() {
            for (name, values) in norms(of: layer, block: block) { try addVector("blk.\(l).\(name).weight", values) }
            for module in block.projections {
                let pair = adapter?.layers[l][module]
                let heads = module == .qProj ? c.numAttentionHeads : module == .kProj ? c.numKeyValueHeads : nil
                try add("blk.\(l).\(module.ggufName).weight", layer.projection(module),
                        as: .projection(module, layer: l, layers: c.numHiddenLayers),
                        merge: pair.map { (module, $0) }, permuteHeads: heads)
                if block.biased.contains(module) {
                    try addVector("blk.\(l).\(module.ggufName).bias", layer.biases[module], permuteHeads: heads)
                }
            }
            progress(l + 2, total)
        }
        try writer.write(to: url)
    }

    /// Refuses a tokenizer with more tokens than the embedding has rows: llama.cpp reads one token per row, and the ids
    /// past the last row would have none (the converter asserts against such a checkpoint, or drops the pieces past
    /// vocab_size from a SentencePiece list). A shorter tokenizer is padded (`paddedTokenizerValue`).
    static func checkTokensFitEmbedding(_ loaded: LoadedModel) throws {
        let weights = loaded.model.weights
        guard let tokenizer = loaded.tokenizer, tokenizer.vocabularySize > weights.embedding.rows else { return }
        throw LanguageModelError.unsupportedModel(
            file: weights.source, problem: "exporting to GGUF a model whose tokenizer has \(tokenizer.vocabularySize) tokens "
            + "for \(weights.embedding.rows) embedding rows is not supported (llama.cpp reads one token per row, and ids "
            + "\(weights.embedding.rows) to \(tokenizer.vocabularySize - 1) have none)")
    }

    /// A tokenizer key's value with the token list padded to `rows` ids, as llama.cpp's converter pads a vocabulary
    /// shorter than the checkpoint's embedding (Qwen2.5: 151,665 tokens for 151,936 rows): `[PAD<id>]` tokens of type
    /// unused, with score -10000 where the list has scores (`get_vocab_base`, `_create_vocab_sentencepiece`, Phi-3's own
    /// list); other keys, and lists as long already, are returned as they are. The converter pads for every family written
    /// here, Gemma 3 included: its "remove OOV rows" cut keeps as many rows as the padded list has, and cuts only where it
    /// reads tokenizer.json alone, whose list it still pads, writing a file llama.cpp refuses (token_embd of the wrong
    /// shape). No row is cut, then, and llama.cpp's softmax runs over every row, as transformers' does: cutting the 32
    /// padded rows of the tiny-gemma3-padded fixture would take 5.9% of transformers' probability from it on average, 8.1%
    /// at most (`padded_mass` in its reference.json), and leave the logits of the rows kept as they are.
    static func paddedTokenizerValue(_ key: String, _ value: GGUFValue, rows: Int) -> GGUFValue {
        guard case .array(let list) = value, list.count < rows else { return value }
        let added = list.count..<rows
        switch key {
        case "tokenizer.ggml.tokens": return .array(list + added.map { .string("[PAD\($0)]") })
        case "tokenizer.ggml.token_type":
            return .array(list + added.map { _ in .int32(Int32(BPETokenizer.TokenType.unused.rawValue)) })
        case "tokenizer.ggml.scores": return .array(list + added.map { _ in .float32(-10000) })
        default: return value
        }
    }

    /// Refuses a YaRN that a GGUF cannot carry: llama.cpp computes beta_fast 32, beta_slow 1 and truncated
    /// correction dimensions only (`LlamaConfiguration.ggufYarn`).
    static func checkYarnCarried(_ c: LlamaConfiguration, source: String) throws {
        guard case let .yarn(_, _, betaFast, betaSlow, truncate, _) = c.ropeScaling, betaFast != 32 || betaSlow != 1 || !truncate
        else { return }
        throw LanguageModelError.unsupportedModel(file: source, problem: "exporting YaRN with beta_fast \(betaFast), beta_slow "
                                                  + "\(betaSlow) and truncate \(truncate) to GGUF is not supported (llama.cpp "
                                                  + "computes beta_fast 32, beta_slow 1 and truncate true only)")
    }

    /// A layer's norm weights under their GGUF names (`attn_norm`, `ffn_norm`, the block's post-norms and q/k head
    /// norms where it has them; nil where the loaded layer lacks one). They are written as the pass multiplies by
    /// them: Gemma's as 1 + w, which is the converter's convention (it adds 1 to HF's w) and what llama.cpp multiplies by.
    static func norms(of layer: LayerWeights, block: BlockDescription) -> [(String, [Float]?)] {
        var norms: [(String, [Float]?)] = [(block.attentionNorm.gguf, layer.attentionNorm),
                                           (block.feedForwardNorm.gguf, layer.feedForwardNorm)]
        if let post = block.postNorms {
            norms += [(post.attention.gguf, layer.postAttentionNorm), (post.feedForward.gguf, layer.postFeedForwardNorm)]
        }
        if let heads = block.headNorms { norms += [(heads.query.gguf, layer.queryNorm), (heads.key.gguf, layer.keyNorm)] }
        return norms
    }

    /// Refuses a Gemma model whose numbers llama.cpp's graph (src/models/gemma2.cpp, gemma3.cpp) would not reproduce from
    /// its file, since that graph fixes what the file cannot say: it multiplies the embedding by √hidden in float32
    /// (transformers rounds it to the checkpoint's dtype: 59.75 for Gemma-2-9B in bfloat16, where float32 gives 59.867) and
    /// scales queries by its own rule (`llamaCppGemmaQueryScalar`), not by query_pre_attn_scalar. Its gemma2 graph also
    /// takes the embedding as the output head, soft-caps attention and logits always (50 and 30 without the keys) and
    /// slides the even layers; its gemma3 graph caps no attention score, and gives sliding layers a window and a rope
    /// base of their own (`rope.freq_base_swa`), unscaled.
    static func checkGemmaGraph(_ weights: ModelWeights, tied: Bool) throws {
        let c = weights.configuration
        func refuse(_ problem: String) -> LanguageModelError {
            .unsupportedModel(file: weights.source, problem: "exporting this \(c.architecture.rawValue) model to GGUF: \(problem)")
        }
        let scale = Float(c.hiddenSize).squareRoot()
        guard c.embeddingScale == scale else {
            throw refuse("its embedding scale \(c.embeddingScale.map { "\($0)" } ?? "none") (√\(c.hiddenSize) in the "
                         + "checkpoint's dtype) is not the \(scale) llama.cpp computes in float32")
        }
        guard c.queryPreAttentionScalar == c.llamaCppGemmaQueryScalar else {
            throw refuse("query_pre_attn_scalar = \(c.queryPreAttentionScalar.map { "\($0)" } ?? "none") is not the "
                         + "\(c.llamaCppGemmaQueryScalar) llama.cpp assumes for \(c.numHiddenLayers) layers of head size "
                         + "\(c.headDim) (GGUF has no key for it)")
        }
        if c.architecture == .gemma3 {
            // gemma3.cpp reads output.weight when the file has one, and any pattern of sliding layers (`setMetadata`).
            guard c.attentionSoftcap == nil else {
                throw refuse("attn_logit_softcapping = \(c.attentionSoftcap!) is not computed by llama.cpp's gemma3 graph "
                             + "(nor written by its converter, which requires it null)")
            }
            guard !c.slidingLayers.contains(true) || (c.slidingWindow != nil && c.slidingRopeTheta != nil) else {
                throw refuse("its sliding layers have no window or no rope base of their own, which llama.cpp's gemma3 "
                             + "graph gives every sliding layer")
            }
            return
        }
        guard tied else {
            throw refuse("its output head is not its embedding, and llama.cpp's graph uses the embedding as the head")
        }
        guard c.attentionSoftcap != nil, c.finalLogitSoftcap != nil else {
            throw refuse("it is not soft-capped (attn_logit_softcapping \(c.attentionSoftcap.map { "\($0)" } ?? "null"), "
                         + "final_logit_softcapping \(c.finalLogitSoftcap.map { "\($0)" } ?? "null")), and llama.cpp's graph "
                         + "always caps (at 50 and 30 without the keys)")
        }
        // llama.cpp's gemma2 loader slides the even layers (set_swa_pattern(2)); GGUF cannot say otherwise for it.
        let evenLayers = (0..<c.numHiddenLayers).map { $0 % 2 == 0 }
        guard c.slidingLayers.isEmpty || c.slidingLayers == evenLayers else {
            let sliding = c.slidingLayers.indices.filter { c.slidingLayers[$0] }.map(String.init).joined(separator: ", ")
            throw refuse("its sliding layers (\(sliding)) are not the even layers llama.cpp's gemma2 graph slides")
        }
    }

    /// The file's metadata: the source GGUF's keys (or, for another source, a name and its tokenizer) with a token list
    /// shorter than the embedding padded (`paddedTokenizerValue`), then llama.cpp's keys for the family
    /// (`<architecture>.*`) from the configuration and the file type of `type`.
    static func setMetadata(of loaded: LoadedModel, fileType: UInt32, adapterMerged: Bool,
                            on writer: inout GGUFWriter) {
        let weights = loaded.model.weights
        let c = weights.configuration, architecture = c.architecture.rawValue, p = architecture + "."
        let rows = weights.embedding.rows
        if let gguf = loaded.gguf {
            for key in gguf.metadataKeys where key != "general.file_type" && key != "general.alignment" {
                writer.set(key, paddedTokenizerValue(key, gguf.metadata[key]!, rows: rows))
            }
        } else {
            writer.set("general.name", .string(URL(fileURLWithPath: weights.source).lastPathComponent))
            for (key, value) in loaded.tokenizer?.ggufMetadata ?? [] { writer.set(key, paddedTokenizerValue(key, value, rows: rows)) }
        }
        writer.set("general.architecture", .string(architecture))
        writer.set(p + "block_count", .uint32(UInt32(c.numHiddenLayers)))
        writer.set(p + "context_length", .uint32(UInt32(c.maxPositionEmbeddings)))
        writer.set(p + "embedding_length", .uint32(UInt32(c.hiddenSize)))
        writer.set(p + "feed_forward_length", .uint32(UInt32(c.intermediateSize)))
        writer.set(p + "attention.head_count", .uint32(UInt32(c.numAttentionHeads)))
        writer.set(p + "attention.head_count_kv", .uint32(UInt32(c.numKeyValueHeads)))
        writer.set(p + "rope.freq_base", .float32(Float(c.ropeTheta)))
        // The converter writes the rotary width for Llama and Phi-3, not for Qwen (llama.cpp takes the head's).
        if c.architecture == .llama || c.architecture == .phi3 {
            writer.set(p + "rope.dimension_count", .uint32(UInt32(c.rotaryDim)))
        }
        // The head size where it is not hidden / heads (llama.cpp's default), and always for Qwen3 and Gemma, whose
        // config's head_dim the converter writes as key_length and value_length.
        if c.headDim * c.numAttentionHeads != c.hiddenSize || c.architecture == .qwen3 || c.architecture.isGemma {
            writer.set(p + "attention.key_length", .uint32(UInt32(c.headDim)))
            writer.set(p + "attention.value_length", .uint32(UInt32(c.headDim)))
        }
        if case .linear(let factor) = c.ropeScaling {
            writer.set(p + "rope.scaling.type", .string("linear"))
            writer.set(p + "rope.scaling.factor", .float32(Float(factor)))
        }
        writer.set(p + "attention.layer_norm_rms_epsilon", .float32(Float(c.rmsNormEps)))
        writer.set(p + "vocab_size", .uint32(UInt32(c.vocabSize)))
        // Phi-3's window, as convert_hf_to_gguf.py writes it (0: none); the file's context is what it was.
        if c.architecture == .phi3 { writer.set(p + "attention.sliding_window", .uint32(UInt32(c.slidingWindow ?? 0))) }
        // YaRN as convert_hf_to_gguf.py writes it, and an attention factor other than get_mscale(factor) as the one
        // multiplier llama.cpp applies on top of it (`rope.scaling.attn_factor`; `LlamaConfiguration.ggufYarn`).
        if case let .yarn(factor, original, _, _, _, attention) = c.ropeScaling {
            writer.set(p + "rope.scaling.type", .string("yarn"))
            writer.set(p + "rope.scaling.factor", .float32(Float(factor)))
            writer.set(p + "rope.scaling.original_context_length", .uint32(UInt32(original)))
            let multiplier = attention / RopeScaling.yarnMagnitude(factor)
            if multiplier != 1 { writer.set(p + "rope.scaling.attn_factor", .float32(Float(multiplier))) }
        }
        // Gemma 2's caps (`checkGemmaGraph` saw that it has both) and window; a model without a window gets one as long
        // as its context, which masks nothing, where llama.cpp would take 4096 for an absent key.
        if c.architecture == .gemma2 {
            writer.set(p + "attn_logit_softcapping", .float32(Float(c.attentionSoftcap!)))
            writer.set(p + "final_logit_softcapping", .float32(Float(c.finalLogitSoftcap!)))
            writer.set(p + "attention.sliding_window", .uint32(UInt32(c.slidingWindow ?? c.maxPositionEmbeddings)))
        }
        // Gemma 3's final cap where it has one, and its sliding layers as gemma3.cpp reads them (`checkGemmaGraph` saw a
        // window and a rope base for them): the window, the layers (no key where they are llama.cpp's default, five of
        // every six as the converter leaves it; else one flag per layer, which llama.cpp reads as any pattern) and their
        // base. Without a sliding layer no window is written: llama.cpp then slides none, where the converter would still
        // write the window of config.json and llama.cpp slide five of every six.
        if c.architecture == .gemma3 {
            if let cap = c.finalLogitSoftcap { writer.set(p + "final_logit_softcapping", .float32(Float(cap))) }
            if c.slidingLayers.contains(true) {
                writer.set(p + "attention.sliding_window", .uint32(UInt32(c.slidingWindow!)))
                let defaultPattern = (0..<c.numHiddenLayers).map { $0 % 6 < 5 }  // llama_hparams::set_swa_pattern(6)
                if c.slidingLayers != defaultPattern {
                    writer.set(p + "attention.sliding_window_pattern", .array(c.slidingLayers.map { .bool($0) }))
                }
                writer.set(p + "rope.freq_base_swa", .float32(Float(c.slidingRopeTheta!)))
            }
        }
        if case .longrope(_, _, let attention, let original) = c.ropeScaling {
            writer.set(p + "rope.scaling.attn_factor", .float32(Float(attention)))
            writer.set(p + "rope.scaling.original_context_length", .uint32(UInt32(original)))
        }
        writer.set("general.file_type", .uint32(fileType))
        // ggml's GGML_QNT_VERSION, which llama-quantize and the converter write in every file (the block layouts here).
        writer.set("general.quantization_version", .uint32(2))
        if adapterMerged { writer.set("conclave.adapter_merged", .bool(true)) }
    }

    /// W += scaling · B A on `values` (the dequantized `matrix`, row-major), with B's rows in this model's
    /// order: a model whose RoPE pairs adjacent values stores Q and K rows permuted.
    static func mergeLoRA(_ pair: LoRAPair, of module: ProjectionModule, scaling: Float, into values: inout [Float],
                          of matrix: WeightMatrix, weights: ModelWeights) {
        var b = pair.b
        if weights.ropeLayout == .adjacentPairs && (module == .qProj || module == .kProj) {
            b = RoPEPermutation.permuteRows(b, outFeatures: pair.outFeatures, rank: pair.rank,
                                            headDimension: weights.configuration.headDim)
        }
        for r in 0..<matrix.rows {
            for k in 0..<pair.rank {
                let coefficient = scaling * b[r * pair.rank + k]
                if coefficient == 0 { continue }
                for col in 0..<matrix.columns { values[r * matrix.columns + col] += coefficient * pair.a[k * matrix.columns + col] }
            }
        }
    }

    /// A half-split (HF) Q or K matrix's rows moved to llama.cpp's order, head by head.
    static func ggufRowOrder(_ values: [Float], rows: Int, columns: Int, heads: Int) -> [Float] {
        var permuted = values
        let hd = rows / heads
        for row in 0..<rows {
            let target = RoPEPermutation.ggufRow(ofHFRow: row, headDimension: hd)
            permuted.replaceSubrange((target * columns)..<((target + 1) * columns),
                                     with: values[(row * columns)..<((row + 1) * columns)])
        }
        return permuted
    }

    static func weightFormat(_ type: TensorType) -> WeightFormat { ModelLoader.weightFormat(type) }
}
