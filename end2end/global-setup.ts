// `cargo leptos end-to-end` starts Playwright without waiting for the server: wait here until
// /healthz answers, so no test runs against a server that is still starting.
import type { FullConfig } from '@playwright/test';

export default async function globalSetup(config: FullConfig) {
  const baseURL = config.projects[0].use.baseURL as string;
  const deadline = Date.now() + 120_000;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${baseURL}/healthz`);
      if (res.ok) return;
      last = `status ${res.status}`;
    } catch (e) {
      last = String(e);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`The Tidings server at ${baseURL} did not answer /healthz within 120 s (${last}).`);
}
