// Drives headless Chromium through rollcall's GraphiQL page (see run.sh, which starts the
// server and signs up the owner): the page must load with no console errors and no CSP
// violations, fetch nothing but from the server, load the schema, and run a query typed into
// its editor with the Authorization header typed into its Headers tab, showing the result,
// without writing the token to localStorage; its dialogs open within the page's policy.
//
// Environment: ROLLCALL_URL (the server's origin), ROLLCALL_TOKEN (an access token),
// ROLLCALL_USERNAME (whose token it is), SCREENSHOT (where to save the screenshot),
// CHROMIUM (the browser, by default /usr/bin/chromium).

import { chromium } from 'playwright-core';

const base = new URL(process.env.ROLLCALL_URL);
const token = process.env.ROLLCALL_TOKEN;
const username = process.env.ROLLCALL_USERNAME;
const screenshot = process.env.SCREENSHOT;
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const QUERY = '{ me { username role } }';
// What GraphiQL names the editors' state in its storage.
const QUERY_KEY = 'graphiql:';
const TIMEOUT = 30_000;

const problems = [];
const blocked = [];

// Playwright gives the browser a fresh profile each run; the flags keep Chromium's own traffic
// (updates, sync, QUIC probes) away.
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });

try {
  // The network is the server and nothing else: any other request is aborted and counted.
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.origin === base.origin) {
      return route.continue();
    }
    blocked.push(route.request().url());
    return route.abort('blockedbyclient');
  });
  // CSP violations also reach the console; this catches them even if their wording changes.
  await context.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (event) => {
      window.__cspViolations.push(`${event.violatedDirective} blocked ${event.blockedURI}`);
    });
  });

  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('console', (message) => {
    if (message.type() === 'error') {
      problems.push(`console error: ${message.text()}`);
    }
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('requestfailed', (request) => {
    if (new URL(request.url()).origin === base.origin) {
      problems.push(`request failed: ${request.url()} (${request.failure()?.errorText})`);
    }
  });
  page.on('response', (response) => {
    if (response.status() >= 400) {
      problems.push(`HTTP ${response.status()} for ${response.url()}`);
    }
  });

  // A normal navigation, as a person would make (Accept: text/html...).
  const response = await page.goto(new URL('/graphql', base).toString(), {
    waitUntil: 'load',
  });
  if (!response?.ok()) {
    throw new Error(`GET /graphql answered ${response?.status()}`);
  }
  if (!(response.headers()['content-security-policy'] ?? '').includes("script-src 'self'")) {
    throw new Error('the page came without its Content-Security-Policy');
  }

  const queryEditor = page.locator('.graphiql-query-editor .CodeMirror');
  await queryEditor.waitFor();
  // The schema loaded (through the introspection GraphiQL sends): the docs show its root type.
  await page.getByRole('button', { name: 'Show Documentation Explorer' }).click();
  await page.locator('.graphiql-doc-explorer').getByText('Query', { exact: true }).first().waitFor();

  // The Headers tab is open from the start; its editor gets the token.
  const headersEditor = page.locator('.graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror');
  await replaceText(page, headersEditor, `{"Authorization": "Bearer ${token}"}`);
  await replaceText(page, queryEditor, QUERY);

  await page.locator('.graphiql-execute-button').click();
  const result = page.locator('.graphiql-response .CodeMirror');
  await page.waitForFunction(
    ([name]) => {
      const text = document.querySelector('.graphiql-response .CodeMirror')?.CodeMirror?.getValue() ?? '';
      return text.includes(`"username": "${name}"`) && text.includes('"role": "OWNER"');
    },
    [username],
    { timeout: TIMEOUT },
  ).catch(async () => {
    throw new Error(`the result pane never showed the owner: ${await editorText(result)}`);
  });
  console.log(`graphiql: result pane shows\n${await editorText(result)}`);

  // Nothing of the session outlives the tab: GraphiQL keeps its editors and history (the
  // header with the token among them) in session storage, never in localStorage.
  const kept = await page.evaluate(() => JSON.stringify({ ...window.localStorage }));
  if (kept.includes(token)) {
    problems.push('the access token was written to localStorage');
  }
  const session = await page.evaluate(() => JSON.stringify({ ...window.sessionStorage }));
  if (!session.includes(QUERY_KEY) || !session.includes('username role')) {
    problems.push('GraphiQL did not keep the query it ran in session storage');
  }

  // Dialogs style themselves as they open, within the page's policy.
  for (const name of ['Open settings dialog', 'Open short keys dialog']) {
    await page.getByRole('button', { name }).click();
    await page.getByRole('dialog').waitFor();
    await page.keyboard.press('Escape');
    await page.getByRole('dialog').waitFor({ state: 'detached' });
  }

  const violations = await page.evaluate(() => window.__cspViolations);
  for (const violation of violations) {
    problems.push(`CSP violation: ${violation}`);
  }
  if (screenshot) {
    await page.screenshot({ path: screenshot });
    console.log('graphiql: screenshot saved');
  }
} catch (error) {
  problems.push(error.message);
} finally {
  await browser.close();
}

if (blocked.length > 0) {
  problems.push(`the page tried to reach ${blocked.length} URL(s) elsewhere: ${blocked.join(', ')}`);
}
if (problems.length > 0) {
  console.error(`graphiql: FAILED\n  ${problems.join('\n  ')}`);
  process.exit(1);
}
console.log('graphiql: passed (no console errors, no CSP violations, no request elsewhere)');

/** Clicks into a CodeMirror editor, selects everything, types `text`, and checks it took. */
async function replaceText(page, editor, text) {
  await editor.click();
  await page.keyboard.press('ControlOrMeta+A');
  await page.keyboard.press('Backspace');
  await page.keyboard.type(text);
  // Autocompletion popups are closed so they cannot swallow the next keystrokes.
  await page.keyboard.press('Escape');
  // Back to the start, so the screenshot shows where the text begins.
  await page.keyboard.press('ControlOrMeta+Home');
  const typed = await editorText(editor);
  // The editor closes brackets and quotes by itself; typing over them must leave the text.
  if (typed.replace(/\s+/g, ' ').trim() !== text) {
    throw new Error(`typed ${JSON.stringify(text)}, the editor holds ${JSON.stringify(typed)}`);
  }
}

/** The text of a CodeMirror 5 editor, from the instance CodeMirror hangs on its element. */
function editorText(editor) {
  return editor.evaluate((element) => element.CodeMirror.getValue());
}
