// Charts of the analytics page, drawn with uPlot (bundled; no CDN): time series for runs and
// active users, and bar charts over categories (outcomes, languages) with uPlot's bar paths.

import uPlot from "uplot";

const PALETTE = ["#1f5fbf", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285", "#c2255c", "#5c940d", "#364fc7", "#495057"];
const HEIGHT = 240;

export function color(i) {
  return PALETTE[i % PALETTE.length];
}

function widthOf(el) {
  return Math.max(280, el.clientWidth || el.parentElement.clientWidth - 20);
}

function reset(el, empty) {
  if (el._plot) el._plot.destroy();
  el._plot = null;
  el.textContent = "";
  el.dataset.series = "0";
  if (empty) {
    const p = document.createElement("p");
    p.className = "empty";
    p.textContent = empty;
    el.append(p);
    return true;
  }
  return false;
}

function mount(el, opts, data, seriesCount) {
  el._plot = new uPlot({ width: widthOf(el), height: HEIGHT, ...opts }, data, el);
  el.dataset.series = String(seriesCount);
  return el._plot;
}

/** A bucket's start as shown: "11-27" by day, "11-27 14:00" by hour (UTC). */
function bucketLabel(seconds, bucket) {
  const iso = new Date(seconds * 1000).toISOString();
  return bucket === "hour" ? `${iso.slice(5, 10)} ${iso.slice(11, 16)}` : iso.slice(5, 10);
}

/** Lines over time. `times`: bucket starts (ISO strings); `series`: [{label, values}]. */
export function timeChart(el, times, series, { bucket = "day", empty = "No runs in this range." } = {}) {
  if (reset(el, series.length === 0 ? empty : null)) return;
  const xs = times.map((t) => Date.parse(t) / 1000);
  // At most about 12 labels on the x axis, each on a bucket's start.
  const every = Math.max(1, Math.ceil(xs.length / 12));
  const label = (v) => bucketLabel(v, bucket);
  mount(
    el,
    {
      scales: { x: { time: false }, y: { range: (_u, _min, max) => [0, Math.max(1, max)] } },
      series: [
        { label: bucket === "hour" ? "hour (UTC)" : "day (UTC)", value: (_u, v) => (v == null ? "–" : label(v)) },
        ...series.map((s, i) => ({ label: s.label, stroke: color(i), width: 2, points: { show: xs.length < 60 } })),
      ],
      axes: [
        { splits: () => xs.filter((_x, i) => i % every === 0), values: (_u, ticks) => ticks.map(label) },
        { values: (_u, ticks) => ticks.map((v) => (Number.isInteger(v) ? String(v) : "")) },
      ],
    },
    [xs, ...series.map((s) => s.values)],
    series.length,
  );
}

/** Bars over categories. `bars`: [{label, values, size}] drawn in order (a later one in front),
 * `format`: how a value is shown on the axis. */
export function barChart(
  el,
  categories,
  bars,
  { format = String, tickFormat = null, max = null, xLabel = "", empty = "No data in this range." } = {},
) {
  if (reset(el, categories.length === 0 ? empty : null)) return;
  const xs = categories.map((_c, i) => i);
  // A bar's width: its share of a category's slot, and at most 130 px per unit of that share.
  const paths = (size) => uPlot.paths.bars({ size: [size, Math.round(130 * size)], align: 0 });
  mount(
    el,
    {
      scales: {
        x: { time: false, range: () => [-0.5, categories.length - 0.5] },
        y: { range: (_u, _min, top) => [0, max ?? Math.max(1, top * 1.1)] },
      },
      series: [
        { label: xLabel, value: (_u, v) => (v == null ? "–" : categories[v] ?? "") },
        ...bars.map((b, i) => ({
          label: b.label,
          fill: color(i) + (i === 0 && bars.length > 1 ? "66" : "cc"),
          stroke: color(i),
          width: 1,
          paths: paths(b.size ?? 0.6),
          points: { show: false },
          value: (_u, v) => (v == null ? "–" : format(v)),
        })),
      ],
      axes: [
        { splits: () => xs, values: (_u, ticks) => ticks.map((i) => categories[i] ?? ""), grid: { show: false } },
        { values: (_u, ticks) => ticks.map(tickFormat ?? format) },
      ],
      legend: { show: true },
      cursor: { points: { show: false } },
    },
    [xs, ...bars.map((b) => b.values)],
    bars.length,
  );
}
