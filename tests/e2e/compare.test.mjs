// The compare page: four anonymous observers of one log, a demo bot made
// in the page, a summary table, and the server's own counters. The test
// leaves a screenshot in artifacts/compare.png (npm run screenshot updates
// the committed docs/compare.png).
//
// Then the page as a lecturer uses it, started as docs/lecture.md says
// (`--demo --delay-ms 100`): every publish rate is the rate really
// published, the exact-cost table tells the lecture's story, and every
// table fits a projector's 1280×720, a large screen and a phone.

import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import { COMPARE_TRANSPORTS, WAIT_MS, openCompareWithBot, readSummary, useServerAndBrowser } from './harness.mjs';

/** docs/lecture.md's command, but on 127.0.0.1 and a free port. */
const LECTURE_ARGS = ['--presence-timeout', '30', '--delay-ms', '100', '--demo'];
/** How far the measured publish rate may be from the selected one. */
const RATE_TOLERANCE = 0.05;
/** The window the page measures the publish rate over, in ms (PUBLISH_WINDOW_MS in ui/classroom.js). */
const PUBLISH_WINDOW_MS = 5000;
/**
 * How many bytes a row's exact bytes down per event may exceed the frames'
 * own size (header + JSON, or SSE's id/data lines), as this page's reader
 * saw them: the server's pings and SSE's heartbeats and chunk framing.
 */
const FRAMING_SLACK = { ws: 4, sse: 12 };

/** Opens the compare page at a viewport size, recording uncaught errors. */
async function openCompare(browser, url, viewport) {
  const page = await browser.newPage({ viewport });
  page.errors = [];
  page.on('pageerror', (err) => page.errors.push(err.message));
  await page.goto(`${url}/compare.html`);
  return page;
}

/** Selects `rate` and waits until the page has measured a whole window of it. */
async function publishAt(page, rate) {
  await page.selectOption('#bot-rate', String(rate));
  await page.waitForFunction((rate) => document.querySelector('#bot-state').textContent.includes(rate === 0 ? 'idle' : `at ${rate}/s`), rate, { timeout: WAIT_MS });
  const since = Date.now();
  await page.waitForFunction(
    ([since, window]) => Date.now() - since > window + 1500 && document.querySelector('#bot-state').dataset.measured !== '',
    [since, PUBLISH_WINDOW_MS],
    { timeout: WAIT_MS, polling: 250 },
  );
  return Number(await page.locator('#bot-state').getAttribute('data-measured'));
}

/** Whether the document or any table is wider than what shows it. */
function overflow(page) {
  return page.evaluate(() => ({
    page: { scrollWidth: document.scrollingElement.scrollWidth, innerWidth },
    tables: [...document.querySelectorAll('table')]
      .map((table) => ({ id: table.id, width: table.scrollWidth, room: table.parentElement.clientWidth }))
      .filter(({ width, room }) => width > room),
  }));
}

/** The exact-cost rows: per transport, events and bytes both ways since the rate was set, and the shown cells. */
function exactCost(page) {
  return page.locator('#traffic tbody tr').evaluateAll((rows) => Object.fromEntries(rows.map((row) => [row.dataset.transport, {
    events: Number(row.dataset.events),
    bytesIn: Number(row.dataset.bytesIn),
    bytesOut: Number(row.dataset.bytesOut),
    connections: Number(row.dataset.totalRequests),
    cells: Object.fromEntries([...row.cells].map((cell) => [cell.dataset.figure, cell.textContent])),
  }])));
}

const ARTIFACTS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'artifacts');

describe('the compare page', () => {
  const lab = useServerAndBrowser();

  test('four observers see the bot on every transport, measured side by side', async () => {
    const page = await openCompareWithBot(lab.browser, lab.server.url);
    // Every refusal the page gets, such as a leave sent after the session ended.
    const refused = [];
    page.on('response', (response) => {
      if (response.status() >= 400) refused.push(`${response.status()} ${response.request().method()} ${new URL(response.url()).pathname}`);
    });

    // Every pane is connected and drew the bot's dot.
    for (const transport of COMPARE_TRANSPORTS) {
      const pane = page.locator(`.pane[data-transport="${transport}"]`);
      assert.equal((await pane.locator('.status').textContent()).trim(), 'connected');
    }

    // The summary has a measured row per transport, and the numbers tell
    // the story: a short poll waits for its interval, a socket does not,
    // and streams need no request per event.
    await page.waitForFunction(
      () => [...document.querySelectorAll('#summary tbody tr')].filter((row) => /\d+ ms/.test(row.cells[2].textContent)).length === 4,
      null,
      { timeout: WAIT_MS },
    );
    const summary = await readSummary(page);
    assert.deepEqual(Object.keys(summary), COMPARE_TRANSPORTS);
    assert.ok(summary.poll.p50 > summary.ws.p50, `poll p50 ${summary.poll.p50} ms should exceed ws p50 ${summary.ws.p50} ms`);
    assert.ok(summary.longpoll.requestsPerEvent > summary.sse.requestsPerEvent);
    for (const transport of COMPARE_TRANSPORTS) assert.ok(summary[transport].bytesPerEvent > 0, `${transport} bytes/event`);

    // The server's own counters are shown too.
    await page.waitForFunction(
      () => Number(document.querySelector('#stats tbody tr[data-transport="ws"]')?.cells[1].textContent) >= 1,
      null,
      { timeout: WAIT_MS },
    );

    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, 'compare.png'), fullPage: true });

    // Stopping the bot ends its session: its dot leaves every pane, and by
    // then all four observers have applied the very same events.
    await page.click('#bot-toggle');
    for (const transport of COMPARE_TRANSPORTS) {
      await page.locator(`.pane[data-transport="${transport}"] .cursor`).waitFor({ state: 'detached', timeout: WAIT_MS });
    }
    // The table refreshes once a second; wait for a refresh that agrees.
    const counts = () =>
      page.locator('#summary tbody tr').evaluateAll((rows) => rows.map((row) => Number(row.cells[1].textContent)));
    await page
      .waitForFunction(
        () => {
          const counts = [...document.querySelectorAll('#summary tbody tr')].map((row) => row.cells[1].textContent);
          return counts.length === 4 && counts.every((count) => count === counts[0]);
        },
        null,
        { timeout: WAIT_MS },
      )
      .catch(async (err) => {
        throw new Error(`every pane should have applied the same events, got ${await counts()}`, { cause: err });
      });
    // The bot's socket closed cleanly, which ended its session: nothing
    // said leave again to be refused.
    assert.deepEqual(refused, []);
    // The bot and the WebRTC pane are observers: nobody is online.
    await page.waitForFunction(() => / 0 online /.test(document.querySelector('#stats-note').textContent), null, { timeout: WAIT_MS });
    assert.deepEqual(page.errors, []);
    await page.close();
  });
});

describe('the compare page in front of a class, started as the lecture says', () => {
  const lab = useServerAndBrowser({ servers: { server: { args: LECTURE_ARGS } } });

  test('at 1280×720, every publish rate is the rate published, the socket rows cost framing + JSON, and nothing scrolls sideways', async (t) => {
    const page = await openCompare(lab.browser, lab.server.url, { width: 1280, height: 720 });
    // The server's --demo bot is what publishes in the lobby.
    await page.locator('#bot-state[data-publisher="server"]').waitFor({ timeout: WAIT_MS });

    for (const rate of [1, 20, 50, 0]) {
      const measured = await publishAt(page, rate);
      const cost = await exactCost(page);
      t.diagnostic(`measured: at ${rate}/s the page measured ${measured}/s; per event up+down ${JSON.stringify(Object.fromEntries(Object.entries(cost).map(([k, v]) => [k, v.events ? Math.round((v.bytesIn + v.bytesOut) / v.events) : null])))}`);

      if (rate === 0) {
        assert.equal(measured, 0, 'idle publishes nothing');
        for (const [transport, row] of Object.entries(cost)) {
          for (const figure of ['requests-per-event', 'up-per-event', 'down-per-event']) {
            assert.equal(row.cells[figure], '–', `idle: ${transport} ${figure} shows –`);
          }
        }
      } else {
        assert.ok(Math.abs(measured - rate) <= RATE_TOLERANCE * rate, `selected ${rate}/s, measured ${measured}/s`);
        // Each reader is charged to itself only: the ws row is the ws
        // pane's one socket, not the bot's nor the WebRTC pane's.
        assert.equal(cost.ws.connections, 1, 'the ws row counts one socket');
        const perEvent = (row) => (row.bytesIn + row.bytesOut) / row.events;
        for (const transport of ['poll', 'longpoll']) {
          assert.ok(perEvent(cost.ws) < perEvent(cost[transport]), `ws ${perEvent(cost.ws)} B/event below ${transport} ${perEvent(cost[transport])}`);
        }
        assert.ok(perEvent(cost.sse) < perEvent(cost.longpoll), `sse ${perEvent(cost.sse)} B/event below longpoll ${perEvent(cost.longpoll)}`);
        // Short polling batches a second's events in one answer: at 50/s
        // its head is shared by 50 events and it undercuts SSE's per-event
        // framing (docs/lecture.md). Below that, SSE is cheaper.
        if (rate <= 20) assert.ok(perEvent(cost.sse) < perEvent(cost.poll), `sse ${perEvent(cost.sse)} B/event below poll ${perEvent(cost.poll)}`);
        // The socket rows are their frames: what the pane's reader saw of
        // each frame (header + JSON, or id/data lines), and hardly more.
        // At 1/s a window holds a handful of events, and one more or less
        // on its way when the server counted moves the figure by a sixth:
        // the rates with a hundred events and more say it to the byte.
        const seen = await readSummary(page);
        for (const transport of rate >= 20 ? ['ws', 'sse'] : []) {
          const exact = cost[transport].bytesOut / cost[transport].events;
          const frames = seen[transport].bytesPerEvent;
          assert.ok(
            exact >= frames - 2 && exact <= frames + FRAMING_SLACK[transport],
            `${transport}: ${exact.toFixed(1)} B down per event, frames ${frames} B`,
          );
          // Up, a socket sends only its pongs (6 bytes each 15 s).
          assert.ok(cost[transport].bytesIn / cost[transport].events < 1, `${transport}: ${cost[transport].bytesIn} B up`);
        }
      }
      assert.deepEqual(await overflow(page), { page: { scrollWidth: 1280, innerWidth: 1280 }, tables: [] }, `at ${rate}/s`);
    }
    // The WebRTC pane says why it stays empty, and what to do.
    assert.match(await page.locator('.pane[data-transport="webrtc"] .pane-note').textContent(), /--demo.*room of its own/);
    assert.deepEqual(page.errors, []);
    await page.close();
  });

  test("in a room without the server's bot, the page's own bot publishes 50/s through 100 ms each way", async () => {
    const page = await openCompare(lab.browser, lab.server.url, { width: 1280, height: 720 });
    await page.goto(`${lab.server.url}/compare.html?room=bots`);
    await page.locator('#bot-state[data-publisher="page"]').waitFor({ timeout: WAIT_MS });

    const measured = await publishAt(page, 50);

    // Its moves go on its socket without waiting for answers: over POST
    // /send, one at a time, 200 ms a round trip held it near 5/s.
    assert.ok(Math.abs(measured - 50) <= RATE_TOLERANCE * 50, `selected 50/s, measured ${measured}/s`);
    assert.equal(await page.locator('.pane[data-transport="webrtc"] .pane-note').isHidden(), true);
    assert.deepEqual(page.errors, []);
    await page.close();
  });

  test('at 1920×1080 and on a 390×844 phone, nothing scrolls sideways and every pane is readable', async () => {
    for (const viewport of [{ width: 1920, height: 1080 }, { width: 390, height: 844 }]) {
      const page = await openCompare(lab.browser, lab.server.url, viewport);
      await page.locator('.pane[data-transport="ws"] .status[data-status="connected"]').waitFor({ timeout: WAIT_MS });
      const shown = await overflow(page);
      assert.equal(shown.page.scrollWidth, viewport.width, `${viewport.width}: the page is as wide as the screen`);
      // On a projector every table fits; on a phone a wide one scrolls in its card.
      if (viewport.width >= 1280) assert.deepEqual(shown.tables, []);
      const widths = await page.locator('.pane').evaluateAll((panes) => panes.map((pane) => pane.getBoundingClientRect().width));
      for (const width of widths) assert.ok(width >= 300, `${viewport.width}: a pane is ${width} px wide`);
      // The top bar's links are on screen.
      const right = await page.locator('#chat-link').evaluate((link) => link.getBoundingClientRect().right);
      assert.ok(right <= viewport.width, `${viewport.width}: the chat link ends at ${right} px`);
      assert.deepEqual(page.errors, []);
      await page.close();
    }
  });
});
