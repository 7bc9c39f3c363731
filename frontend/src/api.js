// A thin fetch wrapper for the LiveCode REST API: JSON in and out, the optional bearer token,
// and the API's one error shape {"error": {"code", "message", "details"}} turned into ApiError.

const TOKEN_KEY = "livecode.token";
const REFRESH_KEY = "livecode.refresh";
const USER_KEY = "livecode.user";
// Codes of a 401 that a new access token (from the refresh token) can cure.
const EXPIRED = new Set(["TOKEN_EXPIRED"]);

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }

  /** Worth retrying by itself: the server was unreachable, overloaded or briefly failing. */
  get transient() {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }
}

export function getToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

function store(key, value) {
  try {
    if (value) localStorage.setItem(key, value);
    else localStorage.removeItem(key);
  } catch {
    // Private mode or storage disabled: the value just lasts for this page.
  }
}

function load(key) {
  try {
    return localStorage.getItem(key) || "";
  } catch {
    return "";
  }
}

/** A token pasted under Settings (an access token from elsewhere): no refresh token with it. */
export function setToken(token) {
  store(TOKEN_KEY, token);
  store(REFRESH_KEY, "");
}

export function signedInUser() {
  return load(REFRESH_KEY) ? load(USER_KEY) : "";
}

function keepTokens(tokens, username) {
  store(TOKEN_KEY, tokens.access_token);
  store(REFRESH_KEY, tokens.refresh_token || "");
  if (username !== undefined) store(USER_KEY, username);
}

export function forgetTokens() {
  store(TOKEN_KEY, "");
  store(REFRESH_KEY, "");
  store(USER_KEY, "");
}

/** Seconds until the stored access token expires (from its own `exp` claim), or Infinity. */
function secondsLeft(token) {
  try {
    const payload = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return typeof payload.exp === "number" ? payload.exp - Date.now() / 1000 : Infinity;
  } catch {
    return Infinity;
  }
}

let refreshing = null;

/** Exchange the refresh token for new tokens, once at a time however many calls ask. Resolves
 * true when there is a fresh access token; false (tokens forgotten) when the sign-in is over. */
export function refreshTokens() {
  if (!load(REFRESH_KEY)) return Promise.resolve(false);
  if (!refreshing) {
    refreshing = (async () => {
      try {
        const resp = await fetch("/api/v1/auth/refresh", {
          method: "POST",
          headers: { "Content-Type": "application/json", Accept: "application/json" },
          body: JSON.stringify({ refresh_token: load(REFRESH_KEY) }),
        });
        if (resp.status === 401) {
          forgetTokens();
          sessionState.expired = true;
          return false;
        }
        if (!resp.ok) return false;
        keepTokens(await resp.json());
        return true;
      } catch {
        return false;
      } finally {
        refreshing = null;
      }
    })();
  }
  return refreshing;
}

/** Before a request: renew an access token that is about to expire. */
export async function ensureFreshToken() {
  const token = getToken();
  if (token && load(REFRESH_KEY) && secondsLeft(token) < 30) await refreshTokens();
}

/** Whether this page's sign-in ended (a refresh was refused) rather than never existed. */
export const sessionState = { expired: false };

export async function signIn(username, password) {
  const tokens = await api("POST", "/api/v1/auth/login", { username, password }, { auth: false });
  keepTokens(tokens, username);
  sessionState.expired = false;
}

export async function register(username, password) {
  await api("POST", "/api/v1/auth/register", { username, password }, { auth: false });
  await signIn(username, password);
}

export async function signOut() {
  const refresh = load(REFRESH_KEY);
  forgetTokens();
  if (refresh) {
    try {
      await api("POST", "/api/v1/auth/logout", { refresh_token: refresh }, { auth: false });
    } catch {
      // Already signed out or expired: nothing more to end.
    }
  }
}

export function authHeaders() {
  const token = getToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** Turn a non-2xx response into an ApiError, reading the shared error body when there is one. */
export async function errorFrom(resp) {
  let err = {};
  try {
    err = (await resp.json()).error || {};
  } catch {
    // Not JSON (a proxy's error page, say): fall back to the status line.
  }
  return new ApiError(resp.status, err.code || `HTTP_${resp.status}`, err.message || resp.statusText, err.details);
}

export function networkError() {
  return new ApiError(0, "NETWORK", "The server could not be reached; check that LiveCode is running.");
}

/** Call the API; resolves to the parsed JSON body (null when empty), rejects with ApiError. An
 * expired access token is renewed with the refresh token and the call made once more. */
export async function api(method, path, body, { auth = true } = {}) {
  if (auth) await ensureFreshToken();
  for (let attempt = 0; ; attempt++) {
    const headers = { Accept: "application/json", ...(auth ? authHeaders() : {}) };
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch {
      throw networkError();
    }
    if (!resp.ok) {
      const err = await errorFrom(resp);
      if (auth && attempt === 0 && resp.status === 401 && EXPIRED.has(err.code) && (await refreshTokens())) continue;
      if (auth && resp.status === 401 && sessionState.expired) err.code = "SIGN_IN_EXPIRED";
      throw err;
    }
    const text = await resp.text();
    return text ? JSON.parse(text) : null;
  }
}

/** A message a person can act on, for any error the API returns. */
export function describeError(err) {
  if (!(err instanceof ApiError)) return String(err && err.message ? err.message : err);
  if (err.status === 401) {
    if (["TOKEN_EXPIRED", "TOKEN_REVOKED", "SIGN_IN_EXPIRED"].includes(err.code)) {
      return "Your sign-in has expired or was ended: sign in again (top right).";
    }
    if (err.code === "INVALID_CREDENTIALS") return "Wrong username or password.";
    return "This server requires sign-in: sign in or create an account (top right), then try again.";
  }
  if (err.status === 403) return "You are not allowed to do that with this session.";
  if (err.status === 413) return "The code is too large for this server.";
  if (err.status === 429 && err.code.endsWith("_QUOTA_EXCEEDED")) return err.message; // waiting will not help
  if (err.status === 429) return "Too many requests; wait a moment and try again.";
  return err.message || `Request failed (${err.code}).`;
}
