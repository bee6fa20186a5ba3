// WebTransport in Chromium: a page on ?transport=webtransport chats and
// follows cursors with a page on a WebSocket, and the compare page gets a
// WebTransport pane, over a real HTTP/3 session to
// pushlab's self-signed certificate (trusted by the hash GET /config gives,
// from a page on http://127.0.0.1, a secure context); `auto` takes
// WebTransport where the server offers it; and a session that fails (here,
// the page is told a certificate hash that is not the server's, so the QUIC
// handshake is refused) falls back to the WebSocket.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  enterName,
  join,
  moveMouseTo,
  say,
  suffix,
  useServerAndBrowser,
  waitForCursorAt,
  waitForMessage,
  waitForText,
  WAIT_MS,
} from './harness.mjs';

/** A dot must vanish well before the 30 s presence timeout: only a clean close is that fast. */
const LEAVE_SEEN_WITHIN_MS = 5000;

describe('WebTransport', () => {
  const lab = useServerAndBrowser({
    servers: { server: { args: ['--presence-timeout', '30', '--webtransport'] } },
    browser: { quic: true },
  });

  test('a page on webtransport and a page on ws chat both ways and follow each other\'s cursor', async () => {
    const id = suffix();
    const ann = `ann-wt-${id}`;
    const bob = `bob-ws-${id}`;
    const annPage = await join(lab.browser, lab.server.url, { name: ann, transport: 'webtransport' });
    const bobPage = await join(lab.browser, lab.server.url, { name: bob, transport: 'ws' });
    await waitForText(annPage, '#transport', 'webtransport');

    const fromAnn = `hello bob, ${ann} over QUIC`;
    await say(annPage, fromAnn);
    const seqAtBob = await waitForMessage(bobPage, fromAnn);
    assert.equal(await waitForMessage(annPage, fromAnn), seqAtBob);
    const fromBob = `hi ann, ${bob} over a WebSocket`;
    await say(bobPage, fromBob);
    assert.equal(await waitForMessage(annPage, fromBob), await waitForMessage(bobPage, fromBob));

    // Ann's moves go as datagrams, and Bob's come to her as datagrams.
    await moveMouseTo(annPage, 0.25, 0.3);
    await waitForCursorAt(bobPage, ann, 0.25, 0.3);
    await moveMouseTo(annPage, 0.7, 0.8);
    await waitForCursorAt(bobPage, ann, 0.7, 0.8);
    await moveMouseTo(bobPage, 0.6, 0.2);
    await waitForCursorAt(annPage, bob, 0.6, 0.2);
    await moveMouseTo(bobPage, 0.15, 0.65);
    await waitForCursorAt(annPage, bob, 0.15, 0.65);

    // Ann's traffic went over WebTransport: the server counted her session.
    const stats = await (await fetch(`${lab.server.url}/stats`)).json();
    assert.ok(stats.transports.webtransport.requests >= 1, JSON.stringify(stats.transports));

    // Ann closes her tab: the session closes cleanly and her dot leaves at once.
    await annPage.close();
    await bobPage.locator(`#canvas .cursor[data-name="${ann}"]`).waitFor({ state: 'detached', timeout: LEAVE_SEEN_WITHIN_MS });
    assert.deepEqual(annPage.errors, []);
    assert.deepEqual(bobPage.errors, []);
    await bobPage.close();
  });

  test('auto takes WebTransport where the server offers it', async () => {
    const page = await join(lab.browser, lab.server.url, { name: `auto-${suffix()}`, transport: 'auto' });
    await waitForText(page, '#transport', 'webtransport');
    assert.deepEqual(page.errors, []);
    await page.close();
  });

  test('the compare page has a WebTransport pane that follows the bot beside the others', async () => {
    const page = await lab.browser.newPage({ viewport: { width: 1440, height: 1000 } });
    page.errors = [];
    page.on('pageerror', (err) => page.errors.push(err.message));
    await page.goto(`${lab.server.url}/compare.html`);
    await page.click('#bot-toggle');
    for (const transport of ['ws', 'webtransport']) {
      const pane = page.locator(`.pane[data-transport="${transport}"]`);
      await pane.locator('.cursor[data-name^="bot-"]').waitFor({ timeout: WAIT_MS });
    }
    // The bot's moves reach the pane as datagrams, and count as its events.
    await page.waitForFunction(
      () => parseInt(document.querySelector('.pane[data-transport="webtransport"] [data-figure="events"] .figure-value')?.textContent ?? '0', 10) >= 20,
      null,
      { timeout: WAIT_MS, polling: 100 },
    );
    await page.locator('#stats tbody tr', { hasText: 'webtransport' }).waitFor({ timeout: WAIT_MS });
    assert.deepEqual(page.errors, []);
    await page.close();
  });

  test('a WebTransport session that fails falls back to the WebSocket, and the page still chats', async () => {
    const id = suffix();
    const context = await lab.browser.newContext({ viewport: { width: 1280, height: 860 } });
    const page = await context.newPage();
    page.errors = [];
    page.on('pageerror', (err) => page.errors.push(err.message));
    // The page is told a hash that is not the certificate's: Chromium
    // refuses the server's certificate and the session never opens.
    await page.route('**/config', async (route) => {
      const response = await route.fetch();
      const config = await response.json();
      assert.ok(config.webtransport?.certificate_hash, 'the server offers WebTransport');
      config.webtransport.certificate_hash = '00'.repeat(32);
      await route.fulfill({ response, json: config });
    });
    await page.goto(`${lab.server.url}/?transport=auto`);
    await enterName(page, `fallback-${id}`);
    await waitForText(page, '#transport', 'ws');
    await page.locator('#transport-note').filter({ hasText: 'fell back to the WebSocket' }).waitFor({ timeout: WAIT_MS });

    const other = await join(lab.browser, lab.server.url, { name: `other-${id}`, transport: 'webtransport' });
    await say(page, 'sent after falling back');
    await waitForMessage(other, 'sent after falling back');
    await say(other, 'received over WebTransport');
    await waitForMessage(page, 'received over WebTransport');
    assert.deepEqual(page.errors, []);
    assert.deepEqual(other.errors, []);
    await context.close();
    await other.context().close();
  });
});
