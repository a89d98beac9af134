//! berth-bench's parts: the endpoints it drives, the workloads, timing statistics, and
//! the reports (tables, JSON, side-by-side comparisons, SVG charts).

pub mod chart;
pub mod cni_floor;
pub mod compare;
pub mod density;
pub mod endpoint;
pub mod stats;
pub mod workloads;
