import COpenSSL
import Foundation

/// Local checks of a TLS identity, made before any connection: a key that is not the certificate's, or
/// a certificate from another CA, is a configuration error that no retry can fix (issue 15).
public enum IdentityChecks {
    /// The common name of the certificate's subject and of its issuer.
    /// - Throws: `TransportError.invalidPEM` naming `what` when the PEM or a name is unusable.
    public static func names(certificatePEM: String, what: String = "certificate") throws -> (subject: String, issuer: String) {
        let certificate = try PEMCodec.certificate(certificatePEM, what: what)
        return try names(of: certificate.pointer, what: what)
    }

    /// Whether `certificatePEM` is signed by one of the certificates in `caPEM` (issuer name and signature).
    /// - Throws: `TransportError.invalidPEM` when either PEM does not parse.
    public static func isIssued(certificatePEM: String, byAnyOf caPEM: String) throws -> Bool {
        let certificate = try PEMCodec.certificate(certificatePEM, what: "certificate")
        let anchors = try PEMCodec.certificates(caPEM, what: "CA certificate")
        defer { OpenSSLErrors.clear() }
        return anchors.contains { anchor in
            guard X509_check_issued(anchor.pointer, certificate.pointer) == X509_V_OK,
                  let key = X509_get0_pubkey(anchor.pointer) else { return false }
            return X509_verify(certificate.pointer, key) == 1
        }
    }

    /// Whether `keyPEM` is the private key of the public key in `certificatePEM`.
    /// - Throws: `TransportError.invalidPEM` when either does not parse.
    public static func keyMatches(certificatePEM: String, keyPEM: PrivateKeyPEM) throws -> Bool {
        let certificate = try PEMCodec.certificate(certificatePEM, what: "certificate")
        let key = try PEMCodec.privateKey(keyPEM, what: "private key")
        defer { OpenSSLErrors.clear() }
        return X509_check_private_key(certificate.pointer, key.pointer) == 1
    }

    /// The certificate's validity period (notBefore, notAfter), to the second.
    /// - Throws: `TransportError.invalidPEM` naming `what` when the PEM or a time is unusable.
    public static func validity(certificatePEM: String, what: String = "certificate") throws -> (notBefore: Date, notAfter: Date) {
        let certificate = try PEMCodec.certificate(certificatePEM, what: what)
        func date(_ time: UnsafePointer<ASN1_TIME>?, _ field: String) throws -> Date {
            var parts = tm()
            guard let time, ASN1_TIME_to_tm(time, &parts) == 1 else {
                throw TransportError.invalidPEM(what: what, reason: "its \(field) time cannot be read")
            }
            return Date(timeIntervalSince1970: TimeInterval(timegm(&parts)))
        }
        return (try date(X509_get0_notBefore(certificate.pointer), "notBefore"),
                try date(X509_get0_notAfter(certificate.pointer), "notAfter"))
    }

    static func names(of certificate: OpaquePointer, what: String) throws -> (subject: String, issuer: String) {
        guard let subject = X509_get_subject_name(certificate), let issuer = X509_get_issuer_name(certificate) else {
            throw TransportError.invalidPEM(what: what, reason: "no subject or issuer name")
        }
        return (try Names.commonName(of: subject, what: what), try Names.commonName(of: issuer, what: "\(what)'s issuer"))
    }
}
