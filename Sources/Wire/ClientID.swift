import Foundation
import SystemIO

/// Client ids: what a client may be called (also its certificate's common name).
public enum ClientID {
    /// Longest client id.
    public static let maximumLength = 64

    /// Client ids become certificate names, file names and log fields: 1...64 of [A-Za-z0-9._-], not
    /// starting with '.' or '-' (the certificate authority's rule).
    /// - Throws: `FederationError.client` saying which character or length is wrong.
    public static func validate(id: String) throws {
        let shown = PeerText.printable(id)
        guard !id.isEmpty else { throw FederationError.client(shown, "a client id must not be empty") }
        guard id.utf8.count <= maximumLength else {
            throw FederationError.client(shown, "is \(id.utf8.count) bytes long; a client id has at most \(maximumLength)")
        }
        for (offset, scalar) in id.unicodeScalars.enumerated() {
            let allowed = scalar.isASCII && (("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar)
                || ("0"..."9").contains(scalar) || scalar == "." || scalar == "_" || scalar == "-")
            guard allowed else {
                throw FederationError.client(
                    shown, "character '\(scalar.escaped(asASCII: true))' at position \(offset + 1) is not allowed "
                        + "(only letters A-Z a-z, digits, '.', '_' and '-')")
            }
        }
        if let first = id.unicodeScalars.first, first == "." || first == "-" {
            throw FederationError.client(shown, "a client id must not start with '\(first)'")
        }
    }
}
