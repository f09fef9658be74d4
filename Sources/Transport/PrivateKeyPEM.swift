import COpenSSL

/// A private key in PEM form, held in memory that is wiped (`OPENSSL_cleanse`) when freed and never
/// printed. Keys are created by `CertificateAuthority` or read from a 0600 file, and go to OpenSSL
/// straight from this buffer.
///
/// The contents are fixed once initialised, so a `PrivateKeyPEM` may be shared across threads.
public final class PrivateKeyPEM: @unchecked Sendable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    /// Number of PEM bytes.
    public let count: Int
    private let pointer: UnsafeMutableRawPointer

    /// A copy of `bytes`; the caller's storage is not wiped (ideally it never held the key at all).
    public init(copying bytes: UnsafeRawBufferPointer) {
        count = bytes.count
        pointer = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1), alignment: 16)
        if let base = bytes.baseAddress, count > 0 { pointer.copyMemory(from: base, byteCount: count) }
    }

    /// `count` bytes written once by `initializer`, which sees the zeroed buffer.
    init(count: Int, initializingWith initializer: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows {
        self.count = count
        pointer = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1), alignment: 16)
        pointer.initializeMemory(as: UInt8.self, repeating: 0, count: max(count, 1))
        do {
            try initializer(UnsafeMutableRawBufferPointer(start: pointer, count: count))
        } catch {
            OPENSSL_cleanse(pointer, max(count, 1))
            pointer.deallocate()
            throw error
        }
    }

    /// A copy of the UTF-8 of `text` (for tests and for keys that were already in a Swift string).
    public convenience init(_ text: String) {
        let bytes = Array(text.utf8)
        self.init(copying: bytes.withUnsafeBytes { $0 })
    }

    deinit {
        OPENSSL_cleanse(pointer, max(count, 1))
        pointer.deallocate()
    }

    /// Calls `body` with the PEM bytes; the pointer must not escape the call.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: pointer, count: count))
    }

    /// Never the contents: only the length.
    public var description: String { "PrivateKeyPEM(\(count) bytes, redacted)" }
    /// Never the contents: only the length.
    public var debugDescription: String { description }
    /// Only the length, so `dump` and debuggers show no contents.
    public var customMirror: Mirror { Mirror(self, children: ["count": count], displayStyle: .class) }
}

/// Owned OpenSSL objects, each freed in `deinit` (one class per C type, as swift-crypto does).
final class OwnedKey {
    let pointer: OpaquePointer
    init(_ pointer: OpaquePointer) { self.pointer = pointer }
    deinit { EVP_PKEY_free(pointer) }
}

final class OwnedCertificate {
    let pointer: OpaquePointer
    init(_ pointer: OpaquePointer) { self.pointer = pointer }
    deinit { X509_free(pointer) }
}

final class OwnedRequest {
    let pointer: OpaquePointer
    init(_ pointer: OpaquePointer) { self.pointer = pointer }
    deinit { X509_REQ_free(pointer) }
}

/// PEM text to and from OpenSSL objects, through memory BIOs.
enum PEMCodec {
    /// Parses one certificate; `what` names it in errors (e.g. "CA certificate").
    static func certificate(_ pem: String, what: String) throws -> OwnedCertificate {
        OpenSSLErrors.clear()
        let bytes = Array(pem.utf8)
        let parsed: OpaquePointer? = bytes.withUnsafeBytes { raw in
            guard let bio = BIO_new_mem_buf(raw.baseAddress, Int32(clamping: raw.count)) else { return nil }
            defer { BIO_free(bio) }
            return PEM_read_bio_X509(bio, nil, nil, nil)
        }
        guard let parsed else { throw TransportError.invalidPEM(what: what, reason: OpenSSLErrors.drain()) }
        return OwnedCertificate(parsed)
    }

    /// Every certificate in `pem`, in order (a CA bundle); at least one is required.
    static func certificates(_ pem: String, what: String) throws -> [OwnedCertificate] {
        OpenSSLErrors.clear()
        let bytes = Array(pem.utf8)
        var result: [OwnedCertificate] = []
        bytes.withUnsafeBytes { raw in
            guard let bio = BIO_new_mem_buf(raw.baseAddress, Int32(clamping: raw.count)) else { return }
            defer { BIO_free(bio) }
            while let next = PEM_read_bio_X509(bio, nil, nil, nil) { result.append(OwnedCertificate(next)) }
        }
        guard !result.isEmpty else { throw TransportError.invalidPEM(what: what, reason: OpenSSLErrors.drain()) }
        // Reading stops with "no start line" at the end of the bundle, which is not an error.
        OpenSSLErrors.clear()
        return result
    }

    static func request(_ pem: String) throws -> OwnedRequest {
        OpenSSLErrors.clear()
        let bytes = Array(pem.utf8)
        let parsed: OpaquePointer? = bytes.withUnsafeBytes { raw in
            guard let bio = BIO_new_mem_buf(raw.baseAddress, Int32(clamping: raw.count)) else { return nil }
            defer { BIO_free(bio) }
            return PEM_read_bio_X509_REQ(bio, nil, nil, nil)
        }
        guard let parsed else {
            throw TransportError.invalidPEM(what: "certificate signing request", reason: OpenSSLErrors.drain())
        }
        return OwnedRequest(parsed)
    }

    static func privateKey(_ pem: PrivateKeyPEM, what: String) throws -> OwnedKey {
        OpenSSLErrors.clear()
        let parsed: OpaquePointer? = pem.withUnsafeBytes { raw in
            guard let bio = BIO_new_mem_buf(raw.baseAddress, Int32(clamping: raw.count)) else { return nil }
            defer { BIO_free(bio) }
            return PEM_read_bio_PrivateKey(bio, nil, nil, nil)
        }
        guard let parsed else { throw TransportError.invalidPEM(what: what, reason: OpenSSLErrors.drain()) }
        return OwnedKey(parsed)
    }

    /// Runs `write` against a fresh memory BIO and returns what it wrote as text.
    static func text(_ operation: String, _ write: (OpaquePointer) -> Int32) throws -> String {
        OpenSSLErrors.clear()
        guard let bio = BIO_new(BIO_s_mem()) else { throw OpenSSLErrors.error("BIO_new") }
        defer { BIO_free(bio) }
        guard write(bio) == 1 else { throw OpenSSLErrors.error(operation) }
        var data: UnsafeMutablePointer<CChar>?
        let length = conclave_BIO_get_mem_data(bio, &data)
        guard let data, length > 0 else { throw OpenSSLErrors.error(operation) }
        return String(decoding: UnsafeRawBufferPointer(start: data, count: length), as: UTF8.self)
    }

    /// The key's PKCS#8 PEM, written through a secure-memory BIO that is wiped when freed.
    static func privateKeyPEM(_ key: OwnedKey) throws -> PrivateKeyPEM {
        OpenSSLErrors.clear()
        guard let bio = BIO_new(BIO_s_secmem()) else { throw OpenSSLErrors.error("BIO_new(secmem)") }
        defer { BIO_free(bio) }
        guard PEM_write_bio_PrivateKey(bio, key.pointer, nil, nil, 0, nil, nil) == 1 else {
            throw OpenSSLErrors.error("PEM_write_bio_PrivateKey")
        }
        var data: UnsafeMutablePointer<CChar>?
        let length = conclave_BIO_get_mem_data(bio, &data)
        guard let data, length > 0 else { throw OpenSSLErrors.error("PEM_write_bio_PrivateKey") }
        return PrivateKeyPEM(copying: UnsafeRawBufferPointer(start: data, count: length))
    }

    static func certificatePEM(_ certificate: OwnedCertificate) throws -> String {
        try text("PEM_write_bio_X509") { PEM_write_bio_X509($0, certificate.pointer) }
    }

    static func requestPEM(_ request: OwnedRequest) throws -> String {
        try text("PEM_write_bio_X509_REQ") { PEM_write_bio_X509_REQ($0, request.pointer) }
    }
}
