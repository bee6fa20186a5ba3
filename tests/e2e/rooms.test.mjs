// Rooms in the browser: `?room=` keeps a page's chat and canvas apart from
// every other room's, and the room picker lists the open rooms.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  WAIT_MS,
  join,
  moveMouseTo,
  say,
  suffix,
  useServerAndBrowser,
  waitForCursorAt,
  waitForMessage,
  waitForText,
} from './harness.mjs';

describe('rooms', () => {
  const lab = useServerAndBrowser();

  test('a page in room B never shows room A\'s messages or cursors, and the picker lists both', async () => {
    const id = suffix();
    const [roomA, roomB] = [`alpha${id}`, `beta${id}`];
    const ann = await join(lab.browser, lab.server.url, { name: `ann${id}`, transport: 'ws', query: { room: roomA } });
    const amy = await join(lab.browser, lab.server.url, { name: `amy${id}`, transport: 'sse', query: { room: roomA } });
    const bob = await join(lab.browser, lab.server.url, { name: `bob${id}`, transport: 'longpoll', query: { room: roomB } });
    for (const [page, room] of [[ann, roomA], [amy, roomA], [bob, roomB]]) {
      await waitForText(page, '#room-name', room);
    }

    // Room A talks and moves; its other page sees it.
    await say(ann, `only for ${roomA}`);
    await waitForMessage(amy, `only for ${roomA}`);
    await moveMouseTo(ann, 0.3, 0.6);
    await waitForCursorAt(amy, `ann${id}`, 0.3, 0.6);
    // Room B then talks; once its own line is back, anything from A that was
    // going to arrive on B's page would have arrived before it.
    await say(bob, `only for ${roomB}`);
    await waitForMessage(bob, `only for ${roomB}`);

    const shownInB = await bob.evaluate(() => ({
      messages: [...document.querySelectorAll('#messages li')].map((li) => li.textContent),
      cursors: [...document.querySelectorAll('#canvas .cursor')].map((dot) => dot.dataset.name),
      people: [...document.querySelectorAll('#people li')].map((li) => li.textContent),
    }));
    assert.ok(!shownInB.messages.some((text) => text.includes(roomA)), JSON.stringify(shownInB));
    assert.ok(!shownInB.cursors.some((name) => name.startsWith('a')), JSON.stringify(shownInB));
    assert.ok(!shownInB.people.some((name) => name.includes(`ann${id}`) || name.includes(`amy${id}`)), JSON.stringify(shownInB));
    const shownInA = await amy.evaluate(() => [...document.querySelectorAll('#messages li')].map((li) => li.textContent));
    assert.ok(!shownInA.some((text) => text.includes(roomB)), JSON.stringify(shownInA));

    // The picker lists both rooms with who is online in each.
    await bob.click('#room-name');
    const listed = bob.locator('.rooms-list li');
    await listed.filter({ hasText: roomA }).waitFor({ timeout: WAIT_MS });
    const entries = await listed.evaluateAll((items) => items.map((li) => li.textContent.replace(/\s+/g, ' ').trim()));
    assert.ok(entries.includes(`${roomA} 2 online`), JSON.stringify(entries));
    assert.ok(entries.includes(`${roomB} 1 online`), JSON.stringify(entries));
    assert.equal(await bob.locator(`.rooms-list a[aria-current="page"]`).textContent(), roomB);

    for (const page of [ann, amy, bob]) {
      assert.deepEqual(page.errors, []);
      await page.context().close();
    }
  });

  test('the picker makes a new room, and the page joins it there', async () => {
    const id = suffix();
    const page = await join(lab.browser, lab.server.url, { name: `cy${id}`, transport: 'ws' });
    await waitForText(page, '#room-name', 'lobby');

    await page.click('#room-name');
    await page.fill('#room-new', `Gamma${id}`);
    await page.press('#room-new', 'Enter');
    await page.waitForURL((url) => url.searchParams.get('room') === `gamma${id}`, { timeout: WAIT_MS });
    await waitForText(page, '#room-name', `gamma${id}`);
    assert.equal(new URL(page.url()).searchParams.get('transport'), 'ws', 'the transport comes along');
    await page.fill('#name', `cy${id}`);
    await page.press('#name', 'Enter');
    await waitForText(page, '#status', 'connected');
    await say(page, 'first in a new room');
    assert.equal(await waitForMessage(page, 'first in a new room'), 2, 'a new room counts from 1');

    await page.context().close();
  });
});
