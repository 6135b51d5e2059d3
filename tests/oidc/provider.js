// A real OpenID provider (the npm package oidc-provider) for authproxy's end-to-end tests.
//
// Configuration (environment; --port/--issuer on the command line win over PORT/ISSUER):
//   PORT           port to listen on, on 127.0.0.1 (0 or unset: any free port)
//   ISSUER         issuer URL (default http://127.0.0.1:<port>)
//   OIDC_CLIENTS   JSON list of client metadata, e.g.
//                  [{"client_id":"authproxy","client_secret":"s3cret",
//                    "redirect_uris":["http://127.0.0.1:8080/oauth/callback"],
//                    "grant_types":["authorization_code","refresh_token"],
//                    "token_endpoint_auth_method":"client_secret_basic"}]
//   OIDC_PASSWORD  the password every account has (default "pass")
//   ACCESS_TTL     access token lifetime in seconds (default 3600)
//   REFRESH_TTL    refresh token lifetime in seconds (default 86400)
//   OIDC_JWKS      optional JSON JWKS with private keys, so that a restarted provider signs with
//                  the same keys (default: a fresh RSA key per process)
//
// Prints "listening <issuer>" on stdout once it accepts connections; exits on SIGTERM/SIGINT.
// Accounts: any user name, with the password OIDC_PASSWORD; claims sub=<name>, email, name.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import * as querystring from 'node:querystring';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: argv } = parseArgs({
  options: { port: { type: 'string' }, issuer: { type: 'string' } },
  strict: true,
});

const PASSWORD = process.env.OIDC_PASSWORD ?? 'pass';
const ACCESS_TTL = Number.parseInt(process.env.ACCESS_TTL ?? '3600', 10);
const REFRESH_TTL = Number.parseInt(process.env.REFRESH_TTL ?? '86400', 10);
const clients = JSON.parse(process.env.OIDC_CLIENTS ?? '[]').map((client) => ({
  response_types: ['code'],
  grant_types: ['authorization_code', 'refresh_token'],
  token_endpoint_auth_method: 'client_secret_basic',
  ...client,
}));

function signingKeys() {
  if (process.env.OIDC_JWKS) {
    return JSON.parse(process.env.OIDC_JWKS);
  }
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { keys: [{ ...privateKey.export({ format: 'jwk' }), use: 'sig', alg: 'RS256' }] };
}

function escapeHtml(value) {
  return String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main><h1>${escapeHtml(title)}</h1>
${body}
</main></body></html>`;
}

function loginPage(uid, params, error) {
  const hint = params.login_hint ? ` value="${escapeHtml(params.login_hint)}"` : '';
  return page('Sign-in', `${error ? `<p role="alert" class="error">${escapeHtml(error)}</p>` : ''}
<form autocomplete="off" action="/interaction/${escapeHtml(uid)}/login" method="post">
  <label>User name <input required type="text" name="login"${hint}></label>
  <label>Password <input required type="password" name="password"></label>
  <button type="submit" name="submit" value="login">Sign-in</button>
</form>
<form action="/interaction/${escapeHtml(uid)}/abort" method="post">
  <button type="submit" name="submit" value="abort">Cancel</button>
</form>`);
}

function consentPage(uid, client, details) {
  const scopes = [...new Set(details.missingOIDCScope ?? [])];
  const claims = [...new Set(details.missingOIDCClaims ?? [])];
  return page('Authorize', `<p>${escapeHtml(client.clientName ?? client.clientId)} asks for access.</p>
<ul>
  <li>scopes: ${escapeHtml(scopes.join(' ') || '(previously granted)')}</li>
  <li>claims: ${escapeHtml(claims.join(' ') || '(none)')}</li>
</ul>
<form action="/interaction/${escapeHtml(uid)}/confirm" method="post">
  <input type="hidden" name="prompt" value="consent">
  <button type="submit" name="submit" value="confirm" autofocus>Continue</button>
</form>
<form action="/interaction/${escapeHtml(uid)}/abort" method="post">
  <button type="submit" name="submit" value="abort">Cancel</button>
</form>`);
}

async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) {
      throw new Error('request body too large');
    }
    chunks.push(chunk);
  }
  return querystring.parse(Buffer.concat(chunks).toString('utf8'));
}

// The interactions (login and consent) are our own small forms rather than devInteractions, so
// that the password is actually checked: a wrong password must fail like at a real IdP.
function interactions(provider) {
  const route = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|confirm|abort))?$/;
  return async function interactionRoutes(ctx, next) {
    const match = route.exec(ctx.path);
    if (!match) {
      return next();
    }
    const [, uid, action] = match;
    ctx.set('Cache-Control', 'no-store');
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    if (details.uid !== uid) {
      ctx.throw(400, 'interaction mismatch');
    }
    const { prompt, params, session } = details;

    if (ctx.method === 'GET' && action === undefined) {
      ctx.type = 'html';
      if (prompt.name === 'login') {
        ctx.body = loginPage(uid, params);
      } else if (prompt.name === 'consent') {
        const client = await provider.Client.find(params.client_id);
        ctx.body = consentPage(uid, client, prompt.details);
      } else {
        ctx.throw(501, `prompt ${prompt.name} not implemented`);
      }
      return undefined;
    }
    if (ctx.method !== 'POST' || action === undefined) {
      ctx.throw(405);
    }
    const form = await readForm(ctx.req);
    let result;
    let merge = false;
    if (action === 'abort') {
      result = { error: 'access_denied', error_description: 'End-User aborted interaction' };
    } else if (action === 'login') {
      if (prompt.name !== 'login') {
        ctx.throw(400, 'not at the login prompt');
      }
      const login = String(form.login ?? '').trim();
      if (!login || form.password !== PASSWORD) {
        ctx.status = 401;
        ctx.type = 'html';
        ctx.body = loginPage(uid, params, 'Invalid user name or password.');
        return undefined;
      }
      result = { login: { accountId: login } };
    } else {
      if (prompt.name !== 'consent') {
        ctx.throw(400, 'not at the consent prompt');
      }
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
      const missing = prompt.details;
      if (missing.missingOIDCScope) {
        grant.addOIDCScope(missing.missingOIDCScope.join(' '));
      }
      if (missing.missingOIDCClaims) {
        grant.addOIDCClaims(missing.missingOIDCClaims);
      }
      if (missing.missingResourceScopes) {
        for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
          grant.addResourceScope(indicator, scopes.join(' '));
        }
      }
      result = { consent: { grantId: await grant.save() } };
      merge = true;
    }
    // interactionFinished answers 303 to the authorization endpoint's resume URL itself.
    ctx.respond = false;
    await provider.interactionFinished(ctx.req, ctx.res, result, {
      mergeWithLastSubmission: merge,
    });
    return undefined;
  };
}

function configuration() {
  return {
    clients,
    jwks: signingKeys(),
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    findAccount(ctx, sub) {
      return {
        accountId: sub,
        async claims() {
          return {
            sub,
            email: `${sub}@example.test`,
            email_verified: true,
            name: sub.charAt(0).toUpperCase() + sub.slice(1),
            preferred_username: sub,
          };
        },
      };
    },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
    },
    // Put email/name into the id_token even though an access token for userinfo is issued too.
    conformIdTokenClaims: false,
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      introspection: { enabled: true },
    },
    pkce: { required: () => true },
    // A refresh token for every client that may use the grant, without demanding offline_access
    // (which oidc-provider honours only together with prompt=consent).
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    ttl: {
      AccessToken: ACCESS_TTL,
      AuthorizationCode: 60,
      IdToken: 3600,
      RefreshToken: REFRESH_TTL,
      Interaction: 600,
      Session: 86400,
      Grant: 86400,
    },
    renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page('Error', `<pre>${escapeHtml(JSON.stringify(out, null, 2))}</pre>`);
    },
  };
}

const server = createServer();
const requestedPort = Number.parseInt(argv.port ?? process.env.PORT ?? '0', 10);

server.listen(requestedPort, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = argv.issuer ?? process.env.ISSUER ?? `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, configuration());
  // Plain http on loopback: never believe X-Forwarded-* headers.
  provider.proxy = false;
  provider.use(interactions(provider));
  provider.on('server_error', (ctx, err) => console.error('server_error', err));
  server.on('request', provider.callback());
  console.log(`listening ${issuer}`);
});

function shutdown() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}

process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
