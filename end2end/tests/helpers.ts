import { expect, type Page } from '@playwright/test';

/** A username no other test (or earlier run on the same database) uses. */
export function uniqueName(prefix = 'u'): string {
  const stamp = Date.now().toString(36) + Math.random().toString(36).slice(2, 7);
  return `${prefix}_${stamp}`.slice(0, 32);
}

/** Waits until the WASM app has hydrated the server-rendered page. */
export async function waitForHydration(page: Page) {
  await expect(page.locator('body')).toHaveAttribute('data-hydrated', 'true');
}

/** Fills the signup or login form and submits it. */
export async function submitCredentials(page: Page, username: string, password: string) {
  const form = page.getByTestId('credentials-form');
  await form.getByLabel('Username').fill(username);
  await form.getByLabel('Password').fill(password);
  await form.getByRole('button').click();
}
