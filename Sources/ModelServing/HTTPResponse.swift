/// A complete response: status, content type and body; every response closes its connection.
public struct HTTPResponse: Sendable, Equatable {
    public var status: Int
    public var contentType: String
    public var body: [UInt8]

    public init(status: Int, contentType: String = "application/json", body: [UInt8]) {
        self.status = status
        self.contentType = contentType
        self.body = body
    }

    /// Status line, headers and body as sent.
    public func serialized() -> [UInt8] {
        let head = "HTTP/1.1 \(status) \(Self.reason(status))\r\nContent-Type: \(contentType)\r\n"
            + "Content-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        return Array(head.utf8) + body
    }

    /// The head of a server-sent event stream; its body is sent in chunks (`chunk`) and ended by `endOfChunks`.
    public static let eventStreamHead = Array(("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        + "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").utf8)

    /// One chunk of a chunked body (RFC 9112 §7.1).
    public static func chunk(_ bytes: [UInt8]) -> [UInt8] {
        Array((String(bytes.count, radix: 16) + "\r\n").utf8) + bytes + [13, 10]
    }

    public static let endOfChunks = Array("0\r\n\r\n".utf8)

    static func reason(_ status: Int) -> String {
        switch status {
        case 100: return "Continue"
        case 200: return "OK"
        case 400: return "Bad Request"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 408: return "Request Timeout"
        case 413: return "Content Too Large"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 501: return "Not Implemented"
        case 505: return "HTTP Version Not Supported"
        default: return "Status \(status)"
        }
    }
}

/// Where a handler sends its answer: one whole response, or an event stream of chunks.
public protocol HTTPResponseWriter: AnyObject {
    func respond(_ response: HTTPResponse)
    /// Sends the event-stream head; then `sendChunk` for each event and `endStream` once.
    func startStream()
    /// False once the client has gone; the handler may stop producing.
    @discardableResult func sendChunk(_ bytes: [UInt8]) -> Bool
    func endStream()
}
