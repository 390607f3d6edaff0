// Dashboard benchmark (issue 6), driven by scripts/bench-dashboard.sh: does a dashboard left
// open hold flat memory, in the server and in the browser, while the log pours in?
//
// - STREAMS admin streams of GET /api/metrics/events?logs=info, each read and counted;
// - one real /dashboard page in Chromium (Debian's), its JS heap measured after a forced GC;
// - RATE requests a second (each logs one record) for SECS seconds: far more records than the
//   page keeps (500) or the server's ring holds (2000).
// The server's RSS and the page's heap are sampled every STEP seconds; the growth from the end
// of the warm-up to the end is what must stay flat.
//
// Environment: BENCH_URL, BENCH_SERVER_PID (from the script), STREAMS (100), RATE (200),
// SECS (60), STEP (10), WARMUP (15).

import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';

const require = createRequire(import.meta.url);
const { chromium } = require('../end2end/node_modules/playwright');

const base = process.env.BENCH_URL;
const pid = process.env.BENCH_SERVER_PID;
const streams = Number(process.env.STREAMS ?? 100);
const rate = Number(process.env.RATE ?? 200);
const secs = Number(process.env.SECS ?? 60);
const step = Number(process.env.STEP ?? 10);
const warmup = Number(process.env.WARMUP ?? 15);
const admin = 'bench_admin';
const password = 'bench-password';

function die(message) {
  console.error(`bench: ${message}`);
  process.exit(1);
}

function rssMb() {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return kb / 1024;
}

async function signIn() {
  const body = JSON.stringify({ username: admin, password, setupToken: process.env.BENCH_SETUP_TOKEN });
  const headers = { 'content-type': 'application/json' };
  let res = await fetch(`${base}/api/auth/signup`, { method: 'POST', headers, body });
  if (res.status === 409) res = await fetch(`${base}/api/auth/login`, { method: 'POST', headers, body });
  if (!res.ok) die(`sign-in answered ${res.status}`);
  const cookie = res.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
  if (!cookie.includes('tidings_session=')) die('no session cookie');
  return cookie;
}

/** Opens one stream and counts its events until `stop` is aborted. */
function openStream(cookie, counts, stop) {
  return (async () => {
    const res = await fetch(`${base}/api/metrics/events?logs=info`, {
      headers: { cookie },
      signal: stop.signal,
    });
    if (res.status !== 200) die(`a stream answered ${res.status}`);
    const decoder = new TextDecoder();
    let carry = '';
    try {
      for await (const chunk of res.body) {
        carry += decoder.decode(chunk, { stream: true });
        let at;
        while ((at = carry.indexOf('\n')) >= 0) {
          const line = carry.slice(0, at);
          carry = carry.slice(at + 1);
          if (line === 'event: metrics') counts.metrics++;
          else if (line === 'event: log') counts.logs++;
        }
      }
    } catch (e) {
      if (!stop.signal.aborted) throw e;
    }
  })();
}

const cookie = await signIn();
const counts = { metrics: 0, logs: 0 };
const stop = new AbortController();
const readers = [];
for (let i = 0; i < streams; i++) readers.push(openStream(cookie, counts, stop));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu'],
});
const context = await browser.newContext();
const [name, value] = cookie.split('; ').find((c) => c.startsWith('tidings_session=')).split('=');
await context.addCookies([{ name, value, url: base }]);
const page = await context.newPage();
await page.goto(`${base}/dashboard`);
await page.waitForSelector('body[data-hydrated="true"]');
// A page that never went live would measure nothing: say so instead.
try {
  await page.waitForSelector('[data-testid="dash-status"][data-state="live"]', { timeout: 15_000 });
} catch {
  die('the dashboard page did not go live');
}
const cdp = await context.newCDPSession(page);
await cdp.send('HeapProfiler.enable');
async function heapMb() {
  await cdp.send('HeapProfiler.collectGarbage');
  const { usedSize } = await cdp.send('Runtime.getHeapUsage');
  return usedSize / 1048576;
}

// The log flood: RATE requests a second, each one logged by the server.
let requests = 0;
let flooding = true;
const flood = (async () => {
  const started = Date.now();
  while (flooding) {
    const due = started + (requests * 1000) / rate;
    const wait = due - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const batch = [];
    for (let i = 0; i < 10; i++) {
      batch.push(fetch(`${base}/api/rooms/bench-${requests % 50}/messages?limit=1`, { headers: { cookie } }).then((r) => r.arrayBuffer()));
      requests++;
    }
    await Promise.all(batch);
  }
})();

console.log(`  ${streams} admin streams and one dashboard page open; ${rate} logged requests/s for ${secs} s`);
console.log('     t   server RSS   page heap   log lines shown   events per stream (metrics, logs)');
const rows = [];
const t0 = Date.now();
for (let t = step; t <= secs; t += step) {
  await new Promise((r) => setTimeout(r, t0 + t * 1000 - Date.now()));
  const row = {
    t,
    rss: rssMb(),
    heap: await heapMb(),
    lines: await page.locator('.log-line').count(),
    metrics: counts.metrics / streams,
    logs: counts.logs / streams,
  };
  rows.push(row);
  console.log(
    `  ${String(t).padStart(4)} s ${row.rss.toFixed(1).padStart(9)} MB ${row.heap.toFixed(1).padStart(8)} MB ${String(row.lines).padStart(12)}       ${row.metrics.toFixed(0)}, ${row.logs.toFixed(0)}`,
  );
}
flooding = false;
await flood;
stop.abort();
await Promise.allSettled(readers);
const status = await page.getByTestId('dash-status').getAttribute('data-state');
await browser.close();

const base_ = rows.find((r) => r.t >= warmup) ?? rows[0];
const last = rows[rows.length - 1];
const rssGrowth = last.rss - base_.rss;
const heapGrowth = last.heap - base_.heap;
console.log(
  `  ${requests} requests logged; from ${base_.t} s to ${last.t} s the server grew ${rssGrowth.toFixed(1)} MB and the page's heap ${heapGrowth.toFixed(1)} MB; the page showed ${last.lines} lines (at most 500) and was ${status}`,
);
console.log(
  `result mode=dashboard streams=${streams} rate=${rate} secs=${secs} rss_growth_mb=${rssGrowth.toFixed(1)} heap_growth_mb=${heapGrowth.toFixed(1)} lines=${last.lines} status=${status}`,
);
