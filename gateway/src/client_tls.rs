//! The TLS a gateway speaks as the client of another gateway: its health
//! checks and the calls a query's tasks make.

use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use url::Host;

/// How this gateway checks another's certificate, and which it presents.
#[derive(Clone, Default)]
pub struct ClientTls {
    /// The CA (PEM) the other gateway's certificate is checked against, as
    /// well as the system's roots (`--cluster-ca`).
    pub ca: Option<Vec<u8>>,
    /// The certificate and key (PEM) presented when the other gateway asks
    /// for one (mutual TLS, `--tls-client-ca`): this gateway's own
    /// (`--tls-cert`, `--tls-key`), so a cluster needs no second pair.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name a gateway reached at an IP address is checked against:
    /// the `--workers-dns` name, as gateways found by it are known only by
    /// their addresses, which their certificates need not name.
    pub name_of_addresses: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.ca.is_some())
            .field("identity", &self.identity.is_some())
            .field("name_of_addresses", &self.name_of_addresses)
            .finish()
    }
}

impl ClientTls {
    /// Checks certificates against `ca` (and the system's roots), presents
    /// none.
    pub fn with_ca(ca: Option<Vec<u8>>) -> Self {
        Self {
            ca,
            ..Self::default()
        }
    }

    /// The same, checking the certificate of a gateway reached at an IP
    /// address against `name` (the DNS name it was found by).
    pub fn naming_addresses(mut self, name: impl Into<String>) -> Self {
        self.name_of_addresses = Some(name.into());
        self
    }

    /// The same, presenting `cert` with `key` (PEM) when asked.
    pub fn presenting(mut self, cert: Vec<u8>, key: Vec<u8>) -> Self {
        self.identity = Some((cert, key));
        self
    }

    /// tonic's client configuration for the `https://` gateway at `url`.
    pub fn config(&self, url: &str) -> ClientTlsConfig {
        // Two crypto providers are linked in (ring, and aws-lc through the
        // object-store crates), so rustls needs to be told which to use.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut tls = ClientTlsConfig::new().with_enabled_roots();
        if let Some(ca) = &self.ca {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        let at_address = url::Url::parse(url)
            .ok()
            .is_some_and(|url| matches!(url.host(), Some(Host::Ipv4(_) | Host::Ipv6(_))));
        if let Some(name) = self.name_of_addresses.as_ref().filter(|_| at_address) {
            tls = tls.domain_name(name);
        }
        tls
    }
}
