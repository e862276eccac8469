//! Microsoft identity: the OAuth flows ([`oauth`]), the token store ([`tokens`]) and the
//! validation of the add-in's single sign-on tokens ([`sso`]).

pub mod oauth;
pub mod sso;
pub mod tokens;
