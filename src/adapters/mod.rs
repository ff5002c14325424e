//! Transport adapters.
