// Two people on two different transports chat, see each other's cursor
// follow the mouse, and see the other's dot vanish the moment they close
// the tab. Once per transport, each paired with a different one.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  cursorFraction,
  join,
  moveMouseTo,
  say,
  suffix,
  useServerAndBrowser,
  waitForCursorAt,
  waitForMessage,
  waitForText,
} from './harness.mjs';

/** [transport under test, the transport of the person it talks to] */
const PAIRS = [
  ['poll', 'ws'],
  ['longpoll', 'sse'],
  ['sse', 'poll'],
  ['ws', 'longpoll'],
  ['auto', 'sse'],
];

/** What `#transport` should read once connected; `auto` reaches a WebSocket here. */
const ACTIVE = { poll: 'poll', longpoll: 'longpoll', sse: 'sse', ws: 'ws', auto: 'ws' };

/**
 * A dot must vanish well before the server's presence timeout (30 s in
 * these tests) would end the session: only an explicit leave is that fast.
 */
const LEAVE_SEEN_WITHIN_MS = 5000;

describe('two people on different transports', () => {
  const lab = useServerAndBrowser();

  for (const [mine, theirs] of PAIRS) {
    test(`${mine} and ${theirs}: chat both ways, follow each other's cursor, and see a leave at once`, async () => {
      const id = suffix();
      const ann = `ann-${mine}-${id}`;
      const bob = `bob-${theirs}-${id}`;
      const annPage = await join(lab.browser, lab.server.url, { name: ann, transport: mine });
      const bobPage = await join(lab.browser, lab.server.url, { name: bob, transport: theirs });
      await waitForText(annPage, '#transport', ACTIVE[mine]);
      await waitForText(bobPage, '#transport', ACTIVE[theirs]);

      // Chat, both ways. The sender's own line is confirmed (has a seq) and
      // both pages agree on that seq.
      const fromAnn = `hello bob, this is ${ann} over ${mine}`;
      await say(annPage, fromAnn);
      const seqAtBob = await waitForMessage(bobPage, fromAnn);
      assert.equal(await waitForMessage(annPage, fromAnn), seqAtBob);
      assert.equal(await annPage.locator('#messages li.pending').count(), 0);

      const fromBob = `hi ann, ${bob} here over ${theirs}`;
      await say(bobPage, fromBob);
      assert.equal(await waitForMessage(annPage, fromBob), await waitForMessage(bobPage, fromBob));

      // Ann's dot on Bob's page follows Ann's mouse, and carries her name.
      await moveMouseTo(annPage, 0.25, 0.3);
      await waitForCursorAt(bobPage, ann, 0.25, 0.3);
      await moveMouseTo(annPage, 0.7, 0.8);
      await waitForCursorAt(bobPage, ann, 0.7, 0.8);
      assert.equal((await bobPage.locator(`.cursor[data-name="${ann}"]`).textContent()).trim(), ann);

      // And the other way round.
      await moveMouseTo(bobPage, 0.6, 0.2);
      await waitForCursorAt(annPage, bob, 0.6, 0.2);
      await moveMouseTo(bobPage, 0.15, 0.65);
      await waitForCursorAt(annPage, bob, 0.15, 0.65);
      assert.equal((await annPage.locator(`.cursor[data-name="${bob}"]`).textContent()).trim(), bob);

      // Bob closes his tab: his dot leaves Ann's canvas at once.
      assert.notEqual(await cursorFraction(annPage, bob), null);
      await bobPage.close();
      await annPage.locator(`#canvas .cursor[data-name="${bob}"]`).waitFor({ state: 'detached', timeout: LEAVE_SEEN_WITHIN_MS });

      assert.deepEqual(annPage.errors, []);
      assert.deepEqual(bobPage.errors, []);
      await annPage.close();
    });
  }
});
