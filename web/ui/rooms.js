/// rooms.js: which room this page is in, and a small picker to move to another.
///
/// A room is its own chat, canvas and log. The page's room comes from its URL
/// (`?room=physics`; none means the lobby), and net/api.js adds it to every
/// request. Moving to another room is a new page load, so each page only
/// ever has one room, one session and one connection, as the server wants.
///
///   GET /rooms  → {"rooms":[{"name":"lobby","online":3,"head":120}, …]}
///
/// Rooms whose name starts with `_` are not on the list: share their URL.

import { LOBBY, ROOM, ROOM_RULE, listRooms } from '../net/api.js';

/** The URL of this page in room `name`, keeping its other options. */
export function urlForRoom(name) {
  const url = new URL(location.href);
  if (name === LOBBY) url.searchParams.delete('room');
  else url.searchParams.set('room', name);
  return url.pathname + url.search;
}

/**
 * Fills `container` with the room's name and a picker: the listed rooms with
 * who is online in each (fetched when the picker opens), and a field to make
 * or join a room by name.
 */
export function mountRoomPicker(container) {
  const picker = document.createElement('details');
  picker.className = 'rooms';
  const summary = document.createElement('summary');
  summary.className = 'room-name';
  summary.title = 'This page\'s room: click to pick another';
  summary.append('room ');
  const name = document.createElement('strong');
  name.id = 'room-name';
  name.textContent = ROOM;
  summary.append(name);
  picker.append(summary);

  const panel = document.createElement('div');
  panel.className = 'rooms-panel';
  const list = document.createElement('ul');
  list.className = 'rooms-list';
  list.setAttribute('aria-label', 'Open rooms');
  const form = document.createElement('form');
  form.className = 'rooms-new';
  form.noValidate = true;
  const label = document.createElement('label');
  label.textContent = 'Make or join a room';
  label.htmlFor = 'room-new';
  const input = document.createElement('input');
  input.id = 'room-new';
  input.maxLength = 25;
  input.placeholder = 'e.g. physics';
  input.spellcheck = false;
  const go = document.createElement('button');
  go.type = 'submit';
  go.textContent = 'Go';
  const error = document.createElement('p');
  error.className = 'field-error';
  error.setAttribute('role', 'alert');
  form.append(label, input, go, error);
  panel.append(list, form);
  picker.append(panel);
  container.append(picker);

  picker.addEventListener('toggle', () => {
    if (picker.open) refresh(list);
  });
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const wanted = input.value.trim();
    if (!ROOM_RULE.test(wanted)) {
      error.textContent = '1 to 24 characters from A–Z a–z 0–9 _ -, starting with a letter; a leading _ keeps the room off the list.';
      return;
    }
    location.assign(urlForRoom(wanted.toLowerCase()));
  });
  return picker;
}

/** Lists the open rooms in `list`, each a link, this page's marked. */
async function refresh(list) {
  let rooms;
  try {
    rooms = await listRooms();
  } catch {
    list.replaceChildren(item('The room list did not load.'));
    return;
  }
  if (rooms.length === 0) {
    list.replaceChildren(item('No listed rooms yet.'));
    return;
  }
  list.replaceChildren(...rooms.map((room) => {
    const link = document.createElement('a');
    link.href = urlForRoom(room.name);
    link.textContent = room.name;
    if (room.name === ROOM) link.setAttribute('aria-current', 'page');
    const online = document.createElement('span');
    online.className = 'rooms-online';
    online.textContent = `${room.online} online`;
    const li = item();
    li.dataset.room = room.name;
    li.append(link, ' ', online);
    return li;
  }));
}

function item(text) {
  const li = document.createElement('li');
  if (text) li.textContent = text;
  return li;
}
