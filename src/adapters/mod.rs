//! Transport adapters.

#[cfg(all(feature = "server", feature = "smol"))]
pub mod server_tcp;
