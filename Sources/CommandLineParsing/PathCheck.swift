import Foundation

/// The one check of what a path flag names, made in a command's `validate()` before any work (and before
/// any privacy is charged). Each failure is a `UsageError` that names the flag and the path, says what
/// was found there, what was expected, and what to do, instead of a raw Foundation error
/// (`NSCocoaErrorDomain Code=256`) from deep inside the run.
public enum PathCheck {
    /// What is at a path.
    public enum Found: Equatable, Sendable {
        case nothing, file, directory, other
    }

    /// What is at `path` (symbolic links followed).
    public static func found(_ path: String) -> Found {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return .nothing }
        if isDirectory.boolValue { return .directory }
        // attributesOfItem describes a link itself (lstat), so ask about what the link resolves to: a model in
        // the Hugging Face cache, or linked into place with `ln -s`, is a link to a regular file.
        let target = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        let type = (try? FileManager.default.attributesOfItem(atPath: target))?[.type] as? FileAttributeType
        return type == .typeRegular ? .file : .other
    }

    static func failure(_ flag: String, _ path: String, _ problem: String, expected: String, fix: String) -> UsageError {
        UsageError("\(flag) '\(path)' \(problem); expected \(expected). \(fix)")
    }

    /// An existing, readable regular file, such as a dataset or a certificate.
    /// - Parameter expected: what the file should be, as a noun phrase ("a JSONL file, one record per line").
    public static func inputFile(_ flag: String, _ path: String, expected: String) throws {
        switch found(path) {
        case .nothing:
            throw failure(flag, path, "does not exist", expected: expected, fix: "Check the path.")
        case .directory:
            throw failure(flag, path, "is a directory", expected: expected,
                          fix: "Give a file inside it, such as \(flag) \(join(path, "FILE")).")
        case .other:
            throw failure(flag, path, "is not a regular file", expected: expected, fix: "Give a regular file.")
        case .file:
            guard FileManager.default.isReadableFile(atPath: path) else {
                throw failure(flag, path, "cannot be read (permission denied)", expected: expected,
                              fix: "Make it readable by this user.")
            }
        }
    }

    /// An existing directory, such as a state directory made by `init`.
    public static func inputDirectory(_ flag: String, _ path: String, expected: String, fix: String = "Check the path.") throws {
        switch found(path) {
        case .directory: return
        case .nothing: throw failure(flag, path, "does not exist", expected: expected, fix: fix)
        case .file, .other: throw failure(flag, path, "is a file, not a directory", expected: expected, fix: fix)
        }
    }

    /// A file this command writes: not a directory, in a directory that exists. With `replacing` false an
    /// existing file is refused rather than overwritten.
    public static func outputFile(_ flag: String, _ path: String, expected: String, replacing: Bool = true) throws {
        switch found(path) {
        case .directory:
            throw failure(flag, path, "is a directory", expected: expected,
                          fix: "Give a file name, such as \(flag) \(join(path, "FILE")).")
        case .other:
            throw failure(flag, path, "is not a regular file", expected: expected, fix: "Choose another path.")
        case .file where !replacing:
            throw failure(flag, path, "already exists", expected: expected,
                          fix: "Remove it or choose another path; it is not overwritten.")
        case .file, .nothing:
            try parentExists(flag, path, expected: expected)
        }
    }

    /// A directory this command writes into (created when missing): not an existing file, and its parent exists.
    public static func outputDirectory(_ flag: String, _ path: String, expected: String) throws {
        switch found(path) {
        case .directory: return
        case .file, .other:
            throw failure(flag, path, "is an existing file", expected: expected,
                          fix: "Give the path of a directory (it is created when missing), not of a file.")
        case .nothing:
            try parentExists(flag, path, expected: expected)
        }
    }

    /// A model: a `.gguf` file, or a Hugging Face directory with `config.json` and `*.safetensors` weights.
    public static func model(_ flag: String, _ path: String) throws {
        let expected = "a .gguf file or a Hugging Face model directory with config.json and model.safetensors "
            + "(and tokenizer.json for text)"
        switch found(path) {
        case .directory:
            let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
            let missing = ["config.json"].filter { !names.contains($0) }
                + (names.contains { $0.hasSuffix(".safetensors") && !$0.hasPrefix("adapter_") } ? [] : ["*.safetensors"])
            guard missing.isEmpty else {
                let adapter = names.contains("adapter_config.json")
                throw failure(flag, path, "is a directory without \(missing.joined(separator: " and "))", expected: expected,
                              fix: adapter ? "It looks like a LoRA adapter: give it as --adapter and the base model as \(flag)."
                                           : "Give the .gguf file itself, or the directory the model was downloaded to.")
            }
        default:
            try inputFile(flag, path, expected: expected)
            guard let handle = FileHandle(forReadingAtPath: path) else { return }
            defer { try? handle.close() }
            let magic = (try? handle.read(upToCount: 4)) ?? Data()
            guard magic == Data("GGUF".utf8) else {
                throw failure(flag, path, "is not a GGUF file (it does not start with the bytes 'GGUF')", expected: expected,
                              fix: "Convert it with 'conclave-client quantize' from an HF directory, or give the right file.")
            }
        }
    }

    /// A PEFT LoRA adapter directory: `adapter_config.json` and `adapter_model.safetensors`.
    public static func adapter(_ flag: String, _ path: String) throws {
        let expected = "a PEFT LoRA adapter directory with adapter_config.json and adapter_model.safetensors"
        try inputDirectory(flag, path, expected: expected,
                           fix: "Give the directory 'conclave-client train --out' wrote (or a PEFT save_pretrained directory).")
        let missing = ["adapter_config.json", "adapter_model.safetensors"]
            .filter { !FileManager.default.fileExists(atPath: join(path, $0)) }
        guard missing.isEmpty else {
            throw failure(flag, path, "has no \(missing.joined(separator: " or "))", expected: expected,
                          fix: "Give the directory 'conclave-client train --out' wrote (or a PEFT save_pretrained directory).")
        }
    }

    private static func parentExists(_ flag: String, _ path: String, expected: String) throws {
        let parent = URL(fileURLWithPath: path).deletingLastPathComponent().path
        guard found(parent) == .directory else {
            throw failure(flag, path, "is in a directory that does not exist ('\(parent)')", expected: expected,
                          fix: "Create '\(parent)' first, or choose another path.")
        }
    }

    private static func join(_ directory: String, _ name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }
}
