// Two pushlab nodes on one Redis, behind nginx round-robin with no ip_hash
// and no sticky cookie. On every transport, two pages that load, join, chat
// and move their mouse through nginx see each other's lines and cursors,
// although nginx sends each of their requests (and each stream or socket) to
// either node; and both nodes really served that transport's requests.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  enterName,
  eventually,
  launchBrowser,
  moveMouseTo,
  openPage,
  readStats,
  say,
  startCluster,
  suffix,
  waitForCursorAt,
  waitForMessage,
  waitForText,
} from './harness.mjs';

const TRANSPORTS = ['poll', 'longpoll', 'sse', 'ws'];

/** Transports that read over one long-lived connection per page. */
const STREAMS = new Set(['sse', 'ws']);

/** Each node's count of `transport` requests (for streams: connections) so far. */
function servedPerNode(cluster, transport) {
  return Promise.all(cluster.nodes.map(async (node) => (await readStats(node)).transports[transport].requests));
}

/**
 * Whether each node has anyone reading `room` now: an open stream or
 * socket, or a request in flight. (Not how many: a registered WebSocket
 * counts more than once.)
 */
function readingPerNode(cluster, room) {
  return Promise.all(
    cluster.nodes.map(async (node) => ((await readStats(node)).rooms.find((r) => r.name === room)?.readers ?? 0) > 0),
  );
}

/**
 * Opens the page and waits until it has fetched everything it fetches
 * before joining, the favicon included, which Chromium asks for only after
 * the load event.
 */
async function openLoaded(browser, url, query) {
  const page = await openPage(browser, url, query);
  await page.waitForLoadState('networkidle');
  return page;
}

/**
 * Makes nginx's round robin send the request after next to `target`.
 *
 * With one worker and equal weights, nginx sends each request to the node
 * after the one that served the request before it. A loaded page on sse or
 * ws that joins makes exactly two requests, POST /register and then its
 * stream, and the page already joined makes none meanwhile (it reads over
 * its open stream and has nothing to send). So once a GET /join through
 * nginx is answered by `target`, the next page's /register goes to the
 * other node and its stream to `target`. Without this the two streams would
 * land on one node or on two depending on how many files a page load
 * fetches, and a line could reach the other page without ever crossing
 * Redis.
 */
async function aimStreamAt(cluster, target) {
  for (let probe = 0; probe < cluster.nodes.length; probe += 1) {
    const { bound } = await (await fetch(`${cluster.url}/join`)).json();
    if (cluster.node(bound) === target) return;
  }
  throw new Error(`no GET /join through nginx reached ${target.url}: is nginx round-robin?`);
}

describe('two nodes on one Redis behind nginx round-robin, nothing sticky', () => {
  let cluster;
  let browser;

  before(async () => {
    cluster = await startCluster();
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await cluster?.stop();
  });

  for (const transport of TRANSPORTS) {
    test(`${transport}: two pages chat and follow each other's cursor through nginx, and both nodes serve them`, async () => {
      const id = suffix();
      const room = `${transport}-${id}`;
      const ann = `ann-${transport}-${id}`;
      const bob = `bob-${transport}-${id}`;
      const servedBefore = await servedPerNode(cluster, transport);

      const annPage = await openLoaded(browser, cluster.url, { transport, room });
      await enterName(annPage, ann);
      const bobPage = await openLoaded(browser, cluster.url, { transport, room });
      // On sse and ws, where each page's stream is: [Ann's node, Bob's node].
      let streams = null;
      if (STREAMS.has(transport)) {
        // Ann's stream is on one node; Bob's goes to the other, so every
        // line and move between them crosses Redis, and Bob's session,
        // registered on Ann's node, is used on the other one.
        const annReading = await eventually(async () => {
          const reading = await readingPerNode(cluster, room);
          return reading.filter(Boolean).length === 1 && reading;
        }, `one node holds ${ann}'s ${transport} stream`);
        streams = [annReading.indexOf(true), annReading.indexOf(false)].map((i) => cluster.nodes[i]);
        await aimStreamAt(cluster, streams[1]);
        await enterName(bobPage, bob);
        await eventually(
          async () => (await readingPerNode(cluster, room)).every(Boolean),
          `each node holds one of the two ${transport} streams`,
        );
      } else {
        await enterName(bobPage, bob);
      }
      await waitForText(annPage, '#transport', transport);
      await waitForText(bobPage, '#transport', transport);

      // Chat, both ways; both pages agree on each line's seq.
      const fromAnn = `hello bob, ${ann} here through nginx`;
      await say(annPage, fromAnn);
      assert.equal(await waitForMessage(bobPage, fromAnn), await waitForMessage(annPage, fromAnn));
      const fromBob = `hi ann, ${bob} here through nginx`;
      await say(bobPage, fromBob);
      assert.equal(await waitForMessage(annPage, fromBob), await waitForMessage(bobPage, fromBob));
      assert.equal(await annPage.locator('#messages li.pending, #messages li.failed').count(), 0);
      assert.equal(await bobPage.locator('#messages li.pending, #messages li.failed').count(), 0);

      // Cursors, both ways.
      await moveMouseTo(annPage, 0.25, 0.3);
      await waitForCursorAt(bobPage, ann, 0.25, 0.3);
      await moveMouseTo(annPage, 0.7, 0.8);
      await waitForCursorAt(bobPage, ann, 0.7, 0.8);
      await moveMouseTo(bobPage, 0.6, 0.2);
      await waitForCursorAt(annPage, bob, 0.6, 0.2);
      await moveMouseTo(bobPage, 0.15, 0.65);
      await waitForCursorAt(annPage, bob, 0.15, 0.65);

      // Both nodes served this transport, counted by each node itself. Two
      // pages polling (or re-polling after every event) through a
      // round-robin make consecutive reads that go to different nodes; the
      // two streams were placed above.
      const servedAfter = await eventually(async () => {
        const served = await servedPerNode(cluster, transport);
        return served.every((count, node) => count > servedBefore[node]) && served;
      }, `both nodes count new ${transport} requests (before: ${servedBefore})`);

      assert.deepEqual(annPage.errors, []);
      assert.deepEqual(bobPage.errors, []);
      await annPage.context().close();
      await bobPage.context().close();

      // nginx's own log of the room's requests (the page loads, /register,
      // /send and the reads): they went to both nodes, and none was
      // refused. A session one node did not know would show here as 401 or
      // 404. 499 is nginx's note of a held request the closing page gave up.
      const inRoom = new RegExp(`[?&]room=${room}(&|$)`);
      const logged = await eventually(async () => {
        const ofRoom = (await cluster.proxy.requests()).filter((r) => inRoom.test(r.uri));
        // Streams are logged when they close.
        return ofRoom.filter((r) => r.uri.startsWith(`/${transport}?`)).length >= 2 && ofRoom;
      }, `nginx has logged both pages' ${transport} reads`);
      const upstreams = new Set(logged.map((r) => r.upstream));
      assert.deepEqual([...upstreams].sort(), cluster.nodes.map((n) => n.url.replace('http://', '')).sort(), JSON.stringify(logged));
      const refused = logged.filter((r) => r.status >= 400 && r.status !== 499);
      assert.deepEqual(refused, [], `requests refused through nginx (served before/after: ${servedBefore}/${servedAfter})`);
      if (streams) {
        // Each page registered on the node that does not hold its stream
        // (Ann's /register and stream were consecutive, and Bob's were
        // aimed): both sessions were used on a node that did not make them.
        const registeredOn = logged.filter((r) => r.uri.startsWith('/register?')).map((r) => `http://${r.upstream}`);
        assert.deepEqual(registeredOn, [streams[1].url, streams[0].url], 'Ann registered on Bob\'s stream node and Bob on Ann\'s');
      }
      // A WebSocket page sends over its socket; the others POST /send.
      for (const path of transport === 'ws' ? ['/register'] : ['/register', '/send']) {
        assert.ok(logged.some((r) => r.uri.startsWith(`${path}?`)), `nginx passed on ${path}: ${JSON.stringify(logged)}`);
      }
    });
  }
});
