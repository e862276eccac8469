//! All integration tests in one binary (one link step instead of one per file).

mod helpers;

mod addin;
mod auth;
mod binary;
mod contacts;
mod correctness;
mod emulator;
mod export_engine;
mod exports;
mod grids;
mod hardening;
mod mail;
mod oauth_peer;
mod onedrive;
mod operations;
mod operators;
mod profiles;
mod smtp;
mod sso;
mod store_story;
mod tenants;
