"""Drives the emulator's identity endpoints with authlib, an OAuth client we did not write,
so the emulator is shown to speak OAuth 2.0 / OpenID Connect and not just our dialect of it.

Usage: python3 authlib_client.py BASE_URL TENANT CLIENT_ID CLIENT_SECRET USER
Prints a JSON report; exits non-zero on any failure.
"""
import json
import sys

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.jose import JsonWebKey, jwt


def main(base, tenant, client_id, secret, user):
    report = {}
    config = requests.get(f"{base}/{tenant}/v2.0/.well-known/openid-configuration", timeout=10).json()
    jwks = JsonWebKey.import_key_set(requests.get(config["jwks_uri"], timeout=10).json())

    # Client credentials (RFC 6749 §4.4), secret in the body.
    app = OAuth2Session(client_id, secret, scope="https://graph.microsoft.com/.default", token_endpoint_auth_method="client_secret_post")
    token = app.fetch_token(config["token_endpoint"], grant_type="client_credentials")
    claims = jwt.decode(token["access_token"], jwks)
    claims.validate()
    report["client_credentials"] = {"aud": claims["aud"], "idtyp": claims["idtyp"]}

    # Authorization code with PKCE (RFC 7636), as a public client.
    verifier = generate_token(64)
    session = OAuth2Session(client_id, redirect_uri="https://localhost", scope="openid profile offline_access User.Read",
                            code_challenge_method="S256", token_endpoint_auth_method="none")
    nonce = generate_token(16)
    url, state = session.create_authorization_url(config["authorization_endpoint"], code_verifier=verifier, nonce=nonce)
    page = requests.get(url, timeout=10)
    page.raise_for_status()
    request_id = page.headers["x-emulator-signin-request"]
    back = requests.post(config["authorization_endpoint"], data={"request": request_id, "user": user}, allow_redirects=False, timeout=10)
    assert back.status_code == 302, back.text
    tokens = session.fetch_token(config["token_endpoint"], authorization_response=back.headers["location"], code_verifier=verifier, state=state)
    id_claims = jwt.decode(tokens["id_token"], jwks, claims_options={
        "iss": {"essential": True, "value": config["issuer"]},
        "aud": {"essential": True, "value": client_id},
        "nonce": {"essential": True, "value": nonce},
    })
    id_claims.validate()
    report["authorization_code"] = {"preferred_username": id_claims["preferred_username"], "has_refresh_token": "refresh_token" in tokens}

    # Refresh (RFC 6749 §6): a new refresh token comes back.
    renewed = session.refresh_token(config["token_endpoint"], refresh_token=tokens["refresh_token"])
    report["refresh"] = {"new_refresh_token": renewed["refresh_token"] != tokens["refresh_token"], "access_token": bool(renewed.get("access_token"))}
    print(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:6])
