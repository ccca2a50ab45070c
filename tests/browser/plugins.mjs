// Issue 12, lines 9-10 and 15: upload pii-redactor by the file picker → attach it as the
// transform of a webhook → Send test event → the redacted payload is visible in the attempt log
// (the request body each attempt sent is stored with it; the test receiver only answers "ok");
// uploads that are not components show the API's reason inline.
import { run, signIn, env, result, api } from "./lib.mjs";

const PII = env("PII_REDACTOR_WASM");
const WEBHOOK = env("WEBHOOK_ID");

run("plugins", async (page, { step }) => {
  await step("sign in", () => signIn(page, env("KEY")));

  await step("upload garbage: the reason is shown", async () => {
    await page.getByRole("navigation").getByRole("link", { name: "Plugins" }).click();
    await page.getByLabel("Name").fill("garbage");
    await page.getByLabel("WebAssembly component (.wasm)").setInputFiles({
      name: "garbage.wasm", mimeType: "application/wasm", buffer: Buffer.from("this is not wasm"),
    });
    await page.locator("[data-test=upload-error]").getByText("not a WebAssembly binary").waitFor();
  });
  await step("upload a core module: the reason says to build a component", async () => {
    await page.getByLabel("WebAssembly component (.wasm)").setInputFiles({
      name: "core.wasm", mimeType: "application/wasm",
      buffer: Buffer.from([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]),
    });
    await page.locator("[data-test=upload-error]").getByText("wasm32-wasip2").waitFor();
  });

  const pluginId = await step("upload pii-redactor with the file picker", async () => {
    await page.getByLabel("Name").fill("pii-redactor");
    await page.getByLabel("WebAssembly component (.wasm)").setInputFiles(PII);
    await page.waitForURL("**/console/plugins/plg_*?done=uploaded", { timeout: 60_000 });
    await page.locator("[data-test=plugin-version]").getByText("v1").waitFor();
    // Compiled after the upload: the page follows the version until it is ready.
    await page.locator("[data-test=plugin-status]").getByText("ready").waitFor({ timeout: 120_000 });
    return page.url().match(/plugins\/(plg_[^?]+)/)[1];
  });
  result({ plugin: pluginId });

  await step("Test run on the example message: replace, with the diff", async () => {
    await page.getByLabel("Example type").selectOption("message:created");
    await page.getByRole("button", { name: "Test run" }).click();
    await page.locator("[data-test=test-run-result]").waitFor();
    await page.locator("[data-test=test-run-decision]").getByText("replace").waitFor();
    const diff = page.locator("[data-test=test-run-diff]");
    await diff.locator(".diff-add").getByText("[email]").first().waitFor();
    await diff.locator(".diff-del").getByText("jane.doe@example.com").first().waitFor();
    await page.getByRole("link", { name: /Back to pii-redactor/ }).click();
  });

  await step("attach it as the webhook's transform", async () => {
    await page.getByLabel("As the transform of a webhook").selectOption(WEBHOOK);
    await page.getByRole("button", { name: "Attach as transform" }).click();
    await page.waitForURL("**?done=transform");
    await page.locator("[data-test=plugin-attached]").getByText(WEBHOOK).waitFor();
  });

  const testEvent = await step("Send test event from the subscription's page", async () => {
    await page.locator("[data-test=plugin-attached]").getByRole("link", { name: WEBHOOK }).click();
    await page.getByLabel("Event type").selectOption("message:created");
    await page.getByRole("button", { name: "Send test event" }).click();
    await page.waitForURL("**/test/test_*");
    return (await page.locator("[data-test=test-event-id]").innerText()).trim();
  });
  result({ test_event: testEvent });

  await step("the redacted payload is visible in the attempt log", async () => {
    // The page follows the delivery by itself until it settles.
    await page.locator("[data-test=test-delivery][data-settled=true]").waitFor({ timeout: 30_000 });
    const request = page.locator("[data-test=attempt-request]").last();
    const body = await request.locator("[data-test=attempt-request-body]").innerText();
    if (!body.includes("[email]") || !body.includes("[phone]")) {
      throw new Error(`the attempt log does not show the redacted body sent: ${body}`);
    }
    if (body.includes("jane.doe@example.com")) throw new Error("the e-mail address was sent");
    const headers = await request.locator("[data-test=attempt-request-headers]").innerText();
    if (!/webhook-signature: v1,/.test(headers) || !/webhook-id: msg_/.test(headers)) {
      throw new Error(`the signed headers sent are not shown: ${headers}`);
    }
    const response = await page.locator("[data-test=attempt-response]").first().innerText();
    if (response.trim() !== "ok") throw new Error(`the receiver's answer is not the one shown: ${response}`);
    const sent = await page.locator("[data-test=test-event-payload]").innerText();
    if (!sent.includes("jane.doe@example.com")) throw new Error("the original payload is not shown");
  });

  await step("settings: config, allowed hosts, a limit, the log level", async () => {
    await page.goto(`${env("BASE")}/console/plugins/${pluginId}`);
    await page.getByText("ceiling on this server 30000").first().waitFor();
    await page.getByLabel("Deadline (ms)").fill("999999");
    // Over the ceiling: the browser refuses it (max), and so would the server.
    if (await page.getByLabel("Deadline (ms)").evaluate((el) => el.checkValidity())) {
      throw new Error("a deadline over the ceiling is accepted by the form");
    }
    await page.getByLabel("Deadline (ms)").evaluate((el) => el.removeAttribute("max"));
    await page.getByRole("button", { name: "Save settings" }).click();
    await page.locator("[data-test=plugin-error]").getByText("limits.deadline_ms: at most 30000").waitFor();
    await page.getByLabel(/^Config \(one/).fill("kinds=email");
    await page.getByLabel(/^Allowed hosts/).fill("api.example.com");
    await page.getByLabel("Deadline (ms)").fill("2000");
    await page.getByLabel(/^Log level/).selectOption("debug");
    await page.getByRole("button", { name: "Save settings" }).click();
    await page.waitForURL("**?done=saved");
    if ((await page.getByLabel("Deadline (ms)").inputValue()) !== "2000") throw new Error("limit not kept");
  });
  await step("delete is refused while a webhook uses it, and says which", async () => {
    await page.getByText("Delete this plugin").click();
    await page.getByRole("button", { name: "Yes, delete it" }).click();
    await page.locator("[data-test=plugin-error]").getByText(WEBHOOK).waitFor();
  });
  await step("attach as a subscriber", async () => {
    await page.goto(`${env("BASE")}/console/plugins/${pluginId}`);
    await page.getByRole("button", { name: "Subscribe the plugin" }).click();
    await page.waitForURL("**?done=subscriber");
    await page.locator("[data-test=plugin-attached]").getByText("subscriber:").waitFor();
  });
  if (process.env.LIVE === "1") {
    await step("the live tail shows the plugin's log line as it is written", async () => {
      await page.getByLabel("Live tail").check();
      await page.locator("#logs-live-status").getByText("Live:").waitFor();
      const r = await api("POST", "/v1/events", {
        type: "message:created", payload: { conversation_id: "c-9", text: "mail me: x@y.example" },
      });
      if (r.status !== 202) throw new Error(`POST /v1/events: ${r.status}`);
      await page.locator("tr.fresh [data-test=log-message]").getByText(/masked 1 field/).first().waitFor();
    });
  }
});
