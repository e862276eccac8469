//! officebridge: connects an ERP to Microsoft 365.
#![forbid(unsafe_code)]

/// The Office add-in: manifests and icons (SPEC §3.6).
pub mod addin;
/// Building and running the application: store, clients, workers, shutdown.
pub mod app;
/// The command line (clap).
pub mod cli;
/// Settings: defaults, TOML file, `OFFICEBRIDGE_*` environment.
pub mod config;
/// Contact lookup: five sources, one ranked answer (SPEC §3.3).
pub mod contacts;
/// `serve --dev`: the emulator in-process, the demo tenant and operator, dev API keys.
#[cfg(feature = "emulator")]
pub mod dev;
/// Parsed newtypes: codes, addresses, tenant fields, secrets.
pub mod domain;
/// The Microsoft 365 emulator (identity platform and Graph), for development and tests. A
/// guest: it imports nothing from the product, and a build without the `emulator` feature
/// leaves it out.
#[cfg(feature = "emulator")]
pub mod emulator;
/// The HTTP edge's error type, mapped to problem+json.
pub mod error;
/// Grid model, readers, XLSX writer and importer.
pub mod export;
/// The Microsoft Graph client (retries, throttling, paging) and OneDrive uploads.
pub mod graph;
/// Grids shared with operators for the Excel pane (SPEC §3.6).
pub mod grids;
/// One file per HTTP resource, and the shared extractors.
pub mod http;
/// OAuth flows, the token store, and single sign-on token validation.
pub mod identity;
/// Mail: templates (and, to come, the outbox and its delivery).
pub mod mail;
/// Storage over SQLite or PostgreSQL, and encryption of secrets at rest.
pub mod store;
/// Logs and metrics.
pub mod telemetry;
/// Supervised background work: workers, request-born tasks, drain and shutdown.
pub mod workers;
