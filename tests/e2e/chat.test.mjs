// The chat page in front of a class: its bytes per event are the server's
// exact count, a line typed while the WebSocket still opens is sent, and on
// a phone every control of the top bar is on the screen and works, the
// lecture notes among them.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { WAIT_MS, eventually, join, openPage, suffix, useServerAndBrowser, waitForMessage } from './harness.mjs';

/** The chat page's transports, in its switcher. */
const SWITCHER = ['auto', 'poll', 'longpoll', 'sse', 'ws', 'webtransport', 'webrtc'];

/** The page's figure `id`, as text. */
function figure(page, id) {
  return page.locator(`#figures [data-figure="${id}"] .figure-value`).textContent();
}

/** Whether the page scrolls sideways, and how wide it is against the screen. */
function sideways(page) {
  return page.evaluate(() => ({
    scrollWidth: document.scrollingElement.scrollWidth,
    innerWidth: window.innerWidth,
  }));
}

describe('the chat page', () => {
  const lab = useServerAndBrowser();

  test("bytes per event are the server's count of this page's reads, down and both ways", async () => {
    // Arrange: a reader on long polling, whose reads name a client id.
    const clients = new Set();
    const reader = await openPage(lab.browser, lab.server.url, { transport: 'longpoll' });
    reader.on('request', (request) => {
      const url = new URL(request.url());
      if (url.pathname === '/longpoll') clients.add(url.searchParams.get('client'));
    });
    await reader.fill('#name', `reader${suffix()}`);
    await reader.press('#name', 'Enter');
    const writer = await join(lab.browser, lab.server.url, { name: `writer${suffix()}`, transport: 'sse' });

    // Act: a few lines, each read by the reader.
    for (let i = 0; i < 5; i += 1) {
      const text = `line ${i}`;
      await writer.fill('#text', text);
      await writer.press('#text', 'Enter');
      await waitForMessage(reader, text);
    }

    // Assert: every read named one client, and the figure is what the
    // server counted for it, divided by the events the page received.
    const [client] = clients;
    assert.ok(clients.size === 1 && /^chat-[a-z0-9]+$/.test(client ?? ''), `the reads should name one client, named ${[...clients]}`);
    await eventually(async () => {
      const shown = await figure(reader, 'bytes');
      const events = parseInt(await figure(reader, 'events'), 10);
      const counted = await (await fetch(`${lab.server.url}/traffic?client=${client}`)).json();
      const { bytes_in: bytesIn, bytes_out: bytesOut } = counted.longpoll;
      const expected = `${Math.round(bytesOut / events)} B down · ${Math.round((bytesIn + bytesOut) / events)} B both ways`;
      return shown === expected;
    }, "the page's bytes per event match GET /traffic for its client");
    await reader.context().close();
    await writer.context().close();
  });

  test('on ws a line sent while the socket is still opening is held and sent, not failed', async () => {
    // Arrange: a page on ws that submits a line in the same moment the send
    // form appears, before its socket can have opened.
    const page = await openPage(lab.browser, lab.server.url, { transport: 'ws' });
    const sentWhile = page.evaluate(
      () =>
        new Promise((resolve) => {
          const form = document.querySelector('#send');
          const observer = new MutationObserver(() => {
            if (form.hidden) return;
            observer.disconnect();
            // Any line ever marked failed is remembered, even if retried.
            new MutationObserver(() => {
              if (document.querySelector('#messages li.failed')) window.__everFailed = true;
            }).observe(document.querySelector('#messages'), { subtree: true, attributes: true, childList: true });
            document.querySelector('#text').value = 'typed at once';
            form.requestSubmit();
            resolve(document.querySelector('#status').textContent);
          });
          observer.observe(form, { attributes: true, attributeFilter: ['hidden'] });
        }),
    );

    // Act
    await page.fill('#name', `quick${suffix()}`);
    await page.press('#name', 'Enter');

    // Assert: it was sent while connecting, and came back from the server.
    assert.equal(await sentWhile, 'connecting');
    await waitForMessage(page, 'typed at once');
    assert.equal(await page.evaluate(() => window.__everFailed ?? false), false);
    assert.equal(await page.locator('#messages .retry').count(), 0);
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });

  test('on a phone (390×844) the top bar fits, nothing scrolls sideways, and every control works', async () => {
    // Arrange
    const context = await lab.browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    const page = await context.newPage();
    await page.goto(`${lab.server.url}/?transport=ws`);
    const within = async (locator) => {
      const box = await locator.boundingBox();
      return box !== null && box.x >= 0 && box.x + box.width <= 390 && box.y >= 0;
    };

    // Assert: before joining, every control of the bar is on the screen and takes a click.
    let width = await sideways(page);
    assert.ok(width.scrollWidth <= width.innerWidth, `the page scrolls sideways: ${JSON.stringify(width)}`);
    const controls = [
      ...SWITCHER.map((name) => page.locator('#switcher a', { hasText: new RegExp(`^${name}$`) })),
      page.locator('#room summary'),
      page.locator('.topbar-link', { hasText: 'Lecture notes' }),
      page.locator('#compare-link'),
    ];
    for (const control of controls) {
      assert.ok(await within(control), `${control} should be on the screen`);
      await control.click({ trial: true, timeout: WAIT_MS });
    }

    // The room picker opens inside the screen.
    await page.locator('#room summary').click();
    const panel = page.locator('.rooms-panel');
    await panel.waitFor({ timeout: WAIT_MS });
    assert.ok(await within(panel), 'the room picker should open on the screen');
    await page.locator('#room summary').click();

    // Joined, with the figures filled, nothing scrolls sideways either.
    await page.fill('#name', `phone${suffix()}`);
    await page.press('#name', 'Enter');
    await page.locator('#status', { hasText: /^connected$/ }).waitFor({ timeout: WAIT_MS });
    width = await sideways(page);
    assert.ok(width.scrollWidth <= width.innerWidth, `the joined page scrolls sideways: ${JSON.stringify(width)}`);

    // The webrtc tab is reached with a tap, and so are the lecture notes, rendered.
    await page.locator('#switcher a', { hasText: /^webrtc$/ }).tap();
    await page.waitForURL(/transport=webrtc/, { timeout: WAIT_MS });
    await page.locator('.topbar-link', { hasText: 'Lecture notes' }).tap();
    await page.waitForURL(/\/lecture\.html$/, { timeout: WAIT_MS });
    assert.equal(await page.locator('main.notes h1').textContent(), 'Server push, walked through with pushlab');
    width = await sideways(page);
    assert.ok(width.scrollWidth <= width.innerWidth, `the lecture notes scroll sideways: ${JSON.stringify(width)}`);
    await context.close();
  });
});
