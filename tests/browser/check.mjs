// Browser and accessibility check of the stackd status page.
//
//   node check.mjs URL OUTDIR [STACK_PATH ...]
//
// Opens URL (the overview) and each STACK_PATH (default: the first stack link on
// the overview) in headless Debian Chromium at a laptop and a phone viewport,
// runs axe-core (WCAG 2.0 A/AA and 2.1 AA, colour contrast included), saves
// screenshots to OUTDIR, and prints one JSON report on stdout. Every request
// that is not to URL's own loopback origin is blocked and reported: the page
// must work offline and through `kubectl port-forward`.
//
// Exit status: 0 clean; 1 the report lists problems; 2 the check itself failed
// (no usable report). tests/browser.rs reads the report and asserts on it.

import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.STACKD_CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
];
const VIEWPORTS = [
  { name: 'laptop', width: 1280, height: 800 },
  { name: 'phone', width: 390, height: 844 },
];
const AXE_TAGS = ['wcag2a', 'wcag2aa', 'wcag21aa'];
// More than any seeded page has: a bound, in case focus is trapped.
const MAX_TAB_STOPS = 60;
// A wedged browser must not hang `cargo test`.
const OVERALL_TIMEOUT_MS = 120_000;

function fail(message) {
  process.stderr.write(`check.mjs: ${message}\n`);
  process.exit(2);
}

const [url, outDir, ...stackPaths] = process.argv.slice(2);
if (!url || !outDir) {
  fail('usage: node check.mjs URL OUTDIR [STACK_PATH ...]');
}
const base = new URL(url);
if (!['127.0.0.1', 'localhost', '[::1]'].includes(base.hostname)) {
  fail(`URL must be on the loopback interface, not ${base.hostname}`);
}
const axeSource = readFileSync(
  createRequire(import.meta.url).resolve('axe-core/axe.min.js'),
  'utf8',
);

setTimeout(() => fail(`no result after ${OVERALL_TIMEOUT_MS} ms`), OVERALL_TIMEOUT_MS).unref();

const report = {
  chromium: null,
  axe: null,
  pages: [],
  externalRequests: [],
  consoleErrors: [],
  pageErrors: [],
  problems: [],
};

function isLocal(requestUrl) {
  if (requestUrl.startsWith('data:') || requestUrl === 'about:blank') return true;
  try {
    return new URL(requestUrl).origin === base.origin;
  } catch {
    return false;
  }
}

// A file-name-safe label for a page path: `/stacks/shop/web` -> `stacks-shop-web`.
function slug(path) {
  let text = path;
  try {
    text = decodeURIComponent(path);
  } catch {
    // Keep the raw path: it is only a label.
  }
  return text.replace(/[^A-Za-z0-9]+/g, '-').replace(/^-|-$/g, '') || 'root';
}

// Presses Tab until focus leaves the page or comes back round, recording each
// stop and whether it shows a focus indicator (WCAG 2.1.1 and 2.4.7).
async function tabThrough(page) {
  const stops = [];
  for (let i = 0; i < MAX_TAB_STOPS; i += 1) {
    await page.keyboard.press('Tab');
    const stop = await page.evaluate(() => {
      const el = document.activeElement;
      if (!el || el === document.body) return null;
      const style = getComputedStyle(el);
      const outline = style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0;
      return {
        element: el.tagName.toLowerCase(),
        name: (el.getAttribute('aria-labelledby')
          ? document.getElementById(el.getAttribute('aria-labelledby'))?.textContent
          : el.textContent)?.trim().slice(0, 80) ?? '',
        visible: outline || style.boxShadow !== 'none',
      };
    });
    if (!stop) break;
    const first = stops[0];
    if (first && first.element === stop.element && first.name === stop.name) break;
    stops.push(stop);
  }
  return stops;
}

async function checkPage(page, target, label, viewport) {
  await page.setViewportSize({ width: viewport.width, height: viewport.height });
  const dialogs = [];
  const onDialog = (dialog) => {
    dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  };
  page.on('dialog', onDialog);
  const response = await page.goto(target, { waitUntil: 'load' });
  const status = response ? response.status() : null;
  const title = await page.title();
  const text = await page.evaluate(() => document.body.innerText);
  // Set by the seeded hostile names if the page ever ran them.
  const xss = await page.evaluate(() => (window.__xss === undefined ? null : String(window.__xss)));
  const horizontalOverflow = await page.evaluate(
    () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
  );
  // No element may be wider than the viewport, nor scroll sideways inside
  // (a table in a scroll box counts): issue 12 asks for no sideways scroll at all.
  const wideElements = await page.evaluate(() => {
    const width = document.documentElement.clientWidth;
    const describe = (el) =>
      `<${el.tagName.toLowerCase()}${el.id ? `#${el.id}` : ''}${el.className && typeof el.className === 'string' ? `.${el.className.split(' ').join('.')}` : ''}>`;
    const wide = [];
    for (const el of document.body.querySelectorAll('*')) {
      const box = el.getBoundingClientRect();
      if (box.width === 0 && box.height === 0) continue;
      const style = getComputedStyle(el);
      if (style.position === 'absolute' && box.width <= 1) continue;
      if (box.right > width + 1 || box.left < -1) {
        wide.push(`${describe(el)} spans ${Math.round(box.left)}..${Math.round(box.right)} px`);
      } else if (el.scrollWidth > el.clientWidth + 1 && ['auto', 'scroll'].includes(style.overflowX)) {
        wide.push(`${describe(el)} scrolls sideways by ${el.scrollWidth - el.clientWidth} px`);
      }
    }
    return wide.slice(0, 20);
  });
  await page.addScriptTag({ content: axeSource });
  const axe = await page.evaluate(async (tags) => {
    const results = await window.axe.run(document, {
      runOnly: { type: 'tag', values: tags },
      rules: { 'color-contrast': { enabled: true } },
      resultTypes: ['violations', 'incomplete'],
    });
    const nodes = (list) =>
      list.map((n) => ({ target: n.target.join(' '), html: n.html, summary: n.failureSummary ?? '' }));
    const rules = (list) =>
      list.map((r) => ({ id: r.id, impact: r.impact, help: r.help, nodes: nodes(r.nodes) }));
    return {
      version: window.axe.version,
      violations: rules(results.violations),
      incomplete: rules(results.incomplete),
      rulesRun: [...results.passes, ...results.violations, ...results.incomplete, ...results.inapplicable]
        .map((r) => r.id)
        .sort(),
    };
  }, AXE_TAGS);
  const screenshot = join(outDir, `${label}-${viewport.name}.png`);
  await page.screenshot({ path: screenshot, fullPage: true });
  // After the screenshot, so that no focus ring shows in it.
  const focusOrder = viewport.name === 'laptop' ? await tabThrough(page) : [];
  page.off('dialog', onDialog);

  report.axe = axe.version;
  const where = `${label} at ${viewport.name}`;
  if (status !== 200) report.problems.push(`${where}: HTTP status ${status}`);
  if (xss !== null) report.problems.push(`${where}: hostile markup ran (window.__xss = ${xss})`);
  for (const d of dialogs) report.problems.push(`${where}: the page opened a dialog (${d})`);
  if (horizontalOverflow > 0) {
    report.problems.push(`${where}: the page scrolls sideways by ${horizontalOverflow} px`);
  }
  for (const wide of wideElements) {
    report.problems.push(`${where}: wider than the viewport: ${wide}`);
  }
  for (const stop of focusOrder.filter((s) => !s.visible)) {
    report.problems.push(`${where}: no visible focus on <${stop.element}> ${stop.name}`);
  }
  if (!axe.rulesRun.includes('color-contrast')) {
    report.problems.push(`${where}: axe did not run color-contrast`);
  }
  for (const v of axe.violations) {
    report.problems.push(`${where}: axe ${v.id} (${v.impact}) on ${v.nodes.length} element(s): ${v.help}`);
  }
  report.pages.push({
    page: label,
    viewport: viewport.name,
    url: page.url(),
    status,
    title,
    text,
    xss,
    dialogs,
    horizontalOverflow,
    wideElements,
    focusOrder,
    violations: axe.violations,
    incomplete: axe.incomplete,
    rulesRun: axe.rulesRun.length,
    screenshot,
  });
  return page;
}

async function main() {
  mkdirSync(outDir, { recursive: true });
  const userDataDir = mkdtempSync(join(tmpdir(), 'stackd-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      serviceWorkers: 'block',
      // axe is injected as an inline script; a strict page CSP must not stop the audit.
      bypassCSP: true,
      timeout: 60_000,
    });
    report.chromium = context.browser()?.version() ?? null;
    context.on('request', (request) => {
      const requested = request.url();
      if (!isLocal(requested) && !report.externalRequests.includes(requested)) {
        report.externalRequests.push(requested);
      }
    });
    await context.route('**/*', (route) =>
      isLocal(route.request().url()) ? route.continue() : route.abort('blockedbyclient'),
    );
    const page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(30_000);
    page.on('console', (message) => {
      if (message.type() === 'error') report.consoleErrors.push(message.text());
    });
    page.on('pageerror', (error) => report.pageErrors.push(String(error)));

    for (const viewport of VIEWPORTS) {
      await checkPage(page, base.href, 'overview', viewport);
    }
    if (stackPaths.length === 0) {
      await page.goto(base.href);
      const first = await page.locator('a[href^="/stacks/"]').first().getAttribute('href');
      if (!first) throw new Error('the overview links to no stack page');
      stackPaths.push(first);
    }
    for (const path of stackPaths) {
      for (const viewport of VIEWPORTS) {
        await checkPage(page, new URL(path, base).href, slug(path), viewport);
      }
    }
  } finally {
    await context?.close().catch(() => {});
    rmSync(userDataDir, { recursive: true, force: true });
  }
  for (const u of report.externalRequests) report.problems.push(`request left ${base.origin}: ${u}`);
  for (const e of report.pageErrors) report.problems.push(`page error: ${e}`);
  for (const e of report.consoleErrors) report.problems.push(`console error: ${e}`);
}

main().then(
  () => {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    for (const p of report.problems) process.stderr.write(`problem: ${p}\n`);
    process.exit(report.problems.length === 0 ? 0 : 1);
  },
  (error) => fail(error?.stack ?? String(error)),
);
