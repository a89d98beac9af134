//! berth-bench's parts: timing statistics and report formatting, shared by workloads.

pub mod stats;
