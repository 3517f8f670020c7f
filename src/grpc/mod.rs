//! The gRPC transport (tonic), on its own port (`grpc.port`; 0 = off):
//! `eaglerank.v1.FeedService` (`proto/eaglerank/v1/feed.proto`) over the same API as REST
//! (`api/`: auth, validation, the feed pipeline on the same lanes, the one error table, the
//! same log lines and metrics), the standard `grpc.health.v1.Health` fed by the readiness
//! `/readyz` reports (`health.rs`), and server reflection (v1 and v1alpha), so grpcurl-style
//! tools work without the proto.
//!
//! It runs on the main arbiter; each feed is ranked on a feed lane (an HTTP worker's thread)
//! picked in turn, so gRPC feeds use every core as REST ones do.

mod error;
mod feed_service;
mod health;
mod metadata;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::oneshot;

use crate::api::AppState;

pub use health::SERVICE_NAME;

/// The generated messages, client and server of `eaglerank.v1`.
pub mod proto {
    tonic::include_proto!("eaglerank.v1");

    /// The encoded descriptors of `eaglerank.v1`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("eaglerank_descriptor");
}

/// A running gRPC server.
pub struct GrpcServer {
    port: u16,
    shutdown: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

/// Starts serving on `listener` (bound by the caller, so that a busy port fails start-up) on
/// the current runtime. `max_message_bytes` bounds a request like REST's body limit.
pub fn start(
    listener: std::net::TcpListener,
    state: Arc<AppState>,
    max_message_bytes: usize,
) -> anyhow::Result<GrpcServer> {
    let port = listener.local_addr()?.port();
    state.metrics.init_grpc(SERVICE_NAME, feed_service::METHODS);
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)
        .context("handing the gRPC listener to the runtime")?;
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let reflection_v1 = reflection()
        .build_v1()
        .context("building gRPC reflection")?;
    // Older clients (grpcurl before 1.9, Python's grpcio-reflection) speak v1alpha only.
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .context("building gRPC reflection (v1alpha)")?;
    let feeds = proto::feed_service_server::FeedServiceServer::new(feed_service::FeedApi::new(
        state.clone(),
    ))
    .max_decoding_message_size(max_message_bytes);
    let (shutdown, stopped) = oneshot::channel::<()>();
    // Once shutdown is asked for, health says NOT_SERVING (to `Watch` streams too) and closes
    // them; when it is done, the server stops accepting and drains.
    let health_done = tokio::spawn(health::follow_readiness(state, reporter, stopped));
    let server = tonic::transport::Server::builder()
        // Dead peers are noticed; idle connections cost a ping every 30 s.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(feeds)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = health_done.await;
            },
        );
    let task = tokio::spawn(server);
    Ok(GrpcServer {
        port,
        shutdown,
        task,
    })
}

/// What reflection describes: `eaglerank.v1` and `grpc.health.v1`.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

impl GrpcServer {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops accepting calls and waits up to `grace` for those in flight.
    pub async fn stop(self, grace: Duration) {
        let _ = self.shutdown.send(());
        let mut task = self.task;
        match tokio::time::timeout(grace, &mut task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(event = "GrpcServerFailed", error = %e),
            Ok(Err(join)) => tracing::warn!(event = "GrpcServerFailed", error = %join),
            Err(_) => task.abort(),
        }
    }
}
