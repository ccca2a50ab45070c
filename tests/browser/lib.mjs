// Shared pieces of the console's browser flows: a real headless Chromium (Debian's), a fresh
// profile, sign-in, steps that name what failed, and a screenshot when a flow fails.
//
// Each flow is run by tests/tests/e2e/console.rs with the server's address and what it created in
// environment variables; it prints `RESULT <json>` lines for the Rust side to check through the API.
import { chromium } from "playwright-core";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const env = (name) => {
  const v = process.env[name];
  if (v === undefined) throw new Error(`environment variable ${name} is not set`);
  return v;
};

const STEP_TIMEOUT = 20_000;

/** Runs `flow(page, ctx)` in a fresh headless Chromium; exits 0, or 1 with a screenshot. */
export async function run(name, flow) {
  const profile = mkdtempSync(join(tmpdir(), "wasmhook-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: Number(process.env.VIEWPORT_WIDTH || 1280), height: Number(process.env.VIEWPORT_HEIGHT || 900) },
  });
  context.setDefaultTimeout(STEP_TIMEOUT);
  const page = context.pages()[0] || (await context.newPage());
  // Any dialog is a failure: the console opens none, and an injected script would.
  const dialogs = [];
  page.on("dialog", async (d) => { dialogs.push(`${d.type()}: ${d.message()}`); await d.dismiss(); });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  const ctx = { dialogs, errors, step: async (what, fn) => {
    process.stdout.write(`step: ${what}\n`);
    try { return await fn(); } catch (e) { e.message = `${what}: ${e.message}`; throw e; }
  } };
  let code = 0;
  try {
    await flow(page, ctx);
    if (dialogs.length) throw new Error(`dialogs were opened: ${dialogs.join(" | ")}`);
  } catch (e) {
    code = 1;
    process.stdout.write(`FAILED ${name}: ${e.stack || e}\n`);
    if (errors.length) process.stdout.write(`page errors: ${errors.join(" | ")}\n`);
    const dir = process.env.SCREENSHOT_DIR || "target/browser-screenshots";
    try {
      mkdirSync(dir, { recursive: true });
      const file = join(dir, `${name}-${Date.now()}.png`);
      await page.screenshot({ path: file, fullPage: true });
      process.stdout.write(`screenshot: ${file}\n`);
    } catch (s) {
      process.stdout.write(`no screenshot: ${s}\n`);
    }
  } finally {
    await context.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  }
  process.exit(code);
}

/** Signs in with an API key (or the admin token) through the form. */
export async function signIn(page, key) {
  await page.goto(`${env("BASE")}/console/sign-in`);
  await page.getByLabel("API key (or the admin token)").fill(key);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL((u) => !u.pathname.endsWith("/sign-in"));
}

/** Tells the Rust side a value (parsed from stdout). */
export function result(value) {
  process.stdout.write(`RESULT ${JSON.stringify(value)}\n`);
}

/** Calls the JSON API with the account's key (the "through the API" half of a step). */
export async function api(method, path, body) {
  const r = await fetch(`${env("BASE")}${path}`, {
    method,
    headers: { authorization: `Bearer ${env("KEY")}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, json: text ? JSON.parse(text) : null };
}

/** Reloads until `check()` is true (for server-side state the page shows after a reload). */
export async function until(page, what, check, { reload = true, timeout = 20_000 } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await page.waitForTimeout(300);
    if (reload) await page.reload();
  }
}

/** Fails unless the page shows `text` literally and holds no injected element. */
export async function assertInert(page, text, where) {
  const shown = await page.evaluate((t) => document.body.innerText.includes(t), text);
  if (!shown) throw new Error(`${where}: the text ${JSON.stringify(text)} is not shown as text`);
  const injected = await page.evaluate(() => ({
    imgs: document.querySelectorAll("img").length,
    inlineScripts: [...document.querySelectorAll("script")].filter((s) => !s.src).length,
    handlers: [...document.querySelectorAll("*")].filter((el) =>
      [...el.attributes].some((a) => a.name.startsWith("on"))).length,
    jsLinks: [...document.querySelectorAll("a[href]")].filter((a) =>
      a.getAttribute("href").trim().toLowerCase().startsWith("javascript:")).length,
    pwned: window.__pwned === true,
  }));
  for (const [k, v] of Object.entries(injected)) {
    if (v) throw new Error(`${where}: injected markup found (${k}: ${v})`);
  }
}

/** Issue 12, line 14: every form control has a label, and at 375 px the page itself does not
 *  scroll sideways (wide tables scroll inside their own box). */
export async function assertUsable(page, where) {
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll("input:not([type=hidden]), select, textarea")]
      .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label"))
      .map((el) => el.name || el.id || el.outerHTML.slice(0, 60)));
  if (unlabelled.length) throw new Error(`${where}: unlabelled controls: ${unlabelled.join(", ")}`);
  const width = page.viewportSize().width;
  await page.setViewportSize({ width: 375, height: 800 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
  const culprits = overflow > 375 ? await page.evaluate(() => [...document.querySelectorAll("body *")]
    .filter((el) => el.getBoundingClientRect().right > 376)
    .slice(0, 5).map((el) => `${el.tagName}.${el.className}#${el.id} ${Math.round(el.getBoundingClientRect().right)}`)) : [];
  await page.setViewportSize({ width, height: 900 });
  if (overflow > 375) throw new Error(`${where}: ${overflow} px wide at a 375 px viewport (${culprits.join(", ")})`);
}
