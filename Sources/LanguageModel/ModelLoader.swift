import Foundation
import Kernels
import ModelFormats
import Tokenizer

/// A model ready to run: weights, tokenizer, and where they came from.
public struct LoadedModel: @unchecked Sendable {
    public let model: LlamaModel
    /// nil for an HF directory without `tokenizer.json` or `tokenizer.model`, or a GGUF without `tokenizer.ggml.model` (such as
    /// `quantize` writes from that directory): pre-tokenized data still works.
    public let tokenizer: BPETokenizer?
    /// The GGUF file, when the model came from one (metadata is needed to re-export it).
    public let gguf: GGUFFile?
}

/// Loads a Llama-family model from a `.gguf` file or an HF directory (`config.json`, `*.safetensors`,
/// `tokenizer.json`), without copying weights: quantized and float tensors stay memory-mapped.
public enum ModelLoader {
    /// The tokenizer, or an error saying this model has none (an HF directory without tokenizer.json, or a
    /// GGUF written from one).
    public static func requireTokenizer(_ loaded: LoadedModel, path: String) throws -> BPETokenizer {
        guard let tokenizer = loaded.tokenizer else {
            let missing = loaded.gguf == nil ? "no tokenizer.json" : "no tokenizer (no tokenizer.ggml.model in the GGUF)"
            throw LanguageModelError.unsupportedModel(
                file: path, problem: "\(missing): only pre-tokenized input ({\"input_ids\": [...]}) can be used; "
                    + "for text, give a model with a tokenizer")
        }
        return tokenizer
    }


    public static func load(path: String, threads: Int? = nil) throws -> LoadedModel {
        let url = URL(fileURLWithPath: path)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw LanguageModelError.unsupportedModel(file: path, problem: "no such file or directory")
        }
        let pool = ThreadPool(threads: threads)
        if isDirectory.boolValue {
            let weights = try loadHFDirectory(url)
            let tokenizerURL = url.appendingPathComponent("tokenizer.json")
            let sentencePieceURL = url.appendingPathComponent("tokenizer.model")
            // tokenizer.json first (HF's own); a sentencepiece tokenizer.model alone serves as well.
            let tokenizer = FileManager.default.fileExists(atPath: tokenizerURL.path)
                ? try BPETokenizer(tokenizerJSON: tokenizerURL)
                : FileManager.default.fileExists(atPath: sentencePieceURL.path)
                ? try BPETokenizer(sentencePieceModel: sentencePieceURL) : nil
            return LoadedModel(model: LlamaModel(weights: weights, pool: pool), tokenizer: tokenizer, gguf: nil)
        }
        let file = try GGUFFile(url: url)
        let weights = try loadGGUF(file)
        // A GGUF without tokenizer metadata at all still serves pre-tokenized work; one with broken metadata is an error.
        let tokenizer = file.metadata["tokenizer.ggml.model"] == nil ? nil : try BPETokenizer(ggufMetadata: file.metadata)
        return LoadedModel(model: LlamaModel(weights: weights, pool: pool), tokenizer: tokenizer, gguf: file)
    }

    static func weightFormat(_ type: TensorType) -> WeightFormat {
        switch type {
        case .f32: return .f32
        case .f16: return .f16
        case .bf16: return .bf16
        case .q8_0: return .q8_0
        case .q4_0: return .q4_0
        case .q4_1: return .q4_1
        case .q5_0: return .q5_0
        case .q5_1: return .q5_1
        case .q2_K: return .q2_K
        case .q3_K: return .q3_K
        case .q4_K: return .q4_K
        case .q5_K: return .q5_K
        case .q6_K: return .q6_K
        }
    }

    /// Weights from a GGUF file; Q/K rows are in llama.cpp's permuted order, so RoPE rotates adjacent pairs.
    public static func loadGGUF(_ file: GGUFFile) throws -> ModelWeights {
        let c = try LlamaConfiguration(gguf: file)
        try GGUFSupport.check(file, c)
        let name = file.url.lastPathComponent

        func matrix(_ tensor: String, rows: Int, columns: Int) throws -> WeightMatrix {
            guard let info = file.tensor(named: tensor) else {
                throw LanguageModelError.missingTensor(file: name, tensor: tensor)
            }
            // GGUF lists the contiguous dimension first: [columns, rows].
            guard info.dimensions == [columns, rows] else {
                throw LanguageModelError.badTensor(file: name, tensor: tensor,
                                                   problem: "dimensions \(info.dimensions), expected [\(columns), \(rows)]")
            }
            return WeightMatrix(format: weightFormat(info.type), rows: rows, columns: columns,
                                data: file.data(for: info).baseAddress!, owner: file)
        }
        func vector(_ tensor: String, count: Int) throws -> [Float] {
            guard let info = file.tensor(named: tensor) else {
                throw LanguageModelError.missingTensor(file: name, tensor: tensor)
            }
            guard info.dimensions == [count] else {
                throw LanguageModelError.badTensor(file: name, tensor: tensor,
                                                   problem: "dimensions \(info.dimensions), expected [\(count)]")
            }
            var values = [Float](repeating: 0, count: count)
            let format = weightFormat(info.type)
            guard count % format.blockSize == 0 else {
                throw LanguageModelError.badTensor(file: name, tensor: tensor, problem: "quantized norm weights are not supported")
            }
            values.withUnsafeMutableBufferPointer {
                Dequantize.row(format: format, source: file.data(for: info).baseAddress!, count: count, into: $0.baseAddress!)
            }
            return values
        }

        let embedding = try matrix("token_embd.weight", rows: c.vocabSize, columns: c.hiddenSize)
        let output = file.tensor(named: "output.weight") == nil
            ? embedding : try matrix("output.weight", rows: c.vocabSize, columns: c.hiddenSize)
        var layers: [LayerWeights] = []
        let block = BlockDescription.of(c.architecture)
        for l in 0..<c.numHiddenLayers {
            var projections: [ProjectionModule: WeightMatrix] = [:]
            for module in block.projections {
                let (inFeatures, outFeatures) = LoRAAdapter.shape(of: module, c)
                projections[module] = try matrix("blk.\(l).\(module.ggufName).weight", rows: outFeatures, columns: inFeatures)
            }
            let extras = try layerExtras(block, c, bias: { "blk.\(l).\($0.ggufName).bias" },
                                         headNorm: { "blk.\(l).\($0.gguf).weight" }, vector: vector)
            var layer = LayerWeights(attentionNorm: try vector("blk.\(l).\(block.attentionNorm.gguf).weight", count: c.hiddenSize),
                                     feedForwardNorm: try vector("blk.\(l).\(block.feedForwardNorm.gguf).weight",
                                                                 count: c.hiddenSize),
                                     projections: projections, biases: extras.biases, queryNorm: extras.query,
                                     keyNorm: extras.key)
            if let post = block.postNorms {
                layer.postAttentionNorm = try vector("blk.\(l).\(post.attention.gguf).weight", count: c.hiddenSize)
                layer.postFeedForwardNorm = try vector("blk.\(l).\(post.feedForward.gguf).weight", count: c.hiddenSize)
            }
            layers.append(layer)
        }
        return ModelWeights(configuration: c, embedding: embedding, output: output,
                            finalNorm: try vector("output_norm.weight", count: c.hiddenSize),
                            layers: layers, ropeLayout: BlockDescription.of(c.architecture).ggufRopeLayout,
                            source: file.url.path)
    }

    /// The parts `block` adds to a Llama layer: the biases of its biased projections (each of the
    /// projection's output size) and its per-head q/k norms (`headDim` each, plus `normOffset`: Gemma 3's HF (1 + w)),
    /// read by `vector(name, count)` under the names `bias` and `headNorm` give (GGUF's or HF's).
    static func layerExtras(_ block: BlockDescription, _ c: LlamaConfiguration, bias: (ProjectionModule) -> String,
                            headNorm: (BlockDescription.NormTensor) -> String, normOffset: Float = 0,
                            vector: (String, Int) throws -> [Float])
        throws -> (biases: [ProjectionModule: [Float]], query: [Float]?, key: [Float]?) {
        var biases: [ProjectionModule: [Float]] = [:]
        for module in block.biased { biases[module] = try vector(bias(module), LoRAAdapter.shape(of: module, c).1) }
        guard let norms = block.headNorms else { return (biases, nil, nil) }
        return (biases, try vector(headNorm(norms.query), c.headDim).map { $0 + normOffset },
                try vector(headNorm(norms.key), c.headDim).map { $0 + normOffset })
    }

    /// Weights from an HF directory: `config.json` and one or more `*.safetensors` shards.
    public static func loadHFDirectory(_ directory: URL) throws -> ModelWeights {
        let c = try LlamaConfiguration(configJSON: directory.appendingPathComponent("config.json"))
        let shards = try FileManager.default.contentsOfDirectory(atPath: directory.path)
            .filter { $0.hasSuffix(".safetensors") && !$0.hasPrefix("adapter_") }.sorted()
        guard !shards.isEmpty else {
            throw LanguageModelError.unsupportedModel(file: directory.path, problem: "no .safetensors files")
        }
        var owners: [String: SafetensorsFile] = [:]
        for shard in shards {
            let file = try SafetensorsFile(url: directory.appendingPathComponent(shard))
            for tensor in file.tensors.keys { owners[tensor] = file }
        }
        func info(_ tensor: String) throws -> (SafetensorsFile, SafetensorsTensorInfo) {
            guard let file = owners[tensor], let info = file.tensors[tensor] else {
                throw LanguageModelError.missingTensor(file: directory.path, tensor: tensor)
            }
            return (file, info)
        }
        func format(_ dtype: SafetensorsDType) -> WeightFormat {
            switch dtype {
            case .F32: return .f32
            case .F16: return .f16
            case .BF16: return .bf16
            }
        }
        func matrix(_ tensor: String, rows: Int, columns: Int) throws -> WeightMatrix {
            let (file, info) = try info(tensor)
            guard info.shape == [rows, columns] else {
                throw LanguageModelError.badTensor(file: file.url.lastPathComponent, tensor: tensor,
                                                   problem: "shape \(info.shape), expected [\(rows), \(columns)]")
            }
            return WeightMatrix(format: format(info.dtype), rows: rows, columns: columns,
                                data: try file.data(tensor).baseAddress!, owner: file)
        }
        func vector(_ tensor: String, count: Int) throws -> [Float] {
            let (file, info) = try info(tensor)
            guard info.shape == [count] else {
                throw LanguageModelError.badTensor(file: file.url.lastPathComponent, tensor: tensor,
                                                   problem: "shape \(info.shape), expected [\(count)]")
            }
            return try file.floats(tensor)
        }
        // A hidden-size norm weight as the pass multiplies by it: Gemma's (1 + w) (`BlockDescription.hfNormOffset`).
        let offset = BlockDescription.of(c.architecture).hfNormOffset
        func norm(_ tensor: String) throws -> [Float] { try vector(tensor, count: c.hiddenSize).map { $0 + offset } }
        let embedding = try matrix("model.embed_tokens.weight", rows: c.vocabSize, columns: c.hiddenSize)
        let output = c.tieWordEmbeddings || owners["lm_head.weight"] == nil
            ? embedding : try matrix("lm_head.weight", rows: c.vocabSize, columns: c.hiddenSize)
        var layers: [LayerWeights] = []
        let block = BlockDescription.of(c.architecture)
        for l in 0..<c.numHiddenLayers {
            let prefix = "model.layers.\(l)"
            var projections: [ProjectionModule: WeightMatrix] = [:]
            for module in block.projections {
                let (inFeatures, outFeatures) = LoRAAdapter.shape(of: module, c)
                projections[module] = try matrix("\(prefix).\(module.hfPath).weight", rows: outFeatures, columns: inFeatures)
            }
            let extras = try layerExtras(block, c, bias: { "\(prefix).\($0.hfPath).bias" },
                                         headNorm: { "\(prefix).\($0.hf).weight" }, normOffset: offset, vector: vector)
            var layer = LayerWeights(attentionNorm: try norm("\(prefix).\(block.attentionNorm.hf).weight"),
                                     feedForwardNorm: try norm("\(prefix).\(block.feedForwardNorm.hf).weight"),
                                     projections: projections, biases: extras.biases, queryNorm: extras.query,
                                     keyNorm: extras.key)
            if let post = block.postNorms {
                layer.postAttentionNorm = try norm("\(prefix).\(post.attention.hf).weight")
                layer.postFeedForwardNorm = try norm("\(prefix).\(post.feedForward.hf).weight")
            }
            layers.append(layer)
        }
        return ModelWeights(configuration: c, embedding: embedding, output: output,
                            finalNorm: try norm("model.norm.weight"),
                            layers: layers, ropeLayout: .halfSplit, source: directory.path)
    }

    /// Loads a PEFT adapter directory for `model`.
    public static func loadAdapter(path: String, for model: LlamaModel) throws -> LoRAAdapter {
        let adapter = try PEFTAdapter(directory: URL(fileURLWithPath: path))
        return try LoRAAdapter(peft: adapter, configuration: model.configuration, source: path)
    }
}
