/**
 * The jail a controller-side Ansible runs in, tested with a probe that tries what a module, a
 * lookup or a plugin could: a TCP connection to a listener on the control host's loopback, a
 * write outside the folders given, local sockets under /run and /tmp (libvirt's, an agent's),
 * the user's environment. Run as the invoking user (root in CI) and, when that is root, again
 * as an unprivileged account (users run boma-it both ways; bubblewrap then needs user namespaces).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmod, mkdir, readdir, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { describe, it } from "node:test";
import { Runner } from "../../../../infra/runner.ts";
import { jailArgv, jailEnv, jailLayout, runJailed } from "../../../../orchestrator/host/jail.ts";
import { tempTree } from "../../../helpers/tmp.ts";

/** What the probe reports, one line per attempt. */
const PROBE = `import json, os, socket, sys
port, writable, outside, master, stray = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
seen = {}
try:
    socket.create_connection(("127.0.0.1", port), 3).close()
    seen["tcp"] = "connected"
except OSError as error:
    seen["tcp"] = "blocked"
for name, path in (("write-inside", os.path.join(writable, "ok")), ("write-outside", outside)):
    try:
        with open(path, "w") as handle:
            handle.write("x")
        seen[name] = "written"
    except OSError as error:
        seen[name] = "blocked"
seen["libvirt-socket"] = "visible" if os.path.exists("/run/libvirt") else "hidden"
seen["tmp"] = sorted(os.listdir("/tmp"))
seen["env"] = sorted(os.environ)
try:
    probe = socket.socket(socket.AF_UNIX)
    probe.connect(master)
    seen["master"] = "connected"
except OSError:
    seen["master"] = "blocked"
try:
    probe = socket.socket(socket.AF_UNIX)
    probe.connect(stray)
    seen["stray"] = "connected"
except OSError:
    seen["stray"] = "blocked"
seen["home"] = sorted(os.listdir(os.environ["HOME"]))
print(json.dumps(seen))
`;

async function listen(server: Server): Promise<number> {
  server.listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  return (server.address() as { port: number }).port;
}

describe("the jail of Ansible's controller side", () => {
  it("no network but its one socket, read-only but its folder, /run and /tmp private, only the environment boma-it sets: as this user, and as an unprivileged one", async () => {
    let heard = 0;
    const listener = createServer((socket) => {
      heard += 1;
      socket.destroy();
    });
    const master = createServer((socket) => socket.destroy());
    // A socket inside a folder the jail reads (an agent's, a master to a real host): never reachable.
    const stray = createServer((socket) => {
      heard += 1;
      socket.destroy();
    });
    const tree = await tempTree({ "probe.py": PROBE });
    try {
      const port = await listen(listener);
      const masterSocket = join(tree.dir, "sockets", "master");
      await mkdir(join(tree.dir, "sockets"), { recursive: true });
      master.listen(masterSocket);
      await new Promise((resolve) => master.once("listening", resolve));
      const straySocket = join(tree.dir, "agent.sock");
      stray.listen(straySocket);
      await new Promise((resolve) => stray.once("listening", resolve));
      await chmod(straySocket, 0o777);
      const writable = join(tree.dir, "run");
      await mkdir(writable);
      // Readable and writable for an unprivileged account too (the tree is made 0700).
      await chmod(tree.dir, 0o755);
      await chmod(writable, 0o777);
      await chmod(join(tree.dir, "sockets"), 0o755);
      await chmod(masterSocket, 0o777);

      // The user's HOME holds their keys: the jail has an empty folder at its path.
      const home = join(tree.dir, "home");
      await mkdir(join(home, ".ssh"), { recursive: true });
      await writeFile(join(home, ".ssh", "id_ed25519"), "a key");
      const userEnv = {
        PATH: process.env.PATH!,
        HOME: home,
        SSH_AUTH_SOCK: "/tmp/ssh-agent.sock",
        ANSIBLE_CALLBACKS_ENABLED: "junit",
        AWS_SECRET_ACCESS_KEY: "x",
      };
      const spec = (writableDir: string) => ({
        cwd: tree.dir,
        readable: [tree.dir],
        writable: [writableDir],
        sockets: [masterSocket],
        env: jailEnv(userEnv),
      });
      const probe = (writableDir: string) => [
        "python3",
        join(tree.dir, "probe.py"),
        String(port),
        writableDir,
        join(tree.dir, "escaped"),
        masterSocket,
        straySocket,
      ];

      const asUser = await runJailed(new Runner(), "python3", probe(writable).slice(1), spec(writable));
      const seen = JSON.parse(asUser.stdout) as Record<string, unknown>;
      assert.deepEqual(
        {
          tcp: seen.tcp,
          inside: seen["write-inside"],
          outside: seen["write-outside"],
          libvirt: seen["libvirt-socket"],
          tmp: seen.tmp,
          master: seen.master,
          stray: seen.stray,
          home: seen.home,
        },
        {
          tcp: "blocked",
          inside: "written",
          outside: "blocked",
          libvirt: "hidden",
          tmp: [join(tree.dir).split("/")[2]],
          master: "connected",
          stray: "blocked",
          home: [],
        },
        "as this user",
      );
      for (const name of ["SSH_AUTH_SOCK", "ANSIBLE_CALLBACKS_ENABLED", "AWS_SECRET_ACCESS_KEY"])
        assert.ok(!(seen.env as string[]).includes(name), `${name} does not pass`);

      if (process.getuid?.() === 0) {
        // The same jail for an account with no privileges at all (nobody), a folder of its own to write.
        const theirs = join(tree.dir, "run-nobody");
        await mkdir(theirs);
        await chmod(theirs, 0o777);
        const argv = jailArgv(probe(theirs), spec(theirs), await jailLayout(spec(theirs)));
        const child = spawn(argv[0]!, argv.slice(1), { uid: 65534, gid: 65534, stdio: ["ignore", "pipe", "pipe"] });
        let out = "";
        let err = "";
        child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
        child.stderr.on("data", (chunk: Buffer) => (err += chunk.toString()));
        const code = await new Promise((resolve) => child.once("exit", resolve));
        assert.equal(code, 0, `bubblewrap as nobody: ${err}`);
        const unprivileged = JSON.parse(out) as Record<string, unknown>;
        assert.deepEqual(
          {
            tcp: unprivileged.tcp,
            inside: unprivileged["write-inside"],
            outside: unprivileged["write-outside"],
            libvirt: unprivileged["libvirt-socket"],
            master: unprivileged.master,
            stray: unprivileged.stray,
          },
          { tcp: "blocked", inside: "written", outside: "blocked", libvirt: "hidden", master: "connected", stray: "blocked" },
          "as an unprivileged account",
        );
      }
      assert.equal(heard, 0, "the listener on the control host heard nothing");
      assert.deepEqual(
        (await readdir(tree.dir)).filter((name) => name === "escaped"),
        [],
        "nothing was written outside",
      );
      await writeFile(join(tree.dir, "done"), "");
    } finally {
      listener.close();
      master.close();
      stray.close();
      await tree.remove();
    }
  });
});
