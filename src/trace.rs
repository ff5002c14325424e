//! Logging from inside the library through `tracing` (feature `tracing`).
//! Without the feature, `log!` compiles to nothing and `enter_span!` to no
//! code: the state machines cost nothing for embedders who do not log.

/// `log!(level, "format", args..)`: a `tracing` event at `level` (`trace`,
/// `debug`, `info`, `warn`, `error`) when the `tracing` feature is on.
macro_rules! log {
    ($lvl:ident, $($arg:tt)*) => {{
        #[cfg(feature = "tracing")]
        tracing::$lvl!($($arg)*);
        #[cfg(not(feature = "tracing"))]
        let _ = format_args!($($arg)*);
    }};
}

/// `enter_span!(span_expr)`: enters a span until the end of the enclosing
/// block (a clone is entered, so that `self` stays free to borrow mutably).
macro_rules! enter_span {
    ($span:expr) => {
        #[cfg(feature = "tracing")]
        let _entered = $span.clone().entered();
    };
}
