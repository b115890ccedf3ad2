//! The front of every rbuild build: reads a Dockerfile the way BuildKit's Dockerfile frontend
//! does, expands shell words, matches `.dockerignore` patterns and lowers the stages to a
//! [`graph::BuildGraph`].
//!
//! This crate touches nothing beyond the bytes it is handed: no filesystem, no network.

pub mod diagnostic;
pub mod dockerignore;
pub mod graph;
pub mod instructions;
pub mod lint;
pub mod parser;
pub mod platform;
pub mod shell;
