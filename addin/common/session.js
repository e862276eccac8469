// The panes' session: the add-in's single sign-on token from Office, and calls to the
// officebridge API with it. Office SSO errors are handled as Microsoft's troubleshooting page
// says (office-js-docs-pr docs/develop/troubleshoot-sso-in-office-add-ins.md): 13001 is
// avoided with allowSignInPrompt, 13002 brings a sign-in button back, 13003 and the others
// that mean "no SSO here" say so plainly, and getAccessToken is never called in a loop (13013).
// A claims challenge from the API (WWW-Authenticate: ... claims="base64") goes back to
// getAccessToken as authChallenge.

/** What the pane tells the operator for an SSO error code, and what it offers. */
export function ssoAdvice(code) {
  switch (code) {
    case 13001:
      return { message: "You are not signed in to Office. Sign in to use officebridge.", action: "signin" };
    case 13002:
      return { message: "Sign-in was cancelled. officebridge needs you signed in to reach the ERP.", action: "signin" };
    case 13003:
      return {
        message: "Office is signed in with an account officebridge cannot use (an on-premises or personal account). Sign in to Office with your work or school account.",
        action: "switch",
      };
    case 13006:
      return { message: "Office could not sign you in. Sign out of Office, restart the browser session and open the pane again.", action: "none" };
    case 13008:
      return { message: "A sign-in is already in progress. Wait for it to finish, then try again.", action: "retry" };
    case 13013:
      return { message: "Office refused to sign in again so soon. Wait a minute, then try again.", action: "retry" };
    case 13000:
    case 13004:
    case 13005:
    case 13007:
    case 13012:
      return {
        message: `Single sign-on is not available here (Office error ${code}). Ask your administrator to check the add-in's app registration (Expose an API, access_as_user, authorized Office clients).`,
        action: "none",
      };
    default:
      return { message: `Office could not sign you in (error ${code}).`, action: "retry" };
  }
}

export class SsoError extends Error {
  constructor(code, message) {
    super(message || `Office SSO error ${code}`);
    this.code = code;
    this.advice = ssoAdvice(code);
  }
}

/** A problem answer of the API (application/problem+json), kept whole for the pane to show. */
export class ApiProblem extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** The claims of a `WWW-Authenticate: Bearer ..., claims="base64"` challenge, decoded. */
export function challengeClaims(header) {
  const m = /claims="([^"]+)"/.exec(header || "");
  if (!m) return null;
  try {
    return new TextDecoder().decode(Uint8Array.from(atob(m[1]), (c) => c.charCodeAt(0)));
  } catch {
    return null;
  }
}

export class Session {
  constructor() {
    this.token = null;
    this.inFlight = null;
  }

  /** The token, asked of Office once at a time; `challenge` forces a new one with claims. */
  async accessToken({ challenge = null, switchAccount = false } = {}) {
    if (this.token && !challenge && !switchAccount) return this.token;
    if (this.inFlight) return this.inFlight;
    const options = { allowSignInPrompt: true, allowConsentPrompt: true };
    if (challenge) options.authChallenge = challenge;
    if (switchAccount) options.forceAddAccount = true;
    this.inFlight = Office.auth
      .getAccessToken(options)
      .then((t) => (this.token = t))
      .catch((e) => {
        throw new SsoError(Number(e.code), e.message);
      })
      .finally(() => (this.inFlight = null));
    return this.inFlight;
  }

  signOut() {
    this.token = null;
  }

  /** Calls the API; one retry with a fresh token after a 401, with the claims if it carried some. */
  async api(path, init = {}) {
    for (let attempt = 0; ; attempt++) {
      const token = await this.accessToken();
      const headers = new Headers(init.headers || {});
      headers.set("Authorization", `Bearer ${token}`);
      if (init.body && !headers.has("Content-Type")) headers.set("Content-Type", "application/json");
      const resp = await fetch(path, { ...init, headers });
      if (resp.status === 401 && attempt === 0) {
        const claims = challengeClaims(resp.headers.get("WWW-Authenticate"));
        this.token = null;
        if (claims) await this.accessToken({ challenge: claims });
        continue;
      }
      const type = resp.headers.get("Content-Type") || "";
      const body = type.includes("json") ? await resp.json() : await resp.text();
      if (!resp.ok) throw new ApiProblem(resp.status, typeof body === "object" ? body : { detail: String(body) });
      return body;
    }
  }
}

/** Shows who is signed in, or why nobody is, in `el`; `onAction(kind)` handles its buttons. */
export function renderAccount(el, me, error, onAction) {
  el.replaceChildren();
  const line = (text, cls) => {
    const p = document.createElement("p");
    p.textContent = text;
    if (cls) p.className = cls;
    el.append(p);
    return p;
  };
  const button = (label, kind) => {
    const b = document.createElement("button");
    b.textContent = label;
    b.dataset.action = kind;
    b.addEventListener("click", () => onAction(kind));
    el.append(b);
  };
  if (me) {
    line(`Signed in as ${me.displayName || me.mail}`, "who");
    line(`${me.mail || ""} · operator ${me.operator} · tenant ${me.tenant}`, "detail");
    button("Switch account", "switch");
    button("Sign out", "signout");
  } else if (error) {
    line(error.advice ? error.advice.message : error.message, "problem");
    const action = error.advice ? error.advice.action : "retry";
    if (action === "signin" || action === "retry") button("Sign in", "signin");
    if (action === "switch") button("Switch account", "switch");
  } else {
    line("Signed out.", "detail");
    button("Sign in", "signin");
  }
}
