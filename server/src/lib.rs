//! ax-server: the durable engine that drives `ax-core` against SQLite and real LLM
//! providers, the HTTP API, and the `ax` command line.

pub mod api;
pub mod cli;
pub mod config;
pub mod engine;
pub mod ids;
pub mod providers;
pub mod store;
