// Issue 12, line 6: on a subscription's page, Retry one delivery, Recover failed ones since a
// time (the count is shown first), reveal and copy the secret after a confirmation, rotate it,
// disable and enable, and delete another subscription after a confirmation.
import { run, signIn, env, result } from "./lib.mjs";

const BASE = env("BASE");
const SUB = env("SUB_ID");

run("subscription", async (page, { step }) => {
  await step("sign in", () => signIn(page, env("KEY")));
  await step("the failed deliveries, filtered", async () => {
    await page.goto(`${BASE}/console/subscriptions/${SUB}`);
    await page.getByLabel("Status", { exact: true }).selectOption("failed");
    await page.getByRole("button", { name: "Filter" }).click();
    await page.waitForURL("**?status=failed");
    const rows = page.locator("[data-test=delivery-row]");
    if ((await rows.count()) !== 3) throw new Error(`${await rows.count()} failed deliveries`);
  });
  const retried = await step("Retry one: its page follows it until it succeeds", async () => {
    const row = page.locator("[data-test=delivery-row]").first();
    const id = await row.getAttribute("data-delivery-id");
    await row.getByRole("button", { name: "Retry" }).click();
    await page.waitForURL(`**/console/deliveries/${id}`);
    await page.locator("[data-test=delivery-status]").getByText("succeeded").waitFor();
    const results = await page.locator("[data-test=attempt-result]").allInnerTexts();
    if (!results.some((r) => r.includes("HTTP 500")) || !results.at(-1).includes("HTTP 200")) {
      throw new Error(`attempt log: ${results.join(" | ")}`);
    }
    return id;
  });
  result({ retried });
  await step("Recover the others: the count first, then confirm", async () => {
    await page.goto(`${BASE}/console/subscriptions/${SUB}`);
    await page.getByRole("button", { name: "Recover…" }).click();
    await page.locator("[data-test=recover-count]").getByText("2 failed deliveries").waitFor();
    await page.getByRole("button", { name: "Retry 2" }).click();
    await page.locator("[data-test=recovered]").getByText("2 deliveries queued").waitFor();
  });
  const secret = await step("reveal the secret after a confirmation, and copy it", async () => {
    await page.goto(`${BASE}/console/subscriptions/${SUB}`);
    if (await page.getByRole("button", { name: "Yes, show it" }).isVisible()) {
      throw new Error("the secret's confirmation is open before asking");
    }
    await page.getByText("Reveal secret").click();
    await page.getByRole("button", { name: "Yes, show it" }).click();
    const value = (await page.locator("[data-test=secret-value]").innerText()).trim();
    await page.getByRole("button", { name: "Copy" }).click();
    await page.waitForFunction(() => {
      const b = document.querySelector("[data-test=copy-secret]");
      const sel = window.getSelection().toString();
      return b.textContent === "Copied" || sel.startsWith("whsec_");
    });
    return value;
  });
  const rotated = await step("rotate it: the old one keeps signing for 24 hours", async () => {
    await page.goto(`${BASE}/console/subscriptions/${SUB}`);
    await page.getByText("Rotate secret").click();
    await page.getByRole("button", { name: "Yes, rotate" }).click();
    await page.locator("[data-test=secret-grace]").waitFor();
    return (await page.locator("[data-test=secret-value]").innerText()).trim();
  });
  result({ secret, rotated });
  await step("disable, then enable", async () => {
    await page.goto(`${BASE}/console/subscriptions/${SUB}`);
    await page.getByRole("button", { name: "Disable" }).click();
    await page.locator("[data-test=subscription-details] [data-test=sub-status]").getByText("disabled").waitFor();
    await page.getByRole("button", { name: "Enable" }).click();
    await page.locator("[data-test=subscription-details] [data-test=sub-status]").getByText("active").waitFor();
  });
  await step("delete another subscription after a confirmation", async () => {
    await page.goto(`${BASE}/console/integrations`);
    const row = page.locator(`[data-test=subscription-row][data-id="${env("DELETE_ID")}"]`);
    await row.getByText("Delete", { exact: true }).click();
    await row.getByRole("button", { name: "Yes, delete it" }).click();
    await page.waitForURL("**?done=deleted");
    if (await page.locator(`[data-id="${env("DELETE_ID")}"]`).count()) throw new Error("still listed");
  });
});
