// The compare page as a class sees it: exact bytes both ways from the
// server's count, the publish-rate scenarios, and the simulated delay
// against what the theory predicts.
//
// The bytes are checked against Chromium's own view of the wire, taken over
// the DevTools protocol: the request heads it really sent (every header,
// cookies and Sec-Fetch-* included) and each answer's encodedDataLength.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { WAIT_MS, useServerAndBrowser } from './harness.mjs';

/** How close the page's figure (the server's count) must be to Chromium's: 5%. */
const BYTES_TOLERANCE = 0.05;
/** The one-way delay the delayed server simulates, in ms. */
const DELAY_MS = 100;
/**
 * How far the long-poll's median latency may be from the theory's ½ RTT
 * (= the one-way delay) plus what the same page measured without delay:
 * scheduling on a shared 2-core machine, timers and rendering.
 */
const LATENCY_TOLERANCE_MS = 40;

/** Opens the compare page with the DevTools network log recording /longpoll. */
async function openCompare(browser, url, query = '') {
  const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
  page.errors = [];
  page.on('pageerror', (err) => page.errors.push(err.message));
  const cdp = await page.context().newCDPSession(page);
  // The events of one request may come in any order: join them at the end.
  const sent = new Map();
  const heads = new Map();
  const finished = new Map();
  cdp.on('Network.requestWillBeSent', ({ requestId, request }) => {
    const target = new URL(request.url);
    if (target.pathname === '/longpoll') sent.set(requestId, { target, method: request.method });
  });
  cdp.on('Network.requestWillBeSentExtraInfo', ({ requestId, headers }) => heads.set(requestId, headers));
  cdp.on('Network.loadingFinished', ({ requestId, encodedDataLength }) => finished.set(requestId, encodedDataLength));
  /** The HTTP/1.1 head as sent: request line, each header, blank line. */
  const headSize = ({ target, method }, headers) => {
    const line = `${method} ${target.pathname}${target.search} HTTP/1.1\r\n`;
    const fields = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('');
    return Buffer.byteLength(`${line}${fields}\r\n`);
  };
  await cdp.send('Network.enable');
  await page.goto(`${url}/compare.html${query}`);
  page.wire = () => {
    const requests = [...sent].filter(([id]) => heads.has(id));
    return {
      requests: requests.length,
      up: requests.reduce((sum, [id, request]) => sum + headSize(request, heads.get(id)), 0),
      down: requests.reduce((sum, [id]) => sum + (finished.get(id) ?? 0), 0),
    };
  };
  return page;
}

async function setRate(page, rate) {
  await page.selectOption('#bot-rate', String(rate));
}

/** The exact-cost row of `transport`: its cells by data-figure, and its raw counts. */
function trafficRow(page, transport) {
  return page.locator(`#traffic tbody tr[data-transport="${transport}"]`).evaluate((row) => ({
    cells: Object.fromEntries([...row.cells].map((cell) => [cell.dataset.figure, cell.textContent])),
    counts: { ...row.dataset },
  }));
}

/** Waits until the pane of `transport` has delivered at least `events`. */
async function waitForEvents(page, transport, events) {
  await page.waitForFunction(
    ([transport, events]) => {
      const value = document.querySelector(`.pane[data-transport="${transport}"] [data-figure="events"] .figure-value`);
      return value && parseInt(value.textContent, 10) >= events;
    },
    [transport, events],
    { timeout: 30_000, polling: 100 },
  );
}

/** The theory table's long-poll row, once it has a measured p50. */
async function theoryRow(page, transport) {
  await page.waitForFunction(
    (transport) => /\d/.test(document.querySelector(`#theory tr[data-transport="${transport}"] [data-figure="p50"]`)?.textContent ?? ''),
    transport,
    { timeout: WAIT_MS },
  );
  return page.locator(`#theory tr[data-transport="${transport}"]`).evaluate((row) => ({
    predicted: Number(row.dataset.predicted),
    p50: parseFloat(row.querySelector('[data-figure="p50"]').textContent),
  }));
}

describe('the compare page in class', () => {
  const lab = useServerAndBrowser({
    servers: { server: {}, delayed: { args: ['--presence-timeout', '30', '--delay-ms', String(DELAY_MS)] } },
  });
  let loopbackLongPollP50;

  test("the page's long-poll bytes are the server's exact count, request heads included", async (t) => {
    // Arrange: events at 1/s, then idle, so that nothing is in flight.
    const page = await openCompare(lab.browser, lab.server.url);
    await setRate(page, 1);
    await waitForEvents(page, 'longpoll', 8);
    loopbackLongPollP50 = (await theoryRow(page, 'longpoll')).p50;
    const perEvent = (await trafficRow(page, 'longpoll')).cells;
    await setRate(page, 0);
    await page.waitForTimeout(2500);

    // Act: the page's figures after its next refresh, and Chromium's.
    await page.waitForFunction(() => Date.now() > 0, null, { polling: 1100, timeout: WAIT_MS });
    await page.waitForTimeout(1200);
    const { counts } = await trafficRow(page, 'longpoll');
    const wire = page.wire();

    // Assert: requests, bytes up and bytes down agree within 5%.
    const close = (name, shown, seen) =>
      assert.ok(Math.abs(shown - seen) <= BYTES_TOLERANCE * seen, `${name}: the page shows ${shown}, Chromium saw ${seen}`);
    t.diagnostic(`page (server count): ${JSON.stringify(counts)}; Chromium: ${JSON.stringify(wire)}; per event at 1/s: ${JSON.stringify(perEvent)}`);
    close('requests', Number(counts.totalRequests), wire.requests);
    close('bytes up', Number(counts.totalBytesIn), wire.up);
    close('bytes down', Number(counts.totalBytesOut), wire.down);
    // A browser's request head is hundreds of bytes, and it is counted.
    assert.ok(parseFloat(perEvent['up-per-event']) > 300, `up per event ${perEvent['up-per-event']}`);
    assert.ok(parseFloat(perEvent['down-per-event']) > 150, `down per event ${perEvent['down-per-event']}`);
    assert.deepEqual(page.errors, []);
    await page.close();
  });

  test('idle, short polling keeps making requests while no event arrives', async (t) => {
    // Arrange
    const page = await openCompare(lab.browser, lab.server.url);
    await page.waitForSelector('#traffic tbody tr[data-transport="poll"][data-total-requests]', { timeout: WAIT_MS });
    await page.waitForTimeout(6000);

    // Act
    const first = await trafficRow(page, 'poll');
    await page.waitForTimeout(3000);
    const later = await trafficRow(page, 'poll');
    const longpoll = await trafficRow(page, 'longpoll');

    // Assert
    t.diagnostic(`idle: poll ${JSON.stringify(later.cells)}; longpoll ${JSON.stringify(longpoll.cells)}`);
    assert.equal(later.cells['events-per-second'], '0.0');
    assert.ok(Number(later.counts.totalRequests) >= Number(first.counts.totalRequests) + 2, 'poll requests keep coming');
    assert.ok(parseFloat(later.cells['requests-per-second']) >= 0.7, `poll requests/s ${later.cells['requests-per-second']}`);
    assert.ok(parseFloat(later.cells['down-per-second']) > 100, `poll down/s ${later.cells['down-per-second']}`);
    assert.ok(parseFloat(longpoll.cells['requests-per-second']) < 0.3, `long-poll requests/s ${longpoll.cells['requests-per-second']}`);
    // The page's own WebRTC pane joins the room once as it starts, so at most
    // that one event is counted: requests per event only grow while idle.
    const perEvent = (row) => (row.cells['requests-per-event'] === '–' ? Infinity : parseFloat(row.cells['requests-per-event']));
    assert.ok(
      perEvent(later) === Infinity || perEvent(later) > perEvent(first),
      `requests per event ${first.cells['requests-per-event']} then ${later.cells['requests-per-event']}`,
    );
    await page.close();
  });

  test('with 100 ms each way, long-poll latency moves by what the theory predicts', async (t) => {
    // Arrange
    const page = await openCompare(lab.browser, lab.delayed.url);
    await page.waitForFunction(() => /Clock offset corrected/.test(document.querySelector('#clock-note')?.textContent ?? ''), null, { timeout: WAIT_MS });

    // Act: events at 1/s, each while a long-poll is held.
    await setRate(page, 1);
    await waitForEvents(page, 'longpoll', 8);
    const row = await theoryRow(page, 'longpoll');

    // Assert: the prediction is ½ RTT, about the one-way delay, and the
    // median moved from the loopback one by about that much.
    assert.ok(Math.abs(row.predicted - DELAY_MS) <= LATENCY_TOLERANCE_MS, `predicted ${row.predicted} ms`);
    const moved = row.p50 - loopbackLongPollP50;
    t.diagnostic(`long-poll p50 ${row.p50} ms with ${DELAY_MS} ms each way, ${loopbackLongPollP50} ms on loopback; predicted ${row.predicted} ms`);
    assert.ok(
      Math.abs(moved - DELAY_MS) <= LATENCY_TOLERANCE_MS,
      `long-poll p50 ${row.p50} ms with the delay, ${loopbackLongPollP50} ms without: moved ${moved} ms, theory ${DELAY_MS} ms ± ${LATENCY_TOLERANCE_MS}`,
    );
    const note = await page.locator('#theory-note').textContent();
    assert.match(note, /100 ms each way/);
    assert.deepEqual(page.errors, []);
    await page.close();
  });
});
