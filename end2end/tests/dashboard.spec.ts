import { test, expect, type Page } from '@playwright/test';
import { signedIn as user, uniqueName } from './helpers';

// An admin of its own (TIDINGS_ADMINS in scripts/test.sh), so no other spec races for it.
const ADMIN = 'e2e_watcher';

/** The newest value a plot's series shows (its legend's `data-last`). */
async function lastValue(page: Page, plot: string, series: string): Promise<number> {
  const value = await page.getByTestId(`plot-${plot}-${series}`).getAttribute('data-last');
  return Number(value ?? 'NaN');
}

test('signed out, the dashboard asks for a sign-in', async ({ page }) => {
  await page.goto('/dashboard');
  await expect(page.getByRole('heading', { name: 'Live dashboard' })).toBeVisible();
  await expect(page.getByTestId('dash-signin')).toContainText('Sign in');
});

test('the plots move with traffic from other tabs, and the log tail is for admins', async ({ browser }) => {
  const page = await user(browser, uniqueName('dash'), '/dashboard');
  await expect(page.getByTestId('dash-status')).toHaveAttribute('data-state', 'live');
  await expect(page.getByTestId('log-admins-only')).toBeVisible();
  // Samples keep coming: the plot gains points without a reload.
  const plot = page.getByTestId('plot-connections').locator('svg');
  const points = Number(await plot.getAttribute('data-points'));
  await expect.poll(async () => Number(await plot.getAttribute('data-points'))).toBeGreaterThan(points);
  await expect(page.getByTestId('num-rss')).toContainText('MB');

  // Another user opens the chat in another browser: one more WebSocket on the plot.
  const before = await lastValue(page, 'connections', 's1');
  const chat = await user(browser, uniqueName('chatty'), '/chat');
  await expect(chat.getByTestId('chat-status')).toHaveAttribute('data-state', 'open');
  await expect.poll(() => lastValue(page, 'connections', 's1'), { timeout: 10_000 }).toBeGreaterThan(before);
  // They talk until the messages-per-second plot shows it: a sample a second, and the
  // dashboard's stream is down for its retry time each time it ends (TIDINGS_SSE_MAX_SECS is 3
  // here), so the talk goes on for as long as the poll waits, not for a fixed number of
  // messages (20 sent at once could all fall in one reconnect, and did, 3 runs in 20).
  const composer = chat.getByTestId('composer');
  let sent = 0;
  await expect
    .poll(
      async () => {
        const text = `dashboard traffic ${sent++}`;
        await composer.getByLabel('Message').fill(text);
        await composer.getByRole('button', { name: 'Send' }).click();
        await expect(composer.getByLabel('Message')).toHaveValue('');
        await expect(chat.getByTestId('messages')).toContainText(text);
        return lastValue(page, 'messages', 's1');
      },
      { timeout: 20_000, intervals: [300] },
    )
    .toBeGreaterThan(0);
  await expect(page.getByTestId('plot-messages').locator('polyline')).toHaveAttribute('points', /,/);
  await chat.context().close();
  await page.context().close();
});

test("an admin reads the server's log: live, filtered by level, paused and resumed", async ({ browser }) => {
  const page = await user(browser, ADMIN, '/dashboard');
  const tail = page.getByTestId('log-tail');
  await expect(page.getByTestId('dash-status')).toHaveAttribute('data-state', 'live');
  // A request made now shows up as a record of its own.
  const marker = uniqueName('mark');
  await page.request.get(`/api/rooms/${marker.replace(/_/g, '-')}/messages`);
  await expect(tail.locator('.log-line', { hasText: marker.replace(/_/g, '-') })).toHaveCount(1);
  await expect(tail.locator('.log-line[data-level="info"]').first()).toBeVisible();

  // Warn and above only: the info records go. A sample arriving after the switch means the
  // new stream has sent its replay (replay first, then samples).
  const samples = page.getByTestId('plot-connections').locator('svg');
  await page.getByTestId('log-level').selectOption('warn');
  const switched = Number(await samples.getAttribute('data-points'));
  await page.request.get(`/api/rooms/${uniqueName('poke').replace(/_/g, '-')}/messages`);
  await expect.poll(async () => Number(await samples.getAttribute('data-points'))).toBeGreaterThan(switched);
  await expect(tail.locator('.log-line[data-level="info"]')).toHaveCount(0);
  // Back to info: new info records show again.
  await page.getByTestId('log-level').selectOption('info');
  const again = uniqueName('again').replace(/_/g, '-');
  await page.request.get(`/api/rooms/${again}/messages`);
  await expect(tail.locator('.log-line', { hasText: again })).toHaveCount(1);

  // Paused: new records wait behind the button, then come in on resume.
  await page.getByTestId('log-pause').click();
  await expect(page.getByTestId('log-pause')).toHaveText(/Resume \(\d+ new\)/);
  const later = uniqueName('later').replace(/_/g, '-');
  await page.request.get(`/api/rooms/${later}/messages`);
  await expect(page.getByTestId('log-pause')).not.toHaveText('Resume (0 new)');
  await expect(tail.locator('.log-line', { hasText: later })).toHaveCount(0);
  await page.getByTestId('log-pause').click();
  await expect(page.getByTestId('log-pause')).toHaveText('Pause');
  await expect(tail.locator('.log-line', { hasText: later })).toHaveCount(1);
  await page.context().close();
});

test('the dashboard shows when it is cut off and recovers by itself', async ({ browser }) => {
  const page = await user(browser, uniqueName('cut'), '/dashboard');
  const status = page.getByTestId('dash-status');
  await expect(status).toHaveAttribute('data-state', 'live');
  // The server goes away: the page's one stream (which the server ends every 3 s here)
  // cannot reconnect.
  await page.route('**/api/events**', (route) => route.abort('connectionrefused'));
  await expect(status).toHaveAttribute('data-state', 'reconnecting', { timeout: 10_000 });
  await expect(status).toContainText('Disconnected');
  // It comes back: the browser's own retry gets through.
  await page.unroute('**/api/events**');
  await expect(status).toHaveAttribute('data-state', 'live', { timeout: 15_000 });
  // A refusal closes the stream for good; the page opens a new one after a pause.
  await page.route('**/api/events**', (route) => route.fulfill({ status: 503, body: 'down' }));
  await expect(status).toHaveAttribute('data-state', 'closed', { timeout: 10_000 });
  await page.unroute('**/api/events**');
  await expect(status).toHaveAttribute('data-state', 'live', { timeout: 15_000 });
  await page.context().close();
});

test('every pattern in the guide links to a live page that names its transport', async ({ page }) => {
  await page.goto('/');
  const patterns = page.getByTestId('pattern');
  await expect(patterns).toHaveCount(5);
  const hrefs = new Set<string>();
  for (let i = 0; i < 5; i++) {
    const links = patterns.nth(i).locator('.demos a');
    expect(await links.count()).toBeGreaterThan(0);
    for (const href of await links.evaluateAll((as) => as.map((a) => a.getAttribute('href') ?? ''))) {
      hrefs.add(href);
    }
  }
  expect([...hrefs].sort()).toEqual(['/assistant', '/chat', '/dashboard', '/export', '/jobs']);
  for (const href of hrefs) {
    await page.goto(href);
    await expect(page.locator('p.transport').first()).toBeVisible();
  }
});
