// `cargo leptos end-to-end` starts Playwright without waiting for the server: wait here until
// /healthz answers, so no test runs against a server that is still starting.
//
// It also starts a second server, the same binary over HTTPS (h2) with a `tidings dev-cert`
// pair and a database of its own, for the specs that need HTTP/2 (connections.spec.ts); the
// returned teardown stops it.
import type { FullConfig } from '@playwright/test';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

/** Where the HTTPS server listens (connections.spec.ts reads the same variable). */
export const HTTPS_PORT = Number(process.env.TIDINGS_E2E_HTTPS_PORT ?? '3918');

async function waitFor(url: string, what: string) {
  const deadline = Date.now() + 120_000;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const res = await fetch(url);
      if (res.ok) return;
      last = `status ${res.status}`;
    } catch (e) {
      last = String(e);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${what} at ${url} did not answer within 120 s (${last}).`);
}

function startHttps(): { child: ChildProcess; scratch: string } {
  const root = resolve(__dirname, '..');
  const target = process.env.CARGO_TARGET_DIR ?? join(root, 'target');
  const binary = process.env.TIDINGS_E2E_BIN ?? join(target, 'debug', 'tidings');
  const scratch = mkdtempSync(join(tmpdir(), 'tidings-e2e-https-'));
  const cert = spawnSync(binary, ['dev-cert', '--out', join(scratch, 'certs')], { encoding: 'utf8' });
  if (cert.status !== 0) throw new Error(`tidings dev-cert failed: ${cert.stderr}`);
  const child = spawn(binary, [], {
    cwd: root,
    stdio: ['ignore', 'ignore', 'inherit'],
    env: {
      ...process.env,
      LEPTOS_OUTPUT_NAME: 'tidings',
      LEPTOS_SITE_ROOT: join(root, 'target', 'site'),
      LEPTOS_SITE_PKG_DIR: 'pkg',
      LEPTOS_SITE_ADDR: `127.0.0.1:${HTTPS_PORT}`,
      DATABASE_URL: `sqlite://${join(scratch, 'https.db')}?mode=rwc`,
      TIDINGS_TLS_CERT: join(scratch, 'certs', 'cert.pem'),
      TIDINGS_TLS_KEY: join(scratch, 'certs', 'key.pem'),
      TIDINGS_SIGNUP_PER_HOUR: '0',
      RUST_LOG: process.env.RUST_LOG ?? 'warn',
    },
  });
  return { child, scratch };
}

export default async function globalSetup(config: FullConfig) {
  const baseURL = config.projects[0].use.baseURL as string;
  await waitFor(`${baseURL}/healthz`, 'The Tidings server');
  const { child, scratch } = startHttps();
  // The dev certificate is self-signed: this process trusts it for the wait only.
  process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
  try {
    await waitFor(`https://127.0.0.1:${HTTPS_PORT}/healthz`, 'The HTTPS server');
  } catch (e) {
    child.kill();
    throw e;
  } finally {
    delete process.env.NODE_TLS_REJECT_UNAUTHORIZED;
  }
  return async () => {
    child.kill();
    rmSync(scratch, { recursive: true, force: true });
  };
}
