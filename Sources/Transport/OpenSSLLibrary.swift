import COpenSSL

/// The OpenSSL library this process is linked against.
public enum OpenSSLLibrary {
    /// The version number as OpenSSL reports it at run time (0xMNN00PP0L).
    public static var versionNumber: UInt { UInt(OpenSSL_version_num()) }
    /// The human-readable version, e.g. "OpenSSL 3.0.19 ...".
    public static var versionString: String { String(cString: OpenSSL_version(Int32(OPENSSL_VERSION))) }
}
