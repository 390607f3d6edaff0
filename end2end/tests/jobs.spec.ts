import { test, expect, type Page, type APIRequestContext } from '@playwright/test';
import { signIn, uniqueName, waitForHydration } from './helpers';

const PASSWORD = 'correct horse battery';

async function signUp(request: APIRequestContext, username: string) {
  const res = await request.post('/api/auth/signup', { data: { username, password: PASSWORD } });
  expect(res.status()).toBe(201);
}

/** The ids in the page's event log, in order. */
async function loggedIds(page: Page): Promise<number[]> {
  const ids = await page.getByTestId('job-event').evaluateAll((items) =>
    items.map((li) => Number(li.getAttribute('data-id'))),
  );
  return ids;
}

function expectContiguous(ids: number[]) {
  expect(ids.length).toBeGreaterThan(0);
  ids.forEach((id, i) => expect(id).toBe(ids[0] + i));
}

test('a demo job started from the page fills its bar over SSE, with every event once', async ({ page }) => {
  await signUp(page.request, uniqueName('jobs'));
  await page.goto('/jobs');
  await waitForHydration(page);
  const form = page.getByTestId('job-form');
  await form.getByLabel('Steps', { exact: true }).fill('12');
  await form.getByLabel('Step time (ms)').fill('150');
  await form.getByLabel('Warn at steps').fill('3');
  await form.getByRole('button', { name: 'Start a demo job' }).click();

  await expect(page).toHaveURL(/\/jobs\?job=\d+$/);
  const status = page.getByTestId('job-status');
  await expect(status).toHaveAttribute('data-status', 'running');
  await expect(page.getByTestId('job-link')).toHaveText('open');
  // The bar moves while the job runs.
  await expect.poll(async () => Number(await page.getByTestId('job-progress').getAttribute('value'))).toBeGreaterThan(0);
  await expect(status).toHaveAttribute('data-status', 'completed', { timeout: 20_000 });
  await expect(page.getByTestId('job-percent')).toHaveText('100 %');
  await expect(page.getByTestId('job-step')).toHaveText('12 of 12');
  await expect(page.getByTestId('job-link')).toHaveText('finished');
  const ids = await loggedIds(page);
  expectContiguous(ids);
  expect(ids[0]).toBe(1);
  // started, 12 progress, 1 warning, complete.
  expect(ids.length).toBe(15);
  await expect(page.locator('[data-testid="job-event"][data-event="warning"]')).toHaveCount(1);
  expect(Number(await page.getByTestId('job-connections').textContent())).toBeGreaterThanOrEqual(1);
});

test('the first render comes from the server, and the live stream continues after it', async ({ browser }) => {
  const context = await browser.newContext();
  const user = uniqueName('ssr');
  await signUp(context.request, user);
  const created = await context.request.post('/api/jobs', {
    data: { kind: 'demo', steps: 30, stepMs: 150, warnAt: [], failAt: null },
  });
  expect(created.status()).toBe(201);
  const { id } = await created.json();
  // Some events are stored before the page is opened.
  await expect
    .poll(async () => (await (await context.request.get(`/api/jobs/${id}`)).json()).lastEventId)
    .toBeGreaterThan(3);

  // Without JavaScript: the server's HTML already shows the bar and the events so far.
  const cookies = await context.storageState();
  const noScript = await browser.newContext({ javaScriptEnabled: false, storageState: cookies });
  const plain = await noScript.newPage();
  await plain.goto(`/jobs?job=${id}`);
  await expect(plain.getByTestId('job-status')).toHaveAttribute('data-status', 'running');
  const rendered = Number(await plain.getByTestId('job-last-id').textContent());
  expect(rendered).toBeGreaterThan(3);
  expectContiguous(await loggedIds(plain));
  await noScript.close();

  // With JavaScript: the same render, then the stream carries on from its last id.
  const page = await context.newPage();
  await page.goto(`/jobs?job=${id}`);
  await waitForHydration(page);
  await expect(page.getByTestId('job-status')).toHaveAttribute('data-status', 'completed', { timeout: 20_000 });
  const ids = await loggedIds(page);
  expectContiguous(ids);
  expect(ids[ids.length - 1]).toBe(32);
  await context.close();
});

// scripts/test.sh runs the server with TIDINGS_SSE_MAX_SECS=3: every event stream is cut after
// 3 s, and the browser reconnects (after the documented `retry: 3000`) with Last-Event-ID.
test('a dropped connection reconnects by itself and resumes with no gap', async ({ page }) => {
  test.setTimeout(60_000);
  await signUp(page.request, uniqueName('drop'));
  const created = await page.request.post('/api/jobs', {
    data: { kind: 'demo', steps: 40, stepMs: 250 },
  });
  const { id } = await created.json();
  await page.goto(`/jobs?job=${id}`);
  await waitForHydration(page);
  await expect(page.getByTestId('job-link')).toHaveText('open');
  await expect
    .poll(async () => Number(await page.getByTestId('job-connections').textContent()), { timeout: 20_000 })
    .toBeGreaterThanOrEqual(2);
  await expect(page.getByTestId('job-status')).toHaveAttribute('data-status', 'completed', { timeout: 30_000 });
  expect(Number(await page.getByTestId('job-connections').textContent())).toBeGreaterThanOrEqual(2);
  const ids = await loggedIds(page);
  expectContiguous(ids);
  expect(ids[ids.length - 1]).toBe(42);
});

test('the same job can be watched by polling, with the requests counted', async ({ page }) => {
  await signUp(page.request, uniqueName('poll'));
  const created = await page.request.post('/api/jobs', {
    data: { kind: 'demo', steps: 10, stepMs: 400 },
  });
  const { id } = await created.json();
  await page.goto(`/jobs?job=${id}`);
  await waitForHydration(page);
  await page.getByTestId('mode-polling').check();
  await expect(page.getByTestId('job-link')).toHaveText(/polling|finished/);
  await expect(page.getByTestId('job-status')).toHaveAttribute('data-status', 'completed', { timeout: 20_000 });
  const polls = await page.getByTestId('job-polls').textContent();
  const [, total, unchanged] = polls!.match(/^(\d+) \((\d+) unchanged/)!;
  expect(Number(total)).toBeGreaterThan(1);
  expect(Number(unchanged)).toBeGreaterThanOrEqual(0);
  await expect(page.getByTestId('job-percent')).toHaveText('100 %');
});

test('cancel stops a running job', async ({ page }) => {
  await signUp(page.request, uniqueName('cancel'));
  const created = await page.request.post('/api/jobs', {
    data: { kind: 'demo', steps: 100, stepMs: 200 },
  });
  const { id } = await created.json();
  await page.goto(`/jobs?job=${id}`);
  await waitForHydration(page);
  await expect(page.getByTestId('job-link')).toHaveText('open');
  await page.getByTestId('job-cancel').click();
  await expect(page.getByTestId('job-status')).toHaveAttribute('data-status', 'cancelled');
  await expect(page.locator('[data-testid="job-event"][data-event="cancelled"]')).toHaveCount(1);
});

test('signed out, the page asks to sign in', async ({ page }) => {
  await page.goto('/jobs');
  await expect(page.getByTestId('jobs-signin')).toBeVisible();
});

test('an admin imports the server\'s own export and watches it on the bar', async ({ page }) => {
  // An admin (TIDINGS_ADMINS in scripts/test.sh); the export spec uses the same account.
  await signIn(page, 'e2e_exporter');
  await page.goto('/jobs');
  await waitForHydration(page);
  const form = page.getByTestId('import-form');
  const source = form.getByLabel('Import from an NDJSON export');
  await expect(source).toHaveValue(/\/api\/audit\/export$/);
  await source.fill((await source.inputValue()) + '?limit=1500');
  await form.getByRole('button', { name: 'Start an import' }).click();
  await expect(page).toHaveURL(/\/jobs\?job=\d+$/);
  await expect(page.getByTestId('job-status')).toHaveAttribute('data-status', 'completed', { timeout: 20_000 });
  // The rows are this server's own: all already present, none lost or doubled.
  await expect(page.getByTestId('job-status')).toContainText('Imported 1500 rows: 0 new');
  await expect(page.getByTestId('job-percent')).toHaveText('100 %');
});
