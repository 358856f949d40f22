//! Deployment checks: docker-compose.yml, the Dockerfile and its health-check script, the
//! Kubernetes manifests, and the Grafana dashboard (its SQL run on a real ClickHouse).
//! No Docker and no cluster needed; `kubectl kustomize` renders the overlays when kubectl is
//! installed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod compose;
mod docker;
mod grafana;
mod k8s;
