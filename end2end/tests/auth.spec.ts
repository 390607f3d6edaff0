import { expect, test } from '@playwright/test';
import { SETUP_TOKEN, submitCredentials, uniqueName, waitForHydration } from './helpers';

const PASSWORD = 'correct horse battery';

test.describe('with JavaScript (hydrated)', () => {
  test('sign up, log out, log in, with errors shown inline', async ({ page }) => {
    const name = uniqueName('js');
    await page.goto('/signup');
    await waitForHydration(page);
    await submitCredentials(page, name, PASSWORD);
    await expect(page).toHaveURL('/');
    await expect(page.getByTestId('current-user')).toHaveText(name);

    await page.getByRole('button', { name: 'Log out' }).click();
    await expect(page.getByRole('link', { name: 'Sign in' })).toBeVisible();
    await expect(page.getByTestId('current-user')).toHaveCount(0);

    await page.goto('/login');
    await waitForHydration(page);
    await submitCredentials(page, name, 'wrong password');
    await expect(page.getByRole('alert')).toHaveText('Wrong username or password.');
    // Answered by fetch: the page did not navigate to the plain-form error URL.
    await expect(page).toHaveURL('/login');

    await submitCredentials(page, name, PASSWORD);
    await expect(page).toHaveURL('/');
    await expect(page.getByTestId('current-user')).toHaveText(name);

    // The session is a real cookie: a fresh load still knows the user.
    await page.reload();
    await expect(page.getByTestId('current-user')).toHaveText(name);
  });

  test('signup refuses a taken name and a short password', async ({ page, request }) => {
    const name = uniqueName('taken');
    expect((await request.post('/api/auth/signup', { data: { username: name, password: PASSWORD } })).status()).toBe(201);
    await page.goto('/signup');
    await waitForHydration(page);
    await submitCredentials(page, name, PASSWORD);
    await expect(page.getByRole('alert')).toHaveText('That username is taken; choose another.');
    await expect(page).toHaveURL('/signup');

    // The browser's own minlength check would stop a short password; take it away to see
    // that the server refuses it too, with its sentence shown inline.
    await page.getByLabel('Password').evaluate((el) => el.removeAttribute('minlength'));
    await submitCredentials(page, uniqueName('short'), '1234567');
    await expect(page.getByRole('alert')).toHaveText('Passwords need at least 8 characters.');
  });

  test('a listed admin name needs the setup token; the admin sees the badge, a plain user does not', async ({ page }) => {
    await page.goto('/signup');
    await waitForHydration(page);
    // Without the token the name is refused, and the page says where the token comes from.
    await submitCredentials(page, 'e2e_admin', PASSWORD);
    await expect(page.getByRole('alert')).toContainText('reserved for an administrator');
    await expect(page.getByRole('alert')).toContainText('tidings users add e2e_admin --admin');
    await expect(page).toHaveURL('/signup');
    await expect(page.getByTestId('current-user')).toHaveCount(0);
    // A wrong token is refused too.
    await page.getByText('Setting up an admin account?').click();
    await page.getByLabel('Setup token').fill('not-the-token-at-all');
    await submitCredentials(page, 'e2e_admin', PASSWORD);
    await expect(page.getByRole('alert')).toContainText('not the right one');
    // With it, the account is created as an admin.
    await page.getByLabel('Setup token').fill(SETUP_TOKEN);
    await submitCredentials(page, 'e2e_admin', PASSWORD);
    await expect(page.getByTestId('current-user')).toHaveText('e2e_admin');
    await expect(page.locator('.badge')).toHaveText('admin');

    await page.getByRole('button', { name: 'Log out' }).click();
    await expect(page.getByRole('link', { name: 'Sign in' })).toBeVisible();
    await page.goto('/signup');
    await waitForHydration(page);
    const name = uniqueName('plain');
    await submitCredentials(page, name, PASSWORD);
    await expect(page.getByTestId('current-user')).toHaveText(name);
    await expect(page.locator('.badge')).toHaveCount(0);
  });
});

test.describe('without JavaScript (plain forms)', () => {
  test.use({ javaScriptEnabled: false });

  test('sign up, log out, log in, with errors from the server', async ({ page }) => {
    const name = uniqueName('nojs');
    await page.goto('/signup');
    await submitCredentials(page, name, PASSWORD);
    await expect(page).toHaveURL('/');
    await expect(page.getByTestId('current-user')).toHaveText(name);

    await page.getByRole('button', { name: 'Log out' }).click();
    await expect(page).toHaveURL('/');
    await expect(page.getByRole('link', { name: 'Sign in' })).toBeVisible();

    await page.goto('/login');
    await submitCredentials(page, name, 'wrong password');
    await expect(page).toHaveURL(/\/login\?error=bad_credentials/);
    await expect(page.getByRole('alert')).toHaveText('Wrong username or password.');
    await expect(page.getByLabel('Username')).toHaveValue(name);

    await submitCredentials(page, name, PASSWORD);
    await expect(page).toHaveURL('/');
    await expect(page.getByTestId('current-user')).toHaveText(name);
  });

  test('a listed admin name without the setup token comes back refused', async ({ page }) => {
    await page.goto('/signup');
    await submitCredentials(page, 'e2e_watcher', PASSWORD);
    await expect(page).toHaveURL(/\/signup\?error=reserved_username/);
    await expect(page.getByRole('alert')).toContainText('reserved for an administrator');
  });

  test('a bad username comes back with the rule', async ({ page }) => {
    await page.goto('/signup');
    await submitCredentials(page, 'Not Valid!', PASSWORD);
    await expect(page).toHaveURL(/\/signup\?error=invalid_username/);
    await expect(page.getByRole('alert')).toContainText('lower-case letters');
  });
});
