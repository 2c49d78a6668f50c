// A real OpenID Connect provider for Turnpike's tests: panva's oidc-provider, with its own small
// login pages in place of the package's development interactions. Started by
// turnpike_testkit::OidcProvider as `node server.mjs <config.json>`, where the file holds
//
//   { "clients":  [{ "client_id", "client_secret", "redirect_uris": [...] }],
//     "accounts": [{ "subject", "email", "email_verified", "name", "password" }],
//     "ready_file": "/path",
//     "claims_in_id_token": false }   (optional, see below)
//
// It listens on 127.0.0.1 on a port the kernel picks (so there is no free-port race), builds the
// provider for `http://127.0.0.1:<port>` and, once it serves requests, writes that issuer URL to
// `ready_file` (a temporary file renamed into place, so a reader never sees half of it).
// Everything it does is logged to stdout.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const log = (...parts) => console.log(new Date().toISOString(), ...parts);

const configPath = process.argv[2];
if (!configPath) {
  console.error('usage: node server.mjs <config.json>');
  process.exit(2);
}
const {
  clients = [],
  accounts = [],
  ready_file: readyFile,
  // false (the default, and what the OpenID Connect spec asks for when an access token is
  // issued): the ID token carries only `sub`, and scope claims come from the userinfo endpoint.
  // true: the ID token carries them too, as many providers do.
  claims_in_id_token: claimsInIdToken = false,
} = JSON.parse(readFileSync(configPath, 'utf8'));
if (!readyFile) {
  console.error(`${configPath}: "ready_file" is missing`);
  process.exit(2);
}

const accountsBySubject = new Map(accounts.map((account) => [account.subject, account]));

// The scopes granted without asking: every client here is first-party.
const GRANTED_SCOPE = 'openid email profile';

/** Escapes text for HTML element content and attribute values. */
const html = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function loginPage(uid, { email = '', error } = {}) {
  return `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Sign in - test OpenID provider</title></head>
<body>
<h1>Sign in</h1>
${error ? `<p id="error" role="alert">${html(error)}</p>` : ''}
<form method="post" action="/interaction/${html(uid)}/login">
  <label for="email">Email</label>
  <input id="email" name="email" type="text" autocomplete="username" value="${html(email)}">
  <label for="password">Password</label>
  <input id="password" name="password" type="password" autocomplete="current-password">
  <button id="sign-in" type="submit">Sign in</button>
</form>
<form method="post" action="/interaction/${html(uid)}/abort">
  <button id="cancel" type="submit">Cancel</button>
</form>
</body>
</html>
`;
}

function send(res, status, contentType, body) {
  res.statusCode = status;
  res.setHeader('Content-Type', contentType);
  res.setHeader('Cache-Control', 'no-store');
  res.end(body);
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('form body too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

/**
 * Grants whatever a consent prompt still asks for. `loadExistingGrant` below already grants
 * GRANTED_SCOPE, so this only runs when a client asks for more (e.g. `offline_access`).
 */
async function grantConsent(provider, req, res, details) {
  const { prompt: { details: missing }, params, session } = details;
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

/** Our interaction routes; returns false for any other request, which the provider serves. */
async function interactions(provider, req, res) {
  const url = new URL(req.url, 'http://127.0.0.1');
  const match = /^\/interaction\/([^/]+)(?:\/(login|abort))?$/.exec(url.pathname);
  if (!match) return false;
  const [, uid, action] = match;

  let details;
  try {
    // Validates the uid against the interaction cookie the authorization endpoint set.
    details = await provider.interactionDetails(req, res);
    if (details.uid !== uid) throw new Error(`interaction ${uid} is not this browser's`);
  } catch (err) {
    const reason = err.error_description ?? err.message;
    log('interaction', uid, 'rejected:', reason);
    send(res, 400, 'text/plain; charset=utf-8', `invalid interaction: ${reason}\n`);
    return true;
  }

  if (req.method === 'GET' && !action) {
    if (details.prompt.name === 'consent') {
      log('interaction', uid, 'consent granted automatically for', details.params.client_id);
      await grantConsent(provider, req, res, details);
    } else {
      send(res, 200, 'text/html; charset=utf-8', loginPage(uid));
    }
    return true;
  }
  if (req.method === 'POST' && action === 'login') {
    const form = await readForm(req);
    const email = form.get('email') ?? '';
    const account = accounts.find((a) => a.email === email && a.password === form.get('password'));
    if (!account) {
      log('interaction', uid, 'login failed for', JSON.stringify(email));
      send(res, 400, 'text/html; charset=utf-8', loginPage(uid, { email, error: 'Invalid email or password.' }));
      return true;
    }
    log('interaction', uid, 'signed in', account.subject);
    await provider.interactionFinished(
      req,
      res,
      { login: { accountId: account.subject } },
      { mergeWithLastSubmission: false },
    );
    return true;
  }
  if (req.method === 'POST' && action === 'abort') {
    log('interaction', uid, 'cancelled');
    await provider.interactionFinished(
      req,
      res,
      { error: 'access_denied', error_description: 'the user cancelled' },
      { mergeWithLastSubmission: false },
    );
    return true;
  }
  send(res, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
  return true;
}

function providerConfiguration() {
  // ID tokens are RS256; a fresh key per start (the package's built-in keys are for development
  // only and it warns about them).
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: randomBytes(8).toString('hex'), alg: 'RS256', use: 'sig' };
  return {
    clients: clients.map(({ client_id, client_secret, redirect_uris }) => ({
      client_id,
      client_secret,
      redirect_uris,
      response_types: ['code'],
      grant_types: ['authorization_code'],
      token_endpoint_auth_method: 'client_secret_basic',
    })),
    responseTypes: ['code'],
    jwks: { keys: [signingKey] },
    cookies: {
      keys: [randomBytes(32).toString('base64url')],
      // Cookies are per host, not per port: the relying party under test on another port of
      // 127.0.0.1 sees these, so their names must not be ones it might use itself.
      names: {
        session: 'test_op_session',
        interaction: 'test_op_interaction',
        resume: 'test_op_interaction_resume',
      },
    },
    // PKCE for every client; the package supports only S256.
    pkce: { required: () => true },
    conformIdTokenClaims: !claimsInIdToken,
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
    },
    async findAccount(ctx, sub) {
      const account = accountsBySubject.get(sub);
      if (!account) return undefined;
      return {
        accountId: sub,
        async claims() {
          return {
            sub,
            email: account.email,
            email_verified: account.email_verified,
            name: account.name,
          };
        },
      };
    },
    // The documented recipe for skipping consent for first-party clients.
    async loadExistingGrant(ctx) {
      const grantId = ctx.oidc.result?.consent?.grantId
        || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) {
        return ctx.oidc.provider.Grant.find(grantId);
      }
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope(GRANTED_SCOPE);
      await grant.save();
      return grant;
    },
    // Fixed lifetimes (seconds), which also silences the package's notices about its defaults.
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 60,
      Grant: 3600,
      IdToken: 3600,
      Interaction: 3600,
      Session: 3600,
    },
    features: {
      devInteractions: { enabled: false },
    },
    interactions: {
      url: (ctx, interaction) => `/interaction/${interaction.uid}`,
    },
  };
}

let provider;
let providerCallback;

const server = createServer((req, res) => {
  log(req.method, req.url);
  if (!providerCallback) {
    send(res, 503, 'text/plain; charset=utf-8', 'starting\n');
    return;
  }
  interactions(provider, req, res)
    .then((handled) => {
      if (!handled) providerCallback(req, res);
    })
    .catch((err) => {
      log('error in', req.method, req.url, err);
      if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', `internal error: ${err.message}\n`);
      else res.end();
    });
});

server.on('error', (err) => {
  console.error('server error:', err);
  process.exit(1);
});

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  provider = new Provider(issuer, providerConfiguration());
  for (const event of ['server_error', 'authorization.error', 'grant.error', 'userinfo.error', 'introspection.error']) {
    provider.on(event, (ctx, err) => log(event, err?.name, err?.message, err?.error_description ?? ''));
  }
  providerCallback = provider.callback();

  const tmp = `${readyFile}.tmp-${process.pid}`;
  writeFileSync(tmp, issuer);
  renameSync(tmp, readyFile);
  log('ready; issuer', issuer, 'clients', clients.map((c) => c.client_id).join(','));
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    log('received', signal, '- stopping');
    server.close();
    process.exit(0);
  });
}
