//! Microsoft identity: the OAuth flows ([`oauth`]), the token store ([`tokens`]) and the
//! validation of the add-in's single sign-on tokens ([`sso`]).

pub mod oauth;
pub mod sso;
pub mod tokens;

/// Where an operator signs in (`GET /auth/signin?operator=CODE` under the public URL): the
/// link a `signin-required` answer and the CLI give.
pub fn signin_url(public_url: &url::Url, operator: &str) -> String {
    let mut url = public_url.join("/auth/signin").expect("a path joins");
    url.query_pairs_mut().append_pair("operator", operator);
    url.to_string()
}
