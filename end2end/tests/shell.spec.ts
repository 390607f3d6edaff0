import { expect, test } from '@playwright/test';
import { waitForHydration } from './helpers';

test('the guide lists every pattern with when to use it', async ({ page }) => {
  await page.goto('/');
  await expect(page.getByRole('heading', { level: 1 })).toHaveText('Keep the browser up to date');
  const patterns = page.getByTestId('pattern');
  await expect(patterns).toHaveCount(5);
  for (const name of ['Polling', 'HTTP streaming', 'Server-Sent Events', 'WebSockets', 'Queues and background jobs']) {
    await expect(page.getByRole('heading', { level: 2, name })).toBeVisible();
  }
  await expect(patterns.first().getByText('Use it when')).toBeVisible();
  await expect(page.getByRole('link', { name: 'Sign in' })).toBeVisible();
  await waitForHydration(page);
});

test('the page fits a phone-width screen', async ({ page }) => {
  await page.setViewportSize({ width: 360, height: 740 });
  await page.goto('/');
  await waitForHydration(page);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  expect(overflow).toBeLessThanOrEqual(0);
  await expect(page.getByRole('link', { name: 'Sign up' })).toBeVisible();
});

test('an unknown page says so with a 404', async ({ page }) => {
  const res = await page.goto('/no-such-page');
  expect(res?.status()).toBe(404);
  await expect(page.getByRole('heading', { name: 'Page not found' })).toBeVisible();
});

test('health routes answer', async ({ request }) => {
  expect((await request.get('/healthz')).status()).toBe(200);
  expect((await request.get('/readyz')).status()).toBe(200);
});
