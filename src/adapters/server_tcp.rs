//! Runs the [`Server`](crate::server::Server) on TCP with smol.
