// A thin fetch wrapper for the LiveCode REST API: JSON in and out, the optional bearer token,
// and the API's one error shape {"error": {"code", "message", "details"}} turned into ApiError.

const TOKEN_KEY = "livecode.token";

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

export function setToken(token) {
  try {
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
  } catch {
    // Private mode or storage disabled: the token just lasts for this page.
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

/** Call the API; resolves to the parsed JSON body (null when empty), rejects with ApiError. */
export async function api(method, path, body) {
  const headers = { Accept: "application/json", ...authHeaders() };
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
  if (!resp.ok) throw await errorFrom(resp);
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

/** A message a person can act on, for any error the API returns. */
export function describeError(err) {
  if (!(err instanceof ApiError)) return String(err && err.message ? err.message : err);
  if (err.status === 401) {
    return "This server requires sign-in: paste an access token under Settings (bottom right), then try again.";
  }
  if (err.status === 403) return "You are not allowed to do that with this session.";
  if (err.status === 413) return "The code is too large for this server.";
  if (err.status === 429) return "Too many requests; wait a moment and try again.";
  return err.message || `Request failed (${err.code}).`;
}
