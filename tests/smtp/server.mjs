// An SMTP server we did not write (nodemailer's smtp-server), set up the way tests/api/smtp.rs
// needs it, so that our SMTP client is tested against someone else's protocol code:
//
// - four listeners on loopback: `starttls` (STARTTLS required before AUTH), `tls` (implicit
//   TLS), `plain` (no TLS at all, AUTH optional) and `hidden` (a STARTTLS-capable server that
//   does not offer it, as a downgrading middlebox would);
// - a throwaway CA and a server certificate for localhost/127.0.0.1, made at start with the
//   openssl command line; the CA's PEM path is printed for the test to trust (or not);
// - AUTH PLAIN and LOGIN accepting one user; XOAUTH2 accepting a token only if it is an RS256
//   JWT signed by a key of the given JWKS (the Microsoft 365 emulator's), for the audience
//   https://outlook.office365.com, unexpired, with the SMTP.SendAsApp role, and not revoked
//   (a `revoked` file in the spool lists token ids, `uti`, the test wants refused);
// - magic recipients whose local part asks for a reply (see `magic` below);
// - a spool: each accepted message as NNNNNN.eml (raw) and NNNNNN.json (envelope, auth method,
//   TLS or not, listener, token id), the JSON written last.
//
// Usage: node server.mjs '{"spool": DIR, "jwks": URL, "user": U, "password": P}' (without "jwks",
// the address is read from the file DIR/jwks when a token first arrives)
// Prints one JSON line {"ports": {...}, "ca": PATH} when every listener is up.

import { SMTPServer } from 'smtp-server';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

const config = JSON.parse(process.argv[2]);
const spool = config.spool;
fs.mkdirSync(spool, { recursive: true });

// --- certificates ------------------------------------------------------------------------
const certs = path.join(spool, 'certs');
fs.mkdirSync(certs, { recursive: true });
const f = (n) => path.join(certs, n);
const openssl = (...args) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=officebridge test CA',
  '-keyout', f('ca.key'), '-out', f('ca.pem'), '-addext', 'basicConstraints=critical,CA:TRUE',
  '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-keyout', f('server.key'), '-out', f('server.csr'));
fs.writeFileSync(f('ext.cnf'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n');
openssl('x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial',
  '-days', '2', '-out', f('server.pem'), '-extfile', f('ext.cnf'));
const tlsOptions = { key: fs.readFileSync(f('server.key')), cert: fs.readFileSync(f('server.pem')) };

// --- XOAUTH2: tokens checked against the issuer's JWKS -------------------------------------
let jwks = null;
async function key(kid) {
  if (!jwks || !jwks.keys.some((k) => k.kid === kid)) {
    // The issuer may start after this server: its JWKS address can come in a file.
    const url = config.jwks || fs.readFileSync(path.join(spool, 'jwks'), 'utf8').trim();
    jwks = await (await fetch(url)).json();
  }
  const jwk = jwks.keys.find((k) => k.kid === kid);
  return jwk && crypto.createPublicKey({ key: jwk, format: 'jwk' });
}

function revoked() {
  try {
    return fs.readFileSync(path.join(spool, 'revoked'), 'utf8').split('\n').filter(Boolean);
  } catch {
    return [];
  }
}

// Exchange Online's words (the SMTP AUTH troubleshooting pages): 535 5.7.3 for a token it
// does not accept, 535 5.7.139 when SMTP AUTH is disabled.
async function checkToken(token) {
  const fail = (why) => Object.assign(new Error(`5.7.3 Authentication unsuccessful (${why})`), { responseCode: 535 });
  const parts = token.split('.');
  if (parts.length !== 3) throw fail('not a JWT');
  const header = JSON.parse(Buffer.from(parts[0], 'base64url'));
  const claims = JSON.parse(Buffer.from(parts[1], 'base64url'));
  if (header.alg !== 'RS256') throw fail('not RS256');
  const k = await key(header.kid);
  if (!k) throw fail('unknown signing key');
  const ok = crypto.verify('RSA-SHA256', Buffer.from(`${parts[0]}.${parts[1]}`), k, Buffer.from(parts[2], 'base64url'));
  if (!ok) throw fail('bad signature');
  if (claims.aud !== 'https://outlook.office365.com') throw fail(`audience ${claims.aud}`);
  if (!(claims.exp > Date.now() / 1000)) throw fail('expired');
  if (!(claims.roles || []).includes('SMTP.SendAsApp')) throw fail('no SMTP.SendAsApp role');
  if (revoked().includes(claims.uti)) throw fail('expired');
  return claims;
}

// --- magic recipients ----------------------------------------------------------------------
// The local part asks for a reply: `rcpt-550-5.1.1` (RCPT answered 550 5.1.1), `data-451-4.3.0-x2`
// (the end of DATA answered 451 4.3.0 for the first two deliveries of a Message-ID, then
// accepted), `hang-3000-x1` (the reply to the end of DATA delayed 3 s, the first time),
// `close-x1` (the connection dropped after the data, before any reply, the first time). No
// `-xN`: every time. The enhanced code is optional.
function magic(address) {
  const local = address.split('@')[0].toLowerCase();
  const m = /^(rcpt|data|hang|close)(?:-(\d{3}|\d+))?(?:-(\d\.\d{1,3}\.\d{1,3}))?(?:-x(\d+))?$/.exec(local);
  if (!m) return null;
  return { kind: m[1], arg: m[2] && Number(m[2]), enhanced: m[3], times: m[4] ? Number(m[4]) : Infinity };
}

const seen = new Map(); // Message-ID -> deliveries seen (accepted or not)
let counter = 0;

function reply(code, enhanced, text) {
  return Object.assign(new Error(`${enhanced ? enhanced + ' ' : ''}${text}`), { responseCode: code });
}

function server(name, options) {
  return new SMTPServer({
    name: 'smtp.test',
    logger: false,
    hideENHANCEDSTATUSCODES: true, // the replies below carry their own
    authMethods: ['PLAIN', 'LOGIN', 'XOAUTH2'],
    size: 200 * 1024 * 1024,
    ...tlsOptions,
    ...options,
    onAuth(auth, session, cb) {
      // Every attempt, accepted or not: the tests check what was (not) sent where.
      fs.appendFileSync(path.join(spool, 'auth.log'), JSON.stringify({ listener: name, method: auth.method, user: auth.username, secure: Boolean(session.secure) }) + '\n');
      if (auth.method === 'XOAUTH2') {
        checkToken(auth.accessToken)
          .then((claims) => cb(null, { user: { name: auth.username, method: 'XOAUTH2', uti: claims.uti } }))
          .catch((e) => cb(e));
        return;
      }
      if (auth.username === 'smtp-auth-disabled@contoso.com') {
        return cb(reply(535, '5.7.139', 'Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.'));
      }
      if (auth.username !== config.user || auth.password !== config.password) {
        return cb(reply(535, '5.7.8', 'Error: authentication failed'));
      }
      cb(null, { user: { name: auth.username, method: auth.method } });
    },
    onRcptTo(address, session, cb) {
      const m = magic(address.address);
      if (m && m.kind === 'rcpt') return cb(reply(m.arg, m.enhanced, `Recipient refused (${address.address})`));
      cb();
    },
    onData(stream, session, cb) {
      const chunks = [];
      stream.on('data', (c) => chunks.push(c));
      stream.on('end', () => {
        const raw = Buffer.concat(chunks);
        const head = raw.subarray(0, Math.min(raw.length, 64 * 1024)).toString('latin1');
        const mid = (/^Message-ID:\s*(\S+)/im.exec(head) || [])[1] || '';
        const n = (seen.get(mid) || 0) + 1;
        seen.set(mid, n);
        const asks = session.envelope.rcptTo.map((r) => magic(r.address)).filter((m) => m && m.kind !== 'rcpt');
        const active = asks.find((m) => n <= m.times);
        if (active && active.kind === 'data') {
          return cb(reply(active.arg, active.enhanced, 'Transaction failed, try again later'));
        }
        // The server has the message from here on: spooled before it answers.
        const id = String(++counter).padStart(6, '0');
        fs.writeFileSync(path.join(spool, `${id}.eml`), raw);
        const meta = {
          listener: name,
          secure: Boolean(session.secure),
          auth: session.user ? session.user : null,
          from: session.envelope.mailFrom && session.envelope.mailFrom.address,
          to: session.envelope.rcptTo.map((r) => r.address),
          message_id: mid,
          delivery: n,
          size: raw.length,
        };
        fs.writeFileSync(path.join(spool, `${id}.json.tmp`), JSON.stringify(meta));
        fs.renameSync(path.join(spool, `${id}.json.tmp`), path.join(spool, `${id}.json`));
        if (active && active.kind === 'close') {
          // The RFC 1047 window: the message is here, the client never hears so.
          const conn = [...listeners[name].connections].find((c) => c.session === session);
          conn._socket.destroy();
          return;
        }
        if (active && active.kind === 'hang') {
          return setTimeout(() => cb(null, 'Queued'), active.arg);
        }
        cb(null, 'Queued');
      });
    },
  });
}

const listeners = {
  starttls: server('starttls', { secure: false }),
  // Implicit TLS offering LOGIN (and XOAUTH2) but not PLAIN, so that LOGIN is used.
  tls: server('tls', { secure: true, authMethods: ['LOGIN', 'XOAUTH2'] }),
  plain: server('plain', { secure: false, disabledCommands: ['STARTTLS'], authOptional: true, allowInsecureAuth: true }),
  hidden: server('hidden', { secure: false, hideSTARTTLS: true, authOptional: true, allowInsecureAuth: true }),
};

const ports = {};
await Promise.all(
  Object.entries(listeners).map(
    ([name, s]) =>
      new Promise((resolve, reject) => {
        s.on('error', () => {}); // a client that drops the connection is not our concern
        s.server.once('error', reject);
        s.listen(0, '127.0.0.1', () => {
          ports[name] = s.server.address().port;
          resolve();
        });
      }),
  ),
);
console.log(JSON.stringify({ ports, ca: f('ca.pem') }));
