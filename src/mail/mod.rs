//! Mail: the templates messages are written from, the outbox that delivers them, and the
//! providers it delivers through.

pub mod graph;
pub mod outbox;
pub mod profile_test;
pub mod smtp;
pub mod templates;
