// WebRTC: cursors browser to browser on data channels, the server only
// introducing the peers. Run plainly (as `npm test` does), this file re-runs
// itself inside a network namespace of its own (runsInTestNamespace in
// harness.mjs), where the server and the browser both live.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  WAIT_MS,
  join,
  moveMouseTo,
  runsInTestNamespace,
  suffix,
  useServerAndBrowser,
  waitForCursorAt,
} from './harness.mjs';

/** Cursor moves made for the measurement, and the pause between two, in ms (about 30 a second). */
const MEASURED_MOVES = 300;
const MOVE_PAUSE_MS = 33;

if (runsInTestNamespace(import.meta.url, { tests: 6 })) {
  describe('WebRTC: cursors peer to peer, the server only signalling', () => {
    const lab = useServerAndBrowser({ browser: { webrtc: true } });

    /** A fresh room per test, so nobody else is online there. */
    const freshRoom = () => `rtc-${suffix()}`;

    /** Every event in `room`'s log, read with one short poll. */
    async function logOf(room) {
      const response = await fetch(`${lab.server.url}/poll?since=0&room=${room}`);
      return (await response.json()).events;
    }

    async function waitForPeer(page, name, state) {
      await page.locator(`#peers li[data-peer="${name}"][data-state="${state}"]`).waitFor({ timeout: WAIT_MS });
    }

    /** A figure of the WebRTC panel, as its text. */
    const figure = (page, id) => page.locator(`#rtc [data-figure="${id}"] .figure-value`).textContent();

    /** Two pages on webrtc in a fresh room, their channel open; bob offers (he comes second). */
    async function twoPeers({ init = null } = {}) {
      const room = freshRoom();
      const id = suffix();
      const ann = `ann-${id}`;
      const bob = `bob-${id}`;
      const annPage = await join(lab.browser, lab.server.url, { name: ann, transport: 'webrtc', query: { room }, init });
      const bobPage = await join(lab.browser, lab.server.url, { name: bob, transport: 'webrtc', query: { room }, init });
      await waitForPeer(annPage, bob, 'open');
      await waitForPeer(bobPage, ann, 'open');
      return { room, ann, bob, annPage, bobPage };
    }

    test("two webrtc pages open a data channel, and B follows A's cursor while the server gets no mousemove from A", async () => {
      const { room, ann, annPage, bobPage } = await twoPeers();
      const stats = await (await fetch(`${lab.server.url}/stats?room=${room}`)).json();
      assert.ok(stats.signals.relayed >= 2, `an offer and an answer at least: ${JSON.stringify(stats.signals)}`);

      await moveMouseTo(annPage, 0.3, 0.4);
      await waitForCursorAt(bobPage, ann, 0.3, 0.4);
      await moveMouseTo(annPage, 0.75, 0.2);
      await waitForCursorAt(bobPage, ann, 0.75, 0.2);

      const fromAnn = (await logOf(room)).filter((e) => e.type === 'mousemove' && e.name === ann);
      assert.deepEqual(fromAnn, [], 'every move went peer to peer');
      // The panel redraws on a timer: wait for it to show what arrived.
      await bobPage.waitForFunction(
        () => /^[1-9]\d* · \d+ B each$/.test(document.querySelector('#rtc [data-figure="p2p-moves"] .figure-value')?.textContent ?? ''),
        null,
        { timeout: WAIT_MS, polling: 50 },
      );
      assert.equal(await bobPage.locator('#transport').textContent(), 'webrtc');
      assert.deepEqual(annPage.errors, []);
      assert.deepEqual(bobPage.errors, []);
      await annPage.context().close();
      await bobPage.context().close();
    });

    test('the panel measures the same moves peer to peer and through the server', async () => {
      const { ann, annPage, bobPage } = await twoPeers();
      await annPage.check('#rtc-mirror');

      const box = await annPage.locator('#canvas').boundingBox();
      for (let i = 0; i < MEASURED_MOVES; i += 1) {
        const angle = (i / MEASURED_MOVES) * 4 * Math.PI;
        const fx = 0.5 + 0.4 * Math.sin(angle);
        const fy = 0.5 + 0.4 * Math.sin(angle * 1.5);
        await annPage.mouse.move(box.x + box.width * fx, box.y + box.height * fy);
        // Pacing, not waiting for something: a person moves about this fast.
        await annPage.waitForTimeout(MOVE_PAUSE_MS);
      }
      await moveMouseTo(annPage, 0.1, 0.9);
      await waitForCursorAt(bobPage, ann, 0.1, 0.9);
      // The panel refreshes twice a second.
      await bobPage.waitForFunction(
        () => /moves$/.test(document.querySelector('#rtc [data-figure="server-latency"] .figure-value')?.textContent ?? ''),
        null,
        { timeout: WAIT_MS, polling: 100 },
      );

      const p2p = await figure(bobPage, 'p2p-latency');
      const viaServer = await figure(bobPage, 'server-latency');
      const moves = await figure(bobPage, 'p2p-moves');
      const loss = await figure(bobPage, 'p2p-loss');
      console.log(`measured: ${MEASURED_MOVES} mouse moves at ~${Math.round(1000 / MOVE_PAUSE_MS)}/s, received: ${moves}; p2p p50/p95 ${p2p}; server path p50/p95 ${viaServer}; lost/reordered ${loss}`);
      const count = (text) => Number(/· (\d+) moves$/.exec(text)?.[1] ?? 0);
      assert.ok(count(p2p) > MEASURED_MOVES / 3, `most moves arrive peer to peer: ${p2p}`);
      assert.ok(count(viaServer) > MEASURED_MOVES / 3, `and their copies through the server: ${viaServer}`);
      assert.match(loss, /^-?\d+ \/ \d+$/);
      await annPage.context().close();
      await bobPage.context().close();
    });

    test("when the channel fails, B still sees A's cursor, through the server, and both pages say so", async () => {
      // Keeps every data channel the page makes, so the test can close them.
      const init = () => {
        window.dataChannels = [];
        const make = RTCPeerConnection.prototype.createDataChannel;
        RTCPeerConnection.prototype.createDataChannel = function keep(...args) {
          const channel = make.apply(this, args);
          window.dataChannels.push(channel);
          return channel;
        };
      };
      const { room, ann, bob, annPage, bobPage } = await twoPeers({ init });
      await moveMouseTo(annPage, 0.2, 0.2);
      await waitForCursorAt(bobPage, ann, 0.2, 0.2);

      await bobPage.evaluate(() => window.dataChannels.forEach((channel) => channel.close()));
      await waitForPeer(bobPage, ann, 'failed');
      await waitForPeer(annPage, bob, 'failed');
      await moveMouseTo(annPage, 0.65, 0.55);
      await waitForCursorAt(bobPage, ann, 0.65, 0.55);

      const fromAnn = (await logOf(room)).filter((e) => e.type === 'mousemove' && e.name === ann);
      assert.ok(fromAnn.length > 0, 'after the failure the moves go through the server');
      assert.match(await bobPage.locator(`#peers li[data-peer="${ann}"]`).textContent(), /failed: cursors through the server/);
      assert.match(await bobPage.locator('#notices').textContent(), /through the server instead/);
      await annPage.context().close();
      await bobPage.context().close();
    });

    test('when ICE finds no path, both pages say so and the cursors come through the server', async () => {
      // No path between the peers, as between a phone on mobile data and a
      // laptop behind a NAT with no TURN relay: relay candidates only, and
      // no relay configured.
      const init = () => {
        const Real = RTCPeerConnection;
        window.RTCPeerConnection = function relayOnly(config = {}) {
          return new Real({ ...config, iceTransportPolicy: 'relay' });
        };
        window.RTCPeerConnection.prototype = Real.prototype;
      };
      const room = freshRoom();
      const id = suffix();
      const ann = `ann-${id}`;
      const bob = `bob-${id}`;
      const annPage = await join(lab.browser, lab.server.url, { name: ann, transport: 'webrtc', query: { room }, init });
      const bobPage = await join(lab.browser, lab.server.url, { name: bob, transport: 'webrtc', query: { room }, init });

      // While ICE tries, and after it gave up, the cursor comes through the server.
      await moveMouseTo(annPage, 0.25, 0.75);
      await waitForCursorAt(bobPage, ann, 0.25, 0.75);
      await waitForPeer(bobPage, ann, 'failed');
      await waitForPeer(annPage, bob, 'failed');
      await moveMouseTo(annPage, 0.7, 0.3);
      await waitForCursorAt(bobPage, ann, 0.7, 0.3);

      for (const [page, peer] of [[annPage, bob], [bobPage, ann]]) {
        assert.match(await page.locator(`#peers li[data-peer="${peer}"]`).textContent(), /failed: cursors through the server \(no channel within 10 s\)/);
        assert.match(await page.locator('#notices').textContent(), new RegExp(`channel with ${peer} failed .*through the server instead`));
      }
      const fromAnn = (await logOf(room)).filter((e) => e.type === 'mousemove' && e.name === ann);
      assert.ok(fromAnn.length > 0, 'the moves went through the server');
      await annPage.context().close();
      await bobPage.context().close();
    });

    test("a page on ws and a page on webrtc still see each other's cursors", async () => {
      const room = freshRoom();
      const id = suffix();
      // The webrtc user comes second, so it offers, and hears that the ws
      // user takes no signals.
      const rtc = `ada-${id}`;
      const ws = `zed-${id}`;
      const wsPage = await join(lab.browser, lab.server.url, { name: ws, transport: 'ws', query: { room } });
      const rtcPage = await join(lab.browser, lab.server.url, { name: rtc, transport: 'webrtc', query: { room } });

      await moveMouseTo(rtcPage, 0.35, 0.6);
      await waitForCursorAt(wsPage, rtc, 0.35, 0.6);
      await moveMouseTo(wsPage, 0.8, 0.3);
      await waitForCursorAt(rtcPage, ws, 0.8, 0.3);

      assert.equal(await rtcPage.locator('#peers li[data-state="failed"]').count(), 0, 'a ws user is no failed peer');
      assert.deepEqual(rtcPage.errors, []);
      assert.deepEqual(wsPage.errors, []);
      await rtcPage.context().close();
      await wsPage.context().close();
    });

    test("the compare page's WebRTC pane shows the bot's cursor arriving peer to peer", async () => {
      const room = freshRoom();
      const page = await lab.browser.newPage({ viewport: { width: 1600, height: 1000 } });
      page.errors = [];
      page.on('pageerror', (err) => page.errors.push(err.message));
      await page.goto(`${lab.server.url}/compare.html?room=${room}`);
      await page.locator('.pane[data-transport="webrtc"] .pane-log li', { hasText: 'joined as watch-' }).waitFor({ timeout: WAIT_MS });
      await page.click('#bot-toggle');

      const pane = page.locator('.pane[data-transport="webrtc"]');
      await pane.locator('.cursor[data-name^="bot-"]').waitFor({ timeout: WAIT_MS });
      await page.waitForFunction(
        () => parseInt(document.querySelector('.pane[data-transport="webrtc"] [data-figure="events"] .figure-value')?.textContent ?? '0', 10) >= 20,
        null,
        { timeout: WAIT_MS, polling: 100 },
      );
      assert.match(await pane.locator('.pane-log').textContent(), /channel open/);
      assert.deepEqual(page.errors, []);
      await page.close();
    });
  });
}
