import { expect, test, type Page } from '@playwright/test';
import { signIn, uniqueName, waitForHydration } from './helpers';

// One connection per page: every live part of a page (toasts, chat room, job progress,
// dashboard) rides the page's one `/api/events` stream; over HTTPS (h2) every tab's stream
// shares one connection, so eight tabs are live at once and a ninth page still loads.

const HTTPS = `https://127.0.0.1:${process.env.TIDINGS_E2E_HTTPS_PORT ?? '3918'}`;

/** The event-stream URLs a page opens, recorded from now on. */
function streamsOf(page: Page): string[] {
  const urls: string[] = [];
  page.on('request', (r) => {
    if (r.resourceType() === 'eventsource' || r.headers()['accept'] === 'text/event-stream') {
      urls.push(new URL(r.url()).pathname);
    }
  });
  return urls;
}

test('a page holds one event stream for all its live parts', async ({ page }) => {
  const streams = streamsOf(page);
  await signIn(page, uniqueName('one'));
  // The dashboard: metrics and the toasts' notifications, on one stream.
  await page.goto('/dashboard');
  await waitForHydration(page);
  const uptime = page.getByTestId('num-uptime').locator('dd');
  await expect(uptime).not.toHaveText('');
  const first = await uptime.textContent();
  await expect(uptime).not.toHaveText(first ?? '');
  expect(streams.length).toBeGreaterThan(0);
  expect(new Set(streams)).toEqual(new Set(['/api/events']));
  // A chat room over SSE joins the same kind of stream.
  await page.goto('/chat?room=onestream');
  await waitForHydration(page);
  await page.locator('#transport-sse').check();
  const status = page.getByTestId('chat-status');
  await expect(status).toHaveAttribute('data-transport', 'sse');
  await expect(status).toHaveAttribute('data-state', 'open');
  expect(new Set(streams)).toEqual(new Set(['/api/events']));
});

test('the chat over its WebSocket is the page\'s only connection: the toasts ride the socket', async ({ page }) => {
  // An admin of its own (TIDINGS_ADMINS in scripts/test.sh), so no other spec's tabs count.
  await signIn(page, 'e2e_counter');
  await page.goto('/chat?room=onesocket');
  await waitForHydration(page);
  const status = page.getByTestId('chat-status');
  await expect(status).toHaveAttribute('data-transport', 'ws');
  await expect(status).toHaveAttribute('data-state', 'open');
  // The server's own list of this user's connections: the socket, and no event stream.
  await expect.poll(async () => {
    const list = await (await page.request.get('/api/admin/connections')).json();
    return list.connections
      .filter((c: { username: string }) => c.username === 'e2e_counter')
      .map((c: { transport: string }) => c.transport)
      .sort();
  }).toEqual(['websocket']);
  // And a notification still shows as a toast, brought by the socket.
  const text = `over the socket ${uniqueName('n')}`;
  const sent = await page.request.post('/api/notifications', { data: { kind: 'info', message: text, to: ['e2e_counter'] } });
  expect(sent.status()).toBe(200);
  await expect(page.getByText(text)).toBeVisible();
});

test('over HTTPS eight tabs are live at once and a ninth page still loads at once', async ({ browser }) => {
  // The tabs open one after another, each hydrated (so its stream is open) before the next:
  // over HTTP/1.1 the seventh would wait for a free connection. Opening all eight at once
  // made eight debug WASM bundles compile together on two cores, past the hydration wait.
  test.setTimeout(90_000);
  const context = await browser.newContext({ ignoreHTTPSErrors: true, baseURL: HTTPS });
  const first = await context.newPage();
  await signIn(first, uniqueName('tabs'));
  const tabs: Page[] = [];
  for (let i = 0; i < 8; i++) {
    const tab = i === 0 ? first : await context.newPage();
    await tab.goto('/dashboard');
    await waitForHydration(tab);
    tabs.push(tab);
  }
  // Every tab's metrics move: all eight streams are live.
  for (const tab of tabs) {
    const uptime = tab.getByTestId('num-uptime').locator('dd');
    await expect(uptime).not.toHaveText('');
    const was = await uptime.textContent();
    await expect(uptime).not.toHaveText(was ?? '');
  }
  // A ninth page loads while the eight stream.
  const ninth = await context.newPage();
  const started = Date.now();
  await ninth.goto('/guide');
  await expect(ninth.locator('h1')).toBeVisible();
  expect(Date.now() - started).toBeLessThan(5_000);
  // The page went over HTTP/2.
  const protocol = await ninth.evaluate(
    () => (performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming).nextHopProtocol,
  );
  expect(protocol).toBe('h2');
  await context.close();
});

test('over HTTPS one page holds more than six live streams', async ({ browser }) => {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, baseURL: HTTPS });
  const page = await context.newPage();
  await signIn(page, uniqueName('many'));
  await page.goto('/guide');
  // Ten streams of the metrics topic at once, each must hear a sample.
  const heard = await page.evaluate(async () => {
    const sources = Array.from({ length: 10 }, () => new EventSource('/api/events?topic=metrics'));
    const got = await Promise.all(
      sources.map((s) => new Promise<boolean>((resolve) => {
        s.addEventListener('metrics', () => resolve(true), { once: true });
        setTimeout(() => resolve(false), 8_000);
      })),
    );
    sources.forEach((s) => s.close());
    return got;
  });
  expect(heard).toEqual(Array(10).fill(true));
  await context.close();
});

test('a message sent while the server cannot be reached stays pending, then is sent once', async ({ page }) => {
  await signIn(page, uniqueName('ack'));
  const room = uniqueName('acked').replace(/_/g, '-').toLowerCase();
  await page.goto(`/chat?room=${room}`);
  await waitForHydration(page);
  await page.locator('#transport-sse').check();
  await expect(page.getByTestId('chat-status')).toHaveAttribute('data-state', 'open');
  // Every POST fails as if the network dropped: the message waits, shown as pending.
  let refused = 0;
  await page.route('**/api/rooms/*/messages', (route) => {
    if (route.request().method() === 'POST') {
      refused++;
      return route.abort('internetdisconnected');
    }
    return route.continue();
  });
  const composer = page.getByTestId('composer');
  await composer.getByLabel('Message').fill('kept until stored');
  await composer.getByRole('button', { name: 'Send' }).click();
  const pending = page.getByTestId('pending');
  await expect(pending).toContainText('kept until stored');
  await expect.poll(() => refused).toBeGreaterThan(1);
  // The network is back: the resend (same Idempotency-Key) is stored once and shown once.
  await page.unroute('**/api/rooms/*/messages');
  const messages = page.getByTestId('messages');
  await expect(messages.getByText('kept until stored')).toHaveCount(1);
  await expect(pending).not.toContainText('kept until stored');
  const stored = await page.request.get(`/api/rooms/${room}/messages`);
  const texts = (await stored.json()).messages.map((m: { text: string }) => m.text);
  expect(texts.filter((t: string) => t === 'kept until stored')).toHaveLength(1);
});

test('an admin makes an API key on the dashboard, a script posts with it, and revoking stops it', async ({ browser, playwright }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await signIn(page, 'e2e_keeper');
  await page.goto('/dashboard');
  await waitForHydration(page);
  const panel = page.getByTestId('api-keys');
  const name = uniqueName('bot').replace(/_/g, '-').toLowerCase();
  await panel.getByLabel('Key name').fill(name);
  await panel.getByRole('button', { name: 'Make a key' }).click();
  const key = (await panel.getByTestId('new-key').textContent()) ?? '';
  expect(key).toMatch(/^tdk_/);
  await expect(panel.locator(`tr[data-key="${name}"]`)).toContainText('never');
  // Another server: no cookie, just the key.
  const script = await playwright.request.newContext({ baseURL: page.url() });
  const post = () => script.post('/api/rooms/deploys/messages', {
    headers: { authorization: `Bearer ${key}` },
    data: { text: 'shipped' },
  });
  const sent = await post();
  expect(sent.status()).toBe(201);
  expect((await sent.json()).displayName).toBe(name);
  await panel.locator(`tr[data-key="${name}"]`).getByTestId('revoke-key').click();
  await expect(panel.locator(`tr[data-key="${name}"]`)).toHaveCount(0);
  expect((await post()).status()).toBe(401);
  await script.dispose();
  await context.close();
});
