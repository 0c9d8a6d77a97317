//! A self-signed certificate for `localhost`, written where a test server can load it.

use std::path::{Path, PathBuf};

/// The certificate, its PEM file and the `[http.tls]` config that serves it.
pub struct TestCert {
    /// The certificate (its DER goes into a client's root store).
    pub cert: rcgen::Certificate,
    /// Path of the certificate's PEM file (`SSL_CERT_FILE` for clients that read roots).
    pub pem: PathBuf,
    /// `[http.tls]` naming the certificate and key files, for `Server::start_configured`.
    pub config: String,
}

/// Writes a new certificate and key for `localhost` into `dir`.
pub fn test_cert(dir: &Path) -> TestCert {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (pem, key) = (dir.join("c.pem"), dir.join("k.pem"));
    std::fs::write(&pem, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let config = format!(
        "[http.tls]\ncert = {:?}\nkey = {:?}\n",
        pem.display().to_string(),
        key.display().to_string()
    );
    TestCert {
        cert: generated.cert,
        pem,
        config,
    }
}
