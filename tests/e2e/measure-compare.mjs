// measure-compare.mjs: the figures docs/lecture.md quotes for WebTransport
// and HTTP/2, measured the way a class sees them: Debian's Chromium on the
// compare page. Not a test (it asserts nothing); run it by hand:
//
//   PUSHLAB_BIN=target/release/pushlab node tests/e2e/measure-compare.mjs [SECONDS]
//
// 1. `--webtransport --demo` on plain HTTP: the compare page's panes read
//    the demo bot (20 cursor moves a second) for SECONDS (default 30);
//    prints each transport's exact bytes per event, up and down, from the
//    page's exact-cost table, and its latency p50/p95 from the summary.
// 2. `--tls --http1-addr`: the HTTP/1.1 against HTTP/2 card, run twice in
//    one page; prints each request's bytes up and down.

import { launchBrowser, startServer, WAIT_MS } from './harness.mjs';

const SECONDS = Number(process.argv[2] ?? 30);

/** The rows of a table on the page, as arrays of cell texts. */
function readTable(page, selector) {
  return page.locator(`${selector} tbody tr`).evaluateAll((rows) => rows.map((row) => [...row.cells].map((cell) => cell.textContent)));
}

async function transports(browser) {
  const server = await startServer({ args: ['--presence-timeout', '30', '--webtransport', '--demo'] });
  try {
    const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
    await page.goto(`${server.url}/compare.html`);
    await page.locator('.pane[data-transport="webtransport"] .cursor').waitFor({ timeout: WAIT_MS });
    // The exact-cost table counts per event from the last change of rate.
    await page.selectOption('#bot-rate', '20');
    await page.selectOption('#bot-rate', '0');
    await new Promise((resolve) => setTimeout(resolve, SECONDS * 1000));
    console.log(`transports, ${SECONDS} s of the --demo bot at 20 moves/s, on ${server.url}:`);
    console.log('exact cost [transport, events/s, requests/s, up/s, down/s, requests/event, up/event, down/event]:');
    for (const row of await readTable(page, '#traffic')) console.log(`  ${row.join(' | ')}`);
    console.log('measured in the browser [transport, events, p50, p95, requests/event, received/event]:');
    for (const row of await readTable(page, '#summary')) console.log(`  ${row.join(' | ')}`);
    await page.close();
  } finally {
    await server.stop();
  }
}

async function protocols(browser) {
  const server = await startServer({ args: ['--presence-timeout', '30', '--tls', '--http1-addr', '127.0.0.1:0'] });
  try {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    await page.goto(`${server.url}/compare.html`);
    await page.locator('#protocols[data-state="ready"]').waitFor({ timeout: WAIT_MS });
    for (const run of [1, 2]) {
      await page.click('#protocols-run');
      await page.locator('#protocols[data-state="done"]').waitFor({ timeout: WAIT_MS });
      console.log(`HTTP/1.1 against HTTP/2, run ${run} [request, h1 up, down, total, h2 up, down, total]:`);
      for (const row of await readTable(page, '#protocols')) console.log(`  ${row.join(' | ')}`);
      console.log(`  ${await page.locator('#protocols-summary').textContent()}`);
    }
    await context.close();
  } finally {
    await server.stop();
  }
}

const browser = await launchBrowser({ quic: true });
try {
  await transports(browser);
  await protocols(browser);
} finally {
  await browser.close();
}
