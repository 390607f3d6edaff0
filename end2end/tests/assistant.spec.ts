import { test, expect, type Page } from '@playwright/test';
import { signIn, uniqueName, waitForHydration } from './helpers';

// scripts/test.sh runs the server with its built-in model at TIDINGS_AI_TOKENS_PER_SEC=15 (an
// answer of 100+ tokens takes several seconds: time to stop it or reload in the middle) and
// TIDINGS_SSE_MAX_SECS=3 (every stream is cut after 3 s and resumed with Last-Event-ID).

/** The chat's answer as the server stored it. */
async function stored(page: Page, id: string) {
  const res = await page.request.get(`/api/assistant/chats/${id}`);
  expect(res.status()).toBe(200);
  return res.json();
}

async function ask(page: Page, prompt: string): Promise<string> {
  await page.getByTestId('prompt').fill(prompt);
  await page.getByRole('button', { name: 'Ask' }).click();
  await expect(page).toHaveURL(/\/assistant\?chat=\d+$/);
  return new URL(page.url()).searchParams.get('chat')!;
}

test('the answer grows token by token, then shows its figures, and is listed', async ({ page }) => {
  test.setTimeout(60_000);
  await signIn(page, uniqueName('ai'));
  await page.goto('/assistant');
  await waitForHydration(page);
  const id = await ask(page, 'How does a stream resume after a drop?');
  const card = page.getByTestId('answer-card');
  await expect(card).toHaveAttribute('data-status', 'running');
  // It grows while it streams: more text later than at first.
  await expect.poll(async () => Number(await card.getAttribute('data-last'))).toBeGreaterThan(3);
  const early = (await page.getByTestId('answer').innerText()).length;
  await expect.poll(async () => (await page.getByTestId('answer').innerText()).length).toBeGreaterThan(early);
  await expect(page.getByTestId('answer-stats')).toHaveText(/\d+ tokens · \d+\.\d tokens\/s/);
  await expect(card).toHaveAttribute('data-status', 'completed', { timeout: 40_000 });
  await expect(page.getByTestId('answer-stats')).toHaveText(/^\d+ tokens · [\d.]+ tokens\/s · prompt \d+ tokens · ended: stop$/);
  await expect(page.getByTestId('stop')).toBeDisabled();
  // The page shows exactly what the server stored: every token once.
  const chat = await stored(page, id);
  expect(chat.status).toBe('completed');
  expect(Number(await card.getAttribute('data-last'))).toBe(chat.lastEventId);
  const shown = await page.getByTestId('answer').evaluate((el) =>
    Array.from(el.children).map((c) => c.textContent).join(''),
  );
  expect(shown.replace(/\s+/g, ' ').trim()).toBe(chat.text.replace(/```\w*/g, '').replace(/\s+/g, ' ').trim());
  // Paragraphs as text with line breaks kept, and fenced code in a monospaced block.
  await expect(page.locator('.answer-text').first()).toHaveCSS('white-space', 'pre-wrap');
  // The list of my chats has it, and its line followed the answer without a reload.
  await expect(page.locator(`[data-testid="assistant-chats"] li[data-chat="${id}"]`)).toHaveAttribute('data-status', 'completed');
  await expect(page.locator(`[data-testid="assistant-chats"] li[data-chat="${id}"]`)).toContainText(`(completed, ${chat.lastEventId} tokens)`);
  await page.reload();
  await waitForHydration(page);
  await expect(page.locator(`[data-testid="assistant-chats"] li[data-chat="${id}"]`)).toHaveAttribute('data-status', 'completed');
});

test('Stop stops the answer: the server ends it as cancelled and keeps what arrived', async ({ page }) => {
  await signIn(page, uniqueName('aistop'));
  await page.goto('/assistant');
  await waitForHydration(page);
  const id = await ask(page, 'Tell me everything about WebSockets');
  const card = page.getByTestId('answer-card');
  await expect.poll(async () => Number(await card.getAttribute('data-last'))).toBeGreaterThan(2);
  await page.getByTestId('stop').click();
  await expect(card).toHaveAttribute('data-status', 'cancelled');
  await expect(page.getByTestId('answer-stats')).toHaveText(/ended: cancelled$/);
  const chat = await stored(page, id);
  expect(chat.status).toBe('cancelled');
  expect(chat.lastEventId).toBeGreaterThan(2);
  expect(chat.lastEventId).toBeLessThan(100);
  expect(Number(await card.getAttribute('data-last'))).toBe(chat.lastEventId);
  // It stays stopped: no more tokens are stored.
  await expect.poll(async () => (await stored(page, id)).lastEventId, { timeout: 2_000 }).toBe(chat.lastEventId);
});

test('a reload mid-answer shows the text so far from the server, then streams on with no gap or repeat', async ({ browser }) => {
  test.setTimeout(60_000);
  const context = await browser.newContext();
  const page = await context.newPage();
  await signIn(page, uniqueName('aireload'));
  await page.goto('/assistant');
  await waitForHydration(page);
  const id = await ask(page, 'Why relay AI tokens through the server?');
  const card = page.getByTestId('answer-card');
  await expect.poll(async () => Number(await card.getAttribute('data-last'))).toBeGreaterThan(5);

  // Without JavaScript: the server's HTML already holds the text so far.
  const noScript = await browser.newContext({ javaScriptEnabled: false, storageState: await context.storageState() });
  const plain = await noScript.newPage();
  await plain.goto(`/assistant?chat=${id}`);
  const rendered = Number(await plain.getByTestId('answer-card').getAttribute('data-last'));
  expect(rendered).toBeGreaterThan(5);
  expect((await plain.getByTestId('answer').innerText()).length).toBeGreaterThan(10);
  await noScript.close();

  await page.reload();
  const first = Number(await card.getAttribute('data-last'));
  await expect(card).toHaveAttribute('data-status', 'running');
  expect(first).toBeGreaterThan(5);
  await waitForHydration(page);
  await expect(card).toHaveAttribute('data-status', 'completed', { timeout: 40_000 });
  const chat = await stored(page, id);
  expect(Number(await card.getAttribute('data-last'))).toBe(chat.lastEventId);
  const shown = await page.getByTestId('answer').evaluate((el) =>
    Array.from(el.children).map((c) => c.textContent).join(''),
  );
  // No gap and no repeat: exactly the stored text (blocks split only at code fences).
  expect(shown.replace(/\s+/g, ' ').trim()).toBe(chat.text.replace(/```\w*/g, '').replace(/\s+/g, ' ').trim());
  await context.close();
});

test('a question with HTML in it is shown as text, and bad prompts get a sentence', async ({ page }) => {
  await signIn(page, uniqueName('aihtml'));
  await page.goto('/assistant');
  await waitForHydration(page);
  await ask(page, '<img src=x onerror="window.__pwned=1"><b>bold</b>');
  await expect(page.locator('.answer-card .prompt')).toContainText('<b>bold</b>');
  await expect(page.locator('.answer-card b')).toHaveCount(0);
  await expect(page.locator('.answer-card img')).toHaveCount(0);
  // The model repeats the question in its answer: as text there too.
  await expect(page.getByTestId('answer')).toContainText('<b>bold</b>');
  expect(await page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();

  await page.getByTestId('prompt').fill('   ');
  await page.getByRole('button', { name: 'Ask' }).click();
  await expect(page.getByTestId('ask-error')).toContainText(/empty|question/i);
});

test('signed out, the page says to sign in; the guide links to it from its SSE card', async ({ page }) => {
  await page.goto('/assistant');
  await expect(page.getByTestId('assistant-signin')).toBeVisible();
  await page.goto('/');
  await waitForHydration(page);
  await page.getByRole('link', { name: 'Ask the assistant (AI tokens)' }).click();
  await expect(page).toHaveURL(/\/assistant$/);
});
