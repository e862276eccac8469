//! Mail: the templates messages are written from. (The outbox and delivery through Graph and
//! SMTP build on this module.)

pub mod templates;
