// The compare page across a server restart under a new epoch. The server
// keeps its log in memory, so when it is killed and started again on the
// same port its log starts again at seq 1 under a new epoch, and it knows no
// session. Every reader on the page must notice (a gap, or its session
// refused), start over in the new log, and keep showing new events: the four
// anonymous panes, the WebRTC pane (a user of the room, drawing the bot's
// cursor from a data channel) and the bot itself, whose own reader tells it
// who is online. The WebRTC pane needs UDP, so this file runs inside a
// network namespace of its own, as webrtc.test.mjs does.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  COMPARE_TRANSPORTS,
  WAIT_MS,
  eventually,
  readStats,
  runsInTestNamespace,
  startServer,
  useServerAndBrowser,
} from './harness.mjs';

/** Every pane of the compare page: the server's four transports, then WebRTC. */
const PANES = [...COMPARE_TRANSPORTS, 'webrtc'];
/** Events each pane must show before the restart, and again after it: one second of the bot's at 20/s. */
const EVENTS = 20;
/**
 * How long the page may take to come back: readers reconnect with backoff
 * (up to 5 s), sessions are registered again, and the WebRTC pane's offer
 * may be probed again for a few seconds until the bot's socket listens.
 */
const RECOVERY_MS = 45_000;

/** Each pane's "Events received" count, by transport. */
function paneEvents(page) {
  return page.evaluate((panes) => Object.fromEntries(panes.map((transport) => {
    const value = document.querySelector(`.pane[data-transport="${transport}"] [data-figure="events"] .figure-value`);
    return [transport, value ? parseInt(value.textContent, 10) : NaN];
  })), PANES);
}

/** Waits until each pane named in `wanted` counts at least `wanted[transport]` events, saying which fell short. */
async function waitForEvents(page, wanted, timeout) {
  try {
    await page.waitForFunction(
      (wanted) => Object.entries(wanted).every(([transport, events]) => {
        const value = document.querySelector(`.pane[data-transport="${transport}"] [data-figure="events"] .figure-value`);
        return value && parseInt(value.textContent, 10) >= events;
      }),
      wanted,
      { timeout, polling: 100 },
    );
  } catch (err) {
    throw new Error(`the panes should count at least ${JSON.stringify(wanted)} events, shows ${JSON.stringify(await paneEvents(page))}`, { cause: err });
  }
}

if (runsInTestNamespace(import.meta.url, { tests: 1 })) {
  describe('the compare page across a restart', () => {
    // The test starts, kills and restarts its own server.
    const lab = useServerAndBrowser({ servers: {}, browser: { webrtc: true } });

    test("after the server restarts under a new epoch, every pane, the bot's reader and the WebRTC pane included, keeps showing new events", async () => {
      let server = await startServer();
      const page = await lab.browser.newPage({ viewport: { width: 1600, height: 1000 } });
      try {
        // Arrange: the page with its bot running, the bot's cursor on every
        // pane (on the WebRTC pane, over an open data channel).
        page.errors = [];
        page.on('pageerror', (err) => page.errors.push(err.message));
        await page.goto(`${server.url}/compare.html`);
        await page.locator('.pane[data-transport="webrtc"] .pane-log li', { hasText: 'joined as watch-' }).waitFor({ timeout: WAIT_MS });
        await page.click('#bot-toggle');
        await page.locator('#bot-state[data-running="true"]').waitFor({ timeout: WAIT_MS });
        for (const transport of PANES) {
          await page.locator(`.pane[data-transport="${transport}"] .cursor[data-name^="bot-"]`).waitFor({ timeout: WAIT_MS });
        }
        await waitForEvents(page, Object.fromEntries(PANES.map((transport) => [transport, EVENTS])), 30_000);
        const oldEpoch = (await readStats(server)).epoch;

        // Act: kill the server and start it again on the same port. Its log
        // is new: seq 1 again, another epoch, no sessions.
        await server.stop('SIGKILL');
        for (const transport of PANES) {
          await page.locator(`.pane[data-transport="${transport}"] .status[data-status="reconnecting"]`).waitFor({ timeout: WAIT_MS });
        }
        server = await startServer({ port: server.port });
        const newEpoch = (await readStats(server)).epoch;
        assert.notEqual(newEpoch, oldEpoch, 'a restarted in-memory server has a new epoch');

        // Assert: every server pane counts new events again, so its reader
        // took the new log's events although their seqs start again from 1.
        // The figures refresh once a second, so a count read now may lag by
        // up to a second of events: twice EVENTS leaves EVENTS truly new.
        const before = await paneEvents(page);
        const wanted = (transport) => before[transport] + 2 * EVENTS;
        await waitForEvents(page, Object.fromEntries(COMPARE_TRANSPORTS.map((t) => [t, wanted(t)])), RECOVERY_MS);
        // The WebRTC pane counts the bot's moves over its data channel. Once
        // it stands in the new epoch it has registered again, and its old
        // channels are closed: what it counts from then on came over a
        // channel opened after the restart.
        const rtcPane = page.locator('.pane[data-transport="webrtc"]');
        await page
          .waitForFunction((epoch) => document.querySelector('.pane[data-transport="webrtc"]')?.dataset.epoch === epoch, newEpoch, { timeout: RECOVERY_MS })
          .catch(async (err) => {
            throw new Error(`the WebRTC pane should read epoch ${newEpoch}, reads ${await rtcPane.getAttribute('data-epoch')}`, { cause: err });
          });
        const rtcBefore = (await paneEvents(page)).webrtc;
        await waitForEvents(page, { webrtc: rtcBefore + 2 * EVENTS }, RECOVERY_MS);
        // Each reader stands in the new epoch, past the events counted above.
        const positions = () => page.evaluate((panes) => ({
          ...Object.fromEntries(panes.map((transport) => {
            const pane = document.querySelector(`.pane[data-transport="${transport}"]`);
            return [transport, { epoch: pane.dataset.epoch, cursor: Number(pane.dataset.cursor) }];
          })),
          bot: { epoch: document.querySelector('#bot-state').dataset.epoch, cursor: Number(document.querySelector('#bot-state').dataset.cursor) },
        }), PANES);
        let seen = null;
        await eventually(
          async () => {
            seen = await positions();
            return Object.values(seen).every(({ epoch, cursor }) => epoch === newEpoch && cursor >= EVENTS);
          },
          `every reader, the bot's included, stands at seq ${EVENTS} or later of epoch ${newEpoch}`,
        ).catch((err) => {
          throw new Error(`${err.message}; they stand at ${JSON.stringify(seen)}`, { cause: err });
        });
        // The bot's cursor is drawn again on every pane, the WebRTC pane's
        // from a data channel opened after the restart.
        for (const transport of PANES) {
          await page.locator(`.pane[data-transport="${transport}"] .cursor[data-name^="bot-"]`).waitFor({ timeout: WAIT_MS });
        }
        assert.match(await page.locator('#bot-state').textContent(), /is moving at/);
        assert.deepEqual(page.errors, []);
      } finally {
        await page.close();
        await server.stop();
      }
    });
  });
}
