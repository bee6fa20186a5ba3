// The six-connection story, both ways, in one browser (one profile, so one
// connection pool, as a student's tabs share it). Over plain HTTP/1.1 each
// SSE page holds one of the six connections Chromium allows a host, so the
// seventh page waits, not even loaded, until a tab closes. Over `--tls`,
// Chromium speaks HTTP/2 and every page's stream shares one connection, so
// all eight stream. The certificate is pushlab's own, self-signed: the
// context is told to accept it, as a student clicks through the warning.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { enterName, eventually, readStats, say, useServerAndBrowser, waitForMessage, waitForText, WAIT_MS } from './harness.mjs';

/** Chromium's limit of HTTP/1.1 connections to one host. */
const PER_HOST = 6;
const PAGES = 8;

describe('eight SSE pages in one browser', () => {
  const lab = useServerAndBrowser({
    servers: {
      plain: {},
      secure: { args: ['--presence-timeout', '30', '--tls'] },
    },
  });

  /** Opens the chat page on SSE in `context` and joins as `name`. */
  async function joinOnSse(context, url, name) {
    const page = await context.newPage();
    await page.goto(`${url}/?transport=sse`);
    await enterName(page, name);
    return page;
  }

  /** How many SSE streams `page` sees open on its server, asked from the page itself. */
  function openStreams(page) {
    return page.evaluate(async () => (await (await fetch('/stats')).json()).transports.sse.open);
  }

  test('over HTTP/1.1 the seventh waits for a connection until a tab closes', async () => {
    const url = lab.plain.url;
    const context = await lab.browser.newContext();
    try {
      // Arrange: six pages, each holding its stream's connection.
      const pages = [];
      for (let i = 0; i < PER_HOST; i += 1) pages.push(await joinOnSse(context, url, `tab${i}`));
      assert.equal((await readStats(lab.plain)).transports.sse.open, PER_HOST);

      // Act: two more pages, whose very loading needs a connection.
      const late = [];
      for (let i = PER_HOST; i < PAGES; i += 1) {
        const entry = { page: await context.newPage(), settled: false };
        entry.loaded = entry.page.goto(`${url}/?transport=sse`, { timeout: WAIT_MS }).then(() => true);
        const settle = () => { entry.settled = true; };
        entry.loaded.then(settle, settle);
        late.push(entry);
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));

      // Assert: still waiting after a second; the server never heard of them.
      assert.deepEqual(late.map((l) => l.settled), [false, false], 'the seventh and eighth wait');
      assert.equal((await readStats(lab.plain)).transports.sse.open, PER_HOST);

      // Closing two tabs frees two connections, and the waiting pages load and stream.
      await pages[0].close();
      await pages[1].close();
      for (const [i, { page, loaded }] of late.entries()) {
        assert.equal(await loaded, true);
        await enterName(page, `late${i}`);
      }
      await eventually(
        async () => (await readStats(lab.plain)).transports.sse.open === PER_HOST,
        'six streams again, two of them the late pages',
      );
    } finally {
      await context.close();
    }
  });

  test('over HTTP/2 all eight stream on one connection, and a wss page chats with them', async () => {
    const url = lab.secure.url;
    assert.match(url, /^https:/);
    // As a student who accepted pushlab's self-signed certificate.
    const context = await lab.browser.newContext({ ignoreHTTPSErrors: true });
    try {
      // Act
      const pages = [];
      for (let i = 0; i < PAGES; i += 1) pages.push(await joinOnSse(context, url, `tab${i}`));

      // Assert: every page streams, over HTTP/2.
      assert.equal(await openStreams(pages[PAGES - 1]), PAGES);
      for (const page of pages) {
        const protocol = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
        assert.equal(protocol, 'h2');
        assert.equal(await page.locator('#status').textContent(), 'connected');
      }

      // A WebSocket page of the same browser beside them: wss, on a
      // connection of its own, chatting with the SSE pages both ways.
      const socket = await context.newPage();
      await socket.goto(`${url}/?transport=ws`);
      await enterName(socket, 'socket');
      await waitForText(socket, '#transport', 'ws');
      await say(socket, 'over wss');
      assert.equal(await waitForMessage(pages[0], 'over wss'), await waitForMessage(socket, 'over wss'));
      await say(pages[PAGES - 1], 'over h2');
      await waitForMessage(socket, 'over h2');
    } finally {
      await context.close();
    }
  });
});
