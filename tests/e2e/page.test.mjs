// The page's own rules: names are checked before and by the server, other
// people's text is never run as HTML, bad query parameters are announced,
// and your own message is pending until the server echoes it back.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  WAIT_MS,
  join,
  openPage,
  say,
  suffix,
  useServerAndBrowser,
  waitForCursorAt,
  waitForMessage,
  waitForText,
} from './harness.mjs';

describe('the chat page', () => {
  const lab = useServerAndBrowser();

  test('a name someone online already has is refused next to the field', async () => {
    const name = `Ada${suffix()}`;
    const first = await join(lab.browser, lab.server.url, { name, transport: 'sse' });
    const second = await openPage(lab.browser, lab.server.url, { transport: 'poll' });
    // Names compare without case on the server.
    await second.fill('#name', name.toUpperCase());
    await second.press('#name', 'Enter');
    await second.locator('#name-error').filter({ hasText: 'taken' }).waitFor({ timeout: WAIT_MS });
    assert.equal(await second.locator('#join').isVisible(), true);
    assert.equal(await second.locator('#send').isVisible(), false);
    assert.notEqual((await second.locator('#status').textContent()).trim(), 'connected');
    await first.context().close();
    await second.context().close();
  });

  test('a name that breaks the rules is refused before anything is sent', async () => {
    const page = await openPage(lab.browser, lab.server.url);
    const registrations = [];
    page.on('request', (request) => {
      if (new URL(request.url()).pathname === '/register') registrations.push(request);
    });
    await page.fill('#name', '9lives');
    await page.press('#name', 'Enter');
    await page.locator('#name-error').filter({ hasText: 'not allowed' }).waitFor({ timeout: WAIT_MS });
    assert.equal(registrations.length, 0);
    assert.equal(await page.locator('#name').getAttribute('aria-invalid'), 'true');
    await page.context().close();
  });

  test('a message that looks like HTML is shown as text and runs nothing', async () => {
    const id = suffix();
    const sender = await join(lab.browser, lab.server.url, { name: `mallory-${id}`, transport: 'ws' });
    const reader = await join(lab.browser, lab.server.url, { name: `reader-${id}`, transport: 'longpoll' });
    const attack = `<img src=x onerror="window.__pwned = (window.__pwned || 0) + 1"><script>window.__pwned = 1</script>`;
    await say(sender, attack);
    await waitForMessage(reader, attack);
    await waitForMessage(sender, attack);
    for (const page of [sender, reader]) {
      // The li's whole text is the string, and no element was made from it.
      const texts = await page.locator('#messages li').allTextContents();
      assert.ok(texts.includes(attack), `the attack should be shown as text, got ${JSON.stringify(texts)}`);
      assert.equal(await page.locator('#messages img, #messages script').count(), 0);
      // A broken image's onerror runs asynchronously. As a control, make one
      // on purpose now and wait for its handler: had the attack's image
      // existed, its handler would have run by then too.
      await page.evaluate(() => {
        const control = document.createElement('div');
        control.innerHTML = '<img src="/no-such-image" onerror="window.__control = true">';
        document.body.append(control);
      });
      await page.waitForFunction(() => window.__control === true, null, { timeout: WAIT_MS });
      assert.equal(await page.evaluate(() => window.__pwned), undefined);
    }
    await sender.context().close();
    await reader.context().close();
  });

  test('an unknown transport or interval in the query string is announced and the default used', async () => {
    const page = await openPage(lab.browser, lab.server.url, { transport: 'carrier-pigeon', interval: 'soon' });
    await page.locator('#notices').filter({ hasText: '"carrier-pigeon" is not a transport' }).waitFor({ timeout: WAIT_MS });
    await page.locator('#notices').filter({ hasText: 'interval=soon' }).waitFor({ timeout: WAIT_MS });
    await page.fill('#name', `pigeon-${suffix()}`);
    await page.press('#name', 'Enter');
    await waitForText(page, '#status', 'connected');
    // The default, auto, reaches a WebSocket on this server.
    await waitForText(page, '#transport', 'ws');
    await page.context().close();
  });

  test('?name= pre-fills the form and the switcher keeps it', async () => {
    const page = await openPage(lab.browser, lab.server.url, { name: 'grace', transport: 'sse' });
    assert.equal(await page.locator('#name').inputValue(), 'grace');
    assert.equal(await page.locator('#switcher a[aria-current="page"]').textContent(), 'sse');
    await page.locator('#switcher a', { hasText: 'longpoll' }).click();
    await page.waitForURL((url) => url.searchParams.get('transport') === 'longpoll');
    assert.equal(new URL(page.url()).searchParams.get('name'), 'grace');
    assert.equal(await page.locator('#name').inputValue(), 'grace');
    await page.context().close();
  });

  test('pointer moves go out at most about 30 times a second, the last position always included', async () => {
    const id = suffix();
    const watcher = await join(lab.browser, lab.server.url, { name: `watcher-${id}`, transport: 'sse' });
    const mover = await openPage(lab.browser, lab.server.url, { transport: 'ws' });
    // Count the mousemove frames the page writes on its socket.
    const sent = [];
    mover.on('websocket', (socket) =>
      socket.on('framesent', (frame) => {
        if (String(frame.payload).includes('"mousemove"')) sent.push(Date.now());
      }),
    );
    await mover.fill('#name', `mover-${id}`);
    await mover.press('#name', 'Enter');
    await waitForText(mover, '#status', 'connected');

    // 120 pointer events, as fast as Chromium takes them, left to right.
    const box = await mover.locator('#canvas').boundingBox();
    await mover.mouse.move(box.x + box.width * 0.1, box.y + box.height * 0.5);
    const started = Date.now();
    await mover.mouse.move(box.x + box.width * 0.9, box.y + box.height * 0.5, { steps: 120 });
    const elapsed = Date.now() - started;
    // The latest position always goes out, so the watcher sees the end point.
    await waitForCursorAt(watcher, `mover-${id}`, 0.9, 0.5);

    // One move per 33 ms window, plus the first and the trailing one.
    const allowed = Math.ceil(elapsed / 33) + 2;
    assert.ok(sent.length >= 2, `some moves should be sent, got ${sent.length}`);
    assert.ok(sent.length <= allowed, `${sent.length} moves in ${elapsed} ms; at most ${allowed} allowed at ~30/s`);
    assert.ok(sent.length < 120, 'moves are coalesced, not one per pointer event');
    await mover.context().close();
    await watcher.context().close();
  });

  test('your message is pending until the server echoes it, and a failed send can be retried', async () => {
    const page = await join(lab.browser, lab.server.url, { name: `hopper-${suffix()}`, transport: 'longpoll' });
    // Hold the first POST /send, then fail it, as a dropped network would.
    let release;
    const held = new Promise((resolve) => {
      release = resolve;
    });
    await page.route('**/send?*', async (route) => {
      await held;
      await route.abort('connectionreset');
    });
    await say(page, 'first try');
    const pending = page.locator('#messages li.pending', { hasText: 'first try' });
    await pending.waitFor({ timeout: WAIT_MS });
    assert.equal(await pending.getAttribute('data-seq'), null);

    release();
    const failed = page.locator('#messages li.failed', { hasText: 'first try' });
    await failed.waitFor({ timeout: WAIT_MS });

    await page.unroute('**/send?*');
    await failed.locator('.retry').click();
    const seq = await waitForMessage(page, 'first try');
    assert.ok(seq > 0);
    assert.equal(await page.locator('#messages li.pending, #messages li.failed').count(), 0);
    assert.deepEqual(page.errors, []);
    await page.context().close();
  });
});
