/// notices.js: dismissable banners at the top of a page, for things the
/// reader should know about (a bad query parameter, a restarted server).

/** How many banners stay on screen; older ones make room. */
const MAX_NOTICES = 3;

/** Shows `text` in a banner inside `container`. `kind` is 'info' or 'warning'. */
export function notify(container, text, kind = 'info') {
  const notice = document.createElement('div');
  notice.className = `notice notice-${kind}`;
  const body = document.createElement('span');
  body.textContent = text;
  const close = document.createElement('button');
  close.type = 'button';
  close.className = 'notice-close';
  close.setAttribute('aria-label', 'Dismiss');
  close.textContent = '×';
  close.addEventListener('click', () => notice.remove());
  notice.append(body, close);
  container.append(notice);
  while (container.children.length > MAX_NOTICES) container.firstElementChild.remove();
}
