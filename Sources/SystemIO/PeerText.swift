/// Text that came from a peer or a file, made safe to show in a log line or an error.
public enum PeerText {
    /// `text` with control and non-ASCII characters escaped and cut to 80 characters, safe for messages.
    public static func printable(_ text: String) -> String {
        let escaped = text.unicodeScalars.map { $0.escaped(asASCII: true) }.joined()
        return escaped.count > 80 ? String(escaped.prefix(80)) + "…" : escaped
    }
}
