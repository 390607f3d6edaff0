import { test, expect, type Page } from '@playwright/test';
import { signIn, signedIn as user, uniqueName, waitForHydration } from './helpers';

// Admins of their own (TIDINGS_ADMINS in scripts/test.sh), so no other spec races for them.
const NOTIFIER = 'e2e_notifier';
const MODERATOR = 'e2e_moderator';

/** A room no other test uses. */
function roomName(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`.slice(0, 32);
}

async function connected(page: Page) {
  const status = page.getByTestId('chat-status');
  await expect(status).toHaveAttribute('data-state', 'open');
}

async function send(page: Page, text: string) {
  const composer = page.getByTestId('composer');
  await composer.getByLabel('Message').fill(text);
  await composer.getByRole('button', { name: 'Send' }).click();
  await expect(composer.getByLabel('Message')).toHaveValue('');
}

function message(page: Page, text: string) {
  return page.locator('[data-testid="messages"] li.message', { hasText: text });
}

function roomEntry(page: Page, room: string) {
  return page.locator(`[data-testid="rooms"] li[data-room="${room}"]`);
}

test('a private room: the owner makes it and adds a member, whose badges count and clear live, then removes them', async ({ browser }) => {
  const room = roomName('club');
  const aliceName = uniqueName('alice');
  const bobName = uniqueName('bob');
  const alice = await user(browser, aliceName, '/chat');
  const bob = await user(browser, bobName, '/chat');

  // Alice makes the room from the sidebar.
  const form = alice.getByTestId('join-room');
  await form.getByLabel('Room name').fill(room);
  await form.getByTestId('private-room').check();
  await form.getByRole('button', { name: 'Create' }).click();
  await expect(alice).toHaveURL(new RegExp(`room=${room}`));
  await connected(alice);
  await expect(roomEntry(alice, room)).toHaveClass(/private/);
  const panel = alice.getByTestId('owner-panel');
  await expect(panel.getByTestId('room-members')).toContainText(aliceName);

  // Bob cannot open it yet.
  await bob.goto(`/chat?room=${room}`);
  await expect(bob.getByTestId('chat-error')).toContainText(`You are not a member of #${room}.`);

  await panel.getByLabel('Username to add').fill(bobName);
  await panel.getByRole('button', { name: 'Add' }).click();
  await expect(panel.locator(`li[data-member="${bobName}"]`)).toBeVisible();
  await send(alice, 'first for the club');
  await send(alice, 'second for the club');

  // Bob, in #general, sees the room with two unread.
  await bob.goto('/chat');
  await waitForHydration(bob);
  await expect(roomEntry(bob, room).getByTestId('unread')).toHaveText('2');
  // A new message there moves the badge live, though Bob's page follows #general.
  await send(alice, 'third for the club');
  await expect(roomEntry(bob, room).getByTestId('unread')).toHaveText('3');
  // A second tab of Bob's reads the room: the first tab's badge clears at once.
  const bobTab2 = await bob.context().newPage();
  await bobTab2.goto(`/chat?room=${room}`);
  await waitForHydration(bobTab2);
  await connected(bobTab2);
  await expect(message(bobTab2, 'second for the club')).toHaveCount(1);
  await expect(roomEntry(bob, room).getByTestId('unread')).toHaveCount(0);

  // Removed: Bob's open tab is told, and hears no more of the room.
  await panel.locator(`li[data-member="${bobName}"]`).getByTestId('remove-member').click();
  await expect(panel.locator(`li[data-member="${bobName}"]`)).toHaveCount(0);
  await expect(bobTab2.getByTestId('chat-problem')).toContainText(`You were removed from #${room}.`);
  await send(alice, 'after bob left');
  await expect(message(alice, 'after bob left')).toHaveCount(1);
  await expect(message(bobTab2, 'after bob left')).toHaveCount(0);
});

test('typing shows on the other side, and my own message can be deleted everywhere', async ({ browser }) => {
  const room = roomName('typing');
  const alice = await user(browser, uniqueName('alice'), `/chat?room=${room}`);
  const bobName = uniqueName('bob');
  const bob = await user(browser, bobName, `/chat?room=${room}`);
  await connected(alice);
  await connected(bob);

  await bob.getByTestId('composer').getByLabel('Message').pressSequentially('hel');
  await expect(alice.getByTestId('typing')).toHaveText(`${bobName} is typing…`);
  await expect(bob.getByTestId('typing')).toHaveText('');
  await send(bob, 'a regrettable message');
  await expect(message(alice, 'a regrettable message')).toHaveCount(1);
  await expect(alice.getByTestId('typing')).toHaveText('');
  // Only one's own messages have the button.
  await expect(message(alice, 'a regrettable message').getByTestId('delete-message')).toHaveCount(0);
  await message(bob, 'a regrettable message').getByTestId('delete-message').click();
  const deleted = alice.locator('[data-testid="messages"] li.message.deleted');
  await expect(deleted).toHaveCount(1);
  await expect(deleted).toContainText('(deleted)');
  await expect(message(alice, 'a regrettable message')).toHaveCount(0);
});

test('the bell counts notifications sent to me, live, and marks them read', async ({ browser }) => {
  const bobName = uniqueName('bob');
  const bob = await user(browser, bobName, '/');
  const carol = await user(browser, uniqueName('carol'), '/');
  const count = (page: Page) => page.getByTestId('bell-count');
  await expect(count(bob)).toHaveText('0');

  const admin = await user(browser, NOTIFIER, '/notifications');
  const sent = await admin.request.post('/api/notifications', {
    data: { kind: 'info', message: `just for ${bobName}`, to: [bobName] },
  });
  expect(sent.status()).toBe(200);
  await expect(count(bob)).toHaveText('1');
  await bob.getByTestId('bell').click();
  const inbox = bob.getByTestId('inbox');
  await expect(inbox.locator('li.unread')).toContainText(`just for ${bobName}`);
  await inbox.getByTestId('mark-read').click();
  await expect(count(bob)).toHaveText('0');
  await expect(inbox.locator('li.unread')).toHaveCount(0);
  // Carol heard nothing of it.
  await expect(count(carol)).toHaveText('0');
  await carol.getByTestId('bell').click();
  await expect(carol.getByTestId('inbox')).not.toContainText(`just for ${bobName}`);
});

test('an admin sees who is connected and disconnects a user from the dashboard', async ({ browser }) => {
  const bobName = uniqueName('bob');
  const bob = await user(browser, bobName, `/chat?room=${roomName('watched')}`);
  await connected(bob);
  const admin = await user(browser, MODERATOR, '/dashboard');
  const row = admin.locator(`[data-testid="connections"] tr[data-user="${bobName}"][data-transport="websocket"]`);
  await expect(row).toBeVisible();
  await expect(row).toContainText('room:watched');
  await row.getByTestId('disconnect').click();
  await expect(admin.getByTestId('disconnected')).toContainText(bobName);
  await expect(bob.getByTestId('chat-problem')).toContainText('Signed out.');
  await expect(admin.locator(`[data-testid="connections"] tr[data-user="${bobName}"]`)).toHaveCount(0);
});

test('without JavaScript the room renders on the server and the plain form posts', async ({ browser }) => {
  const room = roomName('nojs');
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  await signIn(page, uniqueName('plain'));
  await page.goto(`/chat?room=${room}`);
  const composer = page.getByTestId('composer');
  await composer.getByLabel('Message').fill('posted by a plain form');
  await composer.getByRole('button', { name: 'Send' }).click();
  await expect(page).toHaveURL(new RegExp(`/chat\\?room=${room}$`));
  await expect(message(page, 'posted by a plain form')).toHaveCount(1);
  await expect(roomEntry(page, room)).toBeVisible();
  await composer.getByLabel('Message').fill('   ');
  await composer.getByRole('button', { name: 'Send' }).click();
  await expect(page.getByTestId('chat-form-error')).toContainText('A message needs some text.');
  await context.close();
});

test('a plain user is told up front that exports are for admins', async ({ browser }) => {
  const page = await user(browser, uniqueName('plain'), '/export');
  await expect(page.getByTestId('export-admins-only')).toContainText('Exports are for admins');
  await expect(page.getByTestId('export-start')).toBeDisabled();
});

test('the recent jobs list follows the watched job to its end', async ({ browser }) => {
  const page = await user(browser, uniqueName('jobs'), '/jobs');
  const form = page.getByTestId('job-form');
  await form.getByLabel('Steps', { exact: true }).fill('3');
  await form.getByLabel('Step time (ms)').fill('300');
  await form.getByLabel('Warn at steps').fill('');
  await form.getByRole('button', { name: 'Start a demo job' }).click();
  await expect(page).toHaveURL(/job=\d+/);
  const id = new URL(page.url()).searchParams.get('job');
  const entry = page.locator(`[data-testid="recent-jobs"] li[data-job="${id}"]`);
  await expect(entry).toHaveAttribute('data-status', 'completed');
  await expect(entry).toContainText('(100 %)');
});

