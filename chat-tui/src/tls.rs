//! How chat-tui reaches a server safely: TLS for `wss://` (the platform's trusted roots, plus a
//! private CA from `--ca-file`), and the decision whether credentials may go over plain `ws://`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The TLS settings for `url`: `None` for `ws://` (nothing to set up, nothing read), else a
/// rustls config that trusts the platform's roots and, when given, the CA certificates in
/// `ca_file`. Built once and shared by every connection of the process.
pub fn connector(url: &str, ca_file: Option<&Path>) -> anyhow::Result<Option<Connector>> {
    if !is_wss(url) {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    // The platform's store (on Linux the ca-certificates bundle): what the system trusts, not a
    // list compiled into this binary.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading the CA file {}", path.display()))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("reading the CA file {}", path.display()))?;
        if certs.is_empty() {
            bail!("the CA file {} holds no PEM certificate", path.display());
        }
        for cert in certs {
            roots
                .add(cert)
                .with_context(|| format!("a certificate in {} is not usable", path.display()))?;
        }
    }
    if roots.is_empty() {
        let why = native
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        bail!(
            "no trusted certificates to check {url} with: the platform's store is empty{why}; \
             install the CA certificates (ca-certificates) or pass --ca-file"
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(Connector::Rustls(Arc::new(config))))
}

fn is_wss(url: &str) -> bool {
    url.get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case("wss://"))
}

/// The verification failure, when a connection error is the server's certificate failing it:
/// retrying does not help, trusting its CA (`--ca-file`) or fixing the certificate does.
pub fn certificate_error(e: &tokio_tungstenite::tungstenite::Error) -> Option<&rustls::Error> {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let WsError::Io(io) = e else { return None };
    io.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .filter(|e| matches!(e, rustls::Error::InvalidCertificate(_)))
}

/// What to tell the user about an untrusted certificate.
pub fn untrusted(why: &rustls::Error) -> String {
    format!(
        "the server's certificate is not trusted ({why}): for a private CA pass --ca-file (or \
         ca_file in the config file)"
    )
}

/// A connection error as an `anyhow::Error`; an untrusted certificate says what to do (and
/// once: tungstenite's error repeats its cause when printed as a chain).
pub fn explain(e: tokio_tungstenite::tungstenite::Error) -> anyhow::Error {
    match certificate_error(&e) {
        Some(why) => anyhow::anyhow!(untrusted(why)),
        None => e.into(),
    }
}

/// What to do before a password or token goes to a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `wss://`, a loopback host, or plain `ws://` the user has agreed to.
    Send,
    /// Plain `ws://` to another host: ask the user once for this server (the key to remember
    /// the answer under).
    Ask(String),
    /// Plain `ws://` to another host from a script, which never prompts: refuse, saying how.
    Refuse(String),
}

/// The `host:port` a plain `ws://` URL reaches; `None` when credentials may go there as they
/// are: `wss://`, or a loopback host (`localhost`, 127.0.0.0/8, `::1`), which never leaves the
/// machine. Names are not resolved: only what the URL says counts.
pub fn plain_ws_server(url: &str) -> anyhow::Result<Option<String>> {
    let req = url
        .into_client_request()
        .with_context(|| format!("bad server address {url}"))?;
    let uri = req.uri();
    match uri.scheme_str() {
        Some("wss") => return Ok(None),
        Some("ws") => {}
        _ => bail!("the server address {url} must start with ws:// or wss://"),
    }
    let host = uri.host().context("the server address has no host")?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = match bare.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => {
            let name = bare.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
    };
    if loopback {
        return Ok(None);
    }
    Ok(Some(format!("{host}:{}", uri.port_u16().unwrap_or(80))))
}

/// The decision, from the URL, the servers the user has already agreed to (kept in the state
/// file), the `--allow-plain-ws` flag, and whether this is the interactive client (it may ask)
/// or a script (`send`, `tail`: only the flag will do).
pub fn before_credentials(
    url: &str,
    agreed: &BTreeSet<String>,
    flag: bool,
    interactive: bool,
) -> anyhow::Result<Credentials> {
    let Some(server) = plain_ws_server(url)? else {
        return Ok(Credentials::Send);
    };
    if flag || (interactive && agreed.contains(&server)) {
        return Ok(Credentials::Send);
    }
    if interactive {
        return Ok(Credentials::Ask(server));
    }
    Ok(Credentials::Refuse(format!(
        "refusing to send the token to {server} over plain ws://, where anyone on the network \
         path can read it: use wss:// (chat-server --tls-cert/--tls-key), or pass \
         --allow-plain-ws to send it anyway"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(url: &str, agreed: &[&str], flag: bool, interactive: bool) -> Credentials {
        let agreed = agreed.iter().map(|s| s.to_string()).collect();
        before_credentials(url, &agreed, flag, interactive).expect("a valid URL")
    }

    #[test]
    fn loopback_and_wss_need_no_consent() {
        for url in [
            "ws://127.0.0.1:7878/ws",
            "ws://127.1.2.3/ws",
            "ws://localhost:7878/ws",
            "ws://LOCALHOST./ws",
            "ws://chat.localhost/ws",
            "ws://[::1]:7878/ws",
            "wss://chat.example.com/ws",
            "wss://10.0.0.5:7878/ws",
        ] {
            assert_eq!(decide(url, &[], false, true), Credentials::Send, "{url}");
            assert_eq!(decide(url, &[], false, false), Credentials::Send, "{url}");
        }
    }

    #[test]
    fn plain_ws_beyond_loopback_asks_once_or_refuses_scripts() {
        let url = "ws://chat.example.com:7878/ws";
        let key = "chat.example.com:7878";
        assert_eq!(decide(url, &[], false, true), Credentials::Ask(key.into()));
        // Remembered per server: this one is agreed, another is asked about again.
        assert_eq!(decide(url, &[key], false, true), Credentials::Send);
        assert_eq!(
            decide("ws://other.example.com:7878/ws", &[key], false, true),
            Credentials::Ask("other.example.com:7878".into())
        );
        // Scripts never prompt, and a remembered answer is not an explicit flag.
        let Credentials::Refuse(why) = decide(url, &[key], false, false) else {
            panic!("a script must be refused");
        };
        assert!(
            why.contains("--allow-plain-ws") && why.contains("wss://"),
            "{why}"
        );
        assert_eq!(decide(url, &[], true, false), Credentials::Send);
        assert_eq!(decide(url, &[], true, true), Credentials::Send);
        // Addresses that are not loopback, the unspecified one included; the default port.
        assert_eq!(
            decide("ws://0.0.0.0:7878/ws", &[], false, true),
            Credentials::Ask("0.0.0.0:7878".into())
        );
        assert_eq!(
            decide("ws://192.0.2.7/ws", &[], false, true),
            Credentials::Ask("192.0.2.7:80".into())
        );
        assert_eq!(
            decide("ws://[2001:db8::1]:7878/ws", &[], false, true),
            Credentials::Ask("[2001:db8::1]:7878".into())
        );
        assert!(before_credentials("nonsense", &BTreeSet::new(), false, true).is_err());
    }

    #[test]
    fn ca_files_are_read_and_checked() {
        let dir = tempfile::tempdir().expect("tmp");
        assert!(
            connector("ws://h/ws", Some(&dir.path().join("none")))
                .expect("ws")
                .is_none()
        );
        let missing = connector("wss://h/ws", Some(&dir.path().join("none.pem")));
        assert!(format!("{:#}", missing.err().expect("refused")).contains("none.pem"));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").expect("write");
        let e = connector("wss://h/ws", Some(&empty))
            .err()
            .expect("refused");
        assert!(format!("{e:#}").contains("no PEM certificate"), "{e:#}");
        let ca = rcgen::generate_simple_self_signed(vec!["ca".to_owned()]).expect("cert");
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, ca.cert.pem()).expect("write");
        assert!(
            connector("wss://h/ws", Some(&good))
                .expect("usable")
                .is_some()
        );
    }
}
