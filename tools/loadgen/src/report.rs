//! What a run measured ([`Report`], also the `--json` output), its human table, and the
//! side-by-side comparison of runs that `compare` prints (emulator-direct vs through-gateway).
//!
//! - `model`: [`Report`] and its parts, and the latency histogram runs record into.
//! - `table`: one run's table ([`render`]) and the cell formats the comparison shares.
//! - `rounds`: which runs a comparison pairs ([`CompareError`] when they do not).
//! - `median`: one report standing for several rounds of a label.
//! - `compare`: the comparison tables ([`render_all`], [`render_comparison`]).
//! - [`targets`]: the figures the comparison judges the gateway against.

mod compare;
mod median;
mod model;
mod rounds;
mod table;
pub mod targets;

pub use compare::{render_all, render_comparison};
pub use model::{ErrorCount, MAX_LATENCY_US, Params, Percentiles, Report, latency_histogram};
pub use rounds::CompareError;
pub use table::render;

#[cfg(test)]
mod tests;
