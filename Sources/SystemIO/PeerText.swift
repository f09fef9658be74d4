/// Text that came from a peer or a file, made safe to show in a log line or an error.
public enum PeerText {
    /// `text` with control and non-ASCII characters escaped and cut to 80 characters, safe for messages.
    public static func printable(_ text: String) -> String {
        let escaped = text.unicodeScalars.map { $0.escaped(asASCII: true) }.joined()
        return escaped.count > 80 ? String(escaped.prefix(80)) + "…" : escaped
    }

    /// `text` with every control character (C0, DEL, C1) and every Unicode bidirectional control written
    /// as an escape (`\n`, `\u{1B}`, `\u{202E}`), other characters kept: what the operator's log does to
    /// each message, so that a peer's words (a decline or abort reason) can neither start a forged line
    /// nor move the cursor or reorder what the operator reads.
    public static func escapingControls(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: isControl) else { return text }
        var escaped = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            if isControl(scalar) {
                escaped.append(contentsOf: scalar.escaped(asASCII: true).unicodeScalars)
            } else {
                escaped.append(scalar)
            }
        }
        return String(escaped)
    }

    private static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0..<0x20, 0x7F...0x9F, 0x061C, 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069: return true
        default: return false
        }
    }
}
