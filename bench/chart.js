#!/usr/bin/env node
// The picture of a benchmark run: for each headline figure, stock `apostrophe-jobs` against
// this package as two bars, and for figure 8 what a job adds to the bare loop. A plain SVG
// string, so it needs no network service and no dependency, and GitHub shows it in
// BENCHMARKS.md.
//
// `npm run bench` writes it next to its report (BENCHMARKS.svg). To redraw it from a run's
// raw samples:
//
//     node bench/chart.js /tmp/bench.json BENCHMARKS.svg
//
// (the JSON of `BENCH_JSON=/tmp/bench.json npm run bench`).

'use strict';

const fs = require('fs');

const WIDTH = 860;
const LABEL_WIDTH = 330;
const BAR_LEFT = LABEL_WIDTH + 10;
const BAR_WIDTH = 380;
const ROW_HEIGHT = 56;
const BAR_HEIGHT = 14;
const COLORS = { stock: '#9aa0a6', native: '#1a73e8', goal: '#d93025', axis: '#5f6368' };
// A row whose two values differ by more than this factor is drawn on a log scale, so the
// shorter bar stays visible.
const LOG_SCALE_FROM_RATIO = 10;

function median(values) {
  const v = values.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

function medianOf(results, key, variant, field, scale = 1) {
  const samples = ((results[key] || {})[variant] || []);
  return median(samples.map((s) => s[field])) * scale;
}

function escapeXml(text) {
  return String(text).replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]);
}

function formatValue(x) {
  if (!Number.isFinite(x)) return '–';
  const abs = Math.abs(x);
  if (abs >= 100) return x.toFixed(0);
  if (abs >= 10) return x.toFixed(1);
  if (abs >= 0.1) return x.toFixed(2);
  return x.toPrecision(2);
}

function formatDecade(power) {
  return power >= 1 ? String(Math.round(power)) : power.toFixed(Math.round(-Math.log10(power)));
}

// The stock-against-this-package rows: lower is better in every one.
function comparisons(results, config) {
  const rows = [];
  const add = (figure, label, unit, key, field, options = {}) => {
    const scale = options.scale || 1;
    const stock = medianOf(results, options.stockKey || key, 'stock', field, scale);
    const native = medianOf(results, key, 'native', field, scale);
    if (Number.isFinite(stock) && Number.isFinite(native)) {
      rows.push({ figure, label, unit, stock, native });
    }
  };
  for (const n of config.n1 || []) {
    add('1', `no-op batch of ${n}: run → ended`, 'ms', `f1-${n}`, 'ms');
  }
  const largestN1 = Math.max(...(config.n1 || [ NaN ]));
  if (Number.isFinite(largestN1)) {
    add('1', `job writes per item (N=${largestN1})`, '', `f1-${largestN1}`, 'jobWrites', { scale: 1 / largestN1 });
    add('1', `peak memory above idle (N=${largestN1})`, 'MB', `f1-${largestN1}`, 'rssAboveIdle', { scale: 1 / (1024 * 1024) });
  }
  add('2', `findOne+updateOne per id, N=${config.n2}, concurrency 1`, 'ms', 'f2-c1', 'ms');
  add('2', '↳ this package at concurrency 4 (stock: 1)', 'ms', 'f2-c4', 'ms', { stockKey: 'f2-c1' });
  add('3', 'loop cost per item, change calls back at once', 'µs', 'f3', 'sync');
  add('4', `watcher queries/s, ${config.jobs4} live jobs`, '/s', `f4-${config.jobs4}`, 'watcherQueriesPerSecond');
  add('5', 'stop latency, cancel → ended (median)', 'ms', 'f5', 'ms');
  add('6', `progress lag, largest per run (N=${config.n6})`, 'ms', 'f6', 'maxLagMs');
  return rows;
}

// Figure 8's cases: the job's added wall time (%) against the bare loop, per concurrency.
function costRows(results) {
  const rows = [];
  for (const key of Object.keys(results).filter((k) => k.startsWith('f8-'))) {
    const [, item, concurrency] = /^f8-(.+)-c(\d+)$/.exec(key) || [];
    if (!item) continue;
    const label = item === 'docs' ? 'findOne+updateOne' : `${item.slice(1)} ms items`;
    rows.push({
      label: `${label}, concurrency ${concurrency}`,
      addedPct: medianOf(results, key, 'native', 'addedPct'),
      addedCpuUs: medianOf(results, key, 'native', 'addedCpuUs')
    });
  }
  return rows;
}

function text(x, y, content, attributes = '') {
  return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" ${attributes}>${escapeXml(content)}</text>`;
}

function comparisonRow(row, top) {
  const parts = [];
  const high = Math.max(row.stock, row.native);
  const low = Math.min(row.stock, row.native);
  const logScale = low > 0 && high / low >= LOG_SCALE_FROM_RATIO;
  let position;
  const ticks = [];
  if (logScale) {
    const from = Math.floor(Math.log10(low));
    const to = Math.ceil(Math.log10(high));
    position = (x) => ((Math.log10(x) - from) / (to - from)) * BAR_WIDTH;
    for (let e = from; e <= to; e++) ticks.push(10 ** e);
  } else {
    const to = high * 1.05;
    position = (x) => (x / to) * BAR_WIDTH;
    ticks.push(0);
  }
  parts.push(text(8, top + 16, `${row.figure}. ${row.label}`, 'class="label"'));
  parts.push(text(8, top + 32, `${row.unit ? `${row.unit}, ` : ''}${logScale ? 'log scale' : 'linear scale'}; shorter is better`, 'class="note"'));
  for (const tick of ticks) {
    const x = BAR_LEFT + position(tick);
    parts.push(`<line x1="${x.toFixed(1)}" y1="${top + 2}" x2="${x.toFixed(1)}" y2="${top + 2 * BAR_HEIGHT + 8}" class="tick"/>`);
    if (logScale) parts.push(text(x, top + 2 * BAR_HEIGHT + 20, formatDecade(tick), 'class="note" text-anchor="middle"'));
  }
  [ [ 'stock', row.stock, top + 4 ], [ 'native', row.native, top + BAR_HEIGHT + 6 ] ].forEach(([variant, value, y]) => {
    const width = Math.max(1, position(value));
    parts.push(`<rect x="${BAR_LEFT}" y="${y}" width="${width.toFixed(1)}" height="${BAR_HEIGHT}" fill="${COLORS[variant]}"/>`);
    parts.push(text(BAR_LEFT + width + 4, y + BAR_HEIGHT - 3, formatValue(value), 'class="value"'));
  });
  const factor = row.stock / row.native;
  parts.push(text(WIDTH - 8, top + 22, factor >= 1 ? `${factor.toFixed(1)}× less` : `${(1 / factor).toFixed(1)}× more`, 'class="ratio" text-anchor="end"'));
  return parts.join('\n');
}

function costRow(row, top, scale) {
  const parts = [];
  const zero = BAR_LEFT + scale(0);
  parts.push(text(8, top + 14, row.label, 'class="label"'));
  const end = BAR_LEFT + scale(row.addedPct);
  const x = Math.min(zero, end);
  parts.push(`<rect x="${x.toFixed(1)}" y="${top + 3}" width="${Math.max(1, Math.abs(end - zero)).toFixed(1)}" height="${BAR_HEIGHT}" fill="${COLORS.native}"/>`);
  parts.push(text(Math.max(zero, end) + 4, top + BAR_HEIGHT, `${row.addedPct >= 0 ? '+' : '−'}${Math.abs(row.addedPct).toFixed(1)}% wall`, 'class="value"'));
  parts.push(text(WIDTH - 8, top + BAR_HEIGHT, `${row.addedCpuUs >= 0 ? '+' : '−'}${Math.abs(row.addedCpuUs).toFixed(0)} µs CPU/item`, 'class="ratio" text-anchor="end"'));
  return parts.join('\n');
}

// `run` is the JSON that `BENCH_JSON` writes: { info, config, results }.
function renderChart({ info = {}, config, results }) {
  const parts = [];
  let y = 0;
  parts.push(text(8, (y += 24), 'Stock apostrophe-jobs 2.x against apostrophe-jobs-native: medians of each figure', 'class="title"'));
  parts.push(text(8, (y += 18), `${info.date ? info.date.slice(0, 10) : ''} · ${(/commit \w+/.exec(info.code || '') || [ 'commit ?' ])[0]} · ${info.nproc || '?'} CPUs · ${(info.database || '').replace(/ \(.*$/, '')}`, 'class="note"'));
  y += 10;
  parts.push(`<rect x="${BAR_LEFT}" y="${y}" width="12" height="12" fill="${COLORS.stock}"/>`, text(BAR_LEFT + 16, y + 11, `stock ${info.apostrophe || ''}`.trim(), 'class="note"'));
  parts.push(`<rect x="${BAR_LEFT + 150}" y="${y}" width="12" height="12" fill="${COLORS.native}"/>`, text(BAR_LEFT + 166, y + 11, 'apostrophe-jobs-native', 'class="note"'));
  y += 22;
  for (const row of comparisons(results, config)) {
    parts.push(comparisonRow(row, y));
    y += ROW_HEIGHT;
  }
  const cost = costRows(results).filter((r) => Number.isFinite(r.addedPct));
  if (cost.length) {
    y += 14;
    parts.push(text(8, (y += 16), '8. What running the work as a job adds to the same work in a bare loop (this package; goal: ≤5 % wall, ≤50 µs CPU per item)', 'class="label"'));
    y += 8;
    const low = Math.min(-1, ...cost.map((r) => r.addedPct));
    const high = Math.max(7.5, ...cost.map((r) => r.addedPct));
    const scale = (pct) => ((pct - low) / (high - low)) * BAR_WIDTH;
    const goalX = BAR_LEFT + scale(5);
    const zeroX = BAR_LEFT + scale(0);
    const rowsTop = y;
    for (const row of cost) {
      parts.push(costRow(row, y, scale));
      y += 22;
    }
    parts.push(`<line x1="${zeroX.toFixed(1)}" y1="${rowsTop}" x2="${zeroX.toFixed(1)}" y2="${y}" class="tick"/>`);
    parts.push(`<line x1="${goalX.toFixed(1)}" y1="${rowsTop}" x2="${goalX.toFixed(1)}" y2="${y}" stroke="${COLORS.goal}" stroke-dasharray="4 3"/>`);
    parts.push(text(goalX, y + 12, '5 % goal', `class="note" text-anchor="middle" fill="${COLORS.goal}"`));
    y += 16;
  }
  y += 12;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${y}" viewBox="0 0 ${WIDTH} ${y}" font-family="Helvetica, Arial, sans-serif">`,
    '<style>',
    `.title { font-size: 15px; font-weight: bold; fill: #202124; }`,
    `.label { font-size: 13px; fill: #202124; }`,
    `.note { font-size: 11px; fill: ${COLORS.axis}; }`,
    `.value { font-size: 11px; fill: #202124; }`,
    `.ratio { font-size: 13px; font-weight: bold; fill: #202124; }`,
    `.tick { stroke: #dadce0; stroke-width: 1; }`,
    '</style>',
    `<rect width="${WIDTH}" height="${y}" fill="#ffffff"/>`,
    ...parts,
    '</svg>',
    ''
  ].join('\n');
}

module.exports = { renderChart };

if (require.main === module) {
  const [input, output] = process.argv.slice(2);
  if (!input || !output) {
    console.error('usage: node bench/chart.js RUN.json OUT.svg   (RUN.json: what BENCH_JSON=RUN.json npm run bench wrote)');
    process.exit(2);
  }
  let run;
  try {
    run = JSON.parse(fs.readFileSync(input, 'utf8'));
  } catch (error) {
    console.error(`bench/chart.js: cannot read ${input} (${error.message}); pass the JSON file that BENCH_JSON= made npm run bench write.`);
    process.exit(1);
  }
  if (!run || !run.results || !run.config) {
    console.error(`bench/chart.js: ${input} has no "results" and "config": it is not the JSON of a benchmark run.`);
    process.exit(1);
  }
  fs.writeFileSync(output, renderChart(run));
  console.log(`bench/chart.js: wrote ${output}`);
}
