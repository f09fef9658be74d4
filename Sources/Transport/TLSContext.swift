import COpenSSL
import Foundation

/// Decides whether a client whose certificate chains to the federation CA may connect, from its
/// certificate's common name and SHA-256 fingerprint (the coordinator maps these to enrolled,
/// non-revoked clients). Called during the handshake, so a refused client never gets a session.
public typealias ClientAuthorization = @Sendable (_ commonName: String, _ fingerprint: String) -> Bool

/// TLS protocol versions, as OpenSSL numbers them; contexts use TLS 1.3 only.
enum TLSVersions {
    static let tls12 = Int32(TLS1_2_VERSION)
    static let tls13 = Int32(TLS1_3_VERSION)
}

/// The server side's TLS configuration: TLS 1.3 only; the coordinator's certificate and key; client
/// certificates required and verified against the federation CA (purpose sslclient, so the
/// certificate must carry clientAuth), then passed to `authorize`.
public final class TLSServerContext: @unchecked Sendable {
    let context: OpaquePointer
    let authorize: ClientAuthorization

    /// - Parameters:
    ///   - caPEM: the federation CA certificate(s) that client certificates must chain to.
    ///   - certificatePEM: the coordinator's certificate (serverAuth, with its host in subjectAltName).
    ///   - keyPEM: the coordinator's private key.
    ///   - authorize: refuses unknown or revoked clients at the handshake; by default all are accepted.
    /// - Throws: `TransportError.invalidPEM` naming the unusable input, `.openSSL` otherwise.
    public init(caPEM: String, certificatePEM: String, keyPEM: PrivateKeyPEM,
                authorize: @escaping ClientAuthorization = { _, _ in true }) throws
    {
        context = try makeContext(server: true, caPEM: caPEM, identity: (certificatePEM, keyPEM),
                                  versions: TLSVersions.tls13...TLSVersions.tls13)
        self.authorize = authorize
        // Session tickets would only serve resumption, which we do not use; without them the server
        // sends nothing after the handshake that a client could mistake for acceptance.
        SSL_CTX_set_num_tickets(context, 0)
        SSL_CTX_set_verify(context, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verifyCallback)
    }

    deinit { SSL_CTX_free(context) }
}

/// The client side's TLS configuration: TLS 1.3 only, the federation CA as the only trust anchor,
/// the client's certificate and key, and the name or address the server's certificate must carry.
public final class TLSClientContext: @unchecked Sendable {
    let context: OpaquePointer
    /// The DNS name or IP address the server's certificate is checked against.
    public let expectedHost: String

    /// - Parameters:
    ///   - caPEM: the federation CA certificate the coordinator's certificate must chain to.
    ///   - certificatePEM: this client's certificate (clientAuth, its id as common name).
    ///   - keyPEM: this client's private key.
    ///   - expectedHost: the coordinator's DNS name or IP address, as in its certificate.
    public convenience init(caPEM: String, certificatePEM: String, keyPEM: PrivateKeyPEM, expectedHost: String) throws {
        try self.init(caPEM: caPEM, identity: (certificatePEM, keyPEM), expectedHost: expectedHost,
                      versions: TLSVersions.tls13...TLSVersions.tls13)
    }

    /// Any identity (or none) and any protocol range: tests use it to play misbehaving clients.
    init(caPEM: String, identity: (String, PrivateKeyPEM)?, expectedHost: String,
         versions: ClosedRange<Int32>) throws
    {
        _ = try Names.classifyHost(expectedHost)
        context = try makeContext(server: false, caPEM: caPEM, identity: identity, versions: versions)
        self.expectedHost = expectedHost
        SSL_CTX_set_verify(context, SSL_VERIFY_PEER, verifyCallback)
    }

    deinit { SSL_CTX_free(context) }
}

/// Builds an SSL_CTX with the version range, the CA as the only trust anchor and our identity.
private func makeContext(server: Bool, caPEM: String, identity: (String, PrivateKeyPEM)?,
                         versions: ClosedRange<Int32>) throws -> OpaquePointer
{
    ProcessSignals.ignoreBrokenPipe
    OpenSSLErrors.clear()
    guard let context = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()) else {
        throw OpenSSLErrors.error("SSL_CTX_new")
    }
    do {
        guard conclave_SSL_CTX_set_min_proto_version(context, versions.lowerBound) == 1,
              conclave_SSL_CTX_set_max_proto_version(context, versions.upperBound) == 1
        else { throw OpenSSLErrors.error("setting the TLS version range") }
        _ = SSL_CTX_set_options(context, conclave_SSL_OP_NO_TICKET() | conclave_SSL_OP_NO_RENEGOTIATION())
        guard let store = SSL_CTX_get_cert_store(context) else { throw OpenSSLErrors.error("SSL_CTX_get_cert_store") }
        for certificate in try PEMCodec.certificates(caPEM, what: "CA certificate") {
            guard X509_STORE_add_cert(store, certificate.pointer) == 1 else {
                throw OpenSSLErrors.error("adding the CA certificate to the trust store")
            }
        }
        SSL_CTX_set_verify_depth(context, 2)
        if let (certificatePEM, keyPEM) = identity {
            let certificate = try PEMCodec.certificate(certificatePEM, what: server ? "server certificate" : "client certificate")
            let key = try PEMCodec.privateKey(keyPEM, what: server ? "server private key" : "client private key")
            guard X509_check_private_key(certificate.pointer, key.pointer) == 1 else {
                throw TransportError.invalidPEM(what: server ? "server private key" : "client private key",
                                                reason: "does not match the certificate (\(OpenSSLErrors.drain()))")
            }
            guard SSL_CTX_use_certificate(context, certificate.pointer) == 1 else {
                throw OpenSSLErrors.error("SSL_CTX_use_certificate")
            }
            guard SSL_CTX_use_PrivateKey(context, key.pointer) == 1 else {
                throw OpenSSLErrors.error("SSL_CTX_use_PrivateKey")
            }
            guard SSL_CTX_check_private_key(context) == 1 else {
                throw TransportError.invalidPEM(what: server ? "server private key" : "client private key",
                                                reason: "does not match the certificate (\(OpenSSLErrors.drain()))")
            }
        }
        return context
    } catch {
        SSL_CTX_free(context)
        throw error
    }
}

/// What one handshake learned about its peer, reachable from OpenSSL's verify callback through the
/// SSL object's ex-data slot (the callback is a C function and cannot capture).
final class HandshakeState {
    static let exDataIndex: Int32 = conclave_SSL_get_ex_new_index()

    let authorize: ClientAuthorization?
    /// Why verification refused the peer, in our words (the OpenSSL queue adds its own).
    var refusal: String?
    var peerCommonName: String?
    var peerFingerprint: String?
    /// The peer certificate's common name and its issuer's, when verification refused it.
    var rejectedNames: (subject: String, issuer: String)?

    init(authorize: ClientAuthorization?) { self.authorize = authorize }

    /// Runs for each certificate of the peer's chain, root first, after OpenSSL's own checks.
    func verify(preverified: Bool, store: OpaquePointer) -> Bool {
        let depth = X509_STORE_CTX_get_error_depth(store)
        let certificate = X509_STORE_CTX_get_current_cert(store)
        let name = certificate.flatMap { X509_get_subject_name($0) }
            .flatMap { try? Names.commonName(of: $0, what: "peer certificate") } ?? "(no common name)"
        guard preverified else {
            let code = X509_STORE_CTX_get_error(store)
            let reason = String(cString: X509_verify_cert_error_string(Int(code)))
            if refusal == nil {
                refusal = "certificate '\(name)' (chain depth \(depth)) failed verification: \(reason)"
                // The peer's own certificate, and the issuer of the one that failed (the leaf's when the
                // chain ends at a CA we do not trust, that CA's own name when it sent it along).
                if let leaf = X509_STORE_CTX_get0_cert(store), let certificate,
                   let subject = try? IdentityChecks.names(of: leaf, what: "peer certificate").subject,
                   let issuer = try? IdentityChecks.names(of: certificate, what: "peer certificate").issuer {
                    rejectedNames = (subject, issuer)
                }
            }
            return false
        }
        guard depth == 0, let certificate else { return true }
        guard let fingerprint = try? CertificateAuthority.fingerprint(of: certificate) else {
            refusal = "could not fingerprint the certificate '\(name)'"
            return false
        }
        peerCommonName = name
        peerFingerprint = fingerprint
        if let authorize, !authorize(name, fingerprint) {
            refusal = "client certificate '\(name)' (sha256 \(fingerprint)) is not authorized: unknown or revoked client"
            X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION)
            return false
        }
        return true
    }
}

private let verifyCallback: SSL_verify_cb = { preverified, store in
    guard let store,
          let ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()),
          let raw = SSL_get_ex_data(OpaquePointer(ssl), HandshakeState.exDataIndex)
    else { return 0 }
    let state = Unmanaged<HandshakeState>.fromOpaque(raw).takeUnretainedValue()
    return state.verify(preverified: preverified == 1, store: store) ? 1 : 0
}

enum ProcessSignals {
    /// A peer that vanishes mid-write must give an EPIPE error, not kill the process: OpenSSL writes
    /// with write(2), which raises SIGPIPE. Evaluated once, when the first TLS context is made.
    static let ignoreBrokenPipe: Void = {
        _ = signal(SIGPIPE, SIG_IGN)
    }()
}
