//! Which gateways of the cluster a query may run on now.
//!
//! The configured gateways (listed, or the addresses of a DNS name such as
//! a headless Service's, looked up again each time) are asked for their
//! health every
//! [`PROBE_EVERY`], in the background: a gateway that does not answer
//! SERVING within [`PROBE_TIMEOUT`] (down, cut off, or shutting down and
//! refusing new queries) gets no new tasks until it answers again. So a
//! query planned after a gateway stopped runs on those that remain, and a
//! gateway that comes back joins the next queries.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use datafusion::error::Result;
use datafusion_distributed::WorkerResolver;
use futures::future::join_all;
use url::Url;

use crate::client_tls::ClientTls;
use crate::health::{CheckedStatus, probe};

/// How often the other gateways are asked for their health.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// How long a gateway has to answer one.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// The gateways of a cluster and those that answered their last health
/// check. This gateway is always among them.
#[derive(Debug, Clone)]
pub struct Membership {
    self_url: Url,
    /// The gateways listed (`--workers`).
    listed: Vec<Url>,
    /// A DNS name whose addresses are gateways (`--workers-dns`), with
    /// their port: a headless Service's name, looked up at each check.
    dns: Option<String>,
    /// The other gateways: those listed and those the name had at the
    /// last check.
    others: Arc<RwLock<Vec<Url>>>,
    live: Arc<RwLock<Vec<Url>>>,
    /// The gateways the DNS name gave and no longer gives, since last
    /// taken ([`Self::spawn_checks`]).
    left: Arc<RwLock<Vec<Url>>>,
    /// How gateways that serve TLS are reached.
    tls: ClientTls,
}

impl Membership {
    /// `self_url` and `others`, all taken to be up until asked.
    pub fn new(self_url: Url, others: Vec<Url>) -> Self {
        let listed: Vec<Url> = others.into_iter().filter(|url| *url != self_url).collect();
        let live = std::iter::once(self_url.clone())
            .chain(listed.iter().cloned())
            .collect();
        Self {
            self_url,
            others: Arc::new(RwLock::new(listed.clone())),
            listed,
            dns: None,
            live: Arc::new(RwLock::new(live)),
            left: Arc::default(),
            tls: ClientTls::default(),
        }
    }

    /// The same membership, reaching the gateways that serve TLS with
    /// `tls`.
    pub fn with_tls(mut self, tls: ClientTls) -> Self {
        self.tls = tls;
        self
    }

    /// The same membership, also counting the gateways at the addresses
    /// `name_and_port` (`kappa-gateway.ns.svc:50051`) resolves to, looked up
    /// at each check.
    pub fn with_dns(mut self, name_and_port: impl Into<String>) -> Self {
        self.dns = Some(name_and_port.into());
        self
    }

    /// This gateway's address as the others reach it.
    pub fn self_url(&self) -> &Url {
        &self.self_url
    }

    /// Every configured gateway, this one first.
    pub fn configured(&self) -> Vec<Url> {
        std::iter::once(self.self_url.clone())
            .chain(self.others.read().expect("not poisoned").iter().cloned())
            .collect()
    }

    /// Looks the DNS name up again: the gateways it now names, with those
    /// listed. A failed lookup keeps the last answer.
    async fn resolve(&self) -> Vec<Url> {
        let Some(name) = &self.dns else {
            return self.listed.clone();
        };
        match tokio::net::lookup_host(name.as_str()).await {
            Ok(addrs) => {
                let mut others = self.listed.clone();
                for addr in addrs {
                    // As this gateway is reached: https:// when gateways serve TLS.
                    let url = Url::parse(&format!("{}://{addr}", self.self_url.scheme()))
                        .expect("an address is a URL");
                    if url != self.self_url && !others.contains(&url) {
                        others.push(url);
                    }
                }
                let before = std::mem::replace(
                    &mut *self.others.write().expect("not poisoned"),
                    others.clone(),
                );
                self.left
                    .write()
                    .expect("not poisoned")
                    .extend(before.into_iter().filter(|url| !others.contains(url)));
                others
            }
            Err(e) => {
                tracing::warn!(name = %name, error = %e, "cannot look the cluster's gateways up: keeping the last answer");
                self.others.read().expect("not poisoned").clone()
            }
        }
    }

    /// The gateways a new query may run on.
    pub fn live(&self) -> Vec<Url> {
        self.live.read().expect("not poisoned").clone()
    }

    /// Asks every other gateway for its health now, records who answered,
    /// and returns those that did not.
    pub async fn check(&self) -> Vec<Url> {
        let others = self.resolve().await;
        let answers = join_all(others.iter().map(|url| async move {
            let up = matches!(
                probe(url.as_str(), "", &self.tls, PROBE_TIMEOUT).await,
                Ok(CheckedStatus::Serving)
            );
            (url.clone(), up)
        }))
        .await;
        let mut live = vec![self.self_url.clone()];
        let mut down = Vec::new();
        for (url, up) in answers {
            if up {
                live.push(url);
            } else {
                down.push(url);
            }
        }
        let mut current = self.live.write().expect("not poisoned");
        if *current != live {
            tracing::info!(
                live = ?live.iter().map(Url::as_str).collect::<Vec<_>>(),
                down = ?down.iter().map(Url::as_str).collect::<Vec<_>>(),
                "cluster members changed"
            );
            *current = live;
        }
        down
    }

    /// Checks the other gateways every [`PROBE_EVERY`], calling
    /// `after_each` with those the DNS name no longer gives (when some
    /// left), until the returned task is aborted.
    pub fn spawn_checks(
        &self,
        after_each: impl Fn(&[Url]) + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let membership = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(PROBE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                membership.check().await;
                let left = std::mem::take(&mut *membership.left.write().expect("not poisoned"));
                if !left.is_empty() {
                    after_each(&left);
                }
            }
        })
    }
}

impl WorkerResolver for Membership {
    fn get_urls(&self) -> Result<Vec<Url>> {
        Ok(self.live())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_gateway_that_does_not_answer_gets_no_new_tasks() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let me = Url::parse("http://127.0.0.1:1").unwrap();
        let gone = Url::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let members = Membership::new(me.clone(), vec![gone.clone(), me.clone()]);
        assert_eq!(members.configured(), vec![me.clone(), gone.clone()]);
        assert_eq!(members.get_urls().unwrap(), vec![me.clone(), gone.clone()]);
        assert_eq!(members.check().await, vec![gone]);
        assert_eq!(members.get_urls().unwrap(), vec![me]);
    }

    #[tokio::test]
    async fn a_dns_name_adds_the_gateways_at_its_addresses_but_this_one() {
        let me = Url::parse("http://127.0.0.1:1").unwrap();
        let members = Membership::new(me.clone(), vec![]).with_dns("localhost:1");
        // localhost's addresses on port 1: 127.0.0.1:1 is this gateway, nothing listens on the rest.
        let down = members.check().await;
        assert!(
            down.iter().all(|url| url.port() == Some(1) && *url != me),
            "{down:?}"
        );
        assert_eq!(members.configured()[0], me);
        assert_eq!(members.configured().len(), 1 + down.len());
        assert_eq!(members.get_urls().unwrap(), vec![me]);
    }
}
