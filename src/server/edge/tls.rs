//! HTTPS served by Tidings itself (`TIDINGS_TLS_CERT`, `TIDINGS_TLS_KEY`): rustls with the
//! ring provider, offering h2 and http/1.1 by ALPN. Over h2 every stream of a page (and of
//! every tab of the site) shares one connection, so the browser's six-connections-per-origin
//! limit no longer applies; WebSockets ride h2 streams too (RFC 8441 extended CONNECT, which
//! `edge::http` enables on its h2 side).
//!
//! The files are read once at start; a problem with them stops the start with a sentence
//! naming the file.
//!
//! Tests: the unit test below (a `tidings dev-cert` pair loads); `tests/it/connections.rs`
//! serves h2 and WebSockets over it.

use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::server::config::TlsFiles;

/// Marks a request that reached us over TLS here (so `edge::forwarded` calls it https).
#[derive(Clone, Copy, Debug)]
pub struct DirectTls;

/// The TLS acceptor for `files`.
pub fn acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("TIDINGS_TLS_CERT: cannot read {}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!(
                "TIDINGS_TLS_CERT: {} is not a PEM certificate chain",
                files.cert.display()
            )
        })?;
    if certs.is_empty() {
        anyhow::bail!(
            "TIDINGS_TLS_CERT: {} holds no certificate",
            files.cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).with_context(|| {
        format!(
            "TIDINGS_TLS_KEY: {} is not a PEM private key (PKCS#8, PKCS#1 or SEC1)",
            files.key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TIDINGS_TLS_CERT and TIDINGS_TLS_KEY do not make a pair")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A self-signed certificate and its key for `localhost` and `127.0.0.1`, as PEM text.
pub fn self_signed() -> anyhow::Result<(String, String)> {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .context("making a self-signed certificate")?;
    Ok((cert.cert.pem(), cert.key_pair.serialize_pem()))
}

/// Writes `dir/cert.pem` and `dir/key.pem` (the key readable by its owner only).
pub fn write_dev_cert(dir: &std::path::Path) -> anyhow::Result<TlsFiles> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot make {}", dir.display()))?;
    let (cert, key) = self_signed()?;
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, cert)
        .with_context(|| format!("cannot write {}", files.cert.display()))?;
    {
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        options.mode(0o600);
        let mut file = options
            .open(&files.key)
            .with_context(|| format!("cannot write {}", files.key.display()))?;
        file.write_all(key.as_bytes())?;
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dev_cert_loads_and_a_mismatched_pair_is_named() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let files = write_dev_cert(dir.path()).unwrap();
        acceptor(&files).unwrap();
        let other = tempfile::tempdir().unwrap();
        let other = write_dev_cert(other.path()).unwrap();
        let mixed = TlsFiles {
            cert: files.cert.clone(),
            key: other.key,
        };
        let e = format!("{:#}", acceptor(&mixed).err().unwrap());
        assert!(e.contains("do not make a pair"), "{e}");
        let missing = TlsFiles {
            cert: dir.path().join("nope.pem"),
            key: files.key,
        };
        let e = format!("{:#}", acceptor(&missing).err().unwrap());
        assert!(e.contains("TIDINGS_TLS_CERT"), "{e}");
    }
}
