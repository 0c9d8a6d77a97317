// The real MQTT clients for the browser checks: mosquitto_pub and mosquitto_sub (apt
// mosquitto-clients), run as child processes against mqws's embedded broker.
import { execFile, spawn } from "node:child_process";
import { promisify } from "node:util";

const run = promisify(execFile);

/** Publishes one message with mosquitto_pub (QoS 1 by default); resolves once it exits. */
export async function pub(port, topic, message, qos = 1) {
  await run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(port), "-q", String(qos), "-t", topic, "-m", message]);
}

/**
 * Starts `mosquitto_sub -v` on `filter`. `lines` collects "topic payload" lines as they arrive;
 * `ready()` resolves once the subscription is live (it publishes `<ready>` until it comes back),
 * `stop()` ends the process.
 */
export function sub(port, filter, readyTopic) {
  const child = spawn("mosquitto_sub", ["-h", "127.0.0.1", "-p", String(port), "-q", "1", "-v", "-t", filter], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = [];
  let rest = "";
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (s) => {
    rest += s;
    const parts = rest.split("\n");
    rest = parts.pop();
    lines.push(...parts);
  });
  return {
    lines,
    async ready(timeoutMs = 10_000) {
      const end = Date.now() + timeoutMs;
      while (Date.now() < end) {
        await pub(port, readyTopic, "ready");
        await sleep(200);
        if (lines.some((l) => l.startsWith(`${readyTopic} `))) return;
      }
      throw new Error(`mosquitto_sub on ${filter} never received ${readyTopic}`);
    },
    stop() {
      child.kill("SIGTERM");
    },
  };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
