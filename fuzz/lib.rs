//! Nothing: the fuzz targets are the tests in `tests/` (see the README, Fuzzing).

// cargo-bolero also builds this library's (empty) test harness with coverage
// instrumentation; linking bolero gives it libFuzzer's runtime to resolve against.
#[cfg(test)]
extern crate bolero as _;
