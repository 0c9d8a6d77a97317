// Pages using /mqws.js against mqws with static tokens on (integration/browser/run.sh).
// Usage: node auth.mjs HTTP_PORT MQTT_PORT TOKEN
// The token's grant is sub ["auth/a/#"]. pages/auth.html is opened three times, subscribed to
// auth/a/#: without a token and with a wrong one (each must end "closed" with the client's
// error, never open), and with TOKEN: it must open and show a message published on auth/a/x
// with mosquitto_pub; then client.subscribe(["auth/#"]) (wider than the grant) must be
// rejected and client.subscribe(["auth/a/b/+"]) (inside it) accepted, each shown in the page.
// Prints "result {json}" or "error …" (exit 1).
import { launch, say } from "./launch.mjs";
import { pub } from "./mqtt.mjs";

const [httpPort, mqttPort, token] = process.argv.slice(2);
const url = `http://127.0.0.1:${httpPort}/app/auth.html?f=auth/a/%23`;

const view = (page) => page.evaluate(() => ({
  states: window.states, opens: window.opens, errors: window.errors, messages: window.messages,
  shown: {
    state: document.getElementById("state").textContent,
    errors: document.getElementById("errors").textContent,
    sub: document.getElementById("sub").textContent,
    messages: [...document.querySelectorAll("#messages li")].map((li) => li.textContent),
  },
}));

const browser = await launch();
try {
  const result = {};
  for (const [name, fragment] of [["none", ""], ["wrong", "#token=not-the-token"]]) {
    const page = await browser.newPage();
    await page.goto(url + fragment);
    await page.waitForFunction(() => window.state === "closed", null, { timeout: 10_000 }).catch(() => {});
    await page.waitForTimeout(300); // a late "open" would show now
    result[name] = await view(page);
    await page.close();
  }
  const page = await browser.newPage();
  await page.goto(`${url}#token=${encodeURIComponent(token)}`);
  await page.waitForFunction(() => window.opens >= 1, null, { timeout: 10_000 }).catch(async () => {
    const now = await page.evaluate(() => ({ states: window.states, errors: window.errors }));
    throw new Error(`the page with the token did not open within 10 s: ${JSON.stringify(now)}`);
  });
  await pub(mqttPort, "auth/a/x", '{"n":1}');
  await page.waitForFunction(() => window.messages.length >= 1, null, { timeout: 10_000 }).catch(() => {});
  const wide = await page.evaluate(() => window.subscribeTo(["auth/#"]));
  const wideShown = await page.textContent("#sub");
  const inside = await page.evaluate(() => window.subscribeTo(["auth/a/b/+"]));
  result.good = { ...(await view(page)), wide, wideShown, inside };
  say(`result ${JSON.stringify(result)}`);
} catch (e) {
  say(`error ${String(e.message ?? e).split("\n")[0]}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
