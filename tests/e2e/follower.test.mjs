// The client's LogFollower (web/net/follower.js), on its own, in Node: the
// rules every reader of the page shares with the server's `log::Reader`.
// Cursor, epoch from the first read, dedupe by seq, and the gap rule, with
// the messages the server really sends on a stream and in a poll answer.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, test } from 'node:test';
import { REPO_ROOT } from './harness.mjs';

/**
 * follower.js is a browser module with no imports of its own. web/ has no
 * package.json saying its .js files are ES modules, so Node is given its
 * text as one.
 */
async function importWebModule(relative) {
  const source = await readFile(path.join(REPO_ROOT, 'web', relative), 'utf8');
  return import(`data:text/javascript,${encodeURIComponent(source)}`);
}

const { LogFollower } = await importWebModule('net/follower.js');

const OLD = 'epoch-old';
const NEW = 'epoch-new';

/** A follower that records what its owner hears. */
function recording() {
  const heard = { events: [], gaps: [], controls: [] };
  const follower = new LogFollower({
    onEvent: (event) => heard.events.push(event.seq),
    onGap: (gap) => heard.gaps.push({ ...gap }),
    onControl: (control) => heard.controls.push(control.type),
  });
  return { follower, heard };
}

const event = (seq) => ({ seq, ts: 0, type: 'mousemove', name: 'bot', x: 0.5, y: 0.5 });

describe('the LogFollower', () => {
  test('an event at or below the cursor is dropped, and the owner hears each new one once, in order', () => {
    // Arrange
    const { follower, heard } = recording();
    follower.startAt({ cursor: 4, epoch: OLD });

    // Act: a resumed stream repeats what was in flight.
    for (const seq of [3, 4, 5, 6, 5, 6, 7]) follower.receive(event(seq));

    // Assert
    assert.deepEqual(heard.events, [5, 6, 7]);
    assert.deepEqual(follower.position(), { cursor: 7, epoch: OLD });
  });

  test('without an epoch, the first read names it: a hello, or a poll answer', () => {
    const stream = recording();
    stream.follower.receive({ type: 'hello', epoch: NEW, cursor: 0 });
    assert.equal(stream.follower.epoch, NEW);
    assert.deepEqual(stream.heard.controls, ['hello']);

    const poll = recording();
    poll.follower.receiveBatch({ events: [event(1)], cursor: 1, epoch: NEW, gap: false, more: false });
    assert.deepEqual(poll.follower.position(), { cursor: 1, epoch: NEW });
  });

  test("a hello from another epoch leaves the position for the gap that follows it", () => {
    const { follower } = recording();
    follower.startAt({ cursor: 500, epoch: OLD });
    follower.receive({ type: 'hello', epoch: NEW, cursor: 500 });
    assert.deepEqual(follower.position(), { cursor: 500, epoch: OLD });
  });

  test('after a restart under a new epoch, a stream gap moves the follower and the new log\'s low seqs are taken', () => {
    // Arrange: far into the old log.
    const { follower, heard } = recording();
    follower.startAt({ cursor: 500, epoch: OLD });

    // Act: what a WebSocket or SSE stream sends after the restart.
    follower.receive({ type: 'hello', epoch: NEW, cursor: 500 });
    follower.receive({ type: 'gap', epoch: NEW, cursor: 0 });
    for (const seq of [1, 2, 3]) follower.receive(event(seq));

    // Assert
    assert.deepEqual(heard.gaps, [{ type: 'gap', epoch: NEW, cursor: 0 }]);
    assert.deepEqual(heard.events, [1, 2, 3]);
    assert.deepEqual(follower.position(), { cursor: 3, epoch: NEW });
  });

  test("a poll answer's gap stands just before the first event that follows", () => {
    // Arrange: the oldest events were trimmed; the log keeps 8 to 10.
    const { follower, heard } = recording();
    follower.startAt({ cursor: 2, epoch: OLD });

    // Act
    follower.receiveBatch({ events: [event(8), event(9), event(10)], cursor: 10, epoch: OLD, gap: true, more: false });

    // Assert: the gap comes first, at 7, and then every event after it.
    assert.deepEqual(heard.gaps, [{ type: 'gap', epoch: OLD, cursor: 7 }]);
    assert.deepEqual(heard.events, [8, 9, 10]);
    assert.deepEqual(follower.position(), { cursor: 10, epoch: OLD });
  });

  test("a poll answer's gap with no event stands at the answer's cursor, under the new epoch", () => {
    const { follower, heard } = recording();
    follower.startAt({ cursor: 500, epoch: OLD });
    follower.receiveBatch({ events: [], cursor: 0, epoch: NEW, gap: true, more: false });
    assert.deepEqual(heard.gaps, [{ type: 'gap', epoch: NEW, cursor: 0 }]);
    follower.receiveBatch({ events: [event(1)], cursor: 1, epoch: NEW, gap: false, more: false });
    assert.deepEqual(heard.events, [1]);
    assert.deepEqual(follower.position(), { cursor: 1, epoch: NEW });
  });

  test('controls other than hello and gap go to the owner and move nothing', () => {
    const { follower, heard } = recording();
    follower.startAt({ cursor: 9, epoch: OLD });
    assert.equal(follower.receive({ type: 'error', code: 'unknown_session' }), false);
    assert.equal(follower.receive({ type: 'signal', from: 'ann', kind: 'offer', data: {} }), false);
    assert.deepEqual(heard.controls, ['error', 'signal']);
    assert.deepEqual(follower.position(), { cursor: 9, epoch: OLD });
  });
});
