import Foundation

/// Writes to standard error, unbuffered (progress and errors never mix into `--json` output).
public enum StandardError {
    public static func write(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }
}
