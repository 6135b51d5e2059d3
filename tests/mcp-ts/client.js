// The TypeScript MCP SDK client for authproxy's end-to-end client matrix.
//
//     node client.js MCP_URL streamable-http|sse REDIRECT_URI
//
// It speaks the matrix's line protocol on stdio (tests/e2e/client_matrix.py): prints
// {"authorize": URL} when the SDK wants a login and reads the callback URL on stdin (the test
// plays the browser), then lists tools, calls echo and count (with progress), makes its access
// token stale, calls echo again (authproxy answers 401 and the SDK refreshes), and prints
// {"result": {...}}. The SDK is pinned by package-lock.json; .ci/run installs it with npm ci.
import { createInterface } from "node:readline";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, transportName, redirectUri] = process.argv.slice(2);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const emit = (message) => process.stdout.write(JSON.stringify(message) + "\n");

// The SDK's OAuthClientProvider, in memory; the browser step is the test's.
class Provider {
  constructor() {
    this.logins = 0;
    this.saved = {};
    this.pendingCallback = undefined;
  }
  get redirectUrl() {
    return redirectUri;
  }
  get clientMetadata() {
    return {
      client_name: "authproxy e2e (TypeScript SDK)",
      redirect_uris: [redirectUri],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
    };
  }
  clientInformation() {
    return this.saved.client;
  }
  saveClientInformation(info) {
    this.saved.client = info;
  }
  tokens() {
    return this.saved.tokens;
  }
  saveTokens(tokens) {
    this.saved.tokens = tokens;
  }
  saveCodeVerifier(verifier) {
    this.saved.verifier = verifier;
  }
  codeVerifier() {
    return this.saved.verifier;
  }
  async redirectToAuthorization(authorizationUrl) {
    this.logins += 1;
    emit({ authorize: authorizationUrl.toString() });
    const { value } = await lines.next();
    this.pendingCallback = new URL(value.trim());
  }
}

const provider = new Provider();

function transport() {
  const Transport = transportName === "sse" ? SSEClientTransport : StreamableHTTPClientTransport;
  return new Transport(new URL(url), { authProvider: provider });
}

// Connect, and when the SDK asks for a login, finish it with the code the browser brought back.
async function connect() {
  const client = new Client({ name: "authproxy-e2e-ts", version: "1.0.0" });
  let attempt = transport();
  try {
    await client.connect(attempt);
    return client;
  } catch (error) {
    if (!(error instanceof UnauthorizedError) || provider.pendingCallback === undefined) {
      throw error;
    }
  }
  const callback = provider.pendingCallback;
  provider.pendingCallback = undefined;
  const code = callback.searchParams.get("code");
  if (!code) {
    throw new Error(`authorization failed: ${callback.searchParams.get("error") ?? "no code"}`);
  }
  await attempt.finishAuth(code);
  await attempt.close();
  const fresh = new Client({ name: "authproxy-e2e-ts", version: "1.0.0" });
  await fresh.connect(transport());
  return fresh;
}

const text = (result) => result.content[0].text;
const progress = [];

let client = await connect();
const tools = (await client.listTools()).tools.map((tool) => tool.name).sort();
const echo = text(await client.callTool({ name: "echo", arguments: { text: "hello through authproxy" } }));
const count = text(
  await client.callTool({ name: "count", arguments: { n: 5, delay: 0.05 } }, undefined, {
    onprogress: (p) => progress.push(p.progress),
  }),
);
await client.close();

// As after the token expired: authproxy refuses the stored access token with 401 and the SDK
// refreshes it with the refresh token (it keeps no expiry clock of its own).
const before = provider.saved.tokens.access_token;
provider.saved.tokens = { ...provider.saved.tokens, access_token: "stale" };
client = await connect();
const echoAfterRefresh = text(await client.callTool({ name: "echo", arguments: { text: "after refresh" } }));
await client.close();

const after = provider.saved.tokens.access_token;
emit({
  result: {
    tools,
    echo,
    count,
    progress,
    echo_after_refresh: echoAfterRefresh,
    logins: provider.logins,
    refreshed: after !== before && after !== "stale",
  },
});
process.exit(0);
