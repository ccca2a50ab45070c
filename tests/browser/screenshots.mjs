// The README's pictures (issue 12, line 14): the Integrations page and a plugin test run, as
// small PNGs under docs/. Run by the ignored test `docs_screenshots` in tests/tests/e2e/console.rs.
import { run, signIn, env } from "./lib.mjs";

const OUT = env("OUT_DIR");

run("screenshots", async (page, { step }) => {
  await step("sign in", () => signIn(page, env("KEY")));
  await step("the Integrations page", async () => {
    await page.goto(`${env("BASE")}/console/integrations`);
    await page.locator("[data-test=subscriptions-table]").waitFor();
    await page.screenshot({ path: `${OUT}/console-integrations.png` });
  });
  if (process.env.NARROW === "1") {
    await step("the Integrations page at 375 px", async () => {
      await page.setViewportSize({ width: 375, height: 800 });
      await page.reload();
      await page.screenshot({ path: `${OUT}/console-integrations-375.png`, fullPage: false });
      await page.setViewportSize({ width: 1280, height: 760 });
    });
  }
  if (process.env.PLUGIN_ID) {
    await step("a plugin test run", async () => {
      await page.goto(`${env("BASE")}/console/plugins/${env("PLUGIN_ID")}`);
      const run = page.locator("[data-test=test-run]");
      if (await page.getByRole("button", { name: "Test run" }).count()) {
        await page.getByRole("button", { name: "Test run" }).click();
        await page.locator("[data-test=test-run-result]").waitFor();
      }
      await run.screenshot({ path: `${OUT}/console-test-run.png` });
    });
  }
});
