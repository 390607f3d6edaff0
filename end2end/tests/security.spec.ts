import { test, expect, type Page } from '@playwright/test';
import { signedIn, uniqueName, waitForHydration } from './helpers';

// Every page the app has. Each is visited signed in, so its streams and sockets open too.
const PAGES = ['/', '/login', '/signup', '/export', '/jobs', '/chat', '/notifications', '/dashboard'];

/** Records every Content-Security-Policy violation the page reports, from its first script on. */
async function watchViolations(page: Page): Promise<string[]> {
  const seen: string[] = [];
  await page.exposeFunction('__tidingsViolation', (what: string) => seen.push(what));
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      (window as any).__tidingsViolation(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'}`);
    });
  });
  page.on('console', (msg) => {
    if (/Content Security Policy/i.test(msg.text())) seen.push(msg.text());
  });
  return seen;
}

test('every page hydrates under its Content-Security-Policy with no violation', async ({ browser }) => {
  test.setTimeout(60_000);
  const page = await signedIn(browser, uniqueName('csp'), '/');
  const violations = await watchViolations(page);
  for (const path of PAGES) {
    const res = await page.goto(path);
    expect(res?.status(), path).toBe(200);
    const headers = res!.headers();
    const policy = headers['content-security-policy'] ?? '';
    const nonce = /'nonce-([A-Za-z0-9+/_=-]+)'/.exec(policy)?.[1];
    expect(nonce, `${path}: the policy names a nonce`).toBeTruthy();
    expect(policy).not.toContain("'unsafe-eval'");
    expect(headers['x-frame-options']).toBe('DENY');
    expect(headers['x-content-type-options']).toBe('nosniff');
    await waitForHydration(page);
    // Every script on the page carries this response's nonce (the browser hides the attribute,
    // not the property).
    const nonces = await page.locator('script').evaluateAll((scripts) =>
      scripts.map((s) => (s as HTMLScriptElement).nonce),
    );
    expect(nonces.length, `${path} has scripts`).toBeGreaterThan(0);
    for (const n of nonces) expect(n, path).toBe(nonce);
  }
  // The live pages opened their streams and sockets without the policy blocking them.
  await page.goto('/chat');
  await waitForHydration(page);
  await expect(page.getByTestId('chat-status')).toHaveAttribute('data-state', 'open');
  await page.goto('/dashboard');
  await waitForHydration(page);
  await expect(page.getByTestId('dash-status')).toHaveAttribute('data-state', 'live');
  expect(violations).toEqual([]);
});

test('a page refused a foreign Host is 421, not rendered', async ({ request, baseURL }) => {
  const res = await request.get('/', { headers: { host: 'evil.example' } });
  expect(res.status()).toBe(421);
  expect((await res.json()).error).toBe('misdirected_request');
  // The same server under its own address still answers.
  expect((await request.get(`${baseURL}/healthz`)).status()).toBe(200);
});
