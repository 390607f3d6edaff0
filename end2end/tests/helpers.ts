import { expect, type Browser, type Page } from '@playwright/test';

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

/** The password the specs' accounts use. */
export const PASSWORD = 'correct horse battery';

/** The server's setup token (TIDINGS_SETUP_TOKEN in scripts/test.sh): names listed in
 * TIDINGS_ADMINS can only be signed up with it. */
export const SETUP_TOKEN = process.env.TIDINGS_SETUP_TOKEN ?? 'e2e-setup-token-0123456789';

/** A signup body: the setup token goes along, needed for the listed admins' names. */
export function signupBody(username: string, password = PASSWORD) {
  return { username, password, setupToken: SETUP_TOKEN };
}

/** Signs `page` in as `username` through the API (signed up if new); the page shares the
 * request context's cookies. */
export async function signIn(page: Page, username: string) {
  let signup = await page.request.post('/api/auth/signup', { data: signupBody(username) });
  // All password hashers busy: 503 with Retry-After, tried again as a well-behaved client does.
  for (let tries = 0; signup.status() === 503 && tries < 30; tries++) {
    await page.waitForTimeout(1000 * Number(signup.headers()['retry-after'] ?? '1'));
    signup = await page.request.post('/api/auth/signup', { data: signupBody(username) });
  }
  if (signup.status() === 409) {
    expect((await page.request.post('/api/auth/login', { data: { username, password: PASSWORD } })).status()).toBe(200);
  } else {
    expect(signup.status()).toBe(201);
  }
}

/** A new browser context signed in as `username` (created if new), on `path`, hydrated. */
export async function signedIn(browser: Browser, username: string, path: string): Promise<Page> {
  const context = await browser.newContext();
  const page = await context.newPage();
  await signIn(page, username);
  await page.goto(path);
  await waitForHydration(page);
  return page;
}
