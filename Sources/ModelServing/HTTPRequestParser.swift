/// An HTTP/1.1 request as the server reads it: method, path, headers and a bounded body.
public struct HTTPRequest: Sendable, Equatable {
    public var method: String
    /// The request target without its query string.
    public var path: String
    /// Header names lower-cased, in the order received.
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public init(method: String, path: String, headers: [(name: String, value: String)], body: [UInt8]) {
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
    }

    /// The first header with this name (case-insensitive).
    public func header(_ name: String) -> String? {
        let lower = name.lowercased()
        return headers.first { $0.name == lower }?.value
    }

    public static func == (a: HTTPRequest, b: HTTPRequest) -> Bool {
        a.method == b.method && a.path == b.path && a.body == b.body
            && a.headers.map(\.name) == b.headers.map(\.name) && a.headers.map(\.value) == b.headers.map(\.value)
    }
}

/// A request the server refuses, with the status to answer and a sentence saying what to fix.
public struct HTTPError: Error, Sendable, Equatable, CustomStringConvertible {
    public let status: Int
    public let message: String

    public init(_ status: Int, _ message: String) {
        self.status = status
        self.message = message
    }

    public var description: String { "HTTP \(status): \(message)" }
}

/// How much a request may hold; checked before anything of that size is kept.
public struct HTTPLimits: Sendable {
    /// Request line and headers together, with the blank line that ends them.
    public var maxHeaderBytes: Int
    public var maxBodyBytes: Int

    public init(maxHeaderBytes: Int = 16 * 1024, maxBodyBytes: Int = 4 * 1024 * 1024) {
        self.maxHeaderBytes = maxHeaderBytes
        self.maxBodyBytes = maxBodyBytes
    }
}

/// Reads one HTTP/1.1 request from bytes that arrive in pieces of any size; no I/O inside.
///
/// The connection appends what it reads and asks `next()`: nil means "read more". The buffer never
/// grows past the header limit before the head is complete, nor past the declared body length after,
/// so `bytesWanted` tells the reader how much it may still read.
public struct HTTPRequestParser: Sendable {
    private enum State: Sendable {
        case head
        case body(HTTPRequest, length: Int)
        case done
    }

    public let limits: HTTPLimits
    private var buffer: [UInt8] = []
    private var state = State.head
    /// Where the search for the end of the head resumes, so bytes arriving one by one cost linear time.
    private var scanned = 0
    /// True once a head asking `Expect: 100-continue` is read and its body is still to come.
    public private(set) var expectsContinue = false

    public init(limits: HTTPLimits = HTTPLimits()) {
        self.limits = limits
    }

    /// Most bytes the next read may add without exceeding a limit (at least 1 while a request is incomplete).
    public var bytesWanted: Int {
        switch state {
        case .head: return max(1, limits.maxHeaderBytes + 1 - buffer.count)
        case .body(_, let length): return max(0, length - buffer.count)
        case .done: return 0
        }
    }

    /// Adds bytes read from the connection (the reader reads at most `bytesWanted` at a time).
    public mutating func append(_ bytes: some Collection<UInt8>) {
        buffer.append(contentsOf: bytes)
    }

    /// The complete request, nil if more bytes are needed, or an `HTTPError` to answer.
    public mutating func next() throws(HTTPError) -> HTTPRequest? {
        if case .head = state {
            guard let end = Self.endOfHead(buffer, from: scanned) else {
                if buffer.count > limits.maxHeaderBytes { throw Self.headerTooLarge(limits) }
                scanned = max(0, buffer.count - 3)
                return nil
            }
            if end > limits.maxHeaderBytes { throw Self.headerTooLarge(limits) }
            let request = try Self.parseHead(buffer[..<end])
            let length = try Self.bodyLength(request, limits: limits)
            buffer.removeFirst(end)
            expectsContinue = length > 0 && request.header("expect")?.lowercased() == "100-continue"
            state = .body(request, length: length)
        }
        guard case .body(var request, let length) = state else { return nil }
        guard buffer.count >= length else { return nil }
        request.body = Array(buffer.prefix(length))
        buffer.removeFirst(length)
        expectsContinue = false
        state = .done
        return request
    }

    static func headerTooLarge(_ limits: HTTPLimits) -> HTTPError {
        HTTPError(431, "the request line and headers exceed \(limits.maxHeaderBytes) bytes")
    }

    /// Index just past the blank line (CRLF CRLF) that ends the head, if it has arrived.
    static func endOfHead(_ bytes: [UInt8], from start: Int = 0) -> Int? {
        guard bytes.count >= start + 4 else { return nil }
        for i in start...(bytes.count - 4)
        where bytes[i] == 13 && bytes[i + 1] == 10 && bytes[i + 2] == 13 && bytes[i + 3] == 10 {
            return i + 4
        }
        return nil
    }

    /// Request line and headers; the body is read afterwards.
    static func parseHead(_ bytes: ArraySlice<UInt8>) throws(HTTPError) -> HTTPRequest {
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw HTTPError(400, "the request head is not valid UTF-8")
        }
        var lines = text.components(separatedBy: "\r\n")
        while lines.last == "" { lines.removeLast() }
        guard !lines.isEmpty else { throw HTTPError(400, "the request has no request line") }
        let parts = lines[0].split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, parts[1].hasPrefix("/") else {
            throw HTTPError(400, "the request line \"\(lines[0].prefix(200))\" is not METHOD /path HTTP/1.1")
        }
        guard parts[2] == "HTTP/1.1" || parts[2] == "HTTP/1.0" else {
            throw HTTPError(505, "only HTTP/1.0 and HTTP/1.1 are served, not \"\(parts[2].prefix(40))\"")
        }
        var headers: [(name: String, value: String)] = []
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":"), colon != line.startIndex,
                  !line[..<colon].contains(where: { $0 == " " || $0 == "\t" })
            else { throw HTTPError(400, "the header line \"\(line.prefix(200))\" is not Name: value") }
            headers.append((String(line[..<colon]).lowercased(),
                            line[line.index(after: colon)...].trimmingCharacters(in: [" ", "\t"])))
        }
        let path = parts[1].split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)[0]
        return HTTPRequest(method: String(parts[0]), path: String(path), headers: headers, body: [])
    }

    /// The body's length from Content-Length, refused before anything is read when over the limit.
    static func bodyLength(_ request: HTTPRequest, limits: HTTPLimits) throws(HTTPError) -> Int {
        if request.header("transfer-encoding") != nil {
            throw HTTPError(501, "chunked request bodies are not supported; send the body with Content-Length")
        }
        let values = request.headers.filter { $0.name == "content-length" }.map(\.value)
        guard let value = values.first else { return 0 }
        guard Set(values).count == 1, !value.isEmpty, value.count <= 19, value.allSatisfy({ $0.isASCII && $0.isNumber }),
              let length = Int(value)
        else { throw HTTPError(400, "Content-Length \"\(value.prefix(40))\" is not one non-negative integer") }
        guard length <= limits.maxBodyBytes else {
            throw HTTPError(413, "the body is \(length) bytes; at most \(limits.maxBodyBytes) are accepted")
        }
        return length
    }
}
