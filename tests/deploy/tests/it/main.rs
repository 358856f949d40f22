//! Deployment checks: docker-compose.yml, the Dockerfile and its health-check script, the
//! Kubernetes manifests, the Grafana dashboard (its SQL run on a real ClickHouse), and
//! metering's schema plus every documented query on current ClickHouse (chdb, in process).
//! No Docker and no cluster needed; `kubectl kustomize` renders the overlays when kubectl is
//! installed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    clippy::large_futures,
    reason = "tests: a failed step fails loudly; tasks and environment belong to the test"
)]

mod compose;
mod current_clickhouse;
mod docker;
mod grafana;
mod k8s;
