import { test, expect, type Page } from '@playwright/test';
import { PASSWORD, signedIn as user, uniqueName, waitForHydration } from './helpers';

// An admin of its own (TIDINGS_ADMINS in scripts/test.sh), so no other spec races for it.
const ADMIN = 'e2e_notifier';
// scripts/test.sh leaves the presence grace at its default.
const GRACE_MS = 5_000;

/** A room no other test uses. */
function roomName(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`.slice(0, 32);
}


/** Waits until the page is connected over `transport` (ws, sse or poll). */
async function connected(page: Page, transport = 'ws') {
  const status = page.getByTestId('chat-status');
  await expect(status).toHaveAttribute('data-transport', transport);
  await expect(status).toHaveAttribute('data-state', 'open');
}

async function switchTo(page: Page, transport: 'ws' | 'sse' | 'poll') {
  await page.locator(`#transport-${transport}`).check();
  await connected(page, transport);
}

async function send(page: Page, text: string) {
  const composer = page.getByTestId('composer');
  await composer.getByLabel('Message').fill(text);
  await composer.getByRole('button', { name: 'Send' }).click();
  await expect(composer.getByLabel('Message')).toHaveValue('');
}

/** The ids of the messages shown, in order. */
async function shownIds(page: Page): Promise<number[]> {
  return page.locator('[data-testid="messages"] li.message').evaluateAll((items) =>
    items.map((li) => Number(li.getAttribute('data-id'))),
  );
}

function message(page: Page, text: string) {
  return page.locator('[data-testid="messages"] li.message .text', { hasText: text });
}

test('two browsers chat across WebSocket, SSE + POST and polling, and text stays text', async ({ browser }) => {
  const room = roomName('cross');
  const alice = await user(browser, uniqueName('alice'), `/chat?room=${room}`);
  const bobName = uniqueName('bob');
  const bob = await user(browser, bobName, `/chat?room=${room}`);
  await connected(alice);
  await connected(bob);
  await expect(alice.getByTestId('members')).toContainText(bobName);

  await switchTo(bob, 'sse');
  await send(alice, 'hello over a WebSocket');
  await expect(message(bob, 'hello over a WebSocket')).toHaveCount(1);

  await send(bob, 'answered with a POST');
  await expect(message(alice, 'answered with a POST')).toHaveCount(1);

  await switchTo(bob, 'poll');
  await send(alice, 'read by polling');
  await expect(message(bob, 'read by polling')).toHaveCount(1);
  await send(bob, 'sent while polling');
  await expect(message(alice, 'sent while polling')).toHaveCount(1);

  // An XSS attempt is shown as the text it is, on every transport.
  const attack = '<img src=x onerror="window.__xss=1"><b>bold?</b>';
  await send(alice, attack);
  await expect(message(bob, attack)).toHaveCount(1);
  await expect(message(alice, attack)).toHaveCount(1);
  await expect(bob.locator('[data-testid="messages"] img, [data-testid="messages"] b')).toHaveCount(0);
  expect(await bob.evaluate(() => (window as any).__xss)).toBeUndefined();

  // Both saw every message once, in id order.
  for (const page of [alice, bob]) {
    const ids = await shownIds(page);
    expect(ids).toEqual([1, 2, 3, 4, 5]);
  }
});

test('the first render is the server\'s, and the live connection continues after it', async ({ browser }) => {
  const room = roomName('ssr');
  const poster = await user(browser, uniqueName('poster'), '/jobs');
  for (const text of ['one', 'two', 'three']) {
    expect((await poster.request.post(`/api/rooms/${room}/messages`, { data: { text } })).status()).toBe(201);
  }
  // Without JavaScript the history is there: it came with the HTML.
  const context = await browser.newContext({ javaScriptEnabled: false });
  const bare = await context.newPage();
  const name = uniqueName('reader');
  expect((await bare.request.post('/api/auth/signup', { data: { username: name, password: PASSWORD } })).status()).toBe(201);
  await bare.goto(`/chat?room=${room}`);
  await expect(bare.locator('[data-testid="messages"] li.message')).toHaveCount(3);
  await context.close();

  const reader = await user(browser, name, `/chat?room=${room}`);
  await connected(reader);
  expect((await poster.request.post(`/api/rooms/${room}/messages`, { data: { text: 'four' } })).status()).toBe(201);
  await expect(message(reader, 'four')).toHaveCount(1);
  expect(await shownIds(reader)).toEqual([1, 2, 3, 4]);
});

test('switching transports resumes after the last message, with nothing missed or doubled', async ({ browser }) => {
  const room = roomName('resume');
  const reader = await user(browser, uniqueName('reader'), `/chat?room=${room}`);
  await connected(reader);
  const post = async (text: string) =>
    expect((await reader.request.post(`/api/rooms/${room}/messages`, { data: { text } })).status()).toBe(201);
  await post('m1');
  await expect(message(reader, 'm1')).toHaveCount(1);
  await switchTo(reader, 'poll');
  await post('m2');
  await expect(message(reader, 'm2')).toHaveCount(1);
  await switchTo(reader, 'sse');
  await post('m3');
  await expect(message(reader, 'm3')).toHaveCount(1);
  // The SSE stream is ended by the server every few seconds here (TIDINGS_SSE_MAX_SECS);
  // the browser reconnects with Last-Event-ID, and messages keep coming once each.
  const status = reader.getByTestId('chat-status');
  const before = Number(await status.getAttribute('data-connections'));
  await expect.poll(async () => Number(await status.getAttribute('data-connections')), { timeout: 15_000 }).toBeGreaterThan(before);
  await post('m4');
  await expect(message(reader, 'm4')).toHaveCount(1);
  await switchTo(reader, 'ws');
  await post('m5');
  await expect(message(reader, 'm5')).toHaveCount(1);
  expect(await shownIds(reader)).toEqual([1, 2, 3, 4, 5]);
});

test('a reload does not flap presence, and closing the last tab says left after the grace period', async ({ browser }) => {
  const room = roomName('presence');
  const watcher = await user(browser, uniqueName('watcher'), `/chat?room=${room}`);
  await connected(watcher);
  const visitorName = uniqueName('visitor');
  const visitor = await user(browser, visitorName, `/chat?room=${room}`);
  await connected(visitor);
  const notes = watcher.locator('[data-testid="messages"] li.note.presence');
  await expect(notes.filter({ hasText: `${visitorName} joined` })).toHaveCount(1);
  await expect(watcher.getByTestId('members')).toContainText(visitorName);

  await visitor.reload();
  await waitForHydration(visitor);
  await connected(visitor);
  // Proving an absence takes a wait: longer than the grace period, nothing may arrive.
  await watcher.waitForTimeout(GRACE_MS + 1_000);
  await expect(notes.filter({ hasText: `${visitorName} left` })).toHaveCount(0);
  await expect(notes.filter({ hasText: `${visitorName} joined` })).toHaveCount(1);

  await visitor.context().close();
  await expect(notes.filter({ hasText: `${visitorName} left` })).toHaveCount(1, { timeout: GRACE_MS + 10_000 });
  await expect(watcher.getByTestId('members')).not.toContainText(visitorName);
});

test('an admin\'s notification shows as a toast on every page, as text', async ({ browser }) => {
  const reader = await user(browser, uniqueName('toast'), '/jobs');
  const chatter = await user(browser, uniqueName('toast'), `/chat?room=${roomName('toast')}`);
  await connected(chatter);
  const admin = await user(browser, ADMIN, '/notifications');
  const form = admin.getByTestId('notify-form');
  await form.getByLabel('Kind').selectOption('maintenance');
  const text = `Back in 5 minutes <i>${Date.now()}</i>`;
  await form.getByLabel('Message').fill(text);
  await form.getByRole('button', { name: 'Send to everyone' }).click();
  await expect(admin.getByTestId('notify-result')).toHaveText(/^Sent to \d+ live connections?\.$/);
  for (const page of [reader, chatter, admin]) {
    const toast = page.locator('.toast', { hasText: text });
    await expect(toast).toHaveCount(1);
    await expect(toast).toHaveAttribute('data-kind', 'maintenance');
    await expect(toast.locator('i')).toHaveCount(0);
  }
  await reader.locator('.toast', { hasText: text }).getByRole('button', { name: 'Dismiss' }).click();
  await expect(reader.locator('.toast', { hasText: text })).toHaveCount(0);

  // Others may not send.
  const other = await user(browser, uniqueName('plain'), '/notifications');
  await expect(other.getByTestId('notify-admins-only')).toBeVisible();
  const refused = await other.request.post('/api/notifications', { data: { kind: 'info', message: 'hi' } });
  expect(refused.status()).toBe(403);
});

test('mistakes are explained: signed out, a bad room name, an empty message', async ({ browser }) => {
  const context = await browser.newContext();
  const anonymous = await context.newPage();
  await anonymous.goto('/chat');
  await waitForHydration(anonymous);
  await expect(anonymous.getByTestId('chat-signin')).toBeVisible();
  await context.close();

  const page = await user(browser, uniqueName('oops'), '/chat?room=Not%20A%20Room');
  await expect(page.getByTestId('chat-error')).toContainText('Room names are 1 to 32 characters');
  await page.goto(`/chat?room=${roomName('oops')}`);
  await waitForHydration(page);
  await connected(page);
  const join = page.getByTestId('join-room');
  await join.getByLabel('Room name').fill('UPPER case');
  await join.getByRole('button', { name: 'Join' }).click();
  await expect(page.getByRole('alert')).toContainText('Room names');
  await page.getByTestId('composer').getByRole('button', { name: 'Send' }).click();
  await expect(page.getByTestId('chat-problem')).toHaveText('A message needs some text.');
  const room = roomName('moved');
  await join.getByLabel('Room name').fill(room);
  await join.getByRole('button', { name: 'Join' }).click();
  await expect(page).toHaveURL(new RegExp(`room=${room}$`));
  await connected(page);
  await send(page, 'first in the new room');
  await expect(message(page, 'first in the new room')).toHaveCount(1);
  await expect(page.locator('[data-testid="rooms"] li.current')).toHaveText(`#${room}`);
});
