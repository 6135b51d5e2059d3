// A strict OpenID client (oauth4webapi) against authproxy, for tests/e2e/test_openid.py.
//
// node strict_client.js ISSUER REDIRECT_URI
// Prints {"authorize_url": ...} on one line, reads the URL the browser ended at on stdin,
// then completes the code flow with requireIdToken, calls userinfo, refreshes, and prints
// {"id_token", "claims", "userinfo", "refreshed_claims"}. Any failed check exits non-zero.
import * as oauth from 'oauth4webapi'
import { createInterface } from 'node:readline'

const [issuerUrl, redirectUri] = process.argv.slice(2)
const insecure = { [oauth.allowInsecureRequests]: true } // loopback http in tests only

const issuer = new URL(issuerUrl)
const as = await oauth.processDiscoveryResponse(
  issuer,
  await oauth.discoveryRequest(issuer, { ...insecure, algorithm: 'oidc' }),
)
for (const field of ['userinfo_endpoint', 'id_token_signing_alg_values_supported']) {
  if (!as[field]) throw new Error(`discovery lacks ${field}`)
}

const registered = await fetch(as.registration_endpoint, {
  method: 'POST',
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code', 'refresh_token'],
    token_endpoint_auth_method: 'none',
    scope: 'openid profile email offline_access',
  }),
})
if (registered.status !== 201) throw new Error(`registration: ${registered.status}`)
const client = { client_id: (await registered.json()).client_id }

const verifier = oauth.generateRandomCodeVerifier()
const nonce = oauth.generateRandomNonce()
const state = oauth.generateRandomState()
const authorize = new URL(as.authorization_endpoint)
authorize.search = new URLSearchParams({
  client_id: client.client_id,
  redirect_uri: redirectUri,
  response_type: 'code',
  scope: 'openid profile email offline_access',
  code_challenge: await oauth.calculatePKCECodeChallenge(verifier),
  code_challenge_method: 'S256',
  state,
  nonce,
}).toString()
console.log(JSON.stringify({ authorize_url: authorize.href }))

const lines = createInterface({ input: process.stdin })
const callback = new URL((await lines[Symbol.asyncIterator]().next()).value)
lines.close()

const params = oauth.validateAuthResponse(as, client, callback, state)
const tokens = await oauth.processAuthorizationCodeResponse(
  as,
  client,
  await oauth.authorizationCodeGrantRequest(
    as, client, oauth.None(), params, redirectUri, verifier, insecure,
  ),
  { expectedNonce: nonce, requireIdToken: true },
)
const claims = oauth.getValidatedIdTokenClaims(tokens)
const userinfo = await oauth.processUserInfoResponse(
  as,
  client,
  claims.sub,
  await oauth.userInfoRequest(as, client, tokens.access_token, insecure),
)
const refreshed = await oauth.processRefreshTokenResponse(
  as,
  client,
  await oauth.refreshTokenGrantRequest(as, client, oauth.None(), tokens.refresh_token, insecure),
)
console.log(JSON.stringify({
  id_token: tokens.id_token,
  claims,
  userinfo,
  refreshed_claims: oauth.getValidatedIdTokenClaims(refreshed),
}))
