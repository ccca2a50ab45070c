// Issue 12, line 15 (the seed's flow): sign in → Integrations → "Add webhook URL" → a receiver
// that echoes the challenge → verified and listed → an event posted through the API shows up
// delivered on the subscription's page. Then the failing case: a receiver that does not echo →
// the reason is shown, and nothing is delivered.
import { run, signIn, env, result, api, until } from "./lib.mjs";

const GOOD = env("GOOD_URL");
const BAD = env("BAD_URL");

async function addWebhook(page, step, url) {
  await step("open Integrations", async () => {
    await page.getByRole("navigation").getByRole("link", { name: "Integrations" }).click();
    await page.waitForURL("**/console/integrations");
  });
  await step('"Add webhook URL", from the keyboard', async () => {
    await page.getByRole("link", { name: "Add webhook URL", exact: true }).focus();
    await page.keyboard.press("Enter");
    await page.waitForURL("**/console/integrations/new");
    await page.getByLabel("URL", { exact: true }).fill(url);
    if (!(await page.getByLabel("message:created").isChecked())) {
      throw new Error("message:created is not preselected");
    }
  });
  const report = await step("check the URL before saving", async () => {
    await page.getByRole("button", { name: "Check URL" }).click();
    const report = page.locator("[data-test=check-report]");
    await report.waitFor();
    if ((await page.getByLabel("URL", { exact: true }).inputValue()) !== url) {
      throw new Error("the form lost its URL");
    }
    return (await report.innerText());
  });
  await step("save", async () => {
    await page.getByRole("button", { name: "Save webhook" }).click();
    await page.waitForURL("**/console/integrations?done=created");
  });
  const row = page.locator("[data-test=subscription-row]", { has: page.getByText(url, { exact: true }) });
  await row.waitFor();
  return { row, report };
}

run("add-webhook", async (page, { step }) => {
  await step("sign in", () => signIn(page, env("KEY")));

  // A receiver that echoes the challenge.
  const good = await addWebhook(page, step, GOOD);
  if (!/passed/i.test(good.report) || !/HTTP 200/.test(good.report)) {
    throw new Error(`the check of the echoing receiver did not pass: ${good.report}`);
  }
  await step("the subscription is verified and listed", async () => {
    await good.row.locator("[data-test=sub-status]").getByText("active", { exact: true }).waitFor();
  });
  const goodId = await good.row.getAttribute("data-id");
  result({ good: goodId });

  await step("an event posted through the API", async () => {
    const r = await api("POST", "/v1/events", {
      type: "message:created", id: "browser-event-1",
      payload: { conversation_id: "conv-browser", text: "Hello from the API" },
    });
    if (r.status !== 202) throw new Error(`POST /v1/events: ${r.status}`);
  });
  await step("shows up delivered on the subscription's page", async () => {
    await good.row.getByRole("link", { name: goodId }).click();
    await page.waitForURL(`**/console/subscriptions/${goodId}`);
    const row = page.locator("[data-test=delivery-row]", { has: page.getByRole("link", { name: "browser-event-1" }) });
    await until(page, "the delivery to succeed", async () =>
      (await row.count()) === 1 &&
      (await row.locator("[data-test=delivery-status]").innerText()).trim() === "succeeded");
    await row.locator("[data-test=delivery-link]").click();
    await page.locator("[data-test=attempt-result]").getByText("HTTP 200").waitFor();
    const sent = page.locator("[data-test=attempt-request]").last();
    await sent.locator("[data-test=attempt-request-headers]").getByText(/webhook-id: msg_/).waitFor();
    await sent.locator("[data-test=attempt-request-headers]").getByText(/webhook-signature: v1,/).waitFor();
    await sent.locator("[data-test=attempt-request-body]").getByText(/Hello from the API/).waitFor();
  });

  // A receiver that answers 200 without the challenge.
  const bad = await addWebhook(page, step, BAD);
  if (/passed/i.test(bad.report) || !/challenge/i.test(bad.report) || !/HTTP 200/.test(bad.report)) {
    throw new Error(`the check of the non-echoing receiver should fail with the reason: ${bad.report}`);
  }
  const badId = await bad.row.getAttribute("data-id");
  const reason = await step("the reason is shown", async () => {
    const reason = bad.row.locator("[data-test=sub-status-reason]");
    await until(page, "the handshake's reason", async () => {
      const text = (await reason.count()) ? await reason.innerText() : "";
      return /challenge/i.test(text);
    }, { reload: false });
    await bad.row.locator("[data-test=sub-status]").getByText("pending_verification").waitFor();
    return (await reason.innerText()).trim();
  });
  result({ bad: badId, reason });

  await step("nothing is delivered to it", async () => {
    const r = await api("POST", "/v1/events", {
      type: "message:created", id: "browser-event-2", payload: { text: "Not for the unverified one" },
    });
    if (r.status !== 202) throw new Error(`POST /v1/events: ${r.status}`);
    await page.goto(`${env("BASE")}/console/subscriptions/${badId}`);
    await page.locator("[data-test=no-deliveries]").waitFor();
    await page.waitForTimeout(500);
    await page.reload();
    await page.locator("[data-test=no-deliveries]").waitFor();
  });
});
