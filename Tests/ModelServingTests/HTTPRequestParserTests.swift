import ModelServing
import XCTest

/// The request parser alone: bytes in any split, every length refused before it is kept.
final class HTTPRequestParserTests: XCTestCase {
    let body = #"{"prompt":"Hi"}"#
    var raw: [UInt8] {
        Array("POST /v1/completions?x=1 HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)".utf8)
    }

    func testRequestSplitIntoSingleBytesIsReadOnceComplete() throws {
        var parser = HTTPRequestParser()
        var request: HTTPRequest?
        for (i, byte) in raw.enumerated() {
            XCTAssertNil(request, "request complete before byte \(i)")
            parser.append([byte])
            request = try parser.next()
        }
        let read = try XCTUnwrap(request)
        XCTAssertEqual(read.method, "POST")
        XCTAssertEqual(read.path, "/v1/completions")
        XCTAssertEqual(read.header("content-type"), "application/json")
        XCTAssertEqual(read.header("HOST"), "localhost")
        XCTAssertEqual(read.body, Array(body.utf8))
        XCTAssertEqual(parser.bytesWanted, 0)
    }

    func testHeadAndBodyInTwoReadsAtEveryBoundary() throws {
        var whole = HTTPRequestParser()
        whole.append(raw)
        let expected = try XCTUnwrap(try whole.next())
        for split in 1..<raw.count {
            var parser = HTTPRequestParser()
            parser.append(raw[..<split])
            XCTAssertNil(try parser.next(), "complete after \(split) of \(raw.count) bytes")
            parser.append(raw[split...])
            XCTAssertEqual(try parser.next(), expected, "split at \(split)")
        }
    }

    func testBytesWantedNeverLetsTheBufferPassTheDeclaredBody() throws {
        var parser = HTTPRequestParser()
        let head = Array("POST /v1/completions HTTP/1.1\r\nContent-Length: 10\r\n\r\n".utf8)
        parser.append(head)
        XCTAssertNil(try parser.next())
        XCTAssertEqual(parser.bytesWanted, 10)
        parser.append(Array("12345".utf8))
        XCTAssertNil(try parser.next())
        XCTAssertEqual(parser.bytesWanted, 5)
    }

    func testOversizedHeadersAre431BeforeTheBlankLineArrives() {
        var parser = HTTPRequestParser(limits: HTTPLimits(maxHeaderBytes: 100, maxBodyBytes: 1000))
        parser.append(Array("GET /v1/models HTTP/1.1\r\nX-Padding: ".utf8) + [UInt8](repeating: 65, count: 100))
        XCTAssertThrowsError(try parser.next()) { error in
            XCTAssertEqual((error as? HTTPError)?.status, 431)
        }
        XCTAssertLessThanOrEqual(HTTPRequestParser(limits: HTTPLimits(maxHeaderBytes: 100, maxBodyBytes: 1000)).bytesWanted, 101)
    }

    func testOversizedBodyIs413FromTheHeaderAlone() {
        var parser = HTTPRequestParser(limits: HTTPLimits(maxHeaderBytes: 1000, maxBodyBytes: 4 * 1024 * 1024))
        parser.append(Array("POST /v1/completions HTTP/1.1\r\nContent-Length: 104857600\r\n\r\n".utf8))
        XCTAssertThrowsError(try parser.next()) { error in
            let error = error as? HTTPError
            XCTAssertEqual(error?.status, 413)
            XCTAssertTrue(error?.message.contains("104857600") == true, error?.message ?? "")
        }
    }

    func testMalformedHeadsAreRefusedWithTheirStatus() {
        let cases: [(String, Int)] = [
            ("GARBAGE\r\n\r\n", 400),
            ("GET /v1/models HTTP/2.0\r\n\r\n", 505),
            ("GET /v1/models HTTP/1.1\r\nNoColon\r\n\r\n", 400),
            ("POST /v1/completions HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400),
            ("POST /v1/completions HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
            ("POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
        ]
        for (text, status) in cases {
            var parser = HTTPRequestParser()
            parser.append(Array(text.utf8))
            XCTAssertThrowsError(try parser.next(), text.debugDescription) { error in
                XCTAssertEqual((error as? HTTPError)?.status, status, text.debugDescription)
            }
        }
    }

    func testExpectContinueIsReportedUntilTheBodyArrives() throws {
        var parser = HTTPRequestParser()
        parser.append(Array("POST /v1/completions HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n".utf8))
        XCTAssertNil(try parser.next())
        XCTAssertTrue(parser.expectsContinue)
        parser.append(Array("{}".utf8))
        XCTAssertNotNil(try parser.next())
        XCTAssertFalse(parser.expectsContinue)
    }
}
