// berth-shim runs once per pod for the pod's whole life. Linked as a position-dependent
// executable, its relocated read-only data (about 300 KiB of vtables and tables that a
// PIE's loader writes at start, so that each shim holds a private copy) stays clean file
// pages that every shim shares. The shim's own address is then not randomised; the
// libraries it maps, its stack and heap still are. berthd stays a PIE.
fn main() {
    println!("cargo:rustc-link-arg-bin=berth-shim=-no-pie");
}
