/**
 * The before/after picture: read through one command in a guest that is this host (nft, ss,
 * docker and systemctl faked as they answer), made comparable here (no counters, listening
 * addresses sorted once each, containers by name, image and state word, failed units by name);
 * a missing tool reads as nothing; and the diff names what the reboot changed.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, it } from "node:test";
import { diffSnapshots, takeSnapshot } from "../../../../orchestrator/guest/snapshot.ts";
import { fakeCalls, writeFake } from "../../../helpers/fakes.ts";
import { localGuest } from "../../../helpers/local-guest.ts";
import { tempTree } from "../../../helpers/tmp.ts";

describe("takeSnapshot", () => {
  it("reads every item in one command and makes it comparable", async () => {
    const tree = await tempTree();
    try {
      const machine = await localGuest(tree.dir);
      const bin = join(tree.dir, "bin");
      await writeFake(
        bin,
        "nft",
        `printf 'table inet filter {\\n\\tchain forward {\\n\\t\\tiifname "docker0" counter packets 12 bytes 3400 accept\\n\\t}\\n}\\n'`,
      );
      await writeFake(bin, "ss", `printf 'LISTEN 0 4096 0.0.0.0:8080 0.0.0.0:*\\nLISTEN 0 128 0.0.0.0:22 0.0.0.0:*\\nLISTEN 0 4096 0.0.0.0:8080 0.0.0.0:*\\n'`);
      await writeFake(bin, "docker", `printf 'web nginx:alpine Up 3 minutes\\nprobe busybox Exited (137) 2 seconds ago\\n'`);
      await writeFake(bin, "systemctl", `printf 'docker.service loaded failed failed Docker Application Container Engine\\n'`);
      const snapshot = await takeSnapshot(machine);
      assert.deepEqual(snapshot, {
        "nft ruleset": 'table inet filter {\n\tchain forward {\n\t\tiifname "docker0" accept\n\t}\n}\n',
        "listening sockets": "0.0.0.0:22\n0.0.0.0:8080",
        containers: "probe busybox Exited (137)\nweb nginx:alpine Up",
        "failed units": "docker.service",
      });
      assert.equal((await fakeCalls(join(tree.dir, "calls.log"))).filter(([program]) => program === "ssh").length, 1);
    } finally {
      await tree.remove();
    }
  });

  it("reads a tool the guest does not have as nothing, and the diff says what changed", async () => {
    const tree = await tempTree();
    try {
      const machine = await localGuest(tree.dir);
      const bin = join(tree.dir, "bin");
      // No docker and no nft on this guest: the shell cannot find them.
      await writeFake(bin, "docker", "exit 127");
      await writeFake(bin, "nft", "echo 'nft: not found' >&2; exit 127");
      await writeFake(bin, "ss", `printf 'LISTEN 0 128 0.0.0.0:22 0.0.0.0:*\\n'`);
      await writeFake(bin, "systemctl", "true");
      const after = await takeSnapshot(machine);
      assert.deepEqual(after, { "nft ruleset": "", "listening sockets": "0.0.0.0:22", containers: "", "failed units": "" });
      const before = { ...after, "listening sockets": "0.0.0.0:22\n0.0.0.0:8080", containers: "web nginx:alpine Up" };
      assert.deepEqual(diffSnapshots(before, after), {
        "nft ruleset": { added: [], removed: [] },
        "listening sockets": { added: [], removed: ["0.0.0.0:8080"] },
        containers: { added: [], removed: ["web nginx:alpine Up"] },
        "failed units": { added: [], removed: [] },
      });
    } finally {
      await tree.remove();
    }
  });
});
