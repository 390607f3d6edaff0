import { test, expect, type Page } from '@playwright/test';
import { signIn, uniqueName, waitForHydration } from './helpers';

// An admin of its own (TIDINGS_ADMINS in scripts/test.sh), so this spec and the auth spec
// never race for one account. scripts/test.sh seeds 3,000 rows (ids 1 to 3,000) before start.
const ADMIN = 'e2e_exporter';

const number = async (page: Page, testId: string) =>
  Number(await page.getByTestId(testId).textContent());

test('rows stream in, Stop ends the request, Resume continues with no gap or duplicate', async ({ page }) => {
  test.setTimeout(60_000);
  await signIn(page, ADMIN);
  await page.goto('/export');
  await waitForHydration(page);
  // The first 2,000 rows are seeded ones with ids 1 to 2,000, whatever else the log holds.
  await page.getByLabel('Limit').fill('2000');
  await page.getByLabel('Batch').fill('100');
  // 20 flushes 400 ms apart: long enough that Stop lands mid-stream even on a busy machine.
  await page.getByLabel('Delay (ms)').fill('400');
  await page.getByRole('button', { name: 'Start' }).click();

  const status = page.getByTestId('export-status');
  await expect(status).toHaveAttribute('data-status', 'streaming');
  await expect(page.getByTestId('rows-total')).toHaveText('2000');
  // Rows are on the page while the export is still running.
  await expect(page.getByTestId('export-row').first()).toBeVisible();
  await expect(status).toHaveAttribute('data-status', 'streaming');
  expect(await number(page, 'rows-received')).toBeGreaterThan(0);
  expect(await number(page, 'rows-received')).toBeLessThan(2000);

  await page.getByRole('button', { name: 'Stop' }).click();
  await expect(status).toHaveAttribute('data-status', 'stopped');
  const atStop = await number(page, 'rows-received');
  expect(atStop).toBeLessThan(2000);
  expect(await number(page, 'last-id')).toBe(atStop);
  // The server saw the disconnect: its EXPORT row says the client went away.
  await expect
    .poll(async () => {
      const res = await page.request.get(`/api/audit/export?action=EXPORT&user=${ADMIN}`);
      return (await res.text()).includes('"outcome":"client_gone"');
    })
    .toBe(true);
  expect(await number(page, 'rows-received')).toBe(atStop);

  await page.getByRole('button', { name: 'Resume' }).click();
  await expect(status).toHaveAttribute('data-status', 'complete', { timeout: 30_000 });
  // 2,000 strictly ascending ids ending at 2,000 (the viewer refuses any other order): 1 to
  // 2,000, each once.
  expect(await number(page, 'rows-received')).toBe(2000);
  expect(await number(page, 'last-id')).toBe(2000);
  await expect(page.getByTestId('resumes')).toHaveText('1');
  await expect(page.getByTestId('export-row').first().locator('td').first()).toHaveText('2000');
  await expect(page.getByTestId('export-progress')).toHaveAttribute('value', '100.0');
});

test('the download link gives the same export as a file', async ({ page }) => {
  await signIn(page, ADMIN);
  await page.goto('/export');
  await waitForHydration(page);
  await page.getByLabel('User').fill('user0007');
  await page.getByLabel('Download as').selectOption('csv');
  const link = page.getByTestId('download-link');
  await expect(link).toHaveAttribute('href', /format=csv/);
  const href = await link.getAttribute('href');
  expect(href).toContain('user=user0007');
  expect(href).toContain('download=true');
  const res = await page.request.get(href!);
  expect(res.status()).toBe(200);
  expect(res.headers()['content-type']).toBe('text/csv; charset=utf-8');
  expect(res.headers()['content-disposition']).toBe('attachment; filename="tidings-audit.csv"');
  const lines = (await res.text()).split('\r\n').filter((l) => l);
  expect(lines[0]).toBe('id,at,action,user,detail');
  expect(lines.length).toBe(7); // 3,000 rows over 500 users: 6 each.
  expect(lines.slice(1).every((l) => l.split(',')[3] === 'user0007')).toBe(true);
});

test('a bad filter shows the server’s sentence; a plain user is told first and refused by the server', async ({ page }) => {
  await signIn(page, ADMIN);
  await page.goto('/export');
  await waitForHydration(page);
  await page.getByLabel('User').fill('x'.repeat(65));
  await page.getByRole('button', { name: 'Start' }).click();
  const status = page.getByTestId('export-status');
  await expect(status).toHaveAttribute('data-status', 'failed');
  await expect(status).toContainText('`user` must be 1 to 64 characters');

  await page.request.post('/api/auth/logout');
  await signIn(page, uniqueName('plain'));
  await page.goto('/export');
  await waitForHydration(page);
  // Said before the form is filled, with Start off; the server refuses anyway.
  await expect(page.getByTestId('export-admins-only')).toContainText('Exports are for admins');
  await expect(page.getByRole('button', { name: 'Start' })).toBeDisabled();
  const refused = await page.request.get('/api/audit/export');
  expect(refused.status()).toBe(403);
  expect((await refused.json()).message).toBe('Only admins may export the audit log.');
});
