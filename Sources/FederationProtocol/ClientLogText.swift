import Wire

/// A client's own words (a decline's detail, a refusal's error) made safe for its own log: control
/// characters are escaped, so that text quoted from a dataset or a peer cannot forge log lines. Such
/// text is never sent to the coordinator, which hears a `DeclineCode` only.
public enum ClientLogText {
    public static func escaped(_ text: String) -> String {
        text.unicodeScalars.map { scalar in
            scalar.properties.generalCategory == .control || scalar.properties.generalCategory == .format
                ? scalar.escaped(asASCII: true) : String(scalar)
        }.joined()
    }
}
