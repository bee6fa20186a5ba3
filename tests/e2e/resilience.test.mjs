// When things go wrong: the server dies and comes back, the network drops
// for a while, or WebSockets are refused. The page must say so, recover by
// itself, and lose or repeat nothing.

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import {
  WAIT_MS,
  join,
  say,
  startProxy,
  startServer,
  suffix,
  useServerAndBrowser,
  waitForMessage,
  waitForText,
} from './harness.mjs';

describe('resilience', () => {
  // Each test starts (and kills) servers of its own.
  const lab = useServerAndBrowser({ servers: {} });

  const RESTARTS = [
    {
      log: 'an in-memory log',
      args: () => [],
      // A new epoch: the page says the server restarted, and the old chat is gone.
      notice: 'server restarted',
      keepsHistory: false,
    },
    {
      log: 'a durable journal (--data-dir)',
      args: (dir) => ['--data-dir', dir],
      // Same epoch, same log, but sessions lived in memory.
      notice: 'no longer knew',
      keepsHistory: true,
    },
  ];

  for (const restart of RESTARTS) {
    test(`after a server with ${restart.log} is killed and restarted on the same port, every transport reconnects and chats`, async () => {
      const dataDir = await mkdtemp(path.join(os.tmpdir(), 'pushlab-e2e-'));
      const args = ['--presence-timeout', '30', ...restart.args(dataDir)];
      let server = await startServer({ args });
      const id = suffix();
      const transports = ['ws', 'sse', 'longpoll', 'poll'];
      const pages = {};
      try {
        for (const transport of transports) {
          pages[transport] = await join(lab.browser, server.url, { name: `${transport}-${id}`, transport });
        }
        await say(pages.ws, 'before the crash');
        for (const page of Object.values(pages)) await waitForMessage(page, 'before the crash');

        await server.stop('SIGKILL');
        for (const page of Object.values(pages)) await waitForText(page, '#status', 'reconnecting');
        server = await startServer({ port: server.port, args });

        for (const page of Object.values(pages)) {
          await waitForText(page, '#status', 'connected', 30_000);
          // The server has never heard of our session: the page rejoined
          // under the same name, reloaded the chat, and says why.
          await page.locator('#notices').filter({ hasText: restart.notice }).waitFor({ timeout: WAIT_MS });
          const before = await page.locator('#messages li', { hasText: 'before the crash' }).count();
          assert.equal(before, restart.keepsHistory ? 1 : 0);
        }

        await say(pages.ws, 'after the restart, from ws');
        await say(pages.poll, 'after the restart, from poll');
        for (const page of Object.values(pages)) {
          await waitForMessage(page, 'after the restart, from ws');
          await waitForMessage(page, 'after the restart, from poll');
        }
        for (const transport of transports) {
          assert.deepEqual(pages[transport].errors, [], `${transport} page errors`);
        }
      } finally {
        for (const page of Object.values(pages)) await page.context().close();
        await server.stop();
        await rm(dataDir, { recursive: true, force: true });
      }
    });
  }

  for (const transport of ['longpoll', 'sse', 'ws', 'poll']) {
    test(`${transport}: events sent while the connection is cut arrive once each, in order, after it returns`, async () => {
      const server = await startServer();
      const network = await startProxy(server.port);
      try {
        const id = suffix();
        const reader = await join(lab.browser, network.url, { name: `reader-${id}`, transport });
        const writer = await join(lab.browser, server.url, { name: `writer-${id}`, transport: 'ws' });
        await say(writer, 'while online');
        await waitForMessage(reader, 'while online');

        network.cut();
        await waitForText(reader, '#status', 'reconnecting');
        const missed = ['missed one', 'missed two', 'missed three'];
        for (const text of missed) {
          await say(writer, text);
          await waitForMessage(writer, text);
        }
        network.restore();
        await waitForText(reader, '#status', 'connected');
        await waitForMessage(reader, missed.at(-1));

        const seen = await reader.locator('#messages li').allTextContents();
        assert.deepEqual(seen.filter((text) => text.startsWith('missed')), missed);
        const seqs = await reader.locator('#messages li').evaluateAll((items) => items.map((li) => Number(li.dataset.seq)));
        assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), 'messages are in log order');
        assert.equal(new Set(seqs).size, seqs.length, 'no message is shown twice');
        assert.deepEqual(reader.errors, []);
        await reader.context().close();
        await writer.context().close();
      } finally {
        await network.close();
        await server.stop();
      }
    });
  }

  for (const transport of ['sse', 'poll', 'ws', 'longpoll']) {
    test(`${transport}: when the events it missed are gone from the server, the page reloads the room and says so`, async () => {
      // The server keeps only the last 5 events (chat history is kept apart).
      const server = await startServer({ args: ['--presence-timeout', '30', '--history', '5'] });
      const network = await startProxy(server.port);
      try {
        const id = suffix();
        const reader = await join(lab.browser, network.url, { name: `reader-${id}`, transport });
        const writer = await join(lab.browser, server.url, { name: `writer-${id}`, transport: 'ws' });
        network.cut();
        await waitForText(reader, '#status', 'reconnecting');
        const missed = Array.from({ length: 8 }, (_, i) => `missed ${i + 1}`);
        for (const text of missed) {
          await say(writer, text);
          await waitForMessage(writer, text);
        }
        network.restore();
        await reader.locator('#notices').filter({ hasText: 'no longer on the server' }).waitFor({ timeout: WAIT_MS });
        await waitForText(reader, '#status', 'connected');
        // The fresh welcome's history has every line, each once.
        for (const text of missed) await waitForMessage(reader, text);
        const seen = (await reader.locator('#messages li').allTextContents()).filter((text) => text.startsWith('missed'));
        assert.deepEqual(seen, missed);
        // And the room works again, both ways.
        await say(reader, 'back in the room');
        await waitForMessage(writer, 'back in the room');
        assert.deepEqual(reader.errors, []);
        await reader.context().close();
        await writer.context().close();
      } finally {
        await network.close();
        await server.stop();
      }
    });
  }

  // Every WebSocket the page opens is answered by Playwright instead of the
  // server: a proxy or firewall that does not let upgrades through.
  const REFUSALS = [
    { how: 'is closed at once', handle: (socket) => socket.close() },
    // Accepted, then nothing: no hello ever comes, so auto gives up after 3 s.
    { how: 'opens but stays silent', handle: () => {} },
  ];

  for (const refusal of REFUSALS) {
    test(`auto falls back to long polling when the WebSocket ${refusal.how}, and still chats`, async () => {
      const server = await startServer();
      try {
        const id = suffix();
        const context = await lab.browser.newContext({ viewport: { width: 1280, height: 860 } });
        const page = await context.newPage();
        page.errors = [];
        page.on('pageerror', (err) => page.errors.push(err.message));
        let refused = 0;
        await page.routeWebSocket(/\/ws/, (socket) => {
          refused += 1;
          refusal.handle(socket);
        });
        await page.goto(`${server.url}/?transport=auto`);
        await page.fill('#name', `fallback-${id}`);
        await page.press('#name', 'Enter');
        await waitForText(page, '#transport', 'longpoll');
        await waitForText(page, '#status', 'connected');
        assert.ok(refused >= 1, 'the page should have tried a WebSocket first');
        await page.locator('#transport-note').filter({ hasText: 'fell back' }).waitFor({ timeout: WAIT_MS });

        const other = await join(lab.browser, server.url, { name: `other-${id}`, transport: 'ws' });
        await say(page, 'sent over long polling');
        await waitForMessage(other, 'sent over long polling');
        await say(other, 'received over long polling');
        await waitForMessage(page, 'received over long polling');
        assert.equal(refused, 1, 'once fallen back, the page stays on long polling');
        assert.deepEqual(page.errors, []);
        await context.close();
        await other.context().close();
      } finally {
        await server.stop();
      }
    });
  }
});
