// The compare page across a server restart under a new epoch. The server
// keeps its log in memory, so when it is killed and started again on the
// same port its log starts again at seq 1 under a new epoch, and it knows no
// session. Every reader on the page must notice (a gap, or its session
// refused), start over in the new log, and keep showing new events: the four
// anonymous panes, the WebRTC pane (a user of the room, drawing the bot's
// cursor from a data channel) and the bot itself, whose own reader tells it
// who is online. The WebRTC pane needs UDP, so this file runs inside a
// network namespace of its own, as webrtc.test.mjs does.
//
// A banner says the server restarted. The page's network is made to
// misbehave in two ways a loaded machine shows: the WebRTC pane's first registration fails (it must try again,
// as every reader does), and refusals of the bot's sends arrive late, after
// the bot has registered again (an answer about its old session must not
// end its new one).

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

/**
 * How late a refused send (401, the bot's session unknown) is answered:
 * well after the bot has noticed the restart by another path and
 * registered again, which takes a few hundred ms.
 */
const LATE_REFUSAL_MS = 1500;

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

/**
 * The page's first POST /register fails as if the server could not be
 * reached; later ones go through.
 */
async function failFirstRegistration(page) {
  let failed = false;
  await page.route('**/register', (route) => {
    if (failed) return route.continue();
    failed = true;
    return route.abort('connectionrefused');
  });
}

/**
 * Every POST /send goes to the server as usual, but an answer of 401
 * reaches the page LATE_REFUSAL_MS late, as on a slow network. (The delay
 * is the network being simulated, not a wait for anything.)
 */
async function answerRefusedSendsLate(page) {
  await page.route('**/send?*', async (route) => {
    let response;
    try {
      response = await route.fetch();
    } catch {
      // The server is down: so it is for the page.
      return route.abort('connectionrefused').catch(() => {});
    }
    if (response.status() === 401) await new Promise((resolve) => setTimeout(resolve, LATE_REFUSAL_MS));
    await route.fulfill({ response }).catch(() => {});
  });
}

/** Every event of the lobby's log on `server`, from seq 1. */
async function wholeLog(server) {
  const events = [];
  for (let since = 0; ;) {
    const response = await fetch(`${server.url}/poll?since=${since}`);
    const batch = await response.json();
    events.push(...batch.events);
    if (!batch.more) return events;
    since = batch.cursor;
  }
}

/** The last console lines and failed requests kept per page, for a failure's message. */
const KEPT_LINES = 30;

/**
 * Records what a page says while the test runs: uncaught errors (which the
 * test asserts there are none of), console errors and warnings, and
 * requests that failed, the last KEPT_LINES of each, with the time since
 * the test started.
 */
function watchPage(page, started) {
  const seen = { errors: [], console: [], failed: [] };
  const keep = (list, line) => {
    list.push(`+${Date.now() - started} ms ${line}`);
    if (list.length > KEPT_LINES) list.shift();
  };
  page.on('pageerror', (err) => seen.errors.push(err.message));
  page.on('console', (message) => {
    if (message.type() === 'error' || message.type() === 'warning') keep(seen.console, `${message.type()}: ${message.text()}`);
  });
  page.on('requestfailed', (request) => keep(seen.failed, `${request.method()} ${request.url()}: ${request.failure()?.errorText}`));
  return seen;
}

/**
 * What the page shows, for a failure's message: each pane's status, where
 * its reader stands, its event count and its little log; the bot's label
 * and position; the notices.
 */
function describePage(page) {
  return page.evaluate((panes) => {
    const text = (element) => element?.textContent.trim() ?? '(missing)';
    const pane = (transport) => {
      const element = document.querySelector(`.pane[data-transport="${transport}"]`);
      if (!element) return '(missing)';
      return {
        status: element.querySelector('.status')?.dataset.status,
        epoch: element.dataset.epoch,
        cursor: element.dataset.cursor,
        events: text(element.querySelector('[data-figure="events"] .figure-value')),
        log: [...element.querySelectorAll('.pane-log li')].map(text),
      };
    };
    const bot = document.querySelector('#bot-state');
    return {
      panes: Object.fromEntries(panes.map((transport) => [transport, pane(transport)])),
      bot: { running: bot?.dataset.running, epoch: bot?.dataset.epoch, cursor: bot?.dataset.cursor, text: text(bot) },
      notices: text(document.querySelector('#notices')),
    };
  }, PANES);
}

/**
 * Runs one step of the test; if it fails, the error says which step, how
 * long into the test, what the page showed then, what it logged and which
 * of its requests failed, and the server's last lines.
 */
async function step(what, { page, seen, started, server, took }, act) {
  const begun = Date.now();
  try {
    const value = await act();
    took.push(`${what} ${Date.now() - begun} ms`);
    return value;
  } catch (err) {
    const shown = await describePage(page).catch((e) => `(could not read the page: ${e.message})`);
    const serverLines = server()?.logs.slice(-20) ?? [];
    throw new Error(
      [
        `${what}: failed +${Date.now() - started} ms into the test: ${err.message}`,
        `the page shows ${JSON.stringify(shown, null, 1)}`,
        `page errors ${JSON.stringify(seen.errors)}`,
        `console errors and warnings ${JSON.stringify(seen.console, null, 1)}`,
        `failed requests ${JSON.stringify(seen.failed, null, 1)}`,
        `the server's last lines ${JSON.stringify(serverLines, null, 1)}`,
      ].join('\n'),
      { cause: err },
    );
  }
}

if (runsInTestNamespace(import.meta.url, { tests: 1 })) {
  describe('the compare page across a restart', () => {
    // The test starts, kills and restarts its own server.
    const lab = useServerAndBrowser({ servers: {}, browser: { webrtc: true } });

    test("after the server restarts under a new epoch, every pane, the bot's reader and the WebRTC pane included, keeps showing new events", async () => {
      const started = Date.now();
      let server = await startServer();
      const page = await lab.browser.newPage({ viewport: { width: 1600, height: 1000 } });
      const seen = watchPage(page, started);
      const context = { page, seen, started, server: () => server, took: [] };
      await failFirstRegistration(page);
      await answerRefusedSendsLate(page);
      try {
        // Arrange: the page with its bot running, the bot's cursor on every
        // pane (on the WebRTC pane, over an open data channel).
        await step('the WebRTC pane joins the room', context, async () => {
          await page.goto(`${server.url}/compare.html`);
          await page.locator('.pane[data-transport="webrtc"] .pane-log li', { hasText: 'joined as watch-' }).waitFor({ timeout: WAIT_MS });
        });
        await step('the bot starts and its cursor is on every pane', context, async () => {
          await page.click('#bot-toggle');
          await page.locator('#bot-state[data-running="true"]').waitFor({ timeout: WAIT_MS });
          for (const transport of PANES) {
            await page.locator(`.pane[data-transport="${transport}"] .cursor[data-name^="bot-"]`).waitFor({ timeout: WAIT_MS });
          }
          await waitForEvents(page, Object.fromEntries(PANES.map((transport) => [transport, EVENTS])), 30_000);
        });
        const oldEpoch = (await readStats(server)).epoch;

        // Act: kill the server and start it again on the same port. Its log
        // is new: seq 1 again, another epoch, no sessions.
        await server.stop('SIGKILL');
        await step('every pane sees the server go', context, async () => {
          for (const transport of PANES) {
            await page.locator(`.pane[data-transport="${transport}"] .status[data-status="reconnecting"]`).waitFor({ timeout: WAIT_MS });
          }
        });
        server = await startServer({ port: server.port });
        const restartedAt = Date.now();
        const newEpoch = (await readStats(server)).epoch;
        assert.notEqual(newEpoch, oldEpoch, 'a restarted in-memory server has a new epoch');

        // Assert: every server pane counts new events again, so its reader
        // took the new log's events although their seqs start again from 1.
        // The figures refresh once a second, so a count read now may lag by
        // up to a second of events: twice EVENTS leaves EVENTS truly new.
        const before = await paneEvents(page);
        const wanted = (transport) => before[transport] + 2 * EVENTS;
        await step('the server panes count new events', context, () =>
          waitForEvents(page, Object.fromEntries(COMPARE_TRANSPORTS.map((t) => [t, wanted(t)])), RECOVERY_MS));
        // The WebRTC pane counts the bot's moves over its data channel. Once
        // it stands in the new epoch it has registered again, and its old
        // channels are closed: what it counts from then on came over a
        // channel opened after the restart.
        await step("the WebRTC pane stands in the new log's epoch", context, () =>
          page.waitForFunction((epoch) => document.querySelector('.pane[data-transport="webrtc"]')?.dataset.epoch === epoch, newEpoch, { timeout: RECOVERY_MS }));
        await step('the WebRTC pane counts new moves', context, async () => {
          const rtcBefore = (await paneEvents(page)).webrtc;
          await waitForEvents(page, { webrtc: rtcBefore + 2 * EVENTS }, RECOVERY_MS);
        });
        // Each reader stands in the new epoch, past the events counted above.
        const positions = () => page.evaluate((panes) => ({
          ...Object.fromEntries(panes.map((transport) => {
            const pane = document.querySelector(`.pane[data-transport="${transport}"]`);
            return [transport, { epoch: pane.dataset.epoch, cursor: Number(pane.dataset.cursor) }];
          })),
          bot: { epoch: document.querySelector('#bot-state').dataset.epoch, cursor: Number(document.querySelector('#bot-state').dataset.cursor) },
        }), PANES);
        await step(`every reader, the bot's included, stands at seq ${EVENTS} or later of the new epoch`, context, () =>
          eventually(async () => {
            const seen = await positions();
            return Object.values(seen).every(({ epoch, cursor }) => epoch === newEpoch && cursor >= EVENTS);
          }, 'they do'));
        // The bot's cursor is drawn again on every pane, the WebRTC pane's
        // from a data channel opened after the restart.
        await step("the bot's cursor is on every pane again", context, async () => {
          for (const transport of PANES) {
            await page.locator(`.pane[data-transport="${transport}"] .cursor[data-name^="bot-"]`).waitFor({ timeout: WAIT_MS });
          }
        });
        // The bot and the WebRTC pane each registered once in the new log,
        // as observers, and stayed: the late refusals of the bot's old
        // session ended nothing.
        const comings = (await wholeLog(server))
          .filter((event) => event.type === 'join' || event.type === 'leave')
          .map((event) => `${event.type} ${event.name}${event.observer ? ' (observer)' : ''}`);
        assert.equal(comings.filter((line) => line.startsWith('leave')).length, 0, `nobody left the new log: ${comings.join(', ')}`);
        assert.equal(comings.length, 2, `the bot and the WebRTC pane joined the new log once each: ${comings.join(', ')}`);
        assert.ok(comings.every((line) => line.endsWith('(observer)')), `both as observers: ${comings.join(', ')}`);
        // A banner said what happened, once.
        const banners = await page.locator('#notices .notice', { hasText: 'The server restarted' }).count();
        assert.equal(banners, 1, 'one banner says the server restarted');
        console.log(`measured: the page came back ${Date.now() - restartedAt} ms after the restart; steps: ${context.took.join(', ')}`);
        assert.match(await page.locator('#bot-state').textContent(), /publishes at 20\/s/);
        assert.deepEqual(seen.errors, []);
      } finally {
        await page.close();
        await server.stop();
      }
    });
  });
}
