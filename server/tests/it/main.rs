//! Integration tests of ax-server, in one binary: the engine on real SQLite files
//! and the HTTP API on 127.0.0.1, against a fake LLM that speaks the OpenAI wire
//! format.

mod api;
mod cli;
mod common;
mod cost;
mod engine;
mod flow;
mod openapi;
mod partition;
mod ratelimit;
mod retries;
mod scale;
mod security;
mod stats;
mod store;
mod subflow;
mod web;
