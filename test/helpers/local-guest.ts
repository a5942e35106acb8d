/**
 * A Machine whose guest is this host: its fake `ssh` runs the remote command right here and its
 * fake `sudo` drops its flags, so what the Machine sends a guest runs as it would there.
 */
import { join } from "node:path";
import { Runner } from "../../infra/runner.ts";
import { Machine } from "../../orchestrator/guest/machine.ts";
import { writeFake } from "./fakes.ts";
import { silentLog } from "./fixtures.ts";

/**
 * The Machine, its fakes in `<dir>/bin` (first on PATH; add more there), their calls logged to
 * `<dir>/calls.log`. `ssh` replaces the fake ssh's body.
 */
export async function localGuest(dir: string, options: { ssh?: string } = {}): Promise<Machine> {
  const bin = join(dir, "bin");
  await writeFake(bin, "ssh", options.ssh ?? `exec bash -c "\${@: -1}"`);
  await writeFake(bin, "sudo", `while [ "$1" = -n ] || [ "$1" = -- ]; do shift; done; exec "$@"`);
  const runner = new Runner({ env: { PATH: `${bin}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin`, FAKE_LOG: join(dir, "calls.log"), HOME: dir } });
  return new Machine({
    name: "askari",
    target: { ip: "127.0.0.1", user: "boma", keyFile: "/k", knownHostsFile: "/kh", alias: "a" },
    runner,
    log: silentLog(),
    consoleLog: join(dir, "console.log"),
    domainState: async () => "running (booted)",
  });
}
