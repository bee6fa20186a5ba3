// A WebTransport page across a server restart: pushlab's self-signed
// certificate is made anew at every start, so the hash the page pinned no
// longer fits. Before it reconnects the page must ask GET /config again and
// pin the new one (as it must, behind a proxy, to reach the node that
// answered: --wt-host); with the old hash every session would be refused.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { join, launchBrowser, readStats, say, startServer, suffix, waitForMessage, waitForText, WAIT_MS } from './harness.mjs';

/** Readers reconnect with capped backoff (up to 5 s) and register again. */
const RECOVERY_MS = 30_000;

const ARGS = ['--presence-timeout', '30', '--webtransport'];

describe('WebTransport across a restart', () => {
  test('a page on webtransport pins the new certificate and chats again', async () => {
    const browser = await launchBrowser({ quic: true });
    let server = await startServer({ args: ARGS });
    try {
      // Arrange
      const id = suffix();
      const page = await join(browser, server.url, { name: `wt-${id}`, transport: 'webtransport' });
      await waitForText(page, '#transport', 'webtransport');
      const before = await page.evaluate(async () => (await (await fetch('/config')).json()).webtransport.certificate_hash);

      // Act: the same port, a new process, a new certificate.
      const { port } = server;
      await server.stop();
      server = await startServer({ port, args: ARGS });
      const after = await page.evaluate(async () => (await (await fetch('/config')).json()).webtransport.certificate_hash);
      assert.notEqual(after, before, 'a new start makes a new certificate');

      // Assert: the page is back on WebTransport and chats.
      await page.waitForFunction(
        async () => (await (await fetch('/stats')).json()).transports.webtransport.open >= 1,
        null,
        { timeout: RECOVERY_MS, polling: 250 },
      );
      await waitForText(page, '#status', 'connected', RECOVERY_MS);
      await waitForText(page, '#transport', 'webtransport');
      await say(page, `back over webtransport ${id}`);
      await waitForMessage(page, `back over webtransport ${id}`, WAIT_MS);
      assert.ok((await readStats(server)).transports.webtransport.open >= 1);
      assert.deepEqual(page.errors, []);
      await page.context().close();
    } finally {
      await browser.close();
      await server.stop();
    }
  });
});
