import Foundation
import Kernels
import ModelFormats
import TestSupport
import XCTest
@testable import LanguageModel

/// `quantize` writes each family back as a GGUF file of its own architecture: for Qwen2, Qwen3, Gemma 2 and Gemma 3 the keys and
/// tensors llama.cpp's convert_hf_to_gguf.py wrote for the same tiny models (Tests/Fixtures/tiny-<name>:
/// model.gguf.bin), a tokenizer shorter than the embedding padded as it pads one (tiny-llama-padded, -gemma3-padded, -qwen2-padded),
/// and files that load back and compute transformers' float64 logits (the fixtures' reference.safetensors). llama.cpp runs
/// such files: Reference/llamacpp_family_check.py.
final class FamilyExportTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws { directory = try Fixtures.temporaryDirectory("family-export") }
    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

    /// The converter's descriptive keys, which it derives from the model card and parameter count, not the model.
    static let converterOnlyKeys: Set<String> = ["general.type", "general.size_label"]

    /// How `ours` differs from `converter`'s keys and tensors: keys present in one only (but the descriptive ones),
    /// values of the keys that define the model, tensor names, shapes and types. Empty when they agree.
    static func differences(_ ours: GGUFFile, from converter: GGUFFile) -> [String] {
        var found: [String] = []
        let mine = Set(ours.metadataKeys).subtracting(converterOnlyKeys)
        let theirs = Set(converter.metadataKeys).subtracting(converterOnlyKeys)
        for key in theirs.subtracting(mine).sorted() { found.append("missing key \(key)") }
        for key in mine.subtracting(theirs).sorted() where key != "conclave.adapter_merged" { found.append("extra key \(key)") }
        // general.name is the source's name (the converter takes the model card's); the rest must be equal.
        for key in mine.intersection(theirs).sorted() where key != "general.name" && ours.metadata[key] != converter.metadata[key] {
            found.append("\(key): \(String(describing: ours.metadata[key]!)) vs \(String(describing: converter.metadata[key]!))")
        }
        let shapes = { (file: GGUFFile) in Dictionary(uniqueKeysWithValues: file.tensors.map { ($0.name, "\($0.dimensions) \($0.type)") }) }
        let (a, b) = (shapes(ours), shapes(converter))
        for name in Set(a.keys).union(b.keys).sorted() where a[name] != b[name] {
            found.append("tensor \(name): \(a[name] ?? "absent") vs \(b[name] ?? "absent")")
        }
        return found
    }

    /// The names of the tensors whose type or bytes differ between the two files (or that one lacks).
    static func tensorsDiffering(_ ours: GGUFFile, from converter: GGUFFile) -> [String] {
        Set(ours.tensors.map(\.name)).union(converter.tensors.map(\.name)).sorted().filter { name in
            guard let a = ours.tensor(named: name), let b = converter.tensor(named: name) else { return true }
            return a.type != b.type || !ours.data(for: a).elementsEqual(converter.data(for: b))
        }
    }

    func export(_ family: String, fromGGUF: Bool, adapter: Bool, scheme: ExportScheme, name: String) throws -> GGUFFile {
        let path = Fixtures.url(fromGGUF ? "tiny-\(family)/model.gguf.bin" : "tiny-\(family)").path
        let source = try ModelLoader.load(path: path, threads: 2)
        let url = directory.appendingPathComponent("\(name).gguf")
        try ModelExporter.export(source, adapter: adapter ? try TinyReference.adapter(family, for: source.model) : nil,
                                 scheme: scheme, to: url)
        return try GGUFFile(url: url)
    }

    /// The families whose exports carry the converter's keys and tensors, each with the part of its own that the
    /// controls break in a merged F32 export, and the keys we write that the converter leaves out: Gemma 2's
    /// rope.freq_base (the converter writes none for gemma2, and llama.cpp then takes 10000, which is Gemma 2's
    /// rope_theta but need not be the model's).
    static let converterFamilies: [(name: String, part: String, extraKeys: [String])] = [
        ("qwen2", "biases zeroed", []), ("qwen3", "head norms set to 1", []),
        ("gemma2", "post_ffw_norm as w, not 1 + w", ["gemma2.rope.freq_base"]),
        ("gemma3", "attn_q_norm as w, not 1 + w", []),
    ]

    /// `tensor` with `family`'s own part broken (`converterFamilies`' control), or as it is.
    static func brokenPart(of family: String) -> (TinyReference.GGUFTensor) -> TinyReference.GGUFTensor {
        { tensor in
            func floats(_ change: (Float) -> Float) -> TinyReference.GGUFTensor {
                let values = tensor.data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }.map(change)
                return (tensor.name, tensor.dimensions, tensor.type, values.withUnsafeBytes { Array($0) })
            }
            switch family {
            case "qwen2" where tensor.name.hasSuffix(".bias"): return floats { _ in 0 }
            case "qwen3" where tensor.name.hasSuffix("attn_q_norm.weight") || tensor.name.hasSuffix("attn_k_norm.weight"):
                return floats { _ in 1 }
            case "gemma2" where tensor.name.hasSuffix("post_ffw_norm.weight"): return floats { $0 - 1 }
            case "gemma3" where tensor.name.hasSuffix("attn_q_norm.weight"): return floats { $0 - 1 }
            default: return tensor
            }
        }
    }

    /// From the HF directory and from the converter's own GGUF, F32: the converter's keys (qwen2.*, qwen3.*, gemma2.*,
    /// gemma3.*; key_length and value_length of Qwen3 and Gemma, Gemma 2's caps and window, Gemma 3's window, sliding
    /// rope base and global linear scaling, no rope.dimension_count), values and tensors (biases, head norms, post-norms,
    /// no output.weight where tied), byte for byte (Gemma's norms, Gemma 3's head norms too, as the converter's 1 + w). Positive control: the same comparison lists what a file lacking one key or one bias lacks.
    func testKeysAndTensorsAreTheConverters() throws {
        for (family, _, extraKeys) in Self.converterFamilies {
            let converter = try GGUFFile(url: Fixtures.url("tiny-\(family)/model.gguf.bin"))
            for fromGGUF in [false, true] {
                let ours = try export(family, fromGGUF: fromGGUF, adapter: false, scheme: .uniform(.f32),
                                      name: "\(family)-\(fromGGUF ? "gguf" : "hf")")
                let label = "\(family) from \(fromGGUF ? "GGUF" : "HF")"
                XCTAssertEqual(Self.differences(ours, from: converter), extraKeys.map { "extra key \($0)" }, label)
                XCTAssertEqual(Self.tensorsDiffering(ours, from: converter), [], "\(label): the converter's bytes")
                XCTAssertEqual(ours.string("general.architecture"), family)
            }
        }
        let qwen3 = try GGUFFile(url: Fixtures.url("tiny-qwen3/model.gguf.bin"))
        XCTAssertEqual(qwen3.int("qwen3.attention.key_length"), 32, "the fixture's head is not hidden / heads = 16")
        XCTAssertNotNil(qwen3.tensor(named: "output.weight"), "tiny-qwen3 is untied")
        XCTAssertNil(try GGUFFile(url: Fixtures.url("tiny-qwen2/model.gguf.bin")).tensor(named: "output.weight"), "tiny-qwen2 is tied")
        // Controls: the converter's files rewritten without qwen3's key_length, and without one qwen2 bias.
        let noKey = try rewrite("qwen3", name: "no-key-length") { keys, _ in keys.removeAll { $0.0 == "qwen3.attention.key_length" } }
        XCTAssertEqual(Self.differences(noKey, from: qwen3), ["missing key qwen3.attention.key_length"])
        let noBias = try rewrite("qwen2", name: "no-bias") { _, tensors in tensors.removeAll { $0.name == "blk.1.attn_k.bias" } }
        XCTAssertEqual(Self.differences(noBias, from: try GGUFFile(url: Fixtures.url("tiny-qwen2/model.gguf.bin"))),
                       ["tensor blk.1.attn_k.bias: absent vs [32] F32"])
    }

    /// The converter's file of `family` rewritten with `edit` applied to its keys and tensors.
    func rewrite(_ family: String, name: String,
                 edit: (inout [(String, GGUFValue)], inout [TinyReference.GGUFTensor]) -> Void) throws -> GGUFFile {
        try rewrite(Fixtures.url("tiny-\(family)/model.gguf.bin"), name: name, edit: edit)
    }

    func rewrite(_ source: URL, name: String,
                 edit: (inout [(String, GGUFValue)], inout [TinyReference.GGUFTensor]) -> Void) throws -> GGUFFile {
        let url = directory.appendingPathComponent("\(name).gguf")
        try TinyReference.rewrite(source, to: url, edit: edit)
        return try GGUFFile(url: url)
    }

    /// F32 with the PEFT adapter merged (from the HF directory and from the GGUF) computes PEFT's LoRA logits; the
    /// Q8_0 export computes transformers' forward over gguf-py's dequantization of the converter's Q8_0 file (the
    /// same rounding), and with the adapter merged stays within the reference's own Q8_0 effect of PEFT's.
    /// Positive controls: the merged F32 file with the family's own part broken (`brokenPart`) is far off.
    func testExportsComputeTransformersLogits() throws {
        for (family, part, _) in Self.converterFamilies {
            let reference = try TinyReference.reference(family)
            for fromGGUF in [false, true] {
                let merged = try export(family, fromGGUF: fromGGUF, adapter: true, scheme: .uniform(.f32), name: "\(family)-merged-\(fromGGUF)")
                XCTAssertEqual(merged.bool("conclave.adapter_merged"), true)
                let worst = try TinyReference.worstLogitDifference(merged, family, tensor: "lora_logits")
                print("\(family) merged F32 export from \(fromGGUF ? "GGUF" : "HF"): worst logit difference from PEFT's \(worst)")
                XCTAssertLessThanOrEqual(worst, TinyReference.logitTolerance, "\(family) merged F32 export")
            }
            let q8 = try export(family, fromGGUF: false, adapter: false, scheme: .uniform(.q8_0), name: "\(family)-q8_0")
            XCTAssertEqual(q8.tensor(named: "blk.0.attn_q.weight")?.type, .q8_0)
            // The converter's --outtype q8_0 file (gguf-py's quantizer) holds the same bytes, tensor by tensor; the F32
            // export, which differs in every matrix, is the control.
            let converterQ8 = try GGUFFile(url: Fixtures.url("tiny-\(family)/model-q8_0.gguf.bin"))
            XCTAssertEqual(Self.tensorsDiffering(q8, from: converterQ8), [], "\(family) Q8_0 export vs the converter's")
            let f32 = try GGUFFile(url: directory.appendingPathComponent("\(family)-merged-false.gguf"))
            XCTAssertEqual(Self.tensorsDiffering(f32, from: converterQ8).count, converterQ8.tensors.filter { $0.dimensions.count == 2 }.count,
                           "\(family): every matrix of the F32 file differs from the Q8_0 one")
            let worstQ8 = try TinyReference.worstLogitDifference(q8, family, tensor: "q8_0_logits")
            print("\(family) Q8_0 export: worst logit difference from transformers over gguf-py's Q8_0 \(worstQ8)")
            XCTAssertLessThanOrEqual(worstQ8, TinyReference.logitTolerance, "\(family) Q8_0 export")
            let (float, quantized) = (try reference.tensors.floats("logits"), try reference.tensors.floats("q8_0_logits"))
            let q8Effect = zip(float, quantized).map { abs($0 - $1) }.max()!
            let mergedQ8 = try export(family, fromGGUF: false, adapter: true, scheme: .uniform(.q8_0), name: "\(family)-merged-q8_0")
            let worstMergedQ8 = try TinyReference.worstLogitDifference(mergedQ8, family, tensor: "lora_logits")
            print("\(family) merged Q8_0 export: worst logit difference from PEFT's \(worstMergedQ8) (the reference's Q8_0 effect \(q8Effect))")
            XCTAssertLessThanOrEqual(worstMergedQ8, 2 * q8Effect, "\(family) merged Q8_0 export")
            let merged = directory.appendingPathComponent("\(family)-merged-false.gguf")
            let control = try rewrite(merged, name: "\(family)-control") { _, tensors in
                tensors = tensors.map(Self.brokenPart(of: family))
            }
            let controlGap = try TinyReference.worstLogitDifference(control, family, tensor: "lora_logits")
            print("\(family) control (\(part)): \(controlGap)")
            XCTAssertGreaterThan(controlGap, 100 * TinyReference.logitTolerance, "\(family): the control must be far off")
        }
    }

    /// Llama.cpp's K-quant mix: attn_v and ffn_down finer on use_more_bits layers (the last one always), and the 64-value
    /// rows' fallbacks; biases, head norms and post-norms stay F32; the file loads back as its family.
    func testKQuantMixKeepsFamilyParts() throws {
        let parts = ["qwen2": "blk.1.attn_q.bias", "qwen3": "blk.1.attn_q_norm.weight", "gemma2": "blk.1.post_ffw_norm.weight",
                     "gemma3": "blk.1.attn_k_norm.weight"]
        for (family, _, _) in Self.converterFamilies {
            let mixed = try export(family, fromGGUF: true, adapter: false, scheme: .kQuantMix(.q4_K), name: "\(family)-q4_k_m")
            let last = try XCTUnwrap(mixed.int("\(family).block_count"), family) - 1
            XCTAssertEqual(mixed.tensor(named: "blk.0.attn_q.weight")?.type, .q5_0, family)
            XCTAssertEqual(mixed.tensor(named: "blk.\(last).attn_v.weight")?.type, .q8_0, family)
            let part = try XCTUnwrap(parts[family], family)
            XCTAssertEqual(mixed.tensor(named: part)?.type, .f32, part)
            XCTAssertEqual(try ModelLoader.loadGGUF(mixed).configuration.architecture.rawValue, family)
        }
    }

    /// `weights` with an output head of their own: a copy of the embedding times `factor`.
    static func untied(_ weights: ModelWeights, scaledBy factor: Float = 1) -> ModelWeights {
        ModelWeights(configuration: weights.configuration, embedding: weights.embedding,
                     output: WeightMatrix(float32: weights.output.dequantized().map { $0 * factor }, rows: weights.output.rows,
                                          columns: weights.output.columns),
                     finalNorm: weights.finalNorm, layers: weights.layers, ropeLayout: weights.ropeLayout, source: weights.source)
    }

    /// Each case's model is refused by the exporter with an error naming `source` and the case's text, and no file is written.
    func assertExportRefused(_ cases: [(String, ModelWeights, String)], source: String) {
        for (name, broken, expected) in cases {
            let url = directory.appendingPathComponent("\(name).gguf")
            let model = LlamaModel(weights: broken, pool: ThreadPool(threads: 1))
            XCTAssertThrowsError(try ModelExporter.export(LoadedModel(model: model, tokenizer: nil, gguf: nil), adapter: nil,
                                                          scheme: .uniform(.f32), to: url), name) { error in
                XCTAssertTrue("\(error)".contains(expected) && "\(error)".contains(source), "\(name): \(error)")
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: url.path), name)
        }
    }

    /// The elements of a GGUF array key (empty where the file lacks it).
    static func list(_ file: GGUFFile, _ key: String) -> [GGUFValue] {
        if case .array(let values)? = file.metadata[key] { return values }
        return []
    }

    /// A model whose tokenizer is shorter than its embedding (tiny-llama-padded, tiny-gemma3-padded: a tokenizer.model of 480
    /// pieces; tiny-qwen2-padded: a byte-level tokenizer.json of 400 tokens; 512 rows each) is written as llama.cpp's
    /// converter wrote the same directory (model.gguf.bin): the token list, its types and (SentencePiece) scores padded
    /// with [PAD<id>] to [PAD511] (unused, -10000), the tokenizer's model and pre-tokenizer names (GPT-2's "gpt-2", which
    /// llama.cpp reads), every embedding row kept, byte for byte; and so is a GGUF whose list is
    /// short (the converter's file with its list cut back), the path that pads the source file's own keys, where the file
    /// says its vocab_size (Llama's converter writes it). Each export loads back and computes transformers' logits over all
    /// 512 rows. Control: the same comparison tells the short list from the converter's. Without a vocab_size key (Gemma
    /// 3's and Qwen2's converters write none) the vocabulary is the list, and a short one is refused on load naming the
    /// embedding, as llama.cpp refuses it.
    func testShorterTokenizerIsPaddedAsTheConverterPads() throws {
        let keys = ["tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.scores"]
        for (family, count) in [("llama-padded", 480), ("gemma3-padded", 480), ("qwen2-padded", 400)] {
            let converterURL = Fixtures.url("tiny-\(family)/model.gguf.bin")
            let converter = try GGUFFile(url: converterURL)
            XCTAssertEqual(Self.list(converter, keys[0]).count, 512, family)
            XCTAssertEqual(Self.list(converter, keys[0]).last, .string("[PAD511]"), family)
            let short = try rewrite(converterURL, name: "\(family)-short") { metadata, _ in
                metadata = metadata.map { key, value in
                    guard keys.contains(key), case .array(let values) = value else { return (key, value) }
                    return (key, .array(Array(values.prefix(count))))
                }
            }
            XCTAssertEqual(Self.list(short, keys[0]).count, count, "\(family): the control's list is short")
            XCTAssertNotEqual(Self.list(short, keys[0]), Self.list(converter, keys[0]), "\(family): the control differs")
            var sources = [("HF", Fixtures.url("tiny-\(family)").path)]
            if converter.metadataKeys.contains(where: { $0.hasSuffix(".vocab_size") }) {
                sources.append(("short GGUF", short.url.path))
            } else {
                XCTAssertThrowsError(try ModelLoader.load(path: short.url.path, threads: 1), family) { error in
                    XCTAssertTrue("\(error)".contains("tensor 'token_embd.weight': dimensions [\(converter.int("\(family.prefix { $0 != "-" }).embedding_length")!), 512], "
                                                       + "expected"), "\(family): \(error)")
                }
            }
            for (label, path) in sources {
                let source = try ModelLoader.load(path: path, threads: 2)
                XCTAssertEqual(source.tokenizer?.vocabularySize, count, "\(family) from \(label)")
                let url = directory.appendingPathComponent("\(family)-\(label).gguf")
                try ModelExporter.export(source, adapter: nil, scheme: .uniform(.f32), to: url)
                let ours = try GGUFFile(url: url)
                for key in [keys[0], keys[2], "tokenizer.ggml.model", "tokenizer.ggml.pre"] {
                    XCTAssertEqual(ours.metadata[key], converter.metadata[key], "\(family) from \(label): \(key)")
                }
                // The pieces' own types are the tokenizer's (the converter types sentencepiece's user-defined <tool>, id 3,
                // as normal where no tokenizer_config.json says otherwise); the padded ones are the converter's.
                let types = (Self.list(ours, keys[1]), Self.list(converter, keys[1]))
                XCTAssertEqual(types.0.count, 512, "\(family) from \(label)")
                XCTAssertEqual(Array(types.0.suffix(512 - count)), Array(types.1.suffix(512 - count)),
                               "\(family) from \(label): the padded types")
                XCTAssertEqual(Self.tensorsDiffering(ours, from: converter), [], "\(family) from \(label): the converter's bytes")
                let worst = try TinyReference.worstLogitDifference(ours, family, tensor: "logits")
                print("\(family) export from \(label): worst logit difference from transformers' over 512 rows \(worst)")
                XCTAssertLessThanOrEqual(worst, TinyReference.logitTolerance, "\(family) from \(label)")
            }
        }
    }

    /// A tokenizer longer than the embedding is refused by name (ids past the last row would have none), and no file is
    /// written: tiny-llama-spm's 480 tokens on tiny-qwen2's 256 rows. The same tokenizer on tiny-llama's 512 rows, shorter
    /// than the embedding, is written (the positive control).
    func testTokenizerLongerThanTheEmbeddingIsRefused() throws {
        let tokenizer = try XCTUnwrap(try ModelLoader.load(path: Fixtures.url("tiny-llama-spm/model.gguf.bin").path, threads: 1).tokenizer)
        for (name, refused) in [("qwen2", true), ("llama", false)] {
            let weights = try TinyReference.weights(name, gguf: false)
            XCTAssertEqual(weights.embedding.rows > tokenizer.vocabularySize, !refused, name)
            let url = directory.appendingPathComponent("\(name)-spm.gguf")
            let loaded = LoadedModel(model: LlamaModel(weights: weights, pool: ThreadPool(threads: 1)), tokenizer: tokenizer, gguf: nil)
            if !refused {
                XCTAssertNoThrow(try ModelExporter.export(loaded, adapter: nil, scheme: .uniform(.f32), to: url), name)
                XCTAssertEqual(Self.list(try GGUFFile(url: url), "tokenizer.ggml.tokens").count, weights.embedding.rows, name)
                continue
            }
            XCTAssertThrowsError(try ModelExporter.export(loaded, adapter: nil, scheme: .uniform(.f32), to: url), name) { error in
                XCTAssertTrue("\(error)".contains("tokenizer has 480 tokens for 256 embedding rows is not supported (llama.cpp "
                                                   + "reads one token per row, and ids 256 to 479 have none)"), "\(name): \(error)")
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: url.path), name)
        }
    }

    /// A Gemma 2 model that llama.cpp's gemma2 graph would compute otherwise is refused by `quantize`, naming what
    /// differs, and no file is written: an output head apart from the embedding, no soft-capping, an embedding scale
    /// rounded to bfloat16 (Gemma-2-9B's 59.75 from HF), a query_pre_attn_scalar other than llama.cpp's rule, sliding
    /// layers other than the even ones. The fixture itself is exported (the positive control:
    /// testKeysAndTensorsAreTheConverters).
    func testGemma2ThatLlamaCppWouldComputeOtherwiseIsRefused() throws {
        let weights = try TinyReference.weights("gemma2", gguf: false)
        let cases: [(String, ModelWeights, String)] = [
            ("untied", Self.untied(weights), "its output head is not its embedding"),
            ("uncapped", TinyFamily.configured { $0.finalLogitSoftcap = nil }(weights), "final_logit_softcapping null"),
            ("bfloat16 scale", TinyFamily.configured { $0.embeddingScale = 7.9375 }(weights),
             "embedding scale 7.9375 (√64 in the checkpoint's dtype) is not the 8.0"),
            ("query scale", TinyFamily.configured { $0.queryPreAttentionScalar = 64 }(weights),
             "query_pre_attn_scalar = 64.0 is not the 32.0 llama.cpp assumes"),
            ("every layer sliding", TinyFamily.configured { $0.slidingLayers = $0.slidingLayers.map { _ in true } }(weights),
             "are not the even layers llama.cpp's gemma2 graph slides"),
        ]
        assertExportRefused(cases, source: weights.source)
    }

    /// A Gemma 3 model that llama.cpp's gemma3 graph would compute otherwise is refused, naming what differs, and no file
    /// is written: an attention soft-cap (gemma3.cpp computes none), an embedding scale rounded to bfloat16, a
    /// query_pre_attn_scalar other than llama.cpp's rule, sliding layers without a rope base of their own. The fixture
    /// itself is exported (testKeysAndTensorsAreTheConverters), and what the gemma3 graph reads that Gemma 2's does not
    /// (an output head, any sliding pattern) is written: testGemma3SlidingLayersAndHeadAreWrittenAsLlamaCppReadsThem.
    func testGemma3ThatLlamaCppWouldComputeOtherwiseIsRefused() throws {
        let weights = try TinyReference.weights("gemma3", gguf: false)
        let cases: [(String, ModelWeights, String)] = [
            ("attention cap", TinyFamily.configured { $0.attentionSoftcap = 50 }(weights),
             "attn_logit_softcapping = 50.0 is not computed by llama.cpp's gemma3 graph"),
            ("bfloat16 scale", TinyFamily.configured { $0.embeddingScale = 5.65625 }(weights),
             "embedding scale 5.65625 (√32 in the checkpoint's dtype) is not the 5.656854"),
            ("query scale", TinyFamily.configured { $0.queryPreAttentionScalar = 8 }(weights),
             "query_pre_attn_scalar = 8.0 is not the 16.0 llama.cpp assumes"),
            ("no sliding base", TinyFamily.configured { $0.slidingRopeTheta = nil }(weights),
             "its sliding layers have no window or no rope base of their own"),
        ]
        assertExportRefused(cases, source: weights.source)
    }

    /// Gemma 3's sliding layers as llama.cpp's gemma3 loader reads them: llama.cpp's default of five in six with no
    /// pattern key (as the converter writes the fixture), any other pattern as one flag per layer, no window (so no
    /// sliding layer) where none slides; the sliding rope base as written (500 here, not llama.cpp's default 10000); an
    /// output head apart from the embedding as output.weight. Each file loads back with the sliding layers, base and
    /// head it was written from, and computes the logits of the model it was written from. The fixture's examples all
    /// cross its window of 5, so the sliding layers' mask and rope are in every comparison.
    func testGemma3SlidingLayersAndHeadAreWrittenAsLlamaCppReadsThem() throws {
        let weights = try TinyReference.weights("gemma3", gguf: false)
        XCTAssertEqual(weights.configuration.slidingLayers, [true, true, true, true, true, false], "the fixture's five in six")
        let alternate = [true, false, true, false, false, true]
        let cases: [(String, ModelWeights, pattern: GGUFValue?, window: Int?)] = [
            ("fixture", weights, nil, 5),
            ("alternate", TinyFamily.configured { $0.slidingLayers = alternate }(weights), .array(alternate.map { .bool($0) }), 5),
            ("every layer", TinyFamily.configured { $0.slidingLayers = $0.slidingLayers.map { _ in true } }(weights),
             .array(Array(repeating: .bool(true), count: 6)), 5),
            ("none sliding", TinyFamily.configured { $0.slidingLayers = $0.slidingLayers.map { _ in false } }(weights), nil, nil),
            ("sliding base 500", TinyFamily.configured { $0.slidingRopeTheta = 500 }(weights), nil, 5),
            ("untied", Self.untied(weights, scaledBy: 0.5), nil, 5),
        ]
        let tokens = try TinyReference.reference("gemma3").inputIds
        for (name, source, pattern, window) in cases {
            let model = LlamaModel(weights: source, pool: ThreadPool(threads: 1))
            model.precision = .float32
            let (file, exported) = try TinyReference.exported(model, to: directory.appendingPathComponent("\(name).gguf"))
            XCTAssertEqual(file.metadata["gemma3.attention.sliding_window_pattern"], pattern, name)
            XCTAssertEqual(file.int("gemma3.attention.sliding_window"), window, name)
            XCTAssertEqual(file.tensor(named: "output.weight") != nil, name == "untied", name)
            let c = exported.configuration, expected = source.configuration
            XCTAssertEqual(c.slidingLayers.contains(true) ? c.slidingLayers : [], expected.slidingLayers.contains(true) ? expected.slidingLayers : [], name)
            if window != nil { XCTAssertEqual(c.slidingRopeTheta, expected.slidingRopeTheta, name) }
            exported.precision = .float32
            var worst: Float = 0
            for ids in tokens {
                let (ours, theirs) = (try exported.allLogits(tokens: ids), try model.allLogits(tokens: ids))
                worst = max(worst, zip(ours, theirs).map { abs($0 - $1) }.max()!)
            }
            XCTAssertLessThanOrEqual(worst, 1e-5, "\(name): the exported file's logits")
        }
    }

    /// `quantize` writes Phi-3 back as a `phi3` file (the adapter merged into the fused matrices, llama.cpp's names,
    /// the window and context as they were), which loads back and computes transformers' LoRA logits. (llama.cpp
    /// runs such files: Reference/llamacpp_family_check.py.)
    func testExportWritesPhi3() throws {
        let directory = try Fixtures.temporaryDirectory("phi3-export")
        defer { try? FileManager.default.removeItem(at: directory) }
        let source = try ModelLoader.load(path: Fixtures.url("tiny-phi3").path, threads: 2)
        let adapter = try TinyReference.adapter("phi3", for: source.model)
        let url = directory.appendingPathComponent("merged.gguf")
        try ModelExporter.export(source, adapter: adapter, scheme: .uniform(.f32), to: url)
        let file = try GGUFFile(url: url)
        XCTAssertEqual(file.string("general.architecture"), "phi3")
        XCTAssertEqual(file.int("phi3.attention.sliding_window"), 32)
        XCTAssertEqual(file.int("phi3.context_length"), 512)
        XCTAssertEqual(file.int("phi3.rope.scaling.original_context_length"), 256)
        XCTAssertEqual(file.double("phi3.rope.scaling.attn_factor") ?? 0, (1 + log(2.0) / log(256.0)).squareRoot(), accuracy: 1e-6)
        XCTAssertEqual(file.tensor(named: "rope_factors_short.weight")?.dimensions, [6])
        XCTAssertEqual(file.tensor(named: "rope_factors_long.weight")?.dimensions, [6])
        XCTAssertEqual(file.int("phi3.rope.dimension_count"), 12, "the rotary part of the head")
        XCTAssertEqual(file.tensor(named: "blk.1.attn_qkv.weight")?.dimensions, [64, 128])
        XCTAssertEqual(file.tensor(named: "blk.1.ffn_up.weight")?.dimensions, [64, 192])
        XCTAssertFalse(file.metadataKeys.contains { $0.hasPrefix("llama.") }, "no Llama keys in a Phi-3 file")
        XCTAssertEqual(file.tensors.count, 5 + 2 * 6, "embedding, output, final norm, 2 LongRoPE factors; 2 norms and 4 matrices a layer")
        let model = LlamaModel(weights: try ModelLoader.loadGGUF(file), pool: ThreadPool(threads: 2))
        let reference = try TinyReference.reference("phi3")
        let expected = try reference.tensors.floats("lora_logits")
        var worst: Float = 0
        for (i, ids) in reference.inputIds.enumerated() {
            let logits = try model.allLogits(tokens: ids)
            for j in logits.indices { worst = max(worst, abs(logits[j] - expected[i * logits.count + j])) }
        }
        print("phi3 merged f32 export: worst logit difference from PEFT's \(worst)")
        XCTAssertLessThanOrEqual(worst, TinyReference.logitTolerance)
        // The K-quant mix: attn_qkv counts as attn_v for llama.cpp (Q6_K on use_more_bits layers: the last of two),
        // then falls back on these 64-value rows as llama-quantize does (Q6_K → Q8_0, Q4_K → Q5_0).
        let mixed = directory.appendingPathComponent("q4_k_m.gguf")
        try ModelExporter.export(source, adapter: nil, scheme: .kQuantMix(.q4_K), to: mixed)
        let mixedFile = try GGUFFile(url: mixed)
        XCTAssertEqual(mixedFile.tensor(named: "blk.0.attn_qkv.weight")?.type, .q5_0)
        XCTAssertEqual(mixedFile.tensor(named: "blk.1.attn_qkv.weight")?.type, .q8_0)
        XCTAssertEqual(mixedFile.tensor(named: "blk.1.ffn_up.weight")?.type, .q5_0)
        XCTAssertEqual(try ModelLoader.load(path: mixed.path, threads: 1).model.configuration.architecture, .phi3)
    }
}
