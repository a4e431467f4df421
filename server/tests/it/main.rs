//! Integration tests of ax-server, in one binary: the engine on real SQLite files
//! and the HTTP API on 127.0.0.1, against a fake LLM that speaks the OpenAI wire
//! format.

mod api;
mod cli;
mod common;
mod engine;
mod openapi;
mod retries;
mod security;
mod store;
mod web;
