//! The gRPC channels between gateways, with deadlines on what the network
//! can withhold.
//!
//! datafusion-distributed's default channel connects with no timeout and
//! sends no keepalive, so a gateway cut off by the network (no reset, no
//! answer) left the queries running tasks on it waiting forever. These
//! channels give up connecting after [`CONNECT_TIMEOUT`] and close a
//! connection whose peer has not answered a ping within
//! [`KEEPALIVE_TIMEOUT`]; the calls on it fail, and the query fails naming
//! the gateway ([`super::lost`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::error::{DataFusionError, Result};
use datafusion_distributed::grpc::{BoxCloneSyncChannel, create_worker_client};
use datafusion_distributed::{ChannelResolver, WorkerChannel};
use tonic::transport::{Channel, Endpoint};
use url::Url;

use crate::client_tls::ClientTls;

/// How long connecting to a gateway may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an open connection is pinged, busy or idle.
pub const KEEPALIVE_EVERY: Duration = Duration::from_secs(1);
/// How long a ping may go unanswered before the connection is closed.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// One channel per gateway, made on first use and kept until a DNS name no
/// longer gives the gateway (a channel reconnects by itself when its
/// connection is closed).
#[derive(Debug, Clone, Default)]
pub struct GatewayChannels {
    open: Arc<Mutex<HashMap<Url, Channel>>>,
    /// How gateways that serve TLS are reached.
    tls: ClientTls,
}

impl GatewayChannels {
    pub fn new() -> Self {
        Self::default()
    }

    /// The same channels, reaching `https://` gateways with `tls`.
    pub fn with_tls(mut self, tls: ClientTls) -> Self {
        self.tls = tls;
        self
    }

    /// The channel to the gateway at `url`.
    pub fn channel(&self, url: &Url) -> Result<Channel> {
        let mut open = self.open.lock().expect("channel cache poisoned");
        if let Some(channel) = open.get(url) {
            return Ok(channel.clone());
        }
        let address = |e: &dyn std::fmt::Display| {
            DataFusionError::Configuration(format!("gateway address {url}: {e}"))
        };
        let mut endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| address(&e))?;
        if url.scheme() == "https" {
            endpoint = endpoint
                .tls_config(self.tls.config(url.as_str()))
                .map_err(|e| address(&e))?;
        }
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_EVERY)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .connect_lazy();
        open.insert(url.clone(), channel.clone());
        Ok(channel)
    }
}

impl GatewayChannels {
    /// Forgets the channels to `gone` (gateways a DNS name no longer
    /// gives), so they close. Calls in flight keep their own channel, and a
    /// later call opens one again.
    pub fn close(&self, gone: &[Url]) {
        let mut open = self.open.lock().expect("channel cache poisoned");
        let before = open.len();
        open.retain(|url, _| !gone.contains(url));
        if open.len() < before {
            tracing::debug!(
                closed = before - open.len(),
                "channels to gateways that left closed"
            );
        }
    }

    /// The gateways a channel is open to.
    #[cfg(test)]
    fn open_to(&self) -> Vec<Url> {
        let mut urls: Vec<Url> = self
            .open
            .lock()
            .expect("channel cache poisoned")
            .keys()
            .cloned()
            .collect();
        urls.sort();
        urls
    }
}

#[async_trait]
impl ChannelResolver for GatewayChannels {
    async fn get_worker_client_for_url(&self, url: &Url) -> Result<Box<dyn WorkerChannel>> {
        let channel = self.channel(url)?;
        Ok(create_worker_client(BoxCloneSyncChannel::new(channel)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_channel_to_a_gateway_that_left_is_closed() {
        let channels = GatewayChannels::new();
        let stays = Url::parse("http://127.0.0.1:1").unwrap();
        let leaves = Url::parse("http://127.0.0.1:2").unwrap();
        channels.channel(&stays).unwrap();
        channels.channel(&leaves).unwrap();
        assert_eq!(channels.open_to(), vec![stays.clone(), leaves.clone()]);
        channels.close(std::slice::from_ref(&leaves));
        assert_eq!(channels.open_to(), vec![stays]);
    }
}
