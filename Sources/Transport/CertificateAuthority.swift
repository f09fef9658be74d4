import COpenSSL
import Foundation

/// The federation's own certificate authority: an Ed25519 key and a self-signed CA certificate that
/// signs client certificates (extendedKeyUsage clientAuth, the client id as common name) and the
/// coordinator's server certificate (serverAuth, subjectAltName for its host).
///
/// Private keys never travel: a client makes its key and a certificate signing request locally
/// (`makeKeyAndCSR`), and the coordinator signs the request after checking its self-signature.
public struct CertificateAuthority: Sendable {
    /// The CA certificate, PEM.
    public let certificatePEM: String
    private let keyPEM: PrivateKeyPEM

    /// Clock skew tolerated between coordinator and clients: certificates are valid from this many
    /// seconds before they were issued.
    public static let backdatingSeconds: TimeInterval = 300
    /// Longest validity accepted for any certificate (about 27 years).
    public static let maximumValidityDays = 10_000

    /// A CA from its certificate and key, checking that they belong together and form a CA.
    /// - Throws: `TransportError.invalidPEM` naming which input is unusable.
    public init(certificatePEM: String, keyPEM: PrivateKeyPEM) throws {
        let certificate = try PEMCodec.certificate(certificatePEM, what: "CA certificate")
        let key = try PEMCodec.privateKey(keyPEM, what: "CA private key")
        guard X509_check_private_key(certificate.pointer, key.pointer) == 1 else {
            throw TransportError.invalidPEM(
                what: "CA private key", reason: "does not match the CA certificate (\(OpenSSLErrors.drain()))")
        }
        guard X509_check_ca(certificate.pointer) >= 1 else {
            throw TransportError.invalidPEM(what: "CA certificate", reason: "not a CA certificate (basicConstraints CA:FALSE or absent)")
        }
        self.certificatePEM = certificatePEM
        self.keyPEM = keyPEM
    }

    /// A new CA: a fresh Ed25519 key and a self-signed certificate with common name `name`
    /// (basicConstraints CA:TRUE, pathlen 0; keyUsage keyCertSign and cRLSign), serial 1.
    /// - Throws: `TransportError.invalidName` for an unusable name, `.openSSL` if OpenSSL fails.
    public static func create(name: String, validityDays: Int, notBefore: Date? = nil)
        throws -> (certificatePEM: String, keyPEM: PrivateKeyPEM)
    {
        try Names.checkDisplayName(name, what: "CA name")
        let key = try generateKey()
        let subject = try Names.subject(commonName: name)
        defer { X509_NAME_free(subject) }
        let certificate = try issue(
            subject: subject, publicKey: key.pointer, issuer: nil, issuerName: subject, issuerKey: key.pointer,
            serial: 1, notBefore: notBefore, validityDays: validityDays,
            extensions: [
                (NID_basic_constraints, "critical,CA:TRUE,pathlen:0"),
                (NID_key_usage, "critical,keyCertSign,cRLSign"),
                (NID_subject_key_identifier, "hash"),
            ])
        return (try PEMCodec.certificatePEM(certificate), try PEMCodec.privateKeyPEM(key))
    }

    /// A fresh Ed25519 key and a certificate signing request for `commonName`, signed by that key.
    /// The key stays with the caller (write it with `PEMFile.writePrivateKey`); only the request
    /// goes to the coordinator.
    public static func makeKeyAndCSR(commonName: String) throws -> (keyPEM: PrivateKeyPEM, csrPEM: String) {
        try Names.checkDisplayName(commonName, what: "common name")
        let key = try generateKey()
        OpenSSLErrors.clear()
        guard let rawRequest = X509_REQ_new() else { throw OpenSSLErrors.error("X509_REQ_new") }
        let request = OwnedRequest(rawRequest)
        let subject = try Names.subject(commonName: commonName)
        defer { X509_NAME_free(subject) }
        guard X509_REQ_set_version(request.pointer, 0) == 1,
              X509_REQ_set_subject_name(request.pointer, subject) == 1,
              X509_REQ_set_pubkey(request.pointer, key.pointer) == 1
        else { throw OpenSSLErrors.error("building the certificate signing request") }
        guard X509_REQ_sign(request.pointer, key.pointer, nil) > 0 else { throw OpenSSLErrors.error("X509_REQ_sign") }
        return (try PEMCodec.privateKeyPEM(key), try PEMCodec.requestPEM(request))
    }

    /// The common name a certificate signing request asks for (what `enroll` reads before signing).
    public static func commonName(csrPEM: String) throws -> String {
        let request = try PEMCodec.request(csrPEM)
        guard let name = X509_REQ_get_subject_name(request.pointer) else {
            throw TransportError.invalidPEM(what: "certificate signing request", reason: "no subject")
        }
        return try Names.commonName(of: name, what: "certificate signing request")
    }

    /// The common name in a certificate's subject.
    public static func commonName(certificatePEM: String) throws -> String {
        let certificate = try PEMCodec.certificate(certificatePEM, what: "certificate")
        guard let name = X509_get_subject_name(certificate.pointer) else {
            throw TransportError.invalidPEM(what: "certificate", reason: "no subject")
        }
        return try Names.commonName(of: name, what: "certificate")
    }

    /// SHA-256 of the certificate's DER encoding, 64 lowercase hex digits (what `enroll` prints and
    /// what the TLS layer reports for a peer).
    public static func fingerprint(certificatePEM: String) throws -> String {
        let certificate = try PEMCodec.certificate(certificatePEM, what: "certificate")
        return try fingerprint(of: certificate.pointer)
    }

    /// Signs a client's request: common name `id` (which must be what the request asks for),
    /// extendedKeyUsage clientAuth, keyUsage digitalSignature, CA:FALSE.
    /// - Parameters:
    ///   - serial: the certificate's serial number, unique within the federation (at least 1).
    ///   - notBefore: start of validity; nil means now minus `backdatingSeconds`.
    /// - Throws: `.requestRefused` when the request's signature is bad, its key is not Ed25519, or its
    ///   name differs from `id`; `.invalidName` for an unusable id.
    public func sign(csrPEM: String, asClient id: String, validityDays: Int, serial: UInt64,
                     notBefore: Date? = nil) throws -> String
    {
        try Names.checkClientID(id)
        return try sign(csrPEM: csrPEM, expectedCommonName: id, validityDays: validityDays, serial: serial,
                        notBefore: notBefore, extensions: [
                            (NID_basic_constraints, "critical,CA:FALSE"),
                            (NID_key_usage, "critical,digitalSignature"),
                            (NID_ext_key_usage, "clientAuth"),
                            (NID_subject_key_identifier, "hash"),
                            (NID_authority_key_identifier, "keyid"),
                        ])
    }

    /// Signs the coordinator's request: extendedKeyUsage serverAuth and a subjectAltName entry for
    /// each host (IP for addresses, DNS otherwise); the request's common name must be `hosts[0]`.
    public func sign(csrPEM: String, asServer hosts: [String], validityDays: Int, serial: UInt64,
                     notBefore: Date? = nil) throws -> String
    {
        guard let first = hosts.first else {
            throw TransportError.invalidName(what: "server host list", value: "", reason: "at least one host is required")
        }
        var alternativeNames: [String] = []
        for host in hosts {
            switch try Names.classifyHost(host) {
            case .ip: alternativeNames.append("IP:\(host)")
            case .dns: alternativeNames.append("DNS:\(host)")
            }
        }
        return try sign(csrPEM: csrPEM, expectedCommonName: first, validityDays: validityDays, serial: serial,
                        notBefore: notBefore, extensions: [
                            (NID_basic_constraints, "critical,CA:FALSE"),
                            (NID_key_usage, "critical,digitalSignature"),
                            (NID_ext_key_usage, "serverAuth"),
                            (NID_subject_alt_name, alternativeNames.joined(separator: ",")),
                            (NID_subject_key_identifier, "hash"),
                            (NID_authority_key_identifier, "keyid"),
                        ])
    }

    private func sign(csrPEM: String, expectedCommonName: String, validityDays: Int, serial: UInt64,
                      notBefore: Date?, extensions: [(Int32, String)]) throws -> String
    {
        let request = try PEMCodec.request(csrPEM)
        OpenSSLErrors.clear()
        guard let requestKey = X509_REQ_get0_pubkey(request.pointer) else {
            throw TransportError.requestRefused(reason: "it carries no public key")
        }
        guard EVP_PKEY_get_id(requestKey) == EVP_PKEY_ED25519 else {
            throw TransportError.requestRefused(reason: "its key is not Ed25519 (the federation's key type)")
        }
        guard X509_REQ_verify(request.pointer, requestKey) == 1 else {
            throw TransportError.requestRefused(
                reason: "its self-signature does not verify (\(OpenSSLErrors.drain()))")
        }
        guard let requestSubject = X509_REQ_get_subject_name(request.pointer) else {
            throw TransportError.requestRefused(reason: "it has no subject")
        }
        let requested = try Names.commonName(of: requestSubject, what: "certificate signing request")
        guard requested == expectedCommonName else {
            throw TransportError.requestRefused(
                reason: "it asks for common name '\(requested)' but is being signed for '\(expectedCommonName)'")
        }
        let caCertificate = try PEMCodec.certificate(certificatePEM, what: "CA certificate")
        let caKey = try PEMCodec.privateKey(keyPEM, what: "CA private key")
        guard let issuerName = X509_get_subject_name(caCertificate.pointer) else {
            throw TransportError.invalidPEM(what: "CA certificate", reason: "no subject")
        }
        let subject = try Names.subject(commonName: expectedCommonName)
        defer { X509_NAME_free(subject) }
        let certificate = try Self.issue(
            subject: subject, publicKey: requestKey, issuer: caCertificate.pointer, issuerName: issuerName,
            issuerKey: caKey.pointer, serial: serial, notBefore: notBefore, validityDays: validityDays,
            extensions: extensions)
        return try PEMCodec.certificatePEM(certificate)
    }

    // MARK: OpenSSL plumbing

    static func generateKey() throws -> OwnedKey {
        OpenSSLErrors.clear()
        guard let context = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nil) else {
            throw OpenSSLErrors.error("EVP_PKEY_CTX_new_id(Ed25519)")
        }
        defer { EVP_PKEY_CTX_free(context) }
        var key: OpaquePointer?
        guard EVP_PKEY_keygen_init(context) == 1, EVP_PKEY_keygen(context, &key) == 1, let key else {
            throw OpenSSLErrors.error("Ed25519 key generation")
        }
        return OwnedKey(key)
    }

    static func fingerprint(of certificate: OpaquePointer) throws -> String {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        OpenSSLErrors.clear()
        guard X509_digest(certificate, EVP_sha256(), &digest, &length) == 1, length == 32 else {
            throw OpenSSLErrors.error("X509_digest(sha256)")
        }
        return digest.prefix(Int(length)).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }

    /// Builds and signs an X.509 v3 certificate.
    private static func issue(subject: OpaquePointer, publicKey: OpaquePointer, issuer: OpaquePointer?,
                              issuerName: OpaquePointer, issuerKey: OpaquePointer, serial: UInt64,
                              notBefore: Date?, validityDays: Int, extensions: [(Int32, String)]) throws
        -> OwnedCertificate
    {
        guard (1...maximumValidityDays).contains(validityDays) else {
            throw TransportError.invalidName(what: "validity", value: "\(validityDays) days",
                                             reason: "must be between 1 and \(maximumValidityDays) days")
        }
        guard serial >= 1 else {
            throw TransportError.invalidName(what: "serial number", value: "0", reason: "must be at least 1")
        }
        let start = (notBefore ?? Date().addingTimeInterval(-backdatingSeconds)).timeIntervalSince1970
        let startSeconds = time_t(start.rounded(.down))
        let endSeconds = startSeconds + time_t(validityDays) * 86_400
        OpenSSLErrors.clear()
        guard let raw = X509_new() else { throw OpenSSLErrors.error("X509_new") }
        let certificate = OwnedCertificate(raw)
        let x = certificate.pointer
        guard X509_set_version(x, 2) == 1,
              ASN1_INTEGER_set_uint64(X509_get_serialNumber(x), serial) == 1,
              ASN1_TIME_set(X509_getm_notBefore(x), startSeconds) != nil,
              ASN1_TIME_set(X509_getm_notAfter(x), endSeconds) != nil,
              X509_set_subject_name(x, subject) == 1,
              X509_set_issuer_name(x, issuerName) == 1,
              X509_set_pubkey(x, publicKey) == 1
        else { throw OpenSSLErrors.error("building the certificate") }
        var context = X509V3_CTX()
        X509V3_set_ctx(&context, issuer ?? x, x, nil, nil, 0)
        for (nid, value) in extensions {
            guard let ext = X509V3_EXT_conf_nid(nil, &context, nid, value) else {
                throw OpenSSLErrors.error("certificate extension \(String(cString: OBJ_nid2sn(nid))) = \(value)")
            }
            defer { X509_EXTENSION_free(ext) }
            guard X509_add_ext(x, ext, -1) == 1 else { throw OpenSSLErrors.error("X509_add_ext") }
        }
        // Ed25519 signs the message itself: no separate digest (md NULL).
        guard X509_sign(x, issuerKey, nil) > 0 else { throw OpenSSLErrors.error("X509_sign") }
        return certificate
    }
}

/// Rules for the names that go into certificates.
enum Names {
    enum HostKind { case ip, dns }

    /// Upper bound for a common name (X.520 ub-common-name).
    static let maximumCommonNameLength = 64

    /// A printable name of 1...64 characters without control characters.
    static func checkDisplayName(_ name: String, what: String) throws {
        guard !name.isEmpty, name.utf8.count <= maximumCommonNameLength else {
            throw TransportError.invalidName(what: what, value: name,
                                             reason: "must be 1 to \(maximumCommonNameLength) bytes of UTF-8")
        }
        guard !name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw TransportError.invalidName(what: what, value: name, reason: "contains a control character")
        }
    }

    /// Client ids become file names and log fields: 1...64 of [A-Za-z0-9._-], not starting with '.' or '-'.
    static func checkClientID(_ id: String) throws {
        try checkDisplayName(id, what: "client id")
        let allowed = id.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
        }
        guard allowed else {
            throw TransportError.invalidName(what: "client id", value: id,
                                             reason: "only letters, digits, '.', '_' and '-' are allowed")
        }
        guard let first = id.utf8.first, first != UInt8(ascii: "."), first != UInt8(ascii: "-") else {
            throw TransportError.invalidName(what: "client id", value: id, reason: "must not start with '.' or '-'")
        }
    }

    /// An IPv4/IPv6 address, or a DNS name of labels [A-Za-z0-9-] (1...63 each, 253 in all).
    static func classifyHost(_ host: String) throws -> HostKind {
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1 { return .ip }
        let labels = host.split(separator: ".", omittingEmptySubsequences: false)
        let valid = !host.isEmpty && host.utf8.count <= 253 && labels.allSatisfy { label in
            !label.isEmpty && label.utf8.count <= 63 && label.first != "-" && label.last != "-"
                && label.utf8.allSatisfy { byte in
                    (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A)
                        || (byte >= 0x61 && byte <= 0x7A) || byte == UInt8(ascii: "-")
                }
        }
        guard valid else {
            throw TransportError.invalidName(what: "host", value: host,
                                             reason: "neither an IP address nor a DNS name")
        }
        return .dns
    }

    /// A new X509_NAME holding one commonName entry; the caller frees it.
    static func subject(commonName: String) throws -> OpaquePointer {
        OpenSSLErrors.clear()
        guard let name = X509_NAME_new() else { throw OpenSSLErrors.error("X509_NAME_new") }
        let bytes = Array(commonName.utf8)
        guard X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8, bytes, Int32(bytes.count), -1, 0) == 1 else {
            X509_NAME_free(name)
            throw OpenSSLErrors.error("X509_NAME_add_entry_by_NID(commonName)")
        }
        return name
    }

    /// The single commonName entry of `name` (an X509_NAME), as UTF-8.
    static func commonName(of name: OpaquePointer, what: String) throws -> String {
        let index = X509_NAME_get_index_by_NID(name, NID_commonName, -1)
        guard index >= 0 else { throw TransportError.invalidPEM(what: what, reason: "its subject has no common name") }
        guard X509_NAME_get_index_by_NID(name, NID_commonName, index) < 0 else {
            throw TransportError.invalidPEM(what: what, reason: "its subject has more than one common name")
        }
        guard let entry = X509_NAME_get_entry(name, index), let data = X509_NAME_ENTRY_get_data(entry) else {
            throw TransportError.invalidPEM(what: what, reason: "unreadable common name")
        }
        var utf8: UnsafeMutablePointer<UInt8>?
        let length = ASN1_STRING_to_UTF8(&utf8, data)
        guard length >= 0, let utf8 else {
            throw TransportError.invalidPEM(what: what, reason: "common name is not valid text (\(OpenSSLErrors.drain()))")
        }
        defer { conclave_OPENSSL_free(utf8) }
        let bytes = UnsafeBufferPointer(start: utf8, count: Int(length))
        guard !bytes.contains(0) else {
            throw TransportError.invalidPEM(what: what, reason: "common name contains a NUL byte")
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
