// Issue 12, line 2: a POST without the session's CSRF token is refused, and another account's
// subscription is a 404, from inside a signed-in browser.
import { run, signIn, env } from "./lib.mjs";

run("csrf", async (page, { step }) => {
  await step("sign in", () => signIn(page, env("KEY")));
  await step("a form POST without the token is refused", async () => {
    await page.goto(`${env("BASE")}/console/subscriptions/${env("SUB_ID")}`);
    const status = await page.evaluate(async (id) => {
      const r = await fetch(`/console/subscriptions/${id}/delete`, {
        method: "POST", credentials: "same-origin",
        headers: { "content-type": "application/x-www-form-urlencoded" }, body: "confirm=yes",
      });
      return r.status;
    }, env("SUB_ID"));
    if (status !== 403) throw new Error(`expected 403, got ${status}`);
  });
  await step("a form whose token was removed is refused, and says why", async () => {
    await page.getByText("Delete", { exact: true }).click();
    await page.evaluate(() => document.querySelectorAll('input[name="csrf"]').forEach((i) => i.remove()));
    await page.getByRole("button", { name: "Yes, delete it" }).click();
    await page.locator("[data-test=error-message]").getByText("CSRF").waitFor();
  });
  await step("another account's subscription is a 404", async () => {
    const r = await page.goto(`${env("BASE")}/console/subscriptions/${env("OTHER_SUB_ID")}`);
    if (r.status() !== 404) throw new Error(`expected 404, got ${r.status()}`);
    await page.getByText("does not exist in your account").waitFor();
  });
});
