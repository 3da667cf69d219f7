//! The other gateways' calls to this one's worker service, counted while
//! they run, so a gateway leaving a cluster stops only once the tasks it
//! runs for queries coordinated elsewhere have finished.
//!
//! A gateway that is shutting down answers its health checks NOT_SERVING,
//! and the coordinators give it no new task from their next check on
//! ([`super::members::PROBE_EVERY`]). Until then a task may still arrive,
//! so [`WorkerCalls::settle`] first waits out the checks, then for the
//! calls in flight, up to the shutdown grace. Without this, a rolling
//! restart failed the queries of the gateways it was not restarting.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{Bytes, Service, StdError};
use tonic::server::NamedService;

use super::members::{PROBE_EVERY, PROBE_TIMEOUT};

/// The calls in flight on this gateway's worker service.
#[derive(Debug, Clone, Default)]
pub struct WorkerCalls {
    running: Arc<AtomicUsize>,
}

impl WorkerCalls {
    pub fn new() -> Self {
        Self::default()
    }

    /// The calls running now (each ends when its response has been sent or
    /// dropped).
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// `service`, its calls counted here.
    pub fn count<S>(&self, service: S) -> Counting<S> {
        Counting {
            inner: service,
            calls: self.clone(),
        }
    }

    fn enter(&self) -> CallGuard {
        self.running.fetch_add(1, Ordering::AcqRel);
        CallGuard(Arc::clone(&self.running))
    }

    /// Waits until no coordinator will send this gateway a new task (its
    /// health checks have seen it NOT_SERVING), then until the calls in
    /// flight have ended, `grace` at most in all. Whether none is left.
    pub async fn settle(&self, grace: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + grace;
        let checked = tokio::time::Instant::now() + 2 * PROBE_EVERY + PROBE_TIMEOUT;
        tokio::time::sleep_until(checked.min(deadline)).await;
        loop {
            let running = self.running();
            if running == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    running,
                    "shutting down: tasks of queries coordinated by other gateways still running after --shutdown-grace"
                );
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Takes one call off the count when dropped.
#[derive(Debug)]
struct CallGuard(Arc<AtomicUsize>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A gRPC service whose calls are counted until their response body ends.
#[derive(Debug, Clone)]
pub struct Counting<S> {
    inner: S,
    calls: WorkerCalls,
}

impl<S: NamedService> NamedService for Counting<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> Service<Request<B>> for Counting<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    R: http_body::Body<Data = Bytes> + Send + 'static,
    R::Error: Into<StdError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let guard = self.calls.enter();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| {
                Body::new(Held {
                    body: Box::pin(body),
                    _guard: guard,
                })
            }))
        })
    }
}

/// A response body holding its call's place in the count.
struct Held<R> {
    body: Pin<Box<R>>,
    _guard: CallGuard,
}

impl<R: http_body::Body> http_body::Body for Held<R> {
    type Data = R::Data;
    type Error = R::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.get_mut().body.as_mut().poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
