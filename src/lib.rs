//! rollcall: a user-management GraphQL server.
//!
//! Layout: [`config`] (flags and environment), [`db`] (entities and queries), [`auth`]
//! (passwords, tokens, the per-request viewer), [`service`] (every rule), [`graphql`] (schema
//! and thin resolvers), [`server`] (HTTP), [`graphiql`] (the
//! in-browser IDE and its files), [`cli`] (commands), [`error`] (the one error type).

pub mod auth;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod graphiql;
pub mod graphql;
pub mod metrics;
pub mod server;
pub mod service;
