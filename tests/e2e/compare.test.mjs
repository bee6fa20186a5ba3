// The compare page: four anonymous observers of one log, a demo bot made
// in the page, a summary table, and the server's own counters. The test
// leaves a screenshot in artifacts/compare.png (npm run screenshot updates
// the committed docs/compare.png).

import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import { COMPARE_TRANSPORTS, WAIT_MS, openCompareWithBot, readSummary, useServerAndBrowser } from './harness.mjs';

const ARTIFACTS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'artifacts');

describe('the compare page', () => {
  const lab = useServerAndBrowser();

  test('four observers see the bot on every transport, measured side by side', async () => {
    const page = await openCompareWithBot(lab.browser, lab.server.url);

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
    assert.deepEqual(page.errors, []);
    await page.close();
  });
});
