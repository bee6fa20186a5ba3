// The compare page's HTTP/1.1 against HTTP/2 card: under `--tls` with
// `--http1-addr`, the page sends the same poll to its own HTTPS origin
// (HTTP/2) and to the plain HTTP/1.1 listener, and shows each request's
// bytes as the server counted them. HPACK must show: after the first
// request, HTTP/2 sends a fraction of HTTP/1.1's request bytes. The
// figures must be the server's own: the card's totals equal GET /traffic,
// asked here of the plain listener (the same server), not of the page.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { WAIT_MS, useServerAndBrowser } from './harness.mjs';

/** The requests the card sends each way. */
const REQUESTS = 6;

describe('the HTTP/1.1 against HTTP/2 card', () => {
  const lab = useServerAndBrowser({
    servers: {
      secure: { args: ['--presence-timeout', '30', '--tls', '--http1-addr', '127.0.0.1:0'] },
      plain: {},
    },
  });

  /** Opens the compare page of `url` in a context of its own, as a student who accepted the certificate. */
  async function openCompare(url) {
    const context = await lab.browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 860 } });
    const page = await context.newPage();
    page.errors = [];
    page.on('pageerror', (err) => page.errors.push(err.message));
    await page.goto(`${url}/compare.html`);
    return page;
  }

  /** The card's figures: per request number (and 'all'), each side's up and down, in bytes. */
  function readCard(page) {
    return page.locator('#protocols tbody tr').evaluateAll((rows) =>
      Object.fromEntries(
        rows.map((row) => {
          const figure = (name) => Number(row.querySelector(`[data-figure="${name}"]`).dataset.bytes);
          return [row.dataset.request, {
            http1: { up: figure('http1-up'), down: figure('http1-down') },
            http2: { up: figure('http2-up'), down: figure('http2-down') },
          }];
        }),
      ),
    );
  }

  test('shows HTTP/2 requests a fraction of HTTP/1.1 requests, as GET /traffic counted them', async () => {
    // Arrange: the plain listener's port, as the page learns it.
    const url = lab.secure.url;
    assert.match(url, /^https:/);
    const page = await openCompare(url);
    try {
      await page.locator('#protocols[data-state="ready"]').waitFor({ timeout: WAIT_MS });
      const { http1 } = await page.evaluate(async () => (await fetch('/config')).json());
      const plain = `http://127.0.0.1:${http1.port}`;

      // Act
      await page.click('#protocols-run');
      await page.waitForFunction(
        () => ['done', 'failed'].includes(document.querySelector('#protocols').dataset.state),
        null,
        { timeout: WAIT_MS },
      );

      // Assert: it measured, over HTTP/2 on the page's side.
      const summary = await page.locator('#protocols-summary').textContent();
      assert.equal(await page.locator('#protocols').getAttribute('data-state'), 'done', summary);
      const protocol = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
      assert.equal(protocol, 'h2');
      const card = await readCard(page);
      assert.deepEqual(Object.keys(card), [...Array.from({ length: REQUESTS }, (_, i) => String(i + 1)), 'all']);

      // HPACK: every request after the first sends well under a quarter of
      // HTTP/1.1's bytes up; the first, on a new connection, the headers in full.
      for (let i = 2; i <= REQUESTS; i += 1) {
        const { http1: one, http2: two } = card[String(i)];
        assert.ok(one.up > 300, `HTTP/1.1 request ${i} sent its head as text: ${one.up} B`);
        assert.ok(two.up * 4 < one.up, `HTTP/2 request ${i}: ${two.up} B up, against ${one.up} B over HTTP/1.1`);
      }
      assert.ok(card['1'].http2.up > 2 * card['2'].http2.up, `the first HTTP/2 request (${card['1'].http2.up} B) carries the headers in full`);

      // The figures are the server's: each side's totals are what GET
      // /traffic reports for its client, asked of the plain listener.
      for (const side of ['http1', 'http2']) {
        const client = await page.locator('#protocols').getAttribute(`data-client-${side}`);
        const traffic = await (await fetch(`${plain}/traffic?client=${client}`)).json();
        assert.equal(traffic.poll.requests, REQUESTS, side);
        assert.equal(card.all[side].up, traffic.poll.bytes_in, `${side} up`);
        assert.equal(card.all[side].down, traffic.poll.bytes_out, `${side} down`);
        const sum = (key) => Array.from({ length: REQUESTS }, (_, i) => card[String(i + 1)][side][key]).reduce((a, b) => a + b);
        assert.equal(sum('up'), card.all[side].up);
        assert.equal(sum('down'), card.all[side].down);
      }
      console.log(`measured: HTTP/1.1 ${card['2'].http1.up} B up, ${card['2'].http1.down} B down; HTTP/2 first ${card['1'].http2.up} B up, later ${card['2'].http2.up} B up, ${card['2'].http2.down} B down`);
      assert.deepEqual(page.errors, []);
    } finally {
      await page.context().close();
    }
  });

  test('without --tls it says how to see it', async () => {
    const page = await openCompare(lab.plain.url);
    try {
      await page.locator('#protocols[data-state="unavailable"]').waitFor({ timeout: WAIT_MS });
      assert.match(await page.locator('#protocols-note').textContent(), /--tls --http1-addr/);
      assert.equal(await page.locator('#protocols-run').isDisabled(), true);
      assert.deepEqual(page.errors, []);
    } finally {
      await page.context().close();
    }
  });
});
