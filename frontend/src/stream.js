// Follow one execution's events: status, output, result, end.
// Interactive runs use the WebSocket (it also carries stdin); others use Server-Sent Events,
// read with fetch so the bearer token can be sent and a 404 seen. When the server has no event
// stream for the run (an older server: 404/405), fall back to polling GET /executions/{id}.

import { ApiError, api, authHeaders, ensureFreshToken, errorFrom, getToken, networkError } from "./api.js";

const TERMINAL = new Set(["COMPLETED", "FAILED", "TIMEOUT", "CANCELLED"]);
const POLL_MS = 400;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** An incremental text/event-stream parser (WHATWG rules); calls onMessage(id, event, data). */
export function sseParser(onMessage) {
  let buf = "";
  let event = "";
  let data = [];
  let id = null;
  return (chunk) => {
    buf += chunk;
    for (;;) {
      const i = buf.search(/[\r\n]/);
      if (i < 0) return;
      if (buf[i] === "\r" && i === buf.length - 1) return; // Maybe half of a \r\n: wait.
      const line = buf.slice(0, i);
      buf = buf.slice(i + (buf[i] === "\r" && buf[i + 1] === "\n" ? 2 : 1));
      if (line === "") {
        if (data.length) onMessage(id, event || "message", data.join("\n"));
        event = "";
        data = [];
        id = null;
        continue;
      }
      if (line.startsWith(":")) continue; // A comment: keep-alive.
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
      else if (field === "id" && !value.includes("\0")) id = value;
    }
  };
}

export class ExecutionStream {
  /**
   * @param {string} executionId
   * @param {object} h
   * @param {(event: string, data: object) => void} h.onEvent
   * @param {(ready: boolean) => void} [h.onInputReady]  the WebSocket opened or closed
   * @param {(transport: string) => void} [h.onTransport]  "websocket" | "sse" | "polling"
   */
  constructor(executionId, { onEvent, onInputReady = () => {}, onTransport = () => {} }) {
    this.id = executionId;
    Object.assign(this, { onEvent, onInputReady, onTransport });
    this.lastId = null;
    this.seen = new Set();
    this.ended = false;
    this.closed = false;
    this.ws = null;
    this.abort = new AbortController();
    this.done = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  /** Start following; `this.done` resolves with the final status (or rejects with ApiError). */
  start({ interactive = false } = {}) {
    (async () => {
      if (interactive) await ensureFreshToken();
      if (interactive && (await this.runWebSocket())) return;
      await this.runSse();
    })().catch((err) => this.reject(err));
    return this;
  }

  close() {
    this.closed = true;
    this.abort.abort();
    if (this.ws) this.ws.close();
  }

  dispatch(id, event, data) {
    if (this.ended || this.closed) return;
    if (id !== null && id !== undefined) {
      // A reconnect resumes after Last-Event-ID; the set guards against a server replaying more.
      if (this.seen.has(id)) return;
      this.seen.add(id);
      this.lastId = id;
    }
    this.onEvent(event, data || {});
    if (event === "end") {
      this.ended = true;
      this.resolve((data && data.status) || null);
    }
  }

  get finished() {
    return this.ended || this.closed;
  }

  // --- WebSocket -------------------------------------------------------------------------

  /** Resolves true when the run ended over the socket, false to fall back to SSE. */
  runWebSocket() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let url = `${scheme}//${location.host}/api/v1/executions/${encodeURIComponent(this.id)}/ws`;
    // A browser cannot set headers on a WebSocket: the server takes the token as a query parameter here.
    const token = getToken();
    if (token) url += `?access_token=${encodeURIComponent(token)}`;
    return new Promise((resolve) => {
      let ws;
      try {
        ws = new WebSocket(url);
      } catch {
        resolve(false);
        return;
      }
      ws.onopen = () => {
        this.ws = ws;
        this.onTransport("websocket");
        this.onInputReady(true);
      };
      ws.onmessage = (msg) => {
        let parsed;
        try {
          parsed = JSON.parse(msg.data);
        } catch {
          return;
        }
        if (parsed && parsed.event) this.dispatch(parsed.id ?? null, parsed.event, parsed.data);
      };
      ws.onclose = () => {
        if (this.ws === ws) this.onInputReady(false);
        this.ws = null;
        resolve(this.finished);
      };
    });
  }

  /** Send text to the running program's stdin; false when there is no open socket. */
  sendStdin(text) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify({ type: "stdin", data: text }));
    return true;
  }

  sendEof() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify({ type: "stdin_eof" }));
    return true;
  }

  // --- Server-Sent Events ----------------------------------------------------------------

  async runSse() {
    let failures = 0;
    while (!this.finished) {
      try {
        const gotAny = await this.sseOnce();
        if (gotAny) failures = 0;
      } catch (err) {
        if (this.closed) return;
        if (err instanceof ApiError && !err.transient) {
          if (err.status === 401 || err.status === 403) throw err;
          return this.poll(); // No event stream here (404/405/...): polling still tells the truth.
        }
        failures += 1;
        if (failures >= 5) return this.poll();
      }
      // The stream closed before `end` (a proxy timeout, a restart): resume after the last id.
      if (!this.finished) await sleep(Math.min(250 * 2 ** failures, 4000));
    }
  }

  async sseOnce() {
    await ensureFreshToken();
    const headers = { Accept: "text/event-stream", ...authHeaders() };
    if (this.lastId !== null) headers["Last-Event-ID"] = this.lastId;
    let resp;
    try {
      resp = await fetch(`/api/v1/executions/${encodeURIComponent(this.id)}/events`, {
        headers,
        cache: "no-store",
        signal: this.abort.signal,
      });
    } catch {
      throw networkError();
    }
    if (!resp.ok) throw await errorFrom(resp);
    if (resp.status === 204) {
      // "You have seen the end already": the stored row gives the final status and result.
      throw new ApiError(204, "STREAM_OVER", "the event stream has nothing more");
    }
    if (!(resp.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
      throw new ApiError(406, "NOT_AN_EVENT_STREAM", "the server did not answer with an event stream");
    }
    this.onTransport("sse");
    let gotAny = false;
    const feed = sseParser((id, event, data) => {
      let parsed = {};
      try {
        parsed = data ? JSON.parse(data) : {};
      } catch {
        return;
      }
      gotAny = true;
      this.dispatch(id, event, parsed);
    });
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    try {
      while (!this.finished) {
        const { value, done } = await reader.read();
        if (done) break;
        feed(value);
      }
    } catch {
      if (!this.closed) throw networkError();
    } finally {
      reader.cancel().catch(() => {});
    }
    return gotAny;
  }

  // --- Polling (no event stream on this server) ------------------------------------------

  async poll() {
    this.onTransport("polling");
    let last = null;
    while (!this.finished) {
      let execution;
      try {
        execution = await api("GET", `/api/v1/executions/${encodeURIComponent(this.id)}`);
      } catch (err) {
        if (!err.transient) throw err;
        await sleep(1000);
        continue;
      }
      if (execution.status !== last) {
        last = execution.status;
        this.dispatch(null, "status", { status: execution.status });
      }
      if (TERMINAL.has(execution.status)) {
        this.dispatch(null, "result", execution);
        this.dispatch(null, "end", { status: execution.status });
        return;
      }
      await sleep(POLL_MS);
    }
  }
}

export function isTerminal(status) {
  return TERMINAL.has(status);
}
