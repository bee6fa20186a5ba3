// Updates docs/compare.png: the compare page with the demo bot running.
//
//   cd tests/e2e && npm run screenshot
//
// Uses the same release binary and Chromium as the tests.

import path from 'node:path';
import { COMPARE_TRANSPORTS, REPO_ROOT, launchBrowser, openCompareWithBot, startServer } from './harness.mjs';

const OUTPUT = path.join(REPO_ROOT, 'docs', 'compare.png');

const server = await startServer();
const browser = await launchBrowser();
try {
  // Enough events that the percentiles have settled.
  const page = await openCompareWithBot(browser, server.url, { events: 150 });
  // The summary refreshes once a second; wait until every row has a latency.
  await page.waitForFunction(
    (count) => [...document.querySelectorAll('#summary tbody tr')].filter((row) => /\d+ ms/.test(row.cells[2].textContent)).length === count,
    COMPARE_TRANSPORTS.length,
  );
  await page.screenshot({ path: OUTPUT, fullPage: true });
  console.log(`wrote ${path.relative(process.cwd(), OUTPUT)}`);
} finally {
  await browser.close();
  await server.stop();
}
