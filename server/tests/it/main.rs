//! Tarn's integration tests: one binary (linking is slow), one module per area.
//! Every test starts its own server on 127.0.0.1:0 and talks to it over a
//! real socket with the client crate.

// A failing unwrap is a failing test.
#![allow(clippy::unwrap_used)]

mod auth;
mod catalog;
mod cli;
mod common;
mod errors;
mod health;
mod limits;
mod locations;
mod metadata;
mod poll;
mod prepared;
mod queries;
mod sessions;
mod settings;
mod writes;
