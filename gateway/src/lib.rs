//! Turnpike's gateway: the data plane. It runs on configuration snapshots received
//! from a [`turnpike_bus::ConfigBus`], never on a database, and proxies requests to
//! upstreams through a pipeline of phases documented in `pipeline.rs`.
//!
//! Running it (all-in-one or as a gateway node):
//! ```no_run
//! # async fn run(bus: &dyn turnpike_bus::ConfigBus) -> std::io::Result<()> {
//! use turnpike_gateway::{ConfigStore, LastKnownGood, Settings, serve_proxy, serve_status};
//! // Serves the snapshot saved by the last run until the bus speaks, and saves new ones.
//! let store = ConfigStore::new().with_last_known_good(LastKnownGood::new("/var/lib/turnpike/gateway-snapshot.json"));
//! tokio::spawn(store.clone().follow(bus.subscribe()));
//! let proxy = tokio::net::TcpListener::bind("0.0.0.0:8000").await?;
//! let status = tokio::net::TcpListener::bind("127.0.0.1:8002").await?;
//! let status_task = tokio::spawn(serve_status(status, store.clone(), std::future::pending()));
//! serve_proxy(proxy, store, Settings::default(), async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! status_task.abort();
//! # Ok(()) }
//! ```

mod balancer;
mod breaker;
mod config;
pub mod consumer;
mod error;
mod forwarding;
mod health;
mod jwks;
mod jwt;
mod lifecycle;
mod limits;
mod lkg;
mod metrics;
mod outlier;
mod path;
mod pipeline;
mod policy;
mod proxy;
pub mod ratelimit;
mod registry;
mod retry;
mod router;
mod server;
mod settings;
mod status;
mod tls;
mod tls_client;
mod upstream;
mod validation;
mod websocket;
mod worker;

pub use config::{ApplyError, CompiledConfig, ConfigSource, ConfigStatus, ConfigStore};
pub use error::PROBLEM_TYPE_PREFIX;
pub use jwks::JwksSettings;
pub use lkg::{LastKnownCredentials, LastKnownGood, LoadError};
pub use policy::cors::{InvalidOrigin, Origin};
pub use registry::UpstreamRuntime;
pub use server::serve_proxy;
pub use settings::{Cidr, InvalidCidr, Settings};
pub use status::serve_status;
pub use tls::serve_tls_proxy;
pub use upstream::TargetStatus;
pub use worker::default_count as default_workers;
#[doc(hidden)] // Fuzz targets and their corpus replay only.
pub use {jwt::fuzzing as jwt_fuzzing, limits::head::fuzz_head};
