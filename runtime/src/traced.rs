//! Blocking work that stays inside the caller's span, so what it does (a shim call, a
//! layer unpack) shows up under the RPC that asked for it, in logs and in traces.
//! `tokio::task::spawn_blocking` alone starts the closure outside any span.

/// [`tokio::task::spawn_blocking`], run in the current span.
pub fn spawn_blocking<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
}
