// The analytics page (/admin): GET /api/v1/admin/analytics for a range of days, drawn as charts.
// Admins only: signed out it offers the sign-in form, signed in without the role it says so.

import { ApiError, api, describeError, signIn, signOut, signedInUser } from "./api.js";
import { barChart, timeChart } from "./charts.js";

const $ = (id) => document.getElementById(id);
const DAY_MS = 86400000;

function isoDay(ms) {
  return new Date(ms).toISOString().slice(0, 10);
}

function showMessage(text, kind = "error") {
  $("message").dataset.kind = kind;
  $("message-text").textContent = text;
  $("message").hidden = false;
}

/** The range in the form, from the URL when it names one; by default the last 7 days. */
function initialRange() {
  const q = new URLSearchParams(location.search);
  const today = Date.now();
  $("to").value = q.get("to") || isoDay(today);
  $("from").value = q.get("from") || isoDay(today - 6 * DAY_MS);
  $("bucket").value = q.get("bucket") === "hour" ? "hour" : "day";
}

/** The API's `to` is exclusive; the form's "To" day is included. */
function query() {
  const to = Date.parse(`${$("to").value}T00:00:00Z`);
  const params = new URLSearchParams({
    from: $("from").value,
    to: Number.isNaN(to) ? $("to").value : isoDay(to + DAY_MS),
    bucket: $("bucket").value,
  });
  return params.toString();
}

function percent(v) {
  return v == null ? "–" : `${(v * 100).toFixed(v < 0.1 ? 1 : 0)}%`;
}

function wholePercent(v) {
  return `${Math.round(v * 100)}%`;
}

function number(v) {
  return v == null ? "–" : Number(v).toLocaleString("en-US", { maximumFractionDigits: 1 });
}

function fillTable(id, users, columns) {
  const body = $(id).querySelector("tbody");
  body.textContent = "";
  for (const u of users) {
    const tr = document.createElement("tr");
    const name = u.username || (u.user_id ? u.user_id.slice(0, 8) : "(no account)");
    for (const text of [name, ...columns.map((c) => c(u))]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    body.append(tr);
  }
  if (!users.length) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 3;
    td.className = "note";
    td.textContent = "No runs in this range.";
    tr.append(td);
    body.append(tr);
  }
}

function render(r) {
  $("report").hidden = false;
  const last = new Date(Date.parse(r.to) - 1).toISOString().slice(0, 16).replace("T", " ");
  $("period").textContent =
    `${r.from.slice(0, 16).replace("T", " ")} to ${last} UTC, by ${r.bucket} (${r.buckets.length} ${r.bucket}s).`;
  $("total-runs").textContent = number(r.total_runs);
  $("active-users").textContent = number(r.active.users);
  $("active-sessions").textContent = number(r.active.sessions);
  $("cache-rate").textContent = percent(r.compile_cache.hit_rate);

  timeChart(
    $("chart-runs"),
    r.buckets,
    r.runs_per_language.map((s) => ({ label: s.language, values: s.counts })),
    { bucket: r.bucket },
  );
  timeChart(
    $("chart-active"),
    r.buckets,
    r.total_runs
      ? [
          { label: "users", values: r.active.users_per_bucket },
          { label: "sessions", values: r.active.sessions_per_bucket },
        ]
      : [],
    { bucket: r.bucket },
  );
  barChart(
    $("chart-outcomes"),
    r.outcomes.map((o) => o.outcome),
    [{ label: "share", values: r.outcomes.map((o) => o.share) }],
    { format: percent, tickFormat: wholePercent, max: 1, xLabel: "outcome", empty: "No runs in this range." },
  );
  barChart(
    $("chart-cache"),
    r.compile_cache.by_language.map((c) => c.language),
    [{ label: "hit rate", values: r.compile_cache.by_language.map((c) => c.hit_rate) }],
    {
      format: percent,
      tickFormat: wholePercent,
      max: 1,
      xLabel: "language",
      empty: "No compiled-language runs in this range.",
    },
  );
  for (const [id, key] of [
    ["chart-wait", "queue_wait_ms"],
    ["chart-runtime", "run_time_ms"],
  ]) {
    const rows = r.latency.filter((l) => l[key].count > 0);
    barChart(
      $(id),
      rows.map((l) => l.language),
      [
        { label: "p95", values: rows.map((l) => l[key].p95), size: 0.7 },
        { label: "p50", values: rows.map((l) => l[key].p50), size: 0.35 },
      ],
      { format: number, xLabel: "language", empty: "No finished runs in this range." },
    );
  }
  fillTable("top-runs", r.top_users.by_runs, [(u) => number(u.runs), (u) => number(u.cpu_time_ms)]);
  fillTable("top-cpu", r.top_users.by_cpu, [(u) => number(u.cpu_time_ms), (u) => number(u.runs)]);
}

async function load() {
  $("message").hidden = true;
  $("refresh").disabled = true;
  document.body.dataset.loaded = "false";
  try {
    const report = await api("GET", `/api/v1/admin/analytics?${query()}`);
    render(report);
    history.replaceState(null, "", `/admin?${new URLSearchParams({ from: $("from").value, to: $("to").value, bucket: $("bucket").value })}`);
    document.body.dataset.loaded = "true";
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      $("report").hidden = true;
      $("account").hidden = true;
      $("sign-in").hidden = false;
      showMessage("This page is for admins: sign in with an admin account.", "warn");
    } else if (err instanceof ApiError && err.status === 403) {
      $("report").hidden = true;
      showMessage("Your account does not have the admin role; an operator can grant it with `livecode user set-role NAME --admin`.");
    } else {
      showMessage(`Could not load the analytics: ${describeError(err)}`);
    }
    document.body.dataset.loaded = "error";
  } finally {
    $("refresh").disabled = false;
  }
}

function showAccount() {
  const name = signedInUser();
  $("account").hidden = !name;
  $("account-name").textContent = name ? `Signed in as ${name}` : "";
}

async function submitSignIn(e) {
  e.preventDefault();
  $("sign-in-error").textContent = "";
  try {
    await signIn($("sign-in-user").value.trim(), $("sign-in-password").value);
  } catch (err) {
    $("sign-in-error").textContent = describeError(err);
    return;
  }
  location.reload();
}

function start() {
  initialRange();
  showAccount();
  $("range").addEventListener("submit", (e) => {
    e.preventDefault();
    load();
  });
  $("sign-in").addEventListener("submit", submitSignIn);
  $("sign-out").addEventListener("click", async () => {
    await signOut();
    location.reload();
  });
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => document.body.dataset.loaded === "true" && load(), 300);
  });
  document.body.dataset.ready = "true";
  return load();
}

start();
