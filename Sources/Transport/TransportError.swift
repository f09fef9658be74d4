import COpenSSL

/// Every failure the Transport module reports: certificate and key handling, files, sockets and TLS.
/// Each case names what it concerns (a file, a peer, an OpenSSL operation) and why it failed.
public enum TransportError: Error, Equatable, Sendable, CustomStringConvertible {
    /// An OpenSSL call failed; `reason` is OpenSSL's error queue (`ERR_error_string`), oldest first.
    case openSSL(operation: String, reason: String)
    /// A PEM input (certificate, key or request) could not be parsed or is unusable.
    case invalidPEM(what: String, reason: String)
    /// A name that goes into a certificate (client id, host) is not acceptable.
    case invalidName(what: String, value: String, reason: String)
    /// A certificate signing request was refused.
    case requestRefused(reason: String)
    /// A file operation failed.
    case file(path: String, operation: String, reason: String)
    /// A socket operation failed (resolve, connect, bind, listen, accept, option).
    case socket(peer: String, operation: String, reason: String)
    /// The TLS handshake with `peer` failed or the peer was refused.
    case handshake(peer: String, reason: String)
    /// This client refused the server's certificate (`subject`, issued by `issuer`, both common names)
    /// during the handshake: a wrong CA, host name or validity, which no retry can fix.
    case serverCertificateRejected(peer: String, subject: String, issuer: String, reason: String)
    /// A read or write on an established connection failed.
    case io(peer: String, operation: String, reason: String)
    /// A read or write did not complete within the connection's timeout.
    case timedOut(peer: String, operation: String)
    /// The peer closed the connection before the bytes expected had arrived.
    case closedByPeer(peer: String, expected: Int, received: Int)
    /// The connection was closed or cancelled locally.
    case connectionClosed(peer: String)
    /// A length-prefixed frame announced more bytes than its limit (refused before allocation).
    case frameTooLarge(peer: String, what: String, length: Int, limit: Int)
    /// The local control socket at `path` cannot be used; `reason` is the whole message, path included
    /// (e.g. "no coordinator is running (no control socket at PATH)").
    case controlSocket(path: String, reason: String)

    public var description: String {
        switch self {
        case let .openSSL(operation, reason):
            return "\(operation) failed: \(reason)"
        case let .invalidPEM(what, reason):
            return "invalid \(what): \(reason)"
        case let .invalidName(what, value, reason):
            return "invalid \(what) '\(value)': \(reason)"
        case let .requestRefused(reason):
            return "certificate signing request refused: \(reason)"
        case let .file(path, operation, reason):
            return "\(path): \(operation) failed: \(reason)"
        case let .socket(peer, operation, reason):
            return "\(peer): \(operation) failed: \(reason)"
        case let .handshake(peer, reason), let .serverCertificateRejected(peer, _, _, reason):
            return "TLS handshake with \(peer) failed: \(reason)"
        case let .io(peer, operation, reason):
            return "\(peer): \(operation) failed: \(reason)"
        case let .timedOut(peer, operation):
            return "\(peer): \(operation) timed out"
        case let .closedByPeer(peer, expected, received):
            return "\(peer) closed the connection after \(received) of \(expected) expected bytes"
        case let .connectionClosed(peer):
            return "connection to \(peer) is closed"
        case let .frameTooLarge(peer, what, length, limit):
            return "\(peer): \(what) of \(length) bytes exceeds the \(limit)-byte limit"
        case let .controlSocket(_, reason):
            return reason
        }
    }
}

/// OpenSSL's thread-local error queue, drained into one line (`ERR_error_string_n` per entry).
enum OpenSSLErrors {
    /// Drains the queue; `fallback` when it was empty (some failures set no error).
    static func drain(fallback: String = "no OpenSSL error recorded") -> String {
        var messages: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            messages.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return messages.isEmpty ? fallback : messages.joined(separator: "; ")
    }

    /// Clears stale errors before an operation whose failure we will report.
    static func clear() { ERR_clear_error() }

    /// A `TransportError.openSSL` for `operation` with the drained queue.
    static func error(_ operation: String) -> TransportError {
        .openSSL(operation: operation, reason: drain())
    }
}
