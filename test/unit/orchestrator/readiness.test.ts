/**
 * Readiness by banner: sshd's banner is polled without logging in, and the lag is the guest's
 * uptime at the banner (from one login's uptime minus the harness time since) minus the moment
 * systemd says sshd became active. Timing is driven by a fake clock, so nothing here is timed.
 */
import assert from "node:assert/strict";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Runner } from "../../../infra/runner.ts";
import { Machine } from "../../../orchestrator/machine.ts";
import type { Clock } from "../../../orchestrator/retry.ts";
import { sshBanner } from "../../../orchestrator/ssh.ts";
import { writeFake } from "../../helpers/fakes.ts";
import { silentLog } from "../../helpers/fixtures.ts";
import { tempTree } from "../../helpers/tmp.ts";

async function listen(onConnection: (socket: import("node:net").Socket) => void): Promise<{ server: Server; port: number }> {
  const server = createServer(onConnection).listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  return { server, port: (server.address() as { port: number }).port };
}

describe("SSH readiness", () => {
  it("the banner probe tells sshd from anything else, without logging in", async () => {
    const sshd = await listen((socket) => socket.end("SSH-2.0-OpenSSH_10.0p2 Debian-7\r\n"));
    const web = await listen((socket) => socket.end("HTTP/1.1 400 Bad Request\r\n\r\n"));
    const silent = await listen(() => undefined);
    try {
      assert.equal(await sshBanner("127.0.0.1", sshd.port), true);
      assert.equal(await sshBanner("127.0.0.1", web.port), false);
      assert.equal(await sshBanner("127.0.0.1", silent.port, 300), false, "no banner within the timeout");
      assert.equal(await sshBanner("127.0.0.1", 1), false, "nothing listens");
    } finally {
      for (const { server } of [sshd, web, silent]) server.close();
    }
  });

  it("lag = uptime at the banner minus sshd's activation: the login's own time does not count", async () => {
    const tree = await tempTree();
    try {
      // The guest: up 101.0 s, sshd active since 99.0 s (monotonic µs), a boot id.
      await writeFake(join(tree.dir, "bin"), "ssh", 'printf "101.00 180.00\\n99000000\\n0f1e2d3c-aaaa-bbbb-cccc-000000000001\\n"');
      let now = 0;
      const clock: Clock = { now: () => now, sleep: async (ms) => void (now += ms) };
      let probes = 0;
      const machine = new Machine({
        name: "askari",
        target: { ip: "10.234.7.10", user: "boma", keyFile: "/k", knownHostsFile: "/kh", alias: "boma-it-askari" },
        runner: new Runner({ env: { PATH: `${join(tree.dir, "bin")}:/usr/bin:/bin`, FAKE_LOG: join(tree.dir, "log") } }).withRedaction((text) => text),
        log: silentLog(),
        consoleLog: join(tree.dir, "console.log"),
        domainState: async () => "running",
        clock,
        // No banner for three polls, then sshd answers; the login that follows takes 1.5 s.
        banner: async () => {
          probes += 1;
          if (probes < 4) return false;
          return true;
        },
      });
      const runner = (machine as unknown as { execute: Machine["execute"] }).execute.bind(machine);
      (machine as unknown as { execute: Machine["execute"] }).execute = async (command, options) => {
        const result = await runner(command, options);
        now += 1500;
        return result;
      };
      const ready = await machine.waitForSsh(60_000);
      assert.equal(probes, 4);
      assert.equal(ready.bootId, "0f1e2d3c-aaaa-bbbb-cccc-000000000001");
      // Uptime 101.0 at the answer, 1.5 s after the banner: 99.5 at the banner, 0.5 after sshd.
      assert.equal(ready.readyLagSeconds, 0.5);
    } finally {
      await tree.remove();
    }
  });
});
