import Foundation
import LanguageModel
import ModelFormats
import SystemIO

/// Where `train --out DIR` puts its adapter: a PEFT directory written whole beside `DIR`, synced, and
/// put in its place in one step (`replaceDirectoryAtomically`), so a crash leaves the old adapter or
/// the new one, never one file of each.
///
/// `DIR` is replaced whole, so it must be missing, empty, or an adapter directory: holding nothing but
/// `adapter_config.json` and `adapter_model.safetensors` as regular files. Anything else there (a
/// README, a dataset, a checkpoint) is refused, naming it, rather than deleted with the old adapter.
public enum AdapterOutput {
    /// The files of a PEFT adapter directory as `train` writes it.
    public static let adapterFiles: Set<String> = ["adapter_config.json", "adapter_model.safetensors"]

    /// Throws unless `url` may be replaced by a new adapter directory (see the type's comment).
    /// - Throws: `ModelFormatError` naming the directory, what else it holds and the fix.
    public static func checkReplaceable(_ url: URL) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else { return }
        guard isDirectory.boolValue else {
            throw ModelFormatError(file: url.path, "is a file; the adapter is written as a directory. Give --out a directory path")
        }
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: url.path) } catch {
            throw ModelFormatError(file: url.path, "cannot list the directory: \(error.localizedDescription)")
        }
        let foreign = names.filter { name in
            guard adapterFiles.contains(name) else { return true }
            let attributes = try? FileManager.default.attributesOfItem(atPath: url.appendingPathComponent(name).path)
            return attributes?[.type] as? FileAttributeType != .typeRegular
        }.sorted()
        guard foreign.isEmpty else {
            let shown = foreign.prefix(5).joined(separator: ", ") + (foreign.count > 5 ? ", … (\(foreign.count) in all)" : "")
            throw ModelFormatError(file: url.path, "holds \(shown), which is not an adapter's file; the directory is replaced "
                                   + "whole, so it must be missing, empty or hold only adapter_config.json and "
                                   + "adapter_model.safetensors. Give --out a new directory, or move those files away")
        }
    }

    /// Writes `adapter` as a PEFT directory at `url`, replacing the adapter there atomically.
    /// - Throws: `ModelFormatError` when `url` holds other files (`checkReplaceable`) or a tensor is not
    ///   finite; `SystemIOError` naming the path and system call for a failed write, sync or rename.
    public static func write(_ adapter: LoRAAdapter, to url: URL, baseModel: String?) throws {
        try checkReplaceable(url)
        try replace(url, with: adapter, baseModel: baseModel)
    }

    /// The replacement itself, without the check (tests reach it to show a mixture cannot arise).
    static func replace(_ url: URL, with adapter: LoRAAdapter, baseModel: String?) throws {
        try replaceDirectoryAtomically(url) { temporary in
            try adapter.write(to: temporary, baseModel: baseModel)
        }
    }
}
